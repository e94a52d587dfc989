//! Applies the embedded `schema/V{n}__name.sql` migrations, each in its own transaction,
//! under an advisory lock so two brokers starting together do not race.

use crate::{Store, StoreError};

include!(concat!(env!("OUT_DIR"), "/migrations.rs"));

/// The advisory lock key that serialises migrations ("postbus" in ASCII, as a number).
const MIGRATION_LOCK: i64 = 0x0070_6f73_7462_7573;

/// The newest schema version this binary knows.
pub fn latest_version() -> i32 {
    MIGRATIONS.last().map(|m| m.0).unwrap_or(0)
}

impl Store {
    /// Applies every migration not yet applied; returns the (version, title) pairs applied now.
    pub async fn migrate(&self) -> Result<Vec<(i32, String)>, StoreError> {
        let mut client = self.client().await?;
        client
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        let result = apply_pending(&mut client).await;
        // Unlock even when a migration failed; the session keeps the lock otherwise.
        let unlock = client
            .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
            .await;
        let applied = result?;
        unlock?;
        Ok(applied)
    }

    /// The schema version the database is at (0 when postbus was never installed).
    pub async fn schema_version(&self) -> Result<i32, StoreError> {
        let client = self.client().await?;
        current_version(&client).await
    }
}

async fn current_version(client: &tokio_postgres::Client) -> Result<i32, StoreError> {
    let exists: bool = client
        .query_one(
            "SELECT to_regclass('postbus_meta.schema_migrations') IS NOT NULL",
            &[],
        )
        .await?
        .get(0);
    if !exists {
        return Ok(0);
    }
    let v: Option<i32> = client
        .query_one(
            "SELECT max(version) FROM postbus_meta.schema_migrations",
            &[],
        )
        .await?
        .get(0);
    Ok(v.unwrap_or(0))
}

async fn apply_pending(
    client: &mut tokio_postgres::Client,
) -> Result<Vec<(i32, String)>, StoreError> {
    client
        .batch_execute(
            "CREATE SCHEMA IF NOT EXISTS postbus_meta;
             CREATE TABLE IF NOT EXISTS postbus_meta.schema_migrations (
                 version integer PRIMARY KEY,
                 title text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await?;
    let current = current_version(client).await?;
    if current > latest_version() {
        return Err(StoreError::SchemaTooNew {
            found: current,
            known: latest_version(),
        });
    }
    let mut applied = Vec::new();
    for (version, title, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        let tx = client.transaction().await?;
        let wrap = |source| StoreError::Migration {
            version: *version,
            title: (*title).to_owned(),
            source,
        };
        tx.batch_execute(sql).await.map_err(wrap)?;
        tx.execute(
            "INSERT INTO postbus_meta.schema_migrations (version, title) VALUES ($1, $2)",
            &[version, title],
        )
        .await
        .map_err(wrap)?;
        tx.commit().await.map_err(wrap)?;
        tracing::info!(version, title, "applied migration");
        applied.push((*version, (*title).to_owned()));
    }
    Ok(applied)
}
