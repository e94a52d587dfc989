-- postbus schema, version 1: destinations, messages, dedup records, broker nodes, and the
-- record of committed client transactions. Never edit a migration once it has landed: add a
-- new V{n}__name.sql instead.

CREATE SCHEMA IF NOT EXISTS postbus;

-- Every queue (topics and temporary queues come later through the same table).
CREATE TABLE postbus.destinations (
    id                      integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind                    text    NOT NULL CHECK (kind IN ('queue', 'topic', 'temp-queue')),
    name                    text    NOT NULL CHECK (length(name) BETWEEN 1 AND 255),
    max_deliveries          integer NOT NULL DEFAULT 10 CHECK (max_deliveries >= 1),
    redelivery_delay_ms     bigint  NOT NULL DEFAULT 0 CHECK (redelivery_delay_ms >= 0),
    redelivery_backoff      double precision NOT NULL DEFAULT 1.0 CHECK (redelivery_backoff >= 1.0),
    redelivery_max_delay_ms bigint  NOT NULL DEFAULT 60000 CHECK (redelivery_max_delay_ms >= 0),
    dead_letter_queue       text    NULL,
    expiry_queue            text    NULL,
    dedup_window_ms         bigint  NOT NULL DEFAULT 86400000 CHECK (dedup_window_ms >= 0),
    exclusive               boolean NOT NULL DEFAULT false,
    auto_created            boolean NOT NULL DEFAULT false,
    created_at              timestamptz NOT NULL DEFAULT now(),
    UNIQUE (kind, name)
);

-- Message ids: never reused. A sequence value is taken at INSERT, not at COMMIT, so ids of
-- concurrent writers can commit out of order: postbus never reads forward from a last-seen id.
CREATE SEQUENCE postbus.message_id_seq AS bigint;

-- One row per message. JMS header fields are columns (cheap, and selectors push down to them);
-- application properties are one flat jsonb object plus the Java types JSON cannot tell.
--
-- State is two nullable columns, so the index consumers scan holds only deliverable rows:
--   owner    NULL = available; else the id of the broker node (postbus.nodes) holding it in flight
--   ready_at NULL = deliverable now; else epoch ms before which it must not be delivered
--            (scheduled delivery, redelivery delay)
-- An ack is a DELETE; delivery does not update the row beyond setting owner.
CREATE TABLE postbus.messages (
    id             bigint   PRIMARY KEY DEFAULT nextval('postbus.message_id_seq'),
    queue_id       integer  NOT NULL REFERENCES postbus.destinations (id),
    priority       smallint NOT NULL DEFAULT 4 CHECK (priority BETWEEN 0 AND 9),
    owner          bigint   NULL,
    ready_at       bigint   NULL,
    expires_at     bigint   NOT NULL DEFAULT 0,
    delivery_count integer  NOT NULL DEFAULT 0,
    persistent     boolean  NOT NULL DEFAULT true,
    sent_at        bigint   NOT NULL,
    group_id       text     NULL,
    group_seq      integer  NULL,
    correlation_id text     NULL,
    reply_to       text     NULL,
    jms_type       text     NULL,
    content_type   text     NULL,
    user_id        text     NULL,
    traceparent    text     NULL,
    tracestate     text     NULL,
    properties     jsonb    NULL,
    property_types jsonb    NULL,
    -- Set when the message was moved (dead-letter, expiry): why, from where, the last error.
    dlq_reason     text     NULL,
    origin         text     NULL,
    last_error     text     NULL,
    body           bytea    NOT NULL
) WITH (
    -- Queue tables churn: vacuum early and without throttling so dead tuples do not pile up
    -- in front of the consumers' index scan.
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_cost_delay = 0,
    autovacuum_analyze_scale_factor = 0.02
);
ALTER TABLE postbus.messages ALTER COLUMN body SET STORAGE EXTERNAL;

-- What consumers scan: deliverable messages outside groups, best priority first, then FIFO.
CREATE INDEX messages_ready ON postbus.messages (queue_id, priority DESC, id)
    WHERE owner IS NULL AND ready_at IS NULL AND group_id IS NULL;
-- Deliverable grouped messages, in sequence (within a group, order wins over priority).
CREATE INDEX messages_ready_grouped ON postbus.messages (queue_id, id)
    WHERE owner IS NULL AND ready_at IS NULL AND group_id IS NOT NULL;
-- Groups blocked by a message waiting for (re)delivery.
CREATE INDEX messages_groups_waiting ON postbus.messages (queue_id, group_id)
    WHERE ready_at IS NOT NULL AND group_id IS NOT NULL;
-- The scheduler's scan for messages whose delay has passed.
CREATE INDEX messages_scheduled ON postbus.messages (ready_at) WHERE ready_at IS NOT NULL;
-- In-flight messages by owning node, for recovery after a node dies.
CREATE INDEX messages_in_flight ON postbus.messages (owner) WHERE owner IS NOT NULL;
-- Expiry sweep.
CREATE INDEX messages_expiring ON postbus.messages (expires_at) WHERE expires_at > 0;

-- Idempotent producers: a dedup id accepted by a queue, kept for the queue's window. Written in
-- the same transaction as the message it admitted.
CREATE TABLE postbus.dedup (
    queue_id   integer NOT NULL REFERENCES postbus.destinations (id) ON DELETE CASCADE,
    dedup_id   text    NOT NULL,
    message_id bigint  NOT NULL,
    expires_at bigint  NOT NULL,
    PRIMARY KEY (queue_id, dedup_id)
);
CREATE INDEX dedup_expiry ON postbus.dedup (expires_at);

-- Broker processes. A node's id is its fencing token: every in-flight claim carries it, and a
-- node whose row is gone (declared dead after its lease ran out) can no longer ack or release.
CREATE TABLE postbus.nodes (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         text   NOT NULL,
    hostname     text   NOT NULL,
    pid          integer NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    lease_ms     integer NOT NULL
);

-- Transactions committed by clients that named a client-id, so a COMMIT repeated after a
-- reconnect is answered from this record and never applied twice.
CREATE TABLE postbus.client_transactions (
    client_id    text   NOT NULL,
    tx_id        text   NOT NULL,
    committed_at bigint NOT NULL,
    PRIMARY KEY (client_id, tx_id)
);
CREATE INDEX client_transactions_age ON postbus.client_transactions (committed_at);

-- Dispatch leases: which broker node dispatches a queue's grouped messages ('groups'), or all
-- of an exclusive queue's messages ('exclusive'). One holder at a time keeps group order and
-- exclusivity across brokers; a lease whose node is gone (declared dead) may be taken over.
CREATE TABLE postbus.queue_leases (
    queue_id integer NOT NULL REFERENCES postbus.destinations (id) ON DELETE CASCADE,
    kind     text    NOT NULL CHECK (kind IN ('groups', 'exclusive')),
    node_id  bigint  NOT NULL,
    PRIMARY KEY (queue_id, kind)
);
