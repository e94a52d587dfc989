//! The audit log (schema V5): appending records to the hash chain, reading them back, and
//! verifying the chain. Verification recomputes every hash here, in Rust, from the stored
//! fields: it trusts nothing the database computed, so an auditor can run it against the
//! database directly without trusting the broker.

use sha2::{Digest, Sha256};
use tokio_postgres::Row;

use crate::{NodeId, Store, StoreError, queries};

/// One event to record.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditRecord {
    pub kind: String,
    pub principal: Option<String>,
    pub destination: Option<String>,
    pub detail: serde_json::Value,
}

impl AuditRecord {
    pub fn new(kind: &str) -> AuditRecord {
        AuditRecord {
            kind: kind.to_owned(),
            principal: None,
            destination: None,
            detail: serde_json::json!({}),
        }
    }

    pub fn principal(mut self, p: impl Into<String>) -> Self {
        self.principal = Some(p.into());
        self
    }

    pub fn destination(mut self, d: impl Into<String>) -> Self {
        self.destination = Some(d.into());
        self
    }

    pub fn detail(mut self, d: serde_json::Value) -> Self {
        self.detail = d;
        self
    }
}

/// A stored record, as read back.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct AuditEntry {
    pub seq: i64,
    /// Epoch microseconds.
    pub at_us: i64,
    /// The same as an RFC 3339 UTC timestamp.
    pub at: String,
    pub node_id: Option<i64>,
    pub kind: String,
    pub principal: Option<String>,
    pub destination: Option<String>,
    pub detail: serde_json::Value,
    /// jsonb's text form of `detail`, exactly as the chain hashed it.
    #[serde(skip)]
    pub detail_text: String,
    #[serde(serialize_with = "hex")]
    pub prev_hash: Vec<u8>,
    #[serde(serialize_with = "hex")]
    pub hash: Vec<u8>,
}

fn hex<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&to_hex(v))
}

/// Lower-case hexadecimal.
pub fn to_hex(v: &[u8]) -> String {
    v.iter().map(|b| format!("{b:02x}")).collect()
}

fn field(out: &mut String, v: Option<&str>) {
    let v = v.unwrap_or("");
    out.push_str(&v.len().to_string());
    out.push(':');
    out.push_str(v);
}

/// The canonical text of a record (schema/V5__audit.sql says the same in SQL).
pub fn canonical(e: &AuditEntry) -> String {
    let mut out = String::new();
    field(&mut out, Some(&e.seq.to_string()));
    out.push('|');
    field(&mut out, Some(&e.at_us.to_string()));
    out.push('|');
    field(&mut out, e.node_id.map(|n| n.to_string()).as_deref());
    out.push('|');
    field(&mut out, Some(&e.kind));
    out.push('|');
    field(&mut out, e.principal.as_deref());
    out.push('|');
    field(&mut out, e.destination.as_deref());
    out.push('|');
    field(&mut out, Some(&e.detail_text));
    out
}

/// sha256(prev || canonical text).
pub fn chain_hash(prev: &[u8], canonical: &str) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(canonical.as_bytes());
    h.finalize().to_vec()
}

fn entry(r: &Row) -> AuditEntry {
    AuditEntry {
        seq: r.get(0),
        at_us: r.get(1),
        node_id: r.get(2),
        kind: r.get(3),
        principal: r.get(4),
        destination: r.get(5),
        detail: r.get(6),
        detail_text: r.get(7),
        prev_hash: r.get(8),
        hash: r.get(9),
        at: r.get(10),
    }
}

/// The outcome of a verification.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct AuditVerification {
    /// Records checked.
    pub records: i64,
    /// The last good record's seq and hash (an anchor to keep outside the database).
    pub head_seq: i64,
    pub head_hash: String,
    /// The first record that breaks the chain, and how.
    pub broken: Option<(i64, String)>,
}

impl Store {
    /// Appends records to the chain in one transaction.
    pub async fn append_audit(
        &self,
        node: Option<NodeId>,
        records: &[AuditRecord],
    ) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let client = self.client().await?;
        append_with(&client, node, records).await
    }

    /// Up to `limit` records after `after_seq`, oldest first.
    pub async fn audit_page(
        &self,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(queries::AUDIT_PAGE, &[&after_seq, &limit])
            .await?;
        Ok(rows.iter().map(entry).collect())
    }

    /// The last `n` records, oldest first.
    pub async fn audit_tail(&self, n: i64) -> Result<Vec<AuditEntry>, StoreError> {
        let client = self.client().await?;
        let mut rows: Vec<AuditEntry> = client
            .query(queries::AUDIT_TAIL, &[&n])
            .await?
            .iter()
            .map(entry)
            .collect();
        rows.reverse();
        Ok(rows)
    }

    /// The first seq at or after `since` (a timestamp PostgreSQL understands).
    pub async fn audit_seq_since(&self, since: &str) -> Result<i64, StoreError> {
        let client = self.client().await?;
        Ok(client
            .query_one(queries::AUDIT_SEQ_SINCE, &[&since])
            .await
            .map_err(|e| StoreError::Refused(format!("--since {since:?}: {e}")))?
            .get(0))
    }

    /// Recomputes the chain from the first record; `progress` hears the count every page.
    pub async fn verify_audit(
        &self,
        mut progress: impl FnMut(i64),
    ) -> Result<AuditVerification, StoreError> {
        const PAGE: i64 = 10_000;
        let mut prev = vec![0u8; 32];
        let mut expected_seq = 1;
        let mut checked = 0;
        loop {
            let page = self.audit_page(expected_seq - 1, PAGE).await?;
            for e in &page {
                let broken = if e.seq != expected_seq {
                    Some(format!(
                        "record {expected_seq} is missing (the next one is {})",
                        e.seq
                    ))
                } else if e.prev_hash != prev {
                    Some("its prev_hash is not the previous record's hash".into())
                } else if chain_hash(&prev, &canonical(e)) != e.hash {
                    Some("its contents do not match its hash (the record was altered)".into())
                } else {
                    None
                };
                if let Some(why) = broken {
                    return Ok(AuditVerification {
                        records: checked,
                        head_seq: expected_seq - 1,
                        head_hash: to_hex(&prev),
                        broken: Some((expected_seq, why)),
                    });
                }
                prev = e.hash.clone();
                expected_seq += 1;
                checked += 1;
            }
            progress(checked);
            if (page.len() as i64) < PAGE {
                break;
            }
        }
        // The head row must agree with the last record (records removed from the end).
        let client = self.client().await?;
        let head = client.query_one(queries::AUDIT_HEAD, &[]).await?;
        let (head_seq, head_hash): (i64, Vec<u8>) = (head.get(0), head.get(1));
        let broken = (head_seq != expected_seq - 1 || head_hash != prev).then(|| {
            (
                expected_seq,
                format!(
                    "the chain ends at record {} but its head says {head_seq}: records were removed from the end",
                    expected_seq - 1
                ),
            )
        });
        Ok(AuditVerification {
            records: checked,
            head_seq: expected_seq - 1,
            head_hash: to_hex(&prev),
            broken,
        })
    }
}

/// Appends records on `client` (inside whatever transaction it has open).
pub(crate) async fn append_with(
    client: &deadpool_postgres::Client,
    node: Option<NodeId>,
    records: &[AuditRecord],
) -> Result<(), StoreError> {
    let kinds: Vec<&str> = records.iter().map(|r| r.kind.as_str()).collect();
    let principals: Vec<Option<&str>> = records.iter().map(|r| r.principal.as_deref()).collect();
    let destinations: Vec<Option<&str>> =
        records.iter().map(|r| r.destination.as_deref()).collect();
    let details: Vec<&serde_json::Value> = records.iter().map(|r| &r.detail).collect();
    let node = node.map(|n| n.0);
    let stmt = client.prepare_cached(queries::AUDIT_APPEND).await?;
    client
        .query_one(
            &stmt,
            &[&kinds, &principals, &destinations, &details, &node],
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_text_is_length_prefixed() {
        let e = AuditEntry {
            seq: 1,
            at_us: 5,
            at: String::new(),
            node_id: None,
            kind: "connect".into(),
            principal: Some("a|b".into()),
            destination: None,
            detail: serde_json::json!({}),
            detail_text: "{}".into(),
            prev_hash: vec![0; 32],
            hash: vec![],
        };
        assert_eq!(canonical(&e), "1:1|1:5|0:|7:connect|3:a|b|0:|2:{}");
    }
}
