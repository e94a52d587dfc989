-- postbus schema, version 8: one row the broker updates, in a transaction of its own, before
-- it confirms a commit it learned of by reading (a transaction record found for a repeated
-- COMMIT, pg_xact_status after a broken connection) instead of from that COMMIT's own answer.
-- A session that ended in its wait for a synchronous standby never gave that answer, and its
-- transaction may be committed on the primary only. The update writes WAL, so its COMMIT waits
-- for the synchronous standby like any other (a transaction that only took an id would not:
-- PostgreSQL commits those without waiting), and its commit record comes after the first one:
-- once it commits, the standby has both.
CREATE TABLE postbus.durability_barrier (
    id     integer PRIMARY KEY CHECK (id = 1),
    passes bigint  NOT NULL
);
INSERT INTO postbus.durability_barrier VALUES (1, 0);
