-- postbus schema, version 6: the SQL API. Applications send, receive, acknowledge and
-- negatively acknowledge inside their own database transactions; a rollback undoes all of it.
--
--   postbus.send(destination, body, properties, ...)      -> the message id ('ID:<n>')
--   postbus.receive(destination, max_messages, lease_ms)  -> the messages, now held by a lease
--   postbus.ack(handle)  /  postbus.nack(handle, ...)     -> whether the message was still held
--
-- A receive holds its messages under a lease: a negative `owner` (broker nodes hold theirs under
-- their positive node id), with a row in postbus.leases saying until when. Acknowledge inside
-- the same transaction and nothing else is ever written; commit without acknowledging and the
-- messages stay held until ack, nack or the lease's end, when they return to the queue with
-- their delivery counted. A message published to a topic through SQL is stored as a
-- publication row of the topic (topic set, publish_id NULL); a broker copies it to the
-- matching subscriptions (exact JMS selectors are evaluated there) as soon as the commit wakes
-- it. docs/sql-api.md has the contract and the fine print.

CREATE SEQUENCE postbus.lease_id_seq AS bigint;

-- Messages held by SQL (and HTTP) receivers: owner = id (negative) until expires_at (epoch ms
-- on the database's clock).
CREATE TABLE postbus.leases (
    id         bigint  PRIMARY KEY CHECK (id < 0),
    queue_id   integer NOT NULL,
    expires_at bigint  NOT NULL,
    -- Who received: the database role and application_name, for operators.
    holder     text    NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX leases_expiry ON postbus.leases (expires_at);
CREATE INDEX leases_queue ON postbus.leases (queue_id);

-- Groups with a message in flight, per queue: SQL receivers and the broker's grouped claim
-- skip them (messages_in_flight has no queue_id, so it would read every held message).
CREATE INDEX messages_groups_held ON postbus.messages (queue_id, group_id)
    WHERE group_id IS NOT NULL AND owner IS NOT NULL;

-- Topic publications sent through SQL, waiting for a broker to copy them to subscriptions.
CREATE INDEX messages_publications ON postbus.messages (queue_id, id)
    WHERE topic IS NOT NULL AND publish_id IS NULL;

-- JMS selectors SQL receivers may use: exact SQL translations, registered by
-- `postbus selector register` (the translator is the broker's; a selector whose SQL would only
-- approximate it is refused there). `condition` is a condition on the message alias `c` whose
-- parameters are `$1[1]`, `$1[2]`... of `params`; only postbus writes this table.
CREATE TABLE postbus.selectors (
    selector      text PRIMARY KEY,
    condition     text   NOT NULL,
    params        text[] NOT NULL,
    registered_at timestamptz NOT NULL DEFAULT now()
);

-- Epoch milliseconds on the database's clock (the statement's time, not the transaction's).
CREATE FUNCTION postbus.now_ms() RETURNS bigint LANGUAGE sql VOLATILE
AS $$ SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint $$;

-- '/queue/NAME' (or a bare NAME), '/topic/NAME', '/temp-queue/NAME', '/subscription/NAME' to
-- its destination row; a missing queue or topic is created when `create_missing`. NULL when
-- it does not exist.
CREATE FUNCTION postbus.resolve_destination(destination text, create_missing boolean)
RETURNS postbus.destinations LANGUAGE plpgsql AS $$
DECLARE
    k text;
    n text;
    d postbus.destinations;
BEGIN
    IF destination IS NULL THEN
        RAISE EXCEPTION 'postbus: the destination is NULL'
            USING ERRCODE = '22004', HINT = 'name a destination, e.g. ''/queue/orders''';
    ELSIF destination LIKE '/queue/%' THEN
        k := 'queue'; n := substr(destination, 8);
    ELSIF destination LIKE '/topic/%' THEN
        k := 'topic'; n := substr(destination, 8);
    ELSIF destination LIKE '/temp-queue/%' THEN
        k := 'temp-queue'; n := substr(destination, 13);
    ELSIF destination LIKE '/subscription/%' THEN
        k := 'subscription'; n := substr(destination, 15);
    ELSIF destination LIKE '/%' THEN
        RAISE EXCEPTION 'postbus: % is not a destination', quote_literal(destination)
            USING ERRCODE = '22023',
                  HINT = 'use /queue/NAME (or just NAME), /topic/NAME, /temp-queue/NAME or /subscription/NAME';
    ELSE
        k := 'queue'; n := destination;
    END IF;
    SELECT * INTO d FROM postbus.destinations x WHERE x.kind = k AND x.name = n;
    IF FOUND OR NOT create_missing OR k NOT IN ('queue', 'topic') THEN
        RETURN d;
    END IF;
    IF length(n) > 255 OR n !~ '^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$' THEN
        RAISE EXCEPTION 'postbus: % is not a valid % name', quote_literal(n), k
            USING ERRCODE = '22023',
                  HINT = 'names are dot-separated segments of letters, digits, _ and -, at most 255 bytes';
    END IF;
    INSERT INTO postbus.destinations (kind, name, auto_created) VALUES (k, n, true)
        ON CONFLICT (kind, name) DO NOTHING;
    SELECT * INTO d FROM postbus.destinations x WHERE x.kind = k AND x.name = n;
    RETURN d;
END $$;

-- Checks application properties (a flat JSON object, as the broker stores them) and their
-- declared Java types; raises with the property's name when something is wrong.
CREATE FUNCTION postbus.check_properties(properties jsonb, property_types jsonb)
RETURNS void LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    k text;
    v jsonb;
    t text;
    num numeric;
BEGIN
    IF jsonb_typeof(properties) <> 'object' THEN
        RAISE EXCEPTION 'postbus: properties must be a JSON object, not %', jsonb_typeof(properties)
            USING ERRCODE = '22023', HINT = 'e.g. ''{"region": "EU", "amount": 125.5}''';
    END IF;
    IF property_types IS NOT NULL AND jsonb_typeof(property_types) <> 'object' THEN
        RAISE EXCEPTION 'postbus: property_types must be a JSON object'
            USING ERRCODE = '22023', HINT = 'e.g. ''{"count": "int"}''';
    END IF;
    FOR k, v IN SELECT * FROM jsonb_each(properties) LOOP
        IF k !~ '^[[:alpha:]_$][[:alnum:]_$]*$' THEN
            RAISE EXCEPTION 'postbus: property name % is not a Java identifier', quote_literal(k)
                USING ERRCODE = '22023';
        END IF;
        IF k LIKE 'JMS%' THEN
            RAISE EXCEPTION 'postbus: property name % is reserved: names starting with JMS belong to the broker', quote_literal(k)
                USING ERRCODE = '22023', HINT = 'use the parameters for JMS header fields (correlation_id, jms_type, group_id, ...)';
        END IF;
        t := property_types ->> k;
        IF jsonb_typeof(v) NOT IN ('string', 'boolean', 'number') THEN
            RAISE EXCEPTION 'postbus: property % must be a string, a boolean or a number, not %', k, jsonb_typeof(v)
                USING ERRCODE = '22023';
        END IF;
        IF t IS NOT NULL AND t NOT IN ('string', 'boolean', 'byte', 'short', 'int', 'long', 'float', 'double') THEN
            RAISE EXCEPTION 'postbus: property % has the unknown type %', k, quote_literal(t)
                USING ERRCODE = '22023', HINT = 'types are string, boolean, byte, short, int, long, float, double';
        END IF;
        IF (t = 'string' AND jsonb_typeof(v) <> 'string') OR (t = 'boolean' AND jsonb_typeof(v) <> 'boolean')
           OR (t IN ('byte', 'short', 'int', 'long', 'float', 'double') AND jsonb_typeof(v) <> 'number') THEN
            RAISE EXCEPTION 'postbus: property % is declared % but its value is a %', k, t, jsonb_typeof(v)
                USING ERRCODE = '22023';
        END IF;
        IF jsonb_typeof(v) = 'number' THEN
            num := v::text::numeric;
            IF abs(num) > 1.7976931348623157e308 THEN
                RAISE EXCEPTION 'postbus: property % is out of range for a double', k USING ERRCODE = '22003';
            END IF;
            IF (t IN ('byte', 'short', 'int', 'long') OR (t IS NULL AND scale(num) = 0 AND v::text !~ '[.eE]'))
               AND (v::text ~ '[.eE]' OR num NOT BETWEEN
                   (CASE t WHEN 'byte' THEN -128 WHEN 'short' THEN -32768 WHEN 'int' THEN -2147483648 ELSE -9223372036854775808 END)
                   AND (CASE t WHEN 'byte' THEN 127 WHEN 'short' THEN 32767 WHEN 'int' THEN 2147483647 ELSE 9223372036854775807 END)) THEN
                RAISE EXCEPTION 'postbus: property % = % is not a % value', k, v::text, coalesce(t, 'long')
                    USING ERRCODE = '22003',
                          HINT = 'integer types take integers written without a fraction or exponent, in range; integers without a declared type are longs; declare "double" for larger numbers';
            END IF;
        END IF;
    END LOOP;
    IF property_types IS NOT NULL THEN
        FOR k IN SELECT jsonb_object_keys(property_types) LOOP
            IF NOT properties ? k THEN
                RAISE EXCEPTION 'postbus: property_types names %, which is not among the properties', quote_literal(k)
                    USING ERRCODE = '22023';
            END IF;
        END LOOP;
    END IF;
END $$;

-- Sends a message to a queue, topic or temporary queue inside the caller's transaction, and
-- returns its JMSMessageID. Nothing is visible to consumers before the caller commits, and a
-- rollback leaves no trace. JMSXUserID is the calling database role.
CREATE FUNCTION postbus.send(
    destination     text,
    body            bytea,
    properties      jsonb   DEFAULT '{}',
    content_type    text    DEFAULT NULL,
    dedup_id        text    DEFAULT NULL,
    delay_ms        bigint  DEFAULT 0,
    priority        integer DEFAULT 4,
    group_id        text    DEFAULT NULL,
    group_seq       integer DEFAULT NULL,
    correlation_id  text    DEFAULT NULL,
    reply_to        text    DEFAULT NULL,
    jms_type        text    DEFAULT NULL,
    time_to_live_ms bigint  DEFAULT 0,
    persistent      boolean DEFAULT true,
    property_types  jsonb   DEFAULT NULL,
    traceparent     text    DEFAULT NULL,
    tracestate      text    DEFAULT NULL)
RETURNS text LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp SET enable_seqscan = off AS $$
#variable_conflict use_column
DECLARE
    d postbus.destinations;
    now_ms bigint := postbus.now_ms();
    new_id bigint;
    earlier bigint;
BEGIN
    IF send.body IS NULL THEN
        RAISE EXCEPTION 'postbus: the body is NULL' USING ERRCODE = '22004', HINT = 'send ''''::bytea for an empty body';
    END IF;
    IF send.priority IS NULL OR send.priority NOT BETWEEN 0 AND 9 THEN
        RAISE EXCEPTION 'postbus: priority % is not between 0 and 9', send.priority USING ERRCODE = '22023';
    END IF;
    IF coalesce(send.delay_ms, -1) < 0 OR coalesce(send.time_to_live_ms, -1) < 0 THEN
        RAISE EXCEPTION 'postbus: delay_ms and time_to_live_ms must be 0 or more' USING ERRCODE = '22023';
    END IF;
    PERFORM postbus.check_properties(coalesce(send.properties, '{}'), send.property_types);
    d := postbus.resolve_destination(send.destination, true);
    IF d.id IS NULL THEN
        RAISE EXCEPTION 'postbus: % does not exist', send.destination USING ERRCODE = '42704',
            HINT = 'temporary queues are created by their connection; check the reply-to address';
    ELSIF d.kind = 'subscription' THEN
        RAISE EXCEPTION 'postbus: cannot send to a subscription (%)', send.destination USING ERRCODE = '22023',
            HINT = 'send to the topic; its subscriptions get copies';
    END IF;

    new_id := nextval('postbus.message_id_seq');
    IF send.dedup_id IS NOT NULL THEN
        -- A live record with the same id means a duplicate: return the first message's id.
        -- A concurrent sender of the same id waits here until its transaction ends.
        INSERT INTO postbus.dedup AS x (queue_id, dedup_id, message_id, expires_at)
        VALUES (d.id, send.dedup_id, new_id, now_ms + d.dedup_window_ms)
        ON CONFLICT (queue_id, dedup_id) DO UPDATE
            SET message_id = excluded.message_id, expires_at = excluded.expires_at
            WHERE x.expires_at <= now_ms;
        IF NOT FOUND THEN
            SELECT x.message_id INTO earlier FROM postbus.dedup x
            WHERE x.queue_id = d.id AND x.dedup_id = send.dedup_id;
            RETURN 'ID:' || earlier;
        END IF;
    END IF;

    INSERT INTO postbus.messages (id, queue_id, priority, ready_at, expires_at, persistent, sent_at,
        group_id, group_seq, correlation_id, reply_to, jms_type, content_type, user_id, traceparent,
        tracestate, properties, property_types, body, topic)
    VALUES (new_id, d.id, send.priority,
        CASE WHEN send.delay_ms > 0 THEN now_ms + send.delay_ms END,
        CASE WHEN send.time_to_live_ms > 0 THEN now_ms + send.time_to_live_ms ELSE 0 END,
        send.persistent, now_ms, send.group_id, send.group_seq, send.correlation_id, send.reply_to,
        send.jms_type, send.content_type, session_user, send.traceparent, send.tracestate,
        nullif(coalesce(send.properties, '{}'), '{}'), nullif(send.property_types, '{}'), send.body,
        CASE WHEN d.kind = 'topic' THEN d.name END);
    IF d.audit_messages THEN
        PERFORM postbus.audit_append(ARRAY['message.sent'], ARRAY[session_user::text],
            ARRAY['/' || d.kind || '/' || d.name], ARRAY[jsonb_build_object('message_id', 'ID:' || new_id, 'via', 'sql')]);
    END IF;
    -- The same wake-up the broker's own writers send; delivered only if the caller commits.
    PERFORM pg_notify('postbus_wake', CASE WHEN d.kind = 'topic' THEN 't' ELSE '' END || d.id);
    RETURN 'ID:' || new_id;
END $$;

-- Returns the messages of leases that ran out to their queues, their delivery counted (the
-- consumer saw them and did not settle them): all queues', or only queue `queue_id`'s. Lease
-- rows are taken FOR UPDATE SKIP LOCKED, so expirers never wait for each other (a receiver
-- expires only its own queue's leases, inside its transaction). Returns how many came back.
CREATE FUNCTION postbus.expire_leases(queue_id integer DEFAULT NULL) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp SET enable_seqscan = off AS $$
DECLARE
    gone bigint[];
    queues text[];
    n integer := 0;
    k integer;
BEGIN
    SELECT array_agg(l.id) INTO gone FROM (
        SELECT x.id FROM postbus.leases x
        WHERE x.expires_at <= postbus.now_ms()
          AND (expire_leases.queue_id IS NULL OR x.queue_id = expire_leases.queue_id)
        FOR UPDATE SKIP LOCKED) l;
    IF gone IS NULL THEN
        RETURN 0;
    END IF;
    WITH back AS (
        UPDATE postbus.messages m SET owner = NULL, delivery_count = m.delivery_count + 1
        WHERE m.owner = ANY(gone) RETURNING m.queue_id)
    SELECT array_agg(DISTINCT b.queue_id::text), count(*) INTO queues, n FROM back b;
    DELETE FROM postbus.leases WHERE id = ANY(gone);
    -- A NOTIFY payload must stay under 8000 bytes.
    FOR k IN 0 .. coalesce(cardinality(queues), 0) - 1 BY 500 LOOP
        PERFORM pg_notify('postbus_wake', array_to_string(queues[k + 1 : k + 500], ','));
    END LOOP;
    RETURN n;
END $$;

-- Opens a lease on queue `queue_id` for lease_ms, for the calling role.
CREATE FUNCTION postbus.open_lease(queue_id integer, lease_ms integer) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    lease bigint := -nextval('postbus.lease_id_seq');
BEGIN
    INSERT INTO postbus.leases (id, queue_id, expires_at, holder)
    VALUES (lease, open_lease.queue_id, postbus.now_ms() + open_lease.lease_ms,
            session_user || coalesce(' (' || nullif(current_setting('application_name', true), '') || ')', ''));
    RETURN lease;
END $$;

-- Moves the messages `lease` took that were delivered max-deliveries times to the queue's
-- dead-letter queue (they are not handed to the receiver).
CREATE FUNCTION postbus.dead_letter_held(lease bigint, d postbus.destinations) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    dlq postbus.destinations;
    last_seq bigint;
BEGIN
    IF d.name LIKE 'DLQ.%' OR NOT EXISTS (
        SELECT 1 FROM postbus.messages m WHERE m.owner = lease AND m.delivery_count >= d.max_deliveries) THEN
        RETURN;
    END IF;
    dlq := postbus.resolve_destination('/queue/' || coalesce(d.dead_letter_queue, 'DLQ.' || d.name), true);
    WITH moved AS (
        UPDATE postbus.messages m SET owner = NULL, queue_id = dlq.id,
            dlq_reason = format('delivered %s times (max-deliveries %s)', m.delivery_count, d.max_deliveries),
            origin = coalesce(m.origin, '/topic/' || m.topic, '/' || d.kind || '/' || d.name),
            topic = NULL
        WHERE m.owner = lease AND m.delivery_count >= d.max_deliveries
        RETURNING m.id, m.publish_id, m.origin, m.dlq_reason)
    SELECT postbus.audit_append(
        array_agg('message.dead_lettered'::text), array_agg(session_user::text),
        array_agg('/queue/' || dlq.name),
        array_agg(jsonb_build_object('message_id', 'ID:' || coalesce(x.publish_id, x.id),
                                     'from', x.origin, 'reason', x.dlq_reason)))
    INTO last_seq FROM moved x;
    PERFORM pg_notify('postbus_wake', dlq.id::text);
END $$;

-- One received message, as postbus.receive returns it.
CREATE TYPE postbus.received AS (
    message_id     text,
    receipt        text,
    body           bytea,
    properties     jsonb,
    property_types jsonb,
    content_type   text,
    correlation_id text,
    reply_to       text,
    jms_type       text,
    priority       smallint,
    group_id       text,
    group_seq      integer,
    sent_at        bigint,
    expires_at     bigint,
    delivery_count integer,
    redelivered    boolean,
    user_id        text,
    traceparent    text,
    tracestate     text,
    topic          text,
    origin         text,
    dlq_reason     text,
    last_error     text);

-- What a receiver gets: the messages `lease` holds, ungrouped ones first (best priority, then
-- FIFO), then grouped ones in order.
CREATE FUNCTION postbus.leased(lease bigint)
RETURNS SETOF postbus.received
LANGUAGE sql STABLE AS $$
    SELECT 'ID:' || coalesce(m.publish_id, m.id), m.id || ':' || (-lease),
           coalesce(m.body, (SELECT p.body FROM postbus.payloads p WHERE p.id = m.publish_id)),
           coalesce(m.properties, '{}'), m.property_types, m.content_type, m.correlation_id,
           m.reply_to, m.jms_type, m.priority, m.group_id, m.group_seq, m.sent_at, m.expires_at,
           m.delivery_count + 1, m.delivery_count > 0, m.user_id, m.traceparent, m.tracestate,
           m.topic, m.origin, m.dlq_reason, m.last_error
    FROM postbus.messages m WHERE m.owner = lease
    ORDER BY m.group_id IS NOT NULL, CASE WHEN m.group_id IS NULL THEN m.priority END DESC NULLS LAST, m.id;
$$;

-- Ends the lease of `lease` when it holds nothing any more; once the queue's last SQL lease
-- is gone a broker may take over its groups (ACQUIRE_LEASE looks for leases).
CREATE FUNCTION postbus.end_lease_if_empty(lease bigint) RETURNS void
LANGUAGE sql AS $$
    DELETE FROM postbus.leases l WHERE l.id = lease
      AND NOT EXISTS (SELECT 1 FROM postbus.messages m WHERE m.owner = lease);
$$;

-- Takes up to max_messages deliverable messages of a queue, temporary queue or subscription
-- and holds them for this caller for lease_ms. Inside the caller's transaction: a rollback
-- puts them back untouched (no delivery is counted; the database keeps no trace of it).
-- Ungrouped messages come first, best priority then FIFO; grouped ones in order, and only
-- when no broker dispatches the queue's groups (see docs/sql-api.md).
CREATE FUNCTION postbus.receive(
    destination  text,
    max_messages integer DEFAULT 1,
    lease_ms     integer DEFAULT 30000,
    selector     text    DEFAULT NULL)
RETURNS SETOF postbus.received
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp SET enable_seqscan = off AS $$
#variable_conflict use_column
DECLARE
    d postbus.destinations;
    now_ms bigint := postbus.now_ms();
    lease bigint;
    taken integer := 0;
    holder bigint;
    may_group boolean := false;
    sel_condition text;
    sel_params text[];
BEGIN
    IF receive.max_messages IS NULL OR receive.max_messages NOT BETWEEN 1 AND 10000 THEN
        RAISE EXCEPTION 'postbus: max_messages % is not between 1 and 10000', receive.max_messages
            USING ERRCODE = '22023';
    END IF;
    IF receive.lease_ms IS NULL OR receive.lease_ms NOT BETWEEN 1 AND 43200000 THEN
        RAISE EXCEPTION 'postbus: lease_ms % is not between 1 and 43200000 (12 hours)', receive.lease_ms
            USING ERRCODE = '22023';
    END IF;
    d := postbus.resolve_destination(receive.destination, false);
    IF d.id IS NULL THEN
        IF receive.destination LIKE '/%' AND receive.destination NOT LIKE '/queue/%' THEN
            RAISE EXCEPTION 'postbus: % does not exist', receive.destination USING ERRCODE = '42704',
                HINT = 'subscriptions and temporary queues are made by their consumers; `postbus queue list` shows them';
        END IF;
        RETURN;  -- a queue nobody sent to yet is empty
    ELSIF d.kind = 'topic' THEN
        RAISE EXCEPTION 'postbus: receive from a subscription of the topic, not from % itself', receive.destination
            USING ERRCODE = '22023', HINT = 'e.g. postbus.receive(''/subscription/durable:CLIENTID:NAME'')';
    END IF;
    IF receive.selector IS NOT NULL THEN
        SELECT s.condition, s.params INTO sel_condition, sel_params
        FROM postbus.selectors s WHERE s.selector = receive.selector;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'postbus: selector % is not registered', quote_literal(receive.selector)
                USING ERRCODE = '42704',
                      HINT = 'an operator registers it once: postbus selector register ''...'' (selectors SQL cannot decide exactly are refused there; the HTTP API takes any selector)';
        END IF;
    END IF;
    PERFORM postbus.expire_leases(d.id);
    -- An exclusive queue a broker serves has one consumer already.
    IF d.exclusive AND EXISTS (SELECT 1 FROM postbus.queue_leases l JOIN postbus.nodes n ON n.id = l.node_id
                               WHERE l.queue_id = d.id AND l.kind = 'exclusive') THEN
        RETURN;
    END IF;

    lease := postbus.open_lease(d.id, receive.lease_ms);

    IF sel_condition IS NULL THEN
        UPDATE postbus.messages m SET owner = lease
        WHERE m.id = ANY(ARRAY(
            SELECT c.id FROM postbus.messages c
            WHERE c.queue_id = d.id AND c.owner IS NULL AND c.ready_at IS NULL AND c.group_id IS NULL
              AND (c.expires_at = 0 OR c.expires_at > now_ms)
            ORDER BY c.priority DESC, c.id
            LIMIT receive.max_messages
            FOR UPDATE SKIP LOCKED));
    ELSE
        -- The registered translation selects exactly what the selector accepts; only
        -- ungrouped messages, as for the broker's selective consumers.
        EXECUTE format(
            'UPDATE postbus.messages m SET owner = %s WHERE m.id = ANY(ARRAY('
            'SELECT c.id FROM postbus.messages c '
            'WHERE c.queue_id = %s AND c.owner IS NULL AND c.ready_at IS NULL AND c.group_id IS NULL '
            'AND (c.expires_at = 0 OR c.expires_at > %s) AND (%s) '
            'ORDER BY c.priority DESC, c.id LIMIT %s FOR UPDATE SKIP LOCKED))',
            lease, d.id, now_ms, sel_condition, receive.max_messages)
        USING sel_params;
    END IF;
    GET DIAGNOSTICS taken = ROW_COUNT;

    -- Grouped messages: only under the queue's 'groups' lease, which a broker dispatching the
    -- queue's groups holds. SQL receivers hold it together (holder 0; a broker takes it over
    -- once no SQL lease on the queue is left), claim grouped messages one transaction at a
    -- time (the row lock; others skip grouped messages meanwhile), and skip every group with
    -- a message in flight or waiting, so none overtakes.
    IF sel_condition IS NULL AND taken < receive.max_messages AND EXISTS (
        SELECT 1 FROM postbus.messages c
        WHERE c.queue_id = d.id AND c.owner IS NULL AND c.ready_at IS NULL AND c.group_id IS NOT NULL) THEN
        SELECT l.node_id INTO holder FROM postbus.queue_leases l
        WHERE l.queue_id = d.id AND l.kind = 'groups' FOR UPDATE SKIP LOCKED;
        IF FOUND THEN
            IF holder = 0 THEN
                may_group := true;
            ELSIF NOT EXISTS (SELECT 1 FROM postbus.nodes n WHERE n.id = holder) THEN
                UPDATE postbus.queue_leases l SET node_id = 0 WHERE l.queue_id = d.id AND l.kind = 'groups';
                may_group := true;
            END IF;
        ELSIF pg_try_advisory_xact_lock(1886352245, d.id) THEN
            -- No row yet (or another transaction holds it): the advisory lock keeps two
            -- receivers from waiting on each other's insert.
            INSERT INTO postbus.queue_leases (queue_id, kind, node_id) VALUES (d.id, 'groups', 0)
                ON CONFLICT DO NOTHING;
            may_group := FOUND;
        END IF;
    END IF;
    IF may_group THEN
        UPDATE postbus.messages m SET owner = lease
        WHERE m.id = ANY(ARRAY(
            SELECT c.id FROM postbus.messages c
            WHERE c.queue_id = d.id AND c.owner IS NULL AND c.ready_at IS NULL AND c.group_id IS NOT NULL
              AND (c.expires_at = 0 OR c.expires_at > now_ms)
              AND c.group_id NOT IN (
                  SELECT w.group_id FROM postbus.messages w
                  WHERE w.queue_id = d.id AND w.group_id IS NOT NULL
                    AND (w.ready_at IS NOT NULL OR w.owner IS NOT NULL))
            ORDER BY c.id
            LIMIT receive.max_messages - taken
            FOR UPDATE SKIP LOCKED));
    END IF;

    -- Messages delivered max-deliveries times go to the dead-letter queue, not to the caller.
    PERFORM postbus.dead_letter_held(lease, d);
    IF NOT EXISTS (SELECT 1 FROM postbus.messages m WHERE m.owner = lease) THEN
        PERFORM postbus.end_lease_if_empty(lease);
        RETURN;
    END IF;
    RETURN QUERY SELECT * FROM postbus.leased(lease);
END $$;

-- The message rows a handle names among those SQL receivers hold, with the owner they must
-- still have when settled: a receipt '<row>:<lease>' names one row, held by that lease (so a
-- receipt whose lease lapsed never settles a later delivery); a message id 'ID:<n>' names the
-- message or its topic copies held by any SQL lease.
CREATE FUNCTION postbus.held_rows(handle text) RETURNS TABLE (id bigint, owner bigint)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    parts text[];
BEGIN
    IF handle ~ '^[0-9]{1,18}:[0-9]{1,18}$' THEN
        parts := string_to_array(handle, ':');
        RETURN QUERY SELECT parts[1]::bigint, -(parts[2]::bigint);
    ELSIF handle ~ '^ID:[0-9]{1,18}$' THEN
        RETURN QUERY SELECT m.id, m.owner FROM postbus.messages m
            WHERE m.id = substr(handle, 4)::bigint AND m.owner < 0
            UNION ALL
            SELECT m.id, m.owner FROM postbus.messages m
            WHERE m.publish_id = substr(handle, 4)::bigint AND m.owner < 0;
    ELSE
        RAISE EXCEPTION 'postbus: % is neither a receipt nor a message id', quote_literal(handle)
            USING ERRCODE = '22023', HINT = 'pass the receipt or the message_id that postbus.receive returned';
    END IF;
END $$;

-- Acknowledges a received message (by receipt, or by message id): it is deleted when the
-- caller commits. False when no SQL receiver holds it (already acknowledged, or its lease ran
-- out and it went back to the queue).
CREATE FUNCTION postbus.ack(handle text) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp SET enable_seqscan = off AS $$
DECLARE
    held bigint[];
    holders bigint[];
    leases bigint[];
    l bigint;
    acked_id bigint;
    acked_publish bigint;
    acked_queue integer;
    d postbus.destinations;
BEGIN
    SELECT array_agg(h.id), array_agg(h.owner) INTO held, holders FROM postbus.held_rows(handle) h;
    IF cardinality(held) > 1 THEN
        RAISE EXCEPTION 'postbus: % names % held topic copies', handle, cardinality(held)
            USING ERRCODE = '21000', HINT = 'acknowledge each copy by the receipt postbus.receive returned';
    END IF;
    -- The owner is matched again here, on the row as it is when locked.
    WITH gone AS (
        DELETE FROM postbus.messages m
        WHERE m.id = held[1] AND m.owner = holders[1] AND m.owner < 0
        RETURNING m.owner, m.id, m.publish_id, m.queue_id)
    SELECT array_agg(g.owner), min(g.id), min(g.publish_id), min(g.queue_id)
    INTO leases, acked_id, acked_publish, acked_queue FROM gone g;
    IF leases IS NULL THEN
        RETURN false;
    END IF;
    SELECT * INTO d FROM postbus.destinations x WHERE x.id = acked_queue;
    IF d.audit_messages THEN
        PERFORM postbus.audit_append(ARRAY['message.acked'], ARRAY[session_user::text],
            ARRAY['/' || d.kind || '/' || d.name],
            ARRAY[jsonb_build_object('message_id', 'ID:' || coalesce(acked_publish, acked_id), 'via', 'sql')]);
    END IF;
    FOREACH l IN ARRAY leases LOOP
        PERFORM postbus.end_lease_if_empty(l);
    END LOOP;
    RETURN true;
END $$;

-- Negatively acknowledges a received message: it goes back to its queue with the delivery
-- counted, after the queue's redelivery delay, or to the dead-letter queue once delivered
-- max-deliveries times. False when no SQL receiver holds it.
CREATE FUNCTION postbus.nack(handle text, error text DEFAULT NULL) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp SET enable_seqscan = off AS $$
DECLARE
    held bigint[];
    holders bigint[];
    m postbus.messages;
    d postbus.destinations;
    dlq postbus.destinations;
    cnt integer;
    delay bigint;
BEGIN
    SELECT array_agg(h.id), array_agg(h.owner) INTO held, holders FROM postbus.held_rows(handle) h;
    IF cardinality(held) > 1 THEN
        RAISE EXCEPTION 'postbus: % names % held topic copies', handle, cardinality(held)
            USING ERRCODE = '21000', HINT = 'negatively acknowledge each copy by the receipt postbus.receive returned';
    END IF;
    SELECT * INTO m FROM postbus.messages x
    WHERE x.id = held[1] AND x.owner = holders[1] AND x.owner < 0 FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    SELECT * INTO d FROM postbus.destinations x WHERE x.id = m.queue_id;
    cnt := m.delivery_count + 1;
    IF cnt >= d.max_deliveries AND d.name NOT LIKE 'DLQ.%' THEN
        dlq := postbus.resolve_destination('/queue/' || coalesce(d.dead_letter_queue, 'DLQ.' || d.name), true);
        UPDATE postbus.messages x SET owner = NULL, delivery_count = cnt, queue_id = dlq.id,
            dlq_reason = format('negatively acknowledged; delivered %s times (max-deliveries %s)', cnt, d.max_deliveries),
            origin = coalesce(x.origin, '/topic/' || x.topic, '/' || d.kind || '/' || d.name),
            topic = NULL, last_error = coalesce(nack.error, x.last_error)
        WHERE x.id = m.id;
        PERFORM postbus.audit_append(
            ARRAY['message.dead_lettered'], ARRAY[session_user::text], ARRAY['/queue/' || dlq.name],
            ARRAY[jsonb_build_object('message_id', 'ID:' || coalesce(m.publish_id, m.id),
                  'from', coalesce(m.origin, '/topic/' || m.topic, '/' || d.kind || '/' || d.name),
                  'reason', 'negatively acknowledged', 'error', nack.error)]);
        PERFORM pg_notify('postbus_wake', dlq.id::text);
    ELSE
        delay := CASE WHEN d.redelivery_delay_ms <= 0 THEN 0 ELSE least(
            d.redelivery_delay_ms * power(greatest(d.redelivery_backoff, 1.0), least(greatest(cnt - 1, 0), 60)),
            greatest(d.redelivery_max_delay_ms, d.redelivery_delay_ms)::double precision)::bigint END;
        UPDATE postbus.messages x SET owner = NULL, delivery_count = cnt,
            ready_at = CASE WHEN delay > 0 THEN postbus.now_ms() + delay END,
            last_error = coalesce(nack.error, x.last_error)
        WHERE x.id = m.id;
        PERFORM pg_notify('postbus_wake', m.queue_id::text);
    END IF;
    PERFORM postbus.end_lease_if_empty(m.owner);
    RETURN true;
END $$;

-- Applications get a role that may call the API and nothing else (no table is readable or
-- writable through it). Creating a role needs CREATEROLE; without it the migration still
-- installs the API, and docs/sql-api.md shows the statements to run as an administrator.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA postbus FROM PUBLIC;
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'postbus_app') THEN
        BEGIN
            CREATE ROLE postbus_app NOLOGIN;
        EXCEPTION
            WHEN insufficient_privilege THEN
                RAISE NOTICE 'postbus: cannot create role postbus_app (needs CREATEROLE); see docs/sql-api.md';
                RETURN;
            -- Roles belong to the cluster: another database's migration made it just now.
            WHEN duplicate_object OR unique_violation THEN
                NULL;
        END;
    END IF;
    GRANT USAGE ON SCHEMA postbus TO postbus_app;
    GRANT EXECUTE ON FUNCTION postbus.send(text, bytea, jsonb, text, text, bigint, integer, text, integer,
        text, text, text, bigint, boolean, jsonb, text, text) TO postbus_app;
    GRANT EXECUTE ON FUNCTION postbus.receive(text, integer, integer, text) TO postbus_app;
    GRANT EXECUTE ON FUNCTION postbus.ack(text) TO postbus_app;
    GRANT EXECUTE ON FUNCTION postbus.nack(text, text) TO postbus_app;
END $$;
