//! Everything specific to SQLite: connection settings, the embedded schema migrations, the
//! statement that starts a write transaction, and how driver errors are classified. A
//! PostgreSQL backend would supply its own version of this module; the SQL in `store.rs`
//! sticks to what both dialects accept (`$N` placeholders, `ON CONFLICT`, `BIGINT` columns).

use crate::StoreError;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{Connection, Row};
use std::path::Path;
use std::time::Duration;

/// How long a statement waits for another process's write lock (the CLI writing while the
/// server runs) before giving up with "database is locked".
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Starts a write transaction that takes the write lock at once. A deferred transaction that
/// reads first and upgrades later can fail immediately with SQLITE_BUSY instead of waiting.
pub(crate) const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";

/// The pool type of this backend.
pub(crate) type Pool = SqlitePool;

/// Schema migrations in order: (version, SQL). Applied ones are recorded in `schema_version`.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/sqlite/0001_initial.sql")),
    (2, include_str!("../migrations/sqlite/0002_commands.sql")),
    (3, include_str!("../migrations/sqlite/0003_alerts.sql")),
    (
        4,
        include_str!("../migrations/sqlite/0004_holds_and_limits.sql"),
    ),
    (5, include_str!("../migrations/sqlite/0005_audit.sql")),
];

const MAX_CONNECTIONS: u32 = 4;

/// Opens (creating if needed) the database file and brings its schema up to date.
pub(crate) async fn open(path: &Path) -> Result<Pool, StoreError> {
    let db = |op: &str, source: sqlx::Error| StoreError::Database {
        path: path.to_path_buf(),
        op: op.to_string(),
        source: Box::new(source),
    };
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .foreign_keys(true)
        .busy_timeout(BUSY_TIMEOUT)
        // After a checkpoint resets the write-ahead log, shrink its file back to this size:
        // a burst (or a reader that held a checkpoint off) must not leave it large for good.
        .pragma("journal_size_limit", (64 * 1024 * 1024).to_string());
    // Switching a new file to WAL needs an exclusive lock, and SQLite reports a conflict
    // there at once instead of waiting; so when two processes create the database at the same
    // moment, the loser retries for up to the busy timeout.
    let deadline = tokio::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        let attempt = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .connect_with(options.clone())
            .await;
        let pool = match attempt {
            Ok(pool) => pool,
            Err(e) if is_busy(&e) && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(25)).await;
                continue;
            }
            Err(e) => return Err(db("opening the database file", e)),
        };
        match migrate(&pool, path).await {
            Ok(()) => return Ok(pool),
            Err(StoreError::Database { source, .. })
                if source.downcast_ref::<sqlx::Error>().is_some_and(is_busy)
                    && tokio::time::Instant::now() < deadline =>
            {
                pool.close().await;
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether `e` is SQLite's "database is locked" (SQLITE_BUSY, any extended code).
fn is_busy(e: &sqlx::Error) -> bool {
    const SQLITE_BUSY: i64 = 5;
    match e {
        sqlx::Error::Database(d) => d
            .code()
            .and_then(|c| c.parse::<i64>().ok())
            .is_some_and(|c| c & 0xFF == SQLITE_BUSY),
        _ => false,
    }
}

/// Applies pending migrations inside one write transaction, so that two processes opening a
/// new database at the same time apply them once: the second waits, then finds them done.
async fn migrate(pool: &Pool, path: &Path) -> Result<(), StoreError> {
    let db = |op: &str, source: sqlx::Error| StoreError::Database {
        path: path.to_path_buf(),
        op: op.to_string(),
        source: Box::new(source),
    };
    let mut conn = pool
        .acquire()
        .await
        .map_err(|e| db("connecting for schema migration", e))?;
    let mut tx = conn
        .begin_with(BEGIN_WRITE)
        .await
        .map_err(|e| db("locking the database for schema migration", e))?;
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS schema_version (
             version    BIGINT NOT NULL PRIMARY KEY,
             applied_us BIGINT NOT NULL
         )",
    )
    .execute(&mut *tx)
    .await
    .map_err(|e| db("creating the schema_version table", e))?;
    let row = sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM schema_version")
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| db("reading the schema version", e))?;
    let current: i64 = row
        .try_get("v")
        .map_err(|e| db("reading the schema version", e))?;
    let newest = MIGRATIONS.last().map_or(0, |m| m.0);
    if current > newest {
        return Err(StoreError::Corrupt {
            path: path.to_path_buf(),
            detail: format!(
                "schema version {current} is newer than this build understands ({newest}); \
                 run a newer custos"
            ),
        });
    }
    for &(version, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        sqlx::raw_sql(sql)
            .execute(&mut *tx)
            .await
            .map_err(|e| db(&format!("applying schema migration {version}"), e))?;
        sqlx::query("INSERT INTO schema_version (version, applied_us) VALUES ($1, $2)")
            .bind(version)
            .bind(crate::store::now_micros())
            .execute(&mut *tx)
            .await
            .map_err(|e| db(&format!("recording schema migration {version}"), e))?;
        tracing::info!(db = %path.display(), version, "applied schema migration");
    }
    tx.commit()
        .await
        .map_err(|e| db("committing schema migration", e))?;
    Ok(())
}

/// Whether `e` is a uniqueness (primary key or unique index) violation.
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// Whether `e` is a foreign key violation.
pub(crate) fn is_foreign_key_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_foreign_key_violation())
}
