-- postbus schema, version 4: which broker nodes have consumers on a subscription, and no
-- foreign key from messages to destinations.
--
-- A non-durable subscription (shared or not) ends when its last consumer leaves, on whichever
-- broker that is: each node with consumers on it has a row here, and the node whose last
-- consumer leaves deletes its row and, if none is left and the subscription is not durable,
-- the subscription. A node that dies loses its rows when it is declared dead.
CREATE TABLE postbus.subscription_consumers (
    subscription_id integer NOT NULL REFERENCES postbus.destinations (id) ON DELETE CASCADE,
    node_id         bigint  NOT NULL,
    PRIMARY KEY (subscription_id, node_id)
);

-- The foreign key from a message to its destination made every insert lock the destination
-- row (FOR KEY SHARE): with several group commits writing to one queue at once, each lock
-- became a new multixact on that one row, and deleting a destination had to look for its
-- messages without an index on queue_id. Destinations are deleted by postbus only, in a
-- transaction that first locks the destination row and deletes its messages; publishers lock
-- the subscriptions they copy to (FOR KEY SHARE ... SKIP LOCKED), so no copy outlives its
-- subscription.
ALTER TABLE postbus.messages DROP CONSTRAINT messages_queue_id_fkey;
