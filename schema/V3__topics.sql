-- postbus schema, version 3: topics and their subscriptions.
--
-- A subscription is a destination of kind 'subscription': it has message rows of its own (one
-- logical copy per published message), so every queue guarantee (order, acks, redelivery,
-- dead-lettering, expiry, transactions) holds per subscription with the same code. Publishing
-- copies a message to each subscription whose topic pattern matches and whose selector
-- accepts it, in the publishing transaction. A body sent to more than one subscription is
-- stored once, in postbus.payloads; the copies point at it with publish_id.

ALTER TABLE postbus.destinations DROP CONSTRAINT destinations_kind_check;
ALTER TABLE postbus.destinations ADD CONSTRAINT destinations_kind_check
    CHECK (kind IN ('queue', 'topic', 'temp-queue', 'subscription'));

ALTER TABLE postbus.destinations
    -- Subscriptions: the topic name or wildcard pattern subscribed to ('*' one segment, '>'
    -- one or more trailing segments), and the same as a POSIX regular expression.
    ADD COLUMN topic_pattern     text    NULL,
    ADD COLUMN topic_regex       text    NULL,
    -- Subscriptions: only messages this JMS selector accepts are copied.
    ADD COLUMN selector          text    NULL,
    ADD COLUMN durable           boolean NOT NULL DEFAULT false,
    ADD COLUMN shared            boolean NOT NULL DEFAULT false,
    ADD COLUMN client_id         text    NULL,
    ADD COLUMN subscription_name text    NULL,
    -- Non-durable subscriptions: the broker node they live on; removed when it goes.
    ADD COLUMN node_id           bigint  NULL;

-- Publishing looks up the subscriptions whose pattern matches a topic.
CREATE INDEX destinations_subscriptions ON postbus.destinations (id) WHERE kind = 'subscription';

-- A copy's body may live in postbus.payloads instead of the row.
ALTER TABLE postbus.messages ALTER COLUMN body DROP NOT NULL;
ALTER TABLE postbus.messages
    -- Topic copies: the published message's id (their JMSMessageID, the same in every copy)
    -- and the topic it was published to.
    ADD COLUMN publish_id bigint NULL,
    ADD COLUMN topic      text   NULL;
CREATE INDEX messages_publish ON postbus.messages (publish_id) WHERE publish_id IS NOT NULL;

-- Bodies shared by several copies. Removed by the payload sweep once no copy points at one.
CREATE TABLE postbus.payloads (
    id         bigint PRIMARY KEY,
    body       bytea  NOT NULL,
    created_at bigint NOT NULL
);
ALTER TABLE postbus.payloads ALTER COLUMN body SET STORAGE EXTERNAL;
