-- postbus schema, version 5: the audit log. Append-only and tamper-evident: every record
-- carries the SHA-256 of the previous record's hash and its own canonical text, so changing,
-- inserting or removing a record breaks the chain from there on; `postbus audit verify`
-- recomputes it (in Rust, from the rows, trusting nothing the database computed).
--
-- Canonical text of a record (each field as <byte length>:<text>, NULL as the empty field):
--   seq|at_us|node_id|kind|principal|destination|detail
-- where detail is jsonb's text form. hash = sha256(prev_hash || canonical text in UTF-8);
-- the first record's prev_hash is 32 zero bytes.

CREATE TABLE postbus.audit_log (
    seq         bigint PRIMARY KEY,
    -- When, epoch microseconds on the database's clock.
    at_us       bigint NOT NULL,
    -- The broker node that wrote it (NULL: the SQL API or a tool).
    node_id     bigint NULL,
    -- What happened: connect, disconnect, auth.failed, authz.denied, destination.created,
    -- destination.deleted, destination.purged, message.dead_lettered, policy.reloaded,
    -- policy.rejected, message.sent, message.acked (see docs/security.md).
    kind        text   NOT NULL,
    principal   text   NULL,
    destination text   NULL,
    detail      jsonb  NOT NULL DEFAULT '{}',
    prev_hash   bytea  NOT NULL,
    hash        bytea  NOT NULL
);
CREATE INDEX audit_log_at ON postbus.audit_log (at_us);

-- The head of the chain: the last record's seq and hash. Appending locks it, so records are
-- chained in commit order; a transaction that rolls back leaves no record and no gap.
CREATE TABLE postbus.audit_head (
    one  boolean PRIMARY KEY DEFAULT true CHECK (one),
    seq  bigint  NOT NULL,
    hash bytea   NOT NULL
);
INSERT INTO postbus.audit_head (seq, hash) VALUES (0, '\x0000000000000000000000000000000000000000000000000000000000000000');

-- Append-only, for every role including the table's owner: updates, deletes and truncation
-- are refused by triggers. (A superuser can drop a trigger; the chain then shows what was
-- changed, and an anchor kept outside the database shows a rewritten chain: docs/security.md.)
CREATE FUNCTION postbus.audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'postbus: the audit log is append-only (% refused)', TG_OP
        USING ERRCODE = '42501';
END $$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON postbus.audit_log
    FOR EACH ROW EXECUTE FUNCTION postbus.audit_refuse_change();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON postbus.audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION postbus.audit_refuse_change();
REVOKE UPDATE, DELETE, TRUNCATE ON postbus.audit_log FROM PUBLIC;

-- One field of the canonical text.
CREATE FUNCTION postbus.audit_field(v text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT octet_length(coalesce(v, '')) || ':' || coalesce(v, '')
$$;

-- Appends records (one per array element, in order) to the chain; returns the last seq.
CREATE FUNCTION postbus.audit_append(
    kinds        text[],
    principals   text[],
    destinations text[],
    details      jsonb[],
    node         bigint DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    h record;
    s bigint;
    prev bytea;
    now_us bigint := (extract(epoch FROM clock_timestamp()) * 1000000)::bigint;
    canonical text;
    i integer;
    d jsonb;
BEGIN
    SELECT a.seq, a.hash INTO h FROM postbus.audit_head a FOR UPDATE;
    s := h.seq;
    prev := h.hash;
    FOR i IN 1 .. coalesce(cardinality(kinds), 0) LOOP
        s := s + 1;
        d := coalesce(details[i], '{}');
        canonical := postbus.audit_field(s::text) || '|' || postbus.audit_field(now_us::text) || '|'
            || postbus.audit_field(node::text) || '|' || postbus.audit_field(kinds[i]) || '|'
            || postbus.audit_field(principals[i]) || '|' || postbus.audit_field(destinations[i]) || '|'
            || postbus.audit_field(d::text);
        INSERT INTO postbus.audit_log (seq, at_us, node_id, kind, principal, destination, detail, prev_hash, hash)
        VALUES (s, now_us, node, kinds[i], principals[i], destinations[i], d, prev,
                sha256(prev || convert_to(canonical, 'UTF8')));
        prev := sha256(prev || convert_to(canonical, 'UTF8'));
    END LOOP;
    UPDATE postbus.audit_head SET seq = s, hash = prev;
    RETURN s;
END $$;
REVOKE ALL ON FUNCTION postbus.audit_append(text[], text[], text[], jsonb[], bigint) FROM PUBLIC;

-- Per destination: record every message sent to it and acknowledged from it (ids, never
-- bodies). Off by default.
ALTER TABLE postbus.destinations ADD COLUMN audit_messages boolean NOT NULL DEFAULT false;
