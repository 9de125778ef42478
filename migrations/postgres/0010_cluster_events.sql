-- Call events too long for a NOTIFY payload (PostgreSQL: shorter than 8000 bytes), sent between
-- relay instances by src/cluster: the notification carries only `id`. Rows are read within
-- moments of being written; the sender prunes those older than five minutes.
CREATE TABLE IF NOT EXISTS cluster_events (
    id BIGSERIAL PRIMARY KEY,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- The `Message::Event` JSON.
    payload TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS cluster_events_created_at ON cluster_events (created_at);
