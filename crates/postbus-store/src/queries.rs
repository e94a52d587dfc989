//! Every SQL statement of the broker's hot and cold paths, in one place, named for what it does.

/// The SET list of a release (owner cleared, delivery counted, redelivery delay, dead-letter
/// move), shared by [`RELEASE`] and the release part of [`SIMPLE_BATCH`]: `m` is the message,
/// `u` the unnested release row.
macro_rules! release_set {
    () => {
        "owner = NULL, \
         delivery_count = m.delivery_count + u.increment, \
         ready_at = u.ready_at, \
         queue_id = coalesce(u.dead_letter, m.queue_id), \
         dlq_reason = CASE WHEN u.dead_letter IS NULL THEN m.dlq_reason ELSE u.reason END, \
         origin = CASE WHEN u.dead_letter IS NULL THEN m.origin \
             ELSE coalesce(m.origin, '/topic/' || m.topic, u.origin) END, \
         topic = CASE WHEN u.dead_letter IS NULL THEN m.topic END, \
         last_error = coalesce(u.last_error, m.last_error)"
    };
}

/// The columns read back for delivery, in the order [`crate::read::row_to_message`] expects.
/// The header columns every message read starts with (a macro so that [`MESSAGE_COLUMNS`]
/// and [`SUMMARY_COLUMNS`] are built from one list).
macro_rules! message_head_columns {
    () => {
        "m.id, m.queue_id, m.priority, m.expires_at, m.delivery_count, m.persistent, \
     m.sent_at, m.group_id, m.group_seq, m.correlation_id, m.reply_to, m.jms_type, m.content_type, \
     m.user_id, m.traceparent, m.tracestate, m.properties, m.property_types, m.dlq_reason, m.origin, \
     m.last_error, "
    };
}

/// A message's body: its own, or the shared payload of a topic copy.
macro_rules! message_body_column {
    () => {
        "coalesce(m.body, (SELECT p.body FROM postbus.payloads p WHERE p.id = m.publish_id))"
    };
}

pub const MESSAGE_COLUMNS: &str = concat!(
    message_head_columns!(),
    message_body_column!(),
    ", m.publish_id, m.topic"
);

/// The first statement of a batch: the transaction's id (to learn the outcome if the connection
/// breaks during COMMIT) and `$1` fresh message ids, in increasing order.
pub const BATCH_HEAD: &str = "SELECT pg_current_xact_id()::text, \
     ARRAY(SELECT nextval('postbus.message_id_seq') FROM generate_series(1, $1::int))";

/// The wake-up hint other brokers LISTEN to: a comma-separated list of queue ids. NOTIFY is
/// delivered at commit, and only if the transaction commits.
pub const NOTIFY: &str = "SELECT pg_notify('postbus_wake', $1)";

/// The channel of [`NOTIFY`].
pub const WAKE_CHANNEL: &str = "postbus_wake";

pub const CURRENT_XID: &str = "SELECT pg_current_xact_id()::text";

/// A transaction that writes WAL, so its COMMIT waits for a synchronous standby
/// ([`crate::durability_barrier`], schema/V8__durability_barrier.sql).
pub const DURABILITY_BARRIER: &str =
    "BEGIN; UPDATE postbus.durability_barrier SET passes = passes + 1 WHERE id = 1; COMMIT";

/// The hot-path batch: inserts all messages (ids in input order), deletes all acked messages
/// this node holds, releases all returned ones, in one statement. Returns (0, id, ordinal) per
/// inserted message, (1, id, 0) per acked and (2, id, 0) per released message.
pub const SIMPLE_BATCH: &str = concat!(
    "WITH rows AS ( \
        SELECT nextval('postbus.message_id_seq') AS id, u.* \
        FROM unnest($1::int[], $2::bigint[], $3::smallint[], $4::bigint[], $5::bigint[], $6::bool[], \
            $7::bigint[], $8::text[], $9::int[], $10::text[], $11::text[], $12::text[], $13::text[], \
            $14::text[], $15::text[], $16::text[], $17::jsonb[], $18::jsonb[], $19::bytea[]) WITH ORDINALITY \
            AS u(queue_id, owner, priority, ready_at, expires_at, persistent, sent_at, group_id, group_seq, \
                 correlation_id, reply_to, jms_type, content_type, user_id, traceparent, tracestate, \
                 properties, property_types, body, ord)), \
     ins AS ( \
        INSERT INTO postbus.messages (id, queue_id, owner, priority, ready_at, expires_at, persistent, sent_at, \
            group_id, group_seq, correlation_id, reply_to, jms_type, content_type, user_id, traceparent, \
            tracestate, properties, property_types, body) \
        SELECT id, queue_id, owner, priority, ready_at, expires_at, persistent, sent_at, group_id, group_seq, \
            correlation_id, reply_to, jms_type, content_type, user_id, traceparent, tracestate, properties, \
            property_types, body FROM rows), \
     acked AS (DELETE FROM postbus.messages WHERE id = ANY($21::bigint[]) AND owner = $20 RETURNING id), \
     released AS ( \
        UPDATE postbus.messages m SET ",
    release_set!(),
    " FROM unnest($22::bigint[], $23::int[], $24::bigint[], $25::int[], $26::text[], $27::text[], $28::text[]) \
            AS u(id, increment, ready_at, dead_letter, reason, origin, last_error) \
        WHERE m.id = u.id AND m.id = ANY($22::bigint[]) AND m.owner = $20 \
        RETURNING m.id) \
     SELECT 0, id, ord FROM rows \
     UNION ALL SELECT 1, id, 0::bigint FROM acked \
     UNION ALL SELECT 2, id, 0::bigint FROM released",
);

/// Records dedup ids; a live record with the same id makes the row absent from RETURNING
/// (a duplicate); an expired one is taken over.
pub const INSERT_DEDUP: &str = "INSERT INTO postbus.dedup AS d (queue_id, dedup_id, message_id, expires_at) \
     SELECT * FROM unnest($1::int[], $2::text[], $3::bigint[], $4::bigint[]) \
     ON CONFLICT (queue_id, dedup_id) DO UPDATE \
        SET message_id = excluded.message_id, expires_at = excluded.expires_at \
        WHERE d.expires_at <= $5 \
     RETURNING queue_id, dedup_id";

/// The message a live dedup record points at.
pub const FIND_DEDUP: &str = "SELECT queue_id, dedup_id, message_id FROM postbus.dedup \
     WHERE (queue_id, dedup_id) IN (SELECT * FROM unnest($1::int[], $2::text[]))";

/// The multi-row insert of a batch: one statement for any number of messages.
pub const INSERT_MESSAGES: &str = "INSERT INTO postbus.messages (id, queue_id, owner, priority, ready_at, expires_at, \
        persistent, sent_at, group_id, group_seq, correlation_id, reply_to, jms_type, content_type, user_id, \
        traceparent, tracestate, properties, property_types, body) \
     SELECT * FROM unnest($1::bigint[], $2::int[], $3::bigint[], $4::smallint[], $5::bigint[], $6::bigint[], \
        $7::bool[], $8::bigint[], $9::text[], $10::int[], $11::text[], $12::text[], $13::text[], $14::text[], \
        $15::text[], $16::text[], $17::text[], $18::jsonb[], $19::jsonb[], $20::bytea[])";

/// Acks: delete messages this node holds. Rows another node holds (this node's lease lapsed)
/// are not touched and are missing from RETURNING.
pub const DELETE_ACKED: &str =
    "DELETE FROM postbus.messages WHERE id = ANY($2::bigint[]) AND owner = $1 RETURNING id";

/// Returns in-flight messages for redelivery (or moves them to a dead-letter queue).
pub const RELEASE: &str = concat!(
    "UPDATE postbus.messages m SET ",
    release_set!(),
    " FROM unnest($2::bigint[], $3::int[], $4::bigint[], $5::int[], $6::text[], $7::text[], $8::text[]) \
        AS u(id, increment, ready_at, dead_letter, reason, origin, last_error) \
     WHERE m.id = u.id AND m.id = ANY($2::bigint[]) AND m.owner = $1 \
     RETURNING m.id",
);

/// Records a client transaction as committed; a conflict means it was committed before.
pub const INSERT_CLIENT_TX: &str = "INSERT INTO postbus.client_transactions (client_id, tx_id, committed_at) \
     SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[]) ON CONFLICT DO NOTHING RETURNING client_id, tx_id";

pub const FIND_CLIENT_TX: &str =
    "SELECT 1 FROM postbus.client_transactions WHERE client_id = $1 AND tx_id = $2";

/// The claims select ids in an `ARRAY(...)` sub-select so the UPDATE is always a primary-key
/// lookup: a generic plan with an unknown LIMIT once chose a hash join over the whole table.
///
/// Claims up to `$3` deliverable messages outside groups of queue `$2` for node `$1`, best
/// priority first, then FIFO. Expired messages are left for the expiry sweep.
/// The messages of queue `$1` held by node `$2` that transaction `$3` (its `xid8` as text)
/// claimed: a claim whose answer was lost after it committed is read again by the rows' xmin.
pub const CLAIMED_BY_TRANSACTION: &str = concat!(
    "SELECT ",
    message_head_columns!(),
    message_body_column!(),
    ", m.publish_id, m.topic FROM postbus.messages m \
     WHERE m.queue_id = $1 AND m.owner = $2 \
       AND m.xmin::text::bigint = ($3::text::bigint & 4294967295)"
);

pub const CLAIM: &str = "UPDATE postbus.messages m SET owner = $1 \
     WHERE m.id = ANY(ARRAY( \
           SELECT c.id FROM postbus.messages c \
           WHERE c.queue_id = $2 AND c.owner IS NULL AND c.ready_at IS NULL AND c.group_id IS NULL \
             AND (c.expires_at = 0 OR c.expires_at > $4) \
           ORDER BY c.priority DESC, c.id \
           LIMIT $3 \
           FOR UPDATE SKIP LOCKED)) \
     RETURNING ";

/// Whether queue `$1` has a plain message waiting in the table (the dispatcher's check before
/// it lets fresh messages skip the table). Rows another claim is taking right now still count:
/// the answer errs towards "yes".
pub const HAS_READY: &str = "SELECT EXISTS (SELECT 1 FROM postbus.messages c \
     WHERE c.queue_id = $1 AND c.owner IS NULL AND c.ready_at IS NULL AND c.group_id IS NULL \
       AND (c.expires_at = 0 OR c.expires_at > $2))";

/// Claims up to `$3` grouped messages of queue `$2` in sequence (id) order, for the node that
/// holds the queue's 'groups' lease (so no other node claims grouped messages of this queue).
/// A group with a message waiting for (re)delivery, or held by an SQL or HTTP receiver (a
/// negative owner: one that committed while this node took the lease), is skipped whole, so
/// nothing overtakes it.
pub const CLAIM_GROUPED: &str = "UPDATE postbus.messages m SET owner = $1 \
     WHERE m.id = ANY(ARRAY( \
           SELECT c.id FROM postbus.messages c \
           WHERE c.queue_id = $2 AND c.owner IS NULL AND c.ready_at IS NULL AND c.group_id IS NOT NULL \
             AND (c.expires_at = 0 OR c.expires_at > $4) \
             AND c.group_id NOT IN ( \
                 SELECT w.group_id FROM postbus.messages w \
                 WHERE w.queue_id = $2 AND w.group_id IS NOT NULL \
                   AND (w.ready_at IS NOT NULL OR w.owner < 0)) \
           ORDER BY c.id \
           LIMIT $3 \
           FOR UPDATE SKIP LOCKED)) \
     RETURNING ";

/// A selective consumer's claim: plain messages of queue `$2` passing the selector's SQL filter
/// (parameters from `$6`), except ids in `$5` (already rejected by the exact evaluator).
pub fn claim_selected(filter_sql: &str) -> String {
    format!(
        "UPDATE postbus.messages m SET owner = $1 \
         WHERE m.id = ANY(ARRAY( \
               SELECT c.id FROM postbus.messages c \
               WHERE c.queue_id = $2 AND c.owner IS NULL AND c.ready_at IS NULL AND c.group_id IS NULL \
                 AND (c.expires_at = 0 OR c.expires_at > $4) \
                 AND c.id <> ALL($5::bigint[]) \
                 AND ({filter_sql}) \
               ORDER BY c.priority DESC, c.id \
               LIMIT $3 \
               FOR UPDATE SKIP LOCKED)) \
         RETURNING {MESSAGE_COLUMNS}"
    )
}

/// A page of a queue browse: up to `$3` deliverable messages of queue `$1` that pass
/// `filter_sql` (alias `c`, parameters from `$6`), after position `($4, $5)`: plain ones in
/// delivery order (priority, then id) after priority `$4` / id `$5`, or grouped ones in id
/// order after id `$5`. Reads only; nothing is claimed.
pub fn browse(filter_sql: &str, grouped: bool) -> String {
    let (kind, after, order) = if grouped {
        (
            "c.group_id IS NOT NULL",
            "c.id > $5 AND $4::smallint IS NOT NULL",
            "c.id",
        )
    } else {
        (
            "c.group_id IS NULL",
            "(c.priority < $4 OR (c.priority = $4 AND c.id > $5))",
            "c.priority DESC, c.id",
        )
    };
    format!(
        "SELECT {MESSAGE_COLUMNS} FROM postbus.messages m \
         WHERE m.id = ANY(ARRAY( \
               SELECT c.id FROM postbus.messages c \
               WHERE c.queue_id = $1 AND c.owner IS NULL AND c.ready_at IS NULL AND {kind} \
                 AND (c.expires_at = 0 OR c.expires_at > $2) AND {after} \
                 AND ({filter_sql}) \
               ORDER BY {order} \
               LIMIT $3))"
    )
}

/// Takes (or confirms) a dispatch lease; a row comes back when this node holds it. A lease
/// held by a node that is gone is taken over; one held by SQL receivers (holder 0, see schema
/// V5) only once no SQL lease on the queue is left.
pub const ACQUIRE_LEASE: &str = "INSERT INTO postbus.queue_leases AS l (queue_id, kind, node_id) VALUES ($1, $2, $3) \
     ON CONFLICT (queue_id, kind) DO UPDATE SET node_id = excluded.node_id \
        WHERE l.node_id = excluded.node_id \
           OR (l.node_id > 0 AND l.node_id NOT IN (SELECT id FROM postbus.nodes)) \
           OR (l.node_id = 0 AND NOT EXISTS (SELECT 1 FROM postbus.leases s WHERE s.queue_id = l.queue_id)) \
     RETURNING node_id";

pub const RELEASE_LEASES: &str =
    "DELETE FROM postbus.queue_leases WHERE queue_id = $1 AND node_id = $2";

/// Scheduled and delayed messages whose time has come become deliverable.
pub const PROMOTE_SCHEDULED: &str = "WITH p AS (UPDATE postbus.messages SET ready_at = NULL \
        WHERE ready_at IS NOT NULL AND ready_at <= $1 RETURNING queue_id) \
     SELECT DISTINCT queue_id FROM p";

/// Expired messages nobody holds, a bounded number at a time.
pub const EXPIRED: &str = "SELECT m.id, m.queue_id, d.expiry_queue, d.name FROM postbus.messages m \
     JOIN postbus.destinations d ON d.id = m.queue_id \
     WHERE m.expires_at > 0 AND m.expires_at <= $1 AND m.owner IS NULL \
     ORDER BY m.expires_at LIMIT $2 FOR UPDATE OF m SKIP LOCKED";

pub const DELETE_BY_IDS: &str =
    "DELETE FROM postbus.messages WHERE id = ANY($1::bigint[]) AND owner IS NULL";

pub const MOVE_EXPIRED: &str = "UPDATE postbus.messages SET queue_id = $2, expires_at = 0, \
        dlq_reason = 'expired', origin = coalesce(origin, '/topic/' || topic, $3), topic = NULL \
     WHERE id = ANY($1::bigint[]) AND owner IS NULL";

pub const SWEEP_DEDUP: &str = "DELETE FROM postbus.dedup WHERE expires_at <= $1";
pub const SWEEP_CLIENT_TX: &str =
    "DELETE FROM postbus.client_transactions WHERE committed_at <= $1";

/// Also reads the database's clock (`crate::clock`).
pub const REGISTER_NODE: &str = "INSERT INTO postbus.nodes (name, hostname, pid, lease_ms) VALUES ($1, $2, $3, $4) \
     RETURNING id, postbus.now_ms()";

/// A live node renews its lease and reads the database's clock; no row means it was declared
/// dead and must stop acting.
pub const HEARTBEAT: &str =
    "UPDATE postbus.nodes SET heartbeat_at = now() WHERE id = $1 RETURNING postbus.now_ms()";

/// Declares dead the nodes whose lease ran out (and earlier incarnations of this node's name)
/// and returns their in-flight messages for redelivery, in one statement: a reaper that dies
/// half way leaves neither a dead node's row nor its messages held. Returns the queues that got
/// messages back.
pub const REAP_DEAD_NODES: &str = "WITH gone AS ( \
        DELETE FROM postbus.nodes \
        WHERE id <> $1 AND (heartbeat_at < now() - make_interval(secs => lease_ms / 1000.0) OR name = $2) \
        RETURNING id), \
     released AS ( \
        UPDATE postbus.messages SET owner = NULL, delivery_count = delivery_count + 1 \
        WHERE owner = ANY(ARRAY(SELECT id FROM gone)) RETURNING queue_id) \
     SELECT DISTINCT queue_id FROM released";

/// Returns messages held by nodes that no longer exist: a node declared dead while paused may
/// still claim before it learns it is fenced. One statement, so the node list and the messages
/// are read from the same snapshot (a node registers before it claims). Scans the in-flight
/// index, so it runs rarely, not with every heartbeat.
pub const RELEASE_ORPHANS: &str = "WITH released AS ( \
        UPDATE postbus.messages m SET owner = NULL, delivery_count = m.delivery_count + 1 \
        WHERE m.owner > 0 AND NOT EXISTS (SELECT 1 FROM postbus.nodes n WHERE n.id = m.owner) \
        RETURNING m.queue_id) \
     SELECT DISTINCT queue_id FROM released";

pub const DEREGISTER_NODE: &str = "WITH gone AS (DELETE FROM postbus.nodes WHERE id = $1 RETURNING id) \
     UPDATE postbus.messages SET owner = NULL, delivery_count = delivery_count + 1 \
     WHERE owner = ANY(ARRAY(SELECT id FROM gone))";

pub const DESTINATION_COLUMNS: &str = "id, kind, name, max_deliveries, redelivery_delay_ms, redelivery_backoff, \
     redelivery_max_delay_ms, dead_letter_queue, expiry_queue, dedup_window_ms, exclusive, auto_created, \
     audit_messages, max_depth";

pub const INSERT_DESTINATION: &str = "INSERT INTO postbus.destinations (kind, name, max_deliveries, \
        redelivery_delay_ms, redelivery_backoff, redelivery_max_delay_ms, dead_letter_queue, expiry_queue, \
        dedup_window_ms, exclusive, auto_created, audit_messages, max_depth) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) ON CONFLICT (kind, name) DO NOTHING";

/// Per-destination depth by state, and the oldest ready message's JMSTimestamp (the one at
/// the head of the queue: the lowest id of each priority). Ready counts are index-only scans
/// of the partial ready indexes (measured: 70 ms for a queue of 1,000,000, against 1.1 s for a
/// join over the table); in-flight and scheduled rows are few and read through their own
/// partial indexes. Meant for the metrics sampler and admin calls, not for every scrape.
pub const DESTINATION_STATS: &str = "SELECT d.id, d.kind, d.name, \
        (SELECT count(*) FROM postbus.messages m WHERE m.queue_id = d.id AND m.owner IS NULL \
            AND m.ready_at IS NULL AND m.group_id IS NULL) \
        + (SELECT count(*) FROM postbus.messages m WHERE m.queue_id = d.id AND m.owner IS NULL \
            AND m.ready_at IS NULL AND m.group_id IS NOT NULL) AS ready, \
        coalesce(f.n, 0) AS in_flight, \
        coalesce(s.n, 0) AS scheduled, \
        (SELECT min(o.sent_at) FROM postbus.messages o WHERE o.id IN ( \
            SELECT (SELECT m.id FROM postbus.messages m WHERE m.queue_id = d.id AND m.owner IS NULL \
                AND m.ready_at IS NULL AND m.group_id IS NULL AND m.priority = p ORDER BY m.id LIMIT 1) \
            FROM generate_series(0, 9) p \
            UNION ALL \
            SELECT (SELECT m.id FROM postbus.messages m WHERE m.queue_id = d.id AND m.owner IS NULL \
                AND m.ready_at IS NULL AND m.group_id IS NOT NULL ORDER BY m.id LIMIT 1))) AS oldest_ready \
     FROM postbus.destinations d \
     LEFT JOIN (SELECT queue_id, count(*) AS n FROM postbus.messages WHERE owner IS NOT NULL \
                GROUP BY queue_id) f ON f.queue_id = d.id \
     LEFT JOIN (SELECT queue_id, count(*) AS n FROM postbus.messages WHERE ready_at IS NOT NULL \
                GROUP BY queue_id) s ON s.queue_id = d.id \
     ORDER BY d.kind, d.name";

pub const PURGE: &str = "DELETE FROM postbus.messages WHERE queue_id = $1 AND owner IS NULL";
pub const COUNT_MESSAGES: &str = "SELECT count(*) FROM postbus.messages WHERE queue_id = $1";
pub const DELETE_DESTINATION_DEDUP: &str = "DELETE FROM postbus.dedup WHERE queue_id = $1";
pub const DELETE_DESTINATION: &str = "DELETE FROM postbus.destinations WHERE id = $1";

/// The subscriptions whose pattern matches each topic name in `$1` (see schema V3), locked
/// so none is deleted before this publish commits; one being deleted (locked FOR UPDATE) is
/// skipped.
pub const MATCHING_SUBSCRIPTIONS: &str = "SELECT t.name, s.id, s.selector, \
        (s.max_depth > 0 AND s.sampled_depth >= s.max_depth) AS full \
     FROM unnest($1::text[]) AS t(name) \
     JOIN postbus.destinations s ON s.kind = 'subscription' AND t.name ~ s.topic_regex \
     FOR KEY SHARE OF s SKIP LOCKED";

/// `$1` fresh message ids, in increasing order.
pub const ALLOCATE_IDS: &str =
    "SELECT ARRAY(SELECT nextval('postbus.message_id_seq') FROM generate_series(1, $1::int))";

/// Topic copies: like [`INSERT_MESSAGES`] plus the published message's id and topic; the body
/// is NULL when it is stored once in `postbus.payloads`.
pub const INSERT_COPIES: &str = "INSERT INTO postbus.messages (id, queue_id, owner, priority, ready_at, expires_at, \
        persistent, sent_at, group_id, group_seq, correlation_id, reply_to, jms_type, content_type, user_id, \
        traceparent, tracestate, properties, property_types, body, publish_id, topic) \
     SELECT * FROM unnest($1::bigint[], $2::int[], $3::bigint[], $4::smallint[], $5::bigint[], $6::bigint[], \
        $7::bool[], $8::bigint[], $9::text[], $10::int[], $11::text[], $12::text[], $13::text[], $14::text[], \
        $15::text[], $16::text[], $17::text[], $18::jsonb[], $19::jsonb[], $20::bytea[], $21::bigint[], $22::text[])";

/// Bodies shared by several topic copies.
pub const INSERT_PAYLOADS: &str = "INSERT INTO postbus.payloads (id, body, created_at) \
     SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::bigint[])";

/// Removes shared bodies no copy points at any more (older than `$1`, so a publish still
/// committing is never looked at).
pub const SWEEP_PAYLOADS: &str = "DELETE FROM postbus.payloads p \
     WHERE p.created_at < $1 \
       AND NOT EXISTS (SELECT 1 FROM postbus.messages m WHERE m.publish_id = p.id)";

/// The subscription-specific columns of a destination row.
pub const SUBSCRIPTION_COLUMNS: &str =
    "topic_pattern, selector, durable, shared, client_id, subscription_name, node_id";

/// Creates a subscription unless one of that name exists.
pub const INSERT_SUBSCRIPTION: &str = "INSERT INTO postbus.destinations (kind, name, max_deliveries, \
        redelivery_delay_ms, redelivery_backoff, redelivery_max_delay_ms, dead_letter_queue, expiry_queue, \
        dedup_window_ms, exclusive, auto_created, topic_pattern, topic_regex, selector, durable, shared, \
        client_id, subscription_name, node_id, max_depth) \
     VALUES ('subscription', $1, $2, $3, $4, $5, $6, $7, $8, false, true, $9, $10, $11, $12, $13, $14, $15, $16, $17) \
     ON CONFLICT (kind, name) DO NOTHING";

/// Locks a destination row before its deletion: waits for publishes copying to it (they hold
/// it FOR KEY SHARE), and publishes after it skip it.
pub const LOCK_DESTINATION: &str =
    "SELECT durable FROM postbus.destinations WHERE id = $1 FOR UPDATE";

/// Serialises decisions about a subscription (detach, remove) without blocking publishes:
/// FOR NO KEY UPDATE does not conflict with their FOR KEY SHARE, so a subscription that stays
/// keeps getting its copies while a consumer detaches.
pub const LOCK_SUBSCRIPTION_FOR_DECISION: &str =
    "SELECT durable FROM postbus.destinations WHERE id = $1 FOR NO KEY UPDATE";

/// Every message of destination `$1`, found through the partial indexes (there is no plain
/// index on queue_id): ready plain, ready grouped, in flight, waiting for a time.
pub const DELETE_ALL_MESSAGES: &str = "DELETE FROM postbus.messages WHERE id IN ( \
        SELECT id FROM postbus.messages WHERE queue_id = $1 AND owner IS NULL AND ready_at IS NULL AND group_id IS NULL \
        UNION ALL SELECT id FROM postbus.messages WHERE queue_id = $1 AND owner IS NULL AND ready_at IS NULL AND group_id IS NOT NULL \
        UNION ALL SELECT id FROM postbus.messages WHERE owner IS NOT NULL AND queue_id = $1 \
        UNION ALL SELECT id FROM postbus.messages WHERE ready_at IS NOT NULL AND queue_id = $1)";

/// Deletes a subscription row (its copies are deleted first, in the same transaction).
pub const DELETE_SUBSCRIPTION: &str =
    "DELETE FROM postbus.destinations WHERE id = $1 AND kind = 'subscription'";

/// This node has consumers on subscription `$1`.
pub const ATTACH_SUBSCRIPTION: &str = "INSERT INTO postbus.subscription_consumers (subscription_id, node_id) \
     VALUES ($1, $2) ON CONFLICT DO NOTHING";

/// This node has no consumer left on subscription `$1`.
pub const DETACH_SUBSCRIPTION: &str =
    "DELETE FROM postbus.subscription_consumers WHERE subscription_id = $1 AND node_id = $2";

/// Whether any node still has consumers on subscription `$1`.
pub const SUBSCRIPTION_ATTACHED: &str =
    "SELECT EXISTS (SELECT 1 FROM postbus.subscription_consumers WHERE subscription_id = $1)";

/// Forgets the consumers of broker nodes that are gone.
pub const DETACH_GONE_NODES: &str = "DELETE FROM postbus.subscription_consumers c \
     WHERE NOT EXISTS (SELECT 1 FROM postbus.nodes n WHERE n.id = c.node_id)";

/// Non-durable subscriptions nobody consumes from (their last consumer's node is gone).
pub const UNATTACHED_SUBSCRIPTIONS: &str = "SELECT s.id FROM postbus.destinations s \
     WHERE s.kind = 'subscription' AND NOT s.durable \
       AND NOT EXISTS (SELECT 1 FROM postbus.subscription_consumers c WHERE c.subscription_id = s.id)";

/// Creates a connection's temporary queue (kind 'temp-queue'), owned by broker node `$2`.
pub const INSERT_TEMP_QUEUE: &str = "INSERT INTO postbus.destinations (kind, name, dead_letter_queue, \
        auto_created, node_id) VALUES ('temp-queue', $1, $3, true, $2) \
     ON CONFLICT (kind, name) DO NOTHING";

/// Temporary queues whose broker node is gone (their connections went with it).
pub const GONE_NODE_TEMP_QUEUES: &str = "SELECT t.id FROM postbus.destinations t \
     WHERE t.kind = 'temp-queue' \
       AND NOT EXISTS (SELECT 1 FROM postbus.nodes n WHERE n.id = t.node_id)";

/// The topics with publications sent through SQL waiting to be copied to subscriptions.
pub const PENDING_PUBLICATIONS: &str = "SELECT DISTINCT m.queue_id FROM postbus.messages m \
     WHERE m.topic IS NOT NULL AND m.publish_id IS NULL";

/// Serialises the fan-out of one topic's SQL publications across brokers (a transaction-scoped
/// advisory lock in a key space of its own), so they are copied in publication order.
pub const LOCK_PUBLICATIONS: &str = "SELECT pg_try_advisory_xact_lock(1886352244, $1)";

/// Up to `$2` publications of topic `$1`, oldest first, with their delivery time last.
pub const PUBLICATIONS: &str = "SELECT m.id, m.queue_id, m.priority, m.expires_at, m.delivery_count, m.persistent, \
     m.sent_at, m.group_id, m.group_seq, m.correlation_id, m.reply_to, m.jms_type, m.content_type, \
     m.user_id, m.traceparent, m.tracestate, m.properties, m.property_types, m.dlq_reason, m.origin, \
     m.last_error, m.body, m.publish_id, m.topic, m.ready_at \
     FROM postbus.messages m \
     WHERE m.queue_id = $1 AND m.topic IS NOT NULL AND m.publish_id IS NULL \
     ORDER BY m.id LIMIT $2 FOR UPDATE";

/// Publications that have been copied.
pub const DELETE_PUBLICATIONS: &str =
    "DELETE FROM postbus.messages WHERE id = ANY($1::bigint[]) AND publish_id IS NULL";

/// SQL receivers' leases that ran out: their messages go back (schema V6).
pub const EXPIRE_LEASES: &str = "SELECT postbus.expire_leases()";

/// The same, for queue `$1` only (what a receive of that queue does first).
pub const EXPIRE_QUEUE_LEASES: &str = "SELECT postbus.expire_leases($1)";

/// The SQL API's receive (schema V6), for the HTTP API: `$1` destination, `$2` count, `$3`
/// lease in ms.
pub const SQL_RECEIVE: &str = "SELECT message_id, receipt, body, properties, property_types, content_type, \
     correlation_id, reply_to, jms_type, priority, group_id, group_seq, sent_at, expires_at, delivery_count, \
     redelivered, user_id, traceparent, tracestate, topic, origin, dlq_reason, last_error \
     FROM postbus.receive($1, $2, $3)";

pub const SQL_ACK: &str = "SELECT postbus.ack($1)";
pub const SQL_NACK: &str = "SELECT postbus.nack($1, $2)";

/// A destination for a receive: (id, kind), NULLs when it does not exist.
pub const RESOLVE_FOR_RECEIVE: &str =
    "SELECT d.id, d.kind FROM postbus.resolve_destination($1, false) d";

pub const OPEN_LEASE: &str = "SELECT postbus.open_lease($1, $2)";

/// Messages a selective receive claimed and its selector rejected: back, untouched.
pub const GIVE_BACK_LEASED: &str =
    "UPDATE postbus.messages SET owner = NULL WHERE id = ANY($1::bigint[]) AND owner = $2";

pub const DEAD_LETTER_LEASED: &str =
    "SELECT postbus.dead_letter_held($1, d) FROM postbus.destinations d WHERE d.id = $2";

/// What lease `$1` holds, in the shape of [`SQL_RECEIVE`].
pub const LEASED: &str = "SELECT * FROM postbus.leased($1)";

pub const END_LEASE_IF_EMPTY: &str = "SELECT postbus.end_lease_if_empty($1)";

/// Appends audit records to the hash chain (schema V5).
pub const AUDIT_APPEND: &str =
    "SELECT postbus.audit_append($1::text[], $2::text[], $3::text[], $4::jsonb[], $5::bigint)";

/// The columns of an audit record, `detail` also as the text the chain hashed.
macro_rules! audit_columns {
    () => {
        "seq, at_us, node_id, kind, principal, destination, detail, detail::text, prev_hash, hash, \
         to_char(to_timestamp(at_us / 1000000.0) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
    };
}

pub const AUDIT_PAGE: &str = concat!(
    "SELECT ",
    audit_columns!(),
    " FROM postbus.audit_log WHERE seq > $1 ORDER BY seq LIMIT $2"
);

pub const AUDIT_TAIL: &str = concat!(
    "SELECT ",
    audit_columns!(),
    " FROM postbus.audit_log ORDER BY seq DESC LIMIT $1"
);

pub const AUDIT_SEQ_SINCE: &str = "SELECT coalesce(min(seq), (SELECT seq + 1 FROM postbus.audit_head)) \
     FROM postbus.audit_log WHERE at_us >= (extract(epoch FROM $1::text::timestamptz) * 1000000)::bigint";

pub const AUDIT_HEAD: &str = "SELECT seq, hash FROM postbus.audit_head";

/// Records sampled depths of destinations that have a depth limit: `$1` ids, `$2` depths.
pub const RECORD_SAMPLED_DEPTHS: &str = "UPDATE postbus.destinations d SET sampled_depth = u.depth \
     FROM unnest($1::int[], $2::bigint[]) AS u(id, depth) \
     WHERE d.id = u.id AND d.max_depth > 0 AND d.sampled_depth <> u.depth";

/// Stores a selector's exact SQL translation for SQL receivers (schema V6).
pub const REGISTER_SELECTOR: &str = "INSERT INTO postbus.selectors (selector, condition, params) \
     VALUES ($1, $2, $3) ON CONFLICT (selector) DO UPDATE \
     SET condition = excluded.condition, params = excluded.params, registered_at = now()";

// --- Operators' message management (admin API; `manage.rs`) ---

/// [`MESSAGE_COLUMNS`] without the body (an empty one in its place), then the row's state
/// (`owner`, `ready_at`) and the body's size: what a listing shows without reading bodies.
pub const SUMMARY_COLUMNS: &str = concat!(
    message_head_columns!(),
    "''::bytea, m.publish_id, m.topic, m.owner, m.ready_at, \
     coalesce(octet_length(m.body), (SELECT octet_length(p.body) FROM postbus.payloads p WHERE p.id = m.publish_id))"
);

/// A page of every message of queue `$1` (any state) with an id above `$2`, in id order, at
/// most `$3`, that pass `filter_sql` (alias `c`, parameters from `$4`). Bodies are not read.
pub fn manage_page(filter_sql: &str) -> String {
    format!(
        "SELECT {SUMMARY_COLUMNS} FROM postbus.messages m \
         WHERE m.id = ANY(ARRAY( \
               SELECT c.id FROM postbus.messages c \
               WHERE c.queue_id = $1 AND c.id > $2 AND ({filter_sql}) \
               ORDER BY c.id LIMIT $3)) \
         ORDER BY m.id"
    )
}

/// One message of queue `$2` with its body, its state and its size.
pub const MANAGE_ONE: &str = concat!(
    "SELECT ",
    message_head_columns!(),
    message_body_column!(),
    ", m.publish_id, m.topic, m.owner, m.ready_at, 0 \
     FROM postbus.messages m WHERE m.id = $1 AND m.queue_id = $2"
);

/// Whether message `$1` of queue `$2` exists and is held by a consumer.
pub const MANAGE_HELD: &str =
    "SELECT owner IS NOT NULL FROM postbus.messages WHERE id = $1 AND queue_id = $2";

/// Deletes message `$1` of queue `$2` unless a consumer holds it.
pub const MANAGE_DELETE: &str =
    "DELETE FROM postbus.messages WHERE id = $1 AND queue_id = $2 AND owner IS NULL";

/// Moves message `$1` of queue `$2` to queue `$3` unless a consumer holds it, as a fresh,
/// deliverable message of that queue: delivery count and dead-letter fields cleared (else a
/// message moved out of a dead-letter queue would go straight back), a topic copy no longer
/// a copy.
pub const MANAGE_MOVE: &str = "UPDATE postbus.messages SET queue_id = $3, delivery_count = 0, \
        ready_at = NULL, dlq_reason = NULL, origin = NULL, last_error = NULL, topic = NULL \
     WHERE id = $1 AND queue_id = $2 AND owner IS NULL";

/// Candidates of a replay: messages of queue `$1` nobody holds, id above `$2`, in id order, at
/// most `$3`, passing `filter_sql` (parameters from `$4`), locked against consumers and other
/// replays. Bodies are not read.
pub fn replay_candidates(filter_sql: &str) -> String {
    format!(
        "SELECT {SUMMARY_COLUMNS} FROM postbus.messages m \
         WHERE m.queue_id = $1 AND m.owner IS NULL AND m.id > $2 AND m.id = ANY(ARRAY( \
               SELECT c.id FROM postbus.messages c \
               WHERE c.queue_id = $1 AND c.owner IS NULL AND c.id > $2 AND ({filter_sql}) \
               ORDER BY c.id LIMIT $3)) \
         ORDER BY m.id FOR UPDATE SKIP LOCKED"
    )
}

/// Replays messages `$1` to queues `$2` (pairwise): back to deliverable, delivery count and
/// dead-letter fields cleared.
pub const REPLAY_MOVE: &str = "UPDATE postbus.messages m SET queue_id = u.target, delivery_count = 0, \
        ready_at = NULL, dlq_reason = NULL, origin = NULL, last_error = NULL, topic = NULL \
     FROM unnest($1::bigint[], $2::int[]) AS u(id, target) \
     WHERE m.id = u.id AND m.owner IS NULL";

/// Queue ids by name (kind 'queue').
pub const QUEUE_IDS_BY_NAME: &str =
    "SELECT name, id FROM postbus.destinations WHERE kind = 'queue' AND name = ANY($1)";

/// Writes a destination's settings.
pub const UPDATE_DESTINATION_SETTINGS: &str = "UPDATE postbus.destinations SET max_deliveries = $2, \
        redelivery_delay_ms = $3, redelivery_backoff = $4, redelivery_max_delay_ms = $5, \
        dead_letter_queue = $6, expiry_queue = $7, dedup_window_ms = $8, exclusive = $9, \
        audit_messages = $10, max_depth = $11, auto_created = false \
     WHERE id = $1";

/// What a committed transaction means on this server: `fsync`, `synchronous_commit`,
/// `synchronous_standby_names`, and how many standbys are attached synchronously (sync or
/// quorum) and at all.
pub const DURABILITY: &str = "SELECT current_setting('fsync'), current_setting('synchronous_commit'), \
        current_setting('synchronous_standby_names'), \
        (SELECT count(*) FROM pg_stat_replication WHERE sync_state IN ('sync', 'quorum')), \
        (SELECT count(*) FROM pg_stat_replication)";
