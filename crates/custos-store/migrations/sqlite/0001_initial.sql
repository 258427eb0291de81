-- Initial schema. Timestamps are integer microseconds since the Unix epoch (UTC), which sort
-- and compare as numbers on every backend. Users and targets are keyed by their validated
-- names; sessions keep names as plain text so that history outlives removed users/targets.

CREATE TABLE users (
    name              TEXT    NOT NULL PRIMARY KEY,
    locked            INTEGER NOT NULL DEFAULT 0,
    expires_us        BIGINT,
    password_hash     TEXT,
    password_one_time INTEGER NOT NULL DEFAULT 0,
    created_us        BIGINT  NOT NULL
);

CREATE TABLE user_keys (
    user_name  TEXT    NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    -- "ALGO BASE64": the identity of the key, without its comment.
    key_id     TEXT    NOT NULL,
    key_line   TEXT    NOT NULL,
    position   INTEGER NOT NULL,
    created_us BIGINT  NOT NULL,
    PRIMARY KEY (user_name, key_id)
);

CREATE TABLE targets (
    name                  TEXT    NOT NULL PRIMARY KEY,
    kind                  TEXT    NOT NULL,
    host                  TEXT,
    port                  INTEGER,
    login                 TEXT,
    host_key_mode         TEXT,
    host_key              TEXT,
    credential_kind       TEXT,
    os_user               TEXT,
    labels_json           TEXT    NOT NULL,
    allow_port_forwarding INTEGER NOT NULL DEFAULT 0,
    created_us            BIGINT  NOT NULL
);

-- Kept apart from targets so that listing targets never reads ciphertext.
CREATE TABLE target_credentials (
    target_name TEXT NOT NULL PRIMARY KEY REFERENCES targets (name) ON DELETE CASCADE,
    sealed      BLOB NOT NULL
);

CREATE TABLE grants (
    user_name   TEXT   NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    target_name TEXT   NOT NULL REFERENCES targets (name) ON DELETE CASCADE,
    created_us  BIGINT NOT NULL,
    PRIMARY KEY (user_name, target_name)
);

CREATE INDEX grants_by_target ON grants (target_name);

CREATE TABLE sessions (
    id          TEXT    NOT NULL PRIMARY KEY,
    user_name   TEXT    NOT NULL,
    source      TEXT    NOT NULL,
    target_name TEXT    NOT NULL,
    login       TEXT    NOT NULL,
    start_us    BIGINT  NOT NULL,
    end_us      BIGINT,
    state       TEXT    NOT NULL,
    bytes_in    BIGINT  NOT NULL DEFAULT 0,
    bytes_out   BIGINT  NOT NULL DEFAULT 0,
    exit_status BIGINT,
    end_reason  TEXT,
    recording   TEXT    NOT NULL
);

CREATE INDEX sessions_by_start ON sessions (start_us);
CREATE INDEX sessions_by_state ON sessions (state);
CREATE INDEX sessions_by_user ON sessions (user_name, start_us);
CREATE INDEX sessions_by_target ON sessions (target_name, start_us);
