-- expires_at is when a live entry written with a TTL expires, in unix
-- nanoseconds; 0 means never. The partial index finds the entries to expire
-- (at open, to schedule them) without a scan of the table.
ALTER TABLE kv ADD COLUMN expires_at INTEGER NOT NULL DEFAULT 0;
CREATE INDEX kv_expiry ON kv (expires_at) WHERE expires_at > 0;
