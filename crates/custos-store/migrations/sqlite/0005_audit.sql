-- The audit trail (docs/audit-events.md): an append-only, hash-chained log of security events,
-- signed checkpoints of its head, and the delivery cursor of each SIEM sink.
--
-- The triggers below refuse UPDATE and DELETE and any INSERT that does not extend the chain.
-- They stop mistakes and casual edits, not the owner of the database file, who can drop them:
-- the hash chain and the checkpoint signatures are what reveal such tampering.

CREATE TABLE audit_events (
    seq        INTEGER NOT NULL PRIMARY KEY,
    event_id   TEXT    NOT NULL,
    at_us      BIGINT  NOT NULL,
    action     TEXT    NOT NULL,
    user_name  TEXT,
    session_id TEXT,
    -- The canonical JSON document; the chain hashes exactly these bytes.
    doc        TEXT    NOT NULL,
    prev_hash  BLOB    NOT NULL,
    hash       BLOB    NOT NULL
);

CREATE UNIQUE INDEX audit_events_by_id ON audit_events (event_id);
CREATE INDEX audit_events_by_time ON audit_events (at_us);
CREATE INDEX audit_events_by_action ON audit_events (action, seq);
CREATE INDEX audit_events_by_user ON audit_events (user_name, seq) WHERE user_name IS NOT NULL;
CREATE INDEX audit_events_by_session ON audit_events (session_id, seq)
    WHERE session_id IS NOT NULL;

-- A new event must take the next sequence number and link to the hash of the last event
-- (32 zero bytes for the first one). Both lookups walk the primary key: O(log n) per insert.
CREATE TRIGGER audit_events_extend_only BEFORE INSERT ON audit_events
WHEN (SELECT seq FROM audit_events ORDER BY seq DESC LIMIT 1)
         IS NOT (CASE WHEN NEW.seq = 1 THEN NULL ELSE NEW.seq - 1 END)
  OR NEW.prev_hash IS NOT COALESCE(
         (SELECT hash FROM audit_events WHERE seq = NEW.seq - 1), zeroblob(32))
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only: a new event must extend the chain');
END;

CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only: events cannot be changed');
END;

CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only: events cannot be deleted');
END;

-- Each checkpoint signs the chain head at `seq`: the signature is an armored SSHSIG over the
-- text message built from (seq, head_hash, at_us).
CREATE TABLE audit_checkpoints (
    seq        INTEGER NOT NULL PRIMARY KEY,
    head_hash  BLOB    NOT NULL,
    at_us      BIGINT  NOT NULL,
    signature  TEXT    NOT NULL
);

CREATE TRIGGER audit_checkpoints_extend_only BEFORE INSERT ON audit_checkpoints
WHEN NEW.seq <= COALESCE((SELECT seq FROM audit_checkpoints ORDER BY seq DESC LIMIT 1), 0)
  OR NEW.head_hash IS NOT (SELECT hash FROM audit_events WHERE seq = NEW.seq)
BEGIN
    SELECT RAISE(ABORT,
        'audit_checkpoints is append-only: a checkpoint must sign a newer event''s hash');
END;

CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'audit_checkpoints is append-only: checkpoints cannot be changed');
END;

CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'audit_checkpoints is append-only: checkpoints cannot be deleted');
END;

-- How far each SIEM sink has delivered: the last sequence number it acknowledged.
-- The delivery health beside it: consecutive failures, the last error, the last success.
CREATE TABLE sink_cursors (
    sink            TEXT   NOT NULL PRIMARY KEY,
    seq             BIGINT NOT NULL,
    updated_us      BIGINT NOT NULL,
    failures        BIGINT NOT NULL DEFAULT 0,
    last_error      TEXT,
    last_error_us   BIGINT,
    last_success_us BIGINT
);
