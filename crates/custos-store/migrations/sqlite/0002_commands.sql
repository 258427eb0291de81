-- Commands users ran, searchable by substring through an FTS5 trigram index.
CREATE TABLE commands (
    id          INTEGER NOT NULL PRIMARY KEY,
    session_id  TEXT    NOT NULL,
    channel     BIGINT  NOT NULL,
    offset_us   BIGINT  NOT NULL,
    at_us       BIGINT  NOT NULL,
    kind        TEXT    NOT NULL,
    text        TEXT    NOT NULL,
    cwd         TEXT,
    exit_status BIGINT,
    user_name   TEXT    NOT NULL,
    target_name TEXT    NOT NULL
);

CREATE INDEX commands_by_session ON commands (session_id, offset_us);
CREATE INDEX commands_by_time ON commands (at_us);

CREATE VIRTUAL TABLE commands_fts USING fts5(
    text,
    content = 'commands',
    content_rowid = 'id',
    tokenize = 'trigram'
);

CREATE TRIGGER commands_fts_insert AFTER INSERT ON commands BEGIN
    INSERT INTO commands_fts (rowid, text) VALUES (new.id, new.text);
END;

CREATE TRIGGER commands_fts_delete AFTER DELETE ON commands BEGIN
    INSERT INTO commands_fts (commands_fts, rowid, text) VALUES ('delete', old.id, old.text);
END;
