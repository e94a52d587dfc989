-- postbus schema, version 7: depth limits. A destination with max_depth > 0 takes no more
-- messages once it holds that many: a subscription at its limit gets no copy of new
-- publications (they are discarded for it, and counted), so a forgotten durable subscription
-- cannot grow without bound. The depth compared is the one the brokers sample for their
-- metrics (sampled_depth, at most broker.metrics_depth_interval_ms old): the limit is enforced
-- within that interval's worth of messages, not to the message.
ALTER TABLE postbus.destinations
    ADD COLUMN max_depth     bigint NOT NULL DEFAULT 0 CHECK (max_depth >= 0),
    ADD COLUMN sampled_depth bigint NOT NULL DEFAULT 0;
