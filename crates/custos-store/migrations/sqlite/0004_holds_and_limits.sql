-- What became of held requests, and per-target / per-grant session limits.
ALTER TABLE alerts ADD COLUMN decision TEXT;
ALTER TABLE alerts ADD COLUMN decided_by TEXT;
ALTER TABLE alerts ADD COLUMN decision_note TEXT;
ALTER TABLE alerts ADD COLUMN decided_us BIGINT;

CREATE INDEX alerts_pending ON alerts (decision) WHERE decision = 'pending';

ALTER TABLE targets ADD COLUMN max_session_secs BIGINT;
ALTER TABLE targets ADD COLUMN idle_timeout_secs BIGINT;

ALTER TABLE grants ADD COLUMN max_session_secs BIGINT;
ALTER TABLE grants ADD COLUMN idle_timeout_secs BIGINT;
