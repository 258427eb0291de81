-- Rule matches, newest first by time.
CREATE TABLE alerts (
    id          INTEGER NOT NULL PRIMARY KEY,
    at_us       BIGINT  NOT NULL,
    session_id  TEXT    NOT NULL,
    channel     BIGINT  NOT NULL,
    offset_us   BIGINT  NOT NULL,
    user_name   TEXT    NOT NULL,
    target_name TEXT    NOT NULL,
    rule_id     TEXT    NOT NULL,
    severity    TEXT    NOT NULL,
    severity_rank BIGINT NOT NULL,
    action      TEXT    NOT NULL,
    event       TEXT    NOT NULL,
    text        TEXT    NOT NULL,
    description TEXT    NOT NULL
);

CREATE INDEX alerts_by_time ON alerts (at_us);
CREATE INDEX alerts_by_session ON alerts (session_id, offset_us);
