//! Storage of the audit trail: the append-only event log, its signed checkpoints and the
//! delivery cursors of SIEM sinks.
//!
//! The store keeps rows; it does not compute hashes, build documents or check signatures
//! (that is `custos-audit`). What it guarantees is that a batch is appended in one write
//! transaction that first reads the chain head under the write lock ([`AuditStore::begin_append`]),
//! so several processes (the server and the command line) can extend the same chain without
//! forking it, and that the schema refuses changes: triggers reject UPDATE, DELETE and any
//! INSERT that does not extend the chain. The owner of the database file can drop triggers;
//! the chain and the checkpoint signatures are what catch that.

use crate::StoreError;
use crate::sqlite::{self, BEGIN_WRITE, Pool};
use sqlx::sqlite::SqliteRow;
use sqlx::{AssertSqlSafe, Row};
use std::fmt;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use time::OffsetDateTime;

/// One stored audit event, exactly as in the database. Fields are kept raw (text, integers,
/// bytes) so that a verifier can report a tampered row instead of failing to read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRow {
    /// Position in the chain: 1 for the first event, then +1 for each next one.
    pub seq: u64,
    /// The event's stable id (26-character ULID text), unique in the log.
    pub id: String,
    /// Event time, microseconds since the Unix epoch.
    pub at_us: i64,
    /// The event's `event.action`, e.g. `session.start`.
    pub action: String,
    /// The event's `user.name`, if it has one.
    pub user: Option<String>,
    /// The event's `custos.session.id`, if it has one.
    pub session: Option<String>,
    /// The canonical JSON document; the chain hashes exactly these bytes.
    pub doc: String,
    /// The hash of the previous event (32 zero bytes for the first one).
    pub prev_hash: Vec<u8>,
    /// SHA-256 over `prev_hash` and `doc`.
    pub hash: Vec<u8>,
}

impl AuditRow {
    /// The event time, if the stored value is in range.
    pub fn at(&self) -> Option<OffsetDateTime> {
        from_micros(self.at_us)
    }
}

/// One signed checkpoint of the chain head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointRow {
    /// The sequence number of the last event the checkpoint covers.
    pub seq: u64,
    /// The hash of that event.
    pub head_hash: Vec<u8>,
    /// When the checkpoint was made, microseconds since the Unix epoch.
    pub at_us: i64,
    /// The armored SSHSIG signature (`-----BEGIN SSH SIGNATURE-----` ...).
    pub signature: String,
}

/// The state of the chain when an append transaction began.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditHead {
    /// The sequence number of the last event, 0 if the log is empty.
    pub seq: u64,
    /// The hash of the last event, `None` if the log is empty.
    pub hash: Option<Vec<u8>>,
    /// The sequence number signed by the newest checkpoint, 0 if there is none.
    pub checkpoint_seq: u64,
    /// When the newest checkpoint was made, microseconds since the Unix epoch.
    pub checkpoint_at_us: Option<i64>,
}

/// Which events [`AuditStore::search`] returns. The default returns the newest 1000 events.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    /// Only events whose `user.name` is this.
    pub user: Option<String>,
    /// Only events with this action, or whose action starts with it followed by a dot
    /// (`session` matches `session.start` and `session.end`).
    pub action: Option<String>,
    /// Only events of this session (its id as text).
    pub session: Option<String>,
    /// Only events at or after this time.
    pub since: Option<OffsetDateTime>,
    /// Only events before this time.
    pub until: Option<OffsetDateTime>,
    /// At most this many (the newest); 1000 when not set.
    pub limit: Option<u32>,
}

/// The delivery position of one SIEM sink.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SinkCursor {
    /// The sink's configured name.
    pub sink: String,
    /// The last sequence number the sink acknowledged.
    pub seq: u64,
    /// When the cursor last moved.
    pub updated: OffsetDateTime,
    /// Delivery attempts that failed since the last success.
    pub failures: u64,
    /// The last failure's message, if the sink ever failed.
    pub last_error: Option<String>,
    /// When it failed last.
    pub last_error_at: Option<OffsetDateTime>,
    /// When a delivery last succeeded.
    pub last_success_at: Option<OffsetDateTime>,
}

/// A handle on the audit tables of a metadata database. Cloning is cheap and shares the
/// connection pool. It has its own pool (separate from [`crate::Store`]'s), so the audit writer
/// never queues behind other queries.
#[derive(Clone)]
pub struct AuditStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    path: PathBuf,
}

impl fmt::Debug for AuditStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

// Column lists, kept in one place (see the note on the SELECT macros in store.rs).
macro_rules! select_events {
    ($rest:expr) => {
        concat!(
            "SELECT seq, event_id, at_us, action, user_name, session_id, doc, prev_hash, hash ",
            "FROM audit_events ",
            $rest
        )
    };
}

// Every search filters on every optional field; the four variants differ only in which
// indexed column drives the lookup, so that a search by session, user or action does not
// scan the whole log.
macro_rules! search_events {
    ($driver:literal) => {
        select_events!(concat!(
            "WHERE ",
            $driver,
            " AND ($1 IS NULL OR user_name = $1) ",
            "AND ($2 IS NULL OR (action >= $2 AND action < $3)) ",
            "AND ($4 IS NULL OR session_id = $4) ",
            "AND ($5 IS NULL OR at_us >= $5) AND ($6 IS NULL OR at_us < $6) ",
            "ORDER BY seq DESC LIMIT $7"
        ))
    };
}

impl AuditStore {
    /// Opens the database at `db_path` (creating it and bringing the schema up to date if
    /// needed). Use the same file as the [`crate::Store`].
    pub async fn open(db_path: &Path) -> Result<AuditStore, StoreError> {
        let pool = sqlite::open(db_path).await?;
        Ok(AuditStore {
            inner: Arc::new(Inner {
                pool,
                path: db_path.to_path_buf(),
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Closes every connection; later calls on any clone fail.
    pub async fn close(&self) {
        self.inner.pool.close().await;
    }

    fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    fn db(&self, op: impl Into<String>) -> impl FnOnce(sqlx::Error) -> StoreError + '_ {
        let op = op.into();
        move |source| StoreError::Database {
            path: self.inner.path.clone(),
            op,
            source: Box::new(source),
        }
    }

    fn corrupt(&self, detail: String) -> StoreError {
        StoreError::Corrupt {
            path: self.inner.path.clone(),
            detail,
        }
    }

    // ----- appending ---------------------------------------------------------------------

    /// Starts appending: takes the database write lock and reads the chain head, which stays
    /// current until [`AuditAppend::commit`] (no other writer can extend the chain meanwhile).
    /// Dropping the returned value without committing appends nothing.
    pub async fn begin_append(&self) -> Result<AuditAppend, StoreError> {
        let mut tx = self
            .pool()
            .begin_with(BEGIN_WRITE)
            .await
            .map_err(self.db("starting an audit append"))?;
        let head = self.read_head(&mut tx).await?;
        Ok(AuditAppend {
            tx,
            head,
            path: self.inner.path.clone(),
        })
    }

    async fn read_head(&self, conn: &mut sqlx::SqliteConnection) -> Result<AuditHead, StoreError> {
        let op = "reading the audit chain head";
        let last = sqlx::query("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *conn)
            .await
            .map_err(self.db(op))?;
        let cp = sqlx::query("SELECT seq, at_us FROM audit_checkpoints ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *conn)
            .await
            .map_err(self.db(op))?;
        let mut head = AuditHead::default();
        if let Some(r) = last {
            head.seq = self.seq(r.try_get("seq").map_err(self.db(op))?)?;
            head.hash = Some(r.try_get("hash").map_err(self.db(op))?);
        }
        if let Some(r) = cp {
            head.checkpoint_seq = self.seq(r.try_get("seq").map_err(self.db(op))?)?;
            head.checkpoint_at_us = Some(r.try_get("at_us").map_err(self.db(op))?);
        }
        Ok(head)
    }

    // ----- reading -----------------------------------------------------------------------

    /// The current chain head (outside any transaction: another writer may extend it at once).
    pub async fn head(&self) -> Result<AuditHead, StoreError> {
        let mut conn = self
            .pool()
            .acquire()
            .await
            .map_err(self.db("reading the audit chain head"))?;
        self.read_head(&mut conn).await
    }

    /// Events with `first <= seq <= last`, in order.
    pub async fn range(&self, first: u64, last: u64) -> Result<Vec<AuditRow>, StoreError> {
        let rows = sqlx::query(select_events!("WHERE seq >= $1 AND seq <= $2 ORDER BY seq"))
            .bind(to_i64(first)?)
            .bind(to_i64(last)?)
            .fetch_all(self.pool())
            .await
            .map_err(self.db(format!("reading audit events {first} to {last}")))?;
        rows.iter().map(|r| self.event_from_row(r)).collect()
    }

    /// Up to `limit` events after `seq`, in order: the tail a sink or a verifier reads next.
    pub async fn after(&self, seq: u64, limit: u32) -> Result<Vec<AuditRow>, StoreError> {
        let rows = sqlx::query(select_events!("WHERE seq > $1 ORDER BY seq LIMIT $2"))
            .bind(to_i64(seq)?)
            .bind(i64::from(limit))
            .fetch_all(self.pool())
            .await
            .map_err(self.db(format!("reading audit events after {seq}")))?;
        rows.iter().map(|r| self.event_from_row(r)).collect()
    }

    /// The event with this id, if there is one.
    pub async fn event(&self, id: &str) -> Result<Option<AuditRow>, StoreError> {
        let row = sqlx::query(select_events!("WHERE event_id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await
            .map_err(self.db(format!("reading audit event {id}")))?;
        row.map(|r| self.event_from_row(&r)).transpose()
    }

    /// Events matching `filter`, newest first.
    pub async fn search(&self, filter: &AuditFilter) -> Result<Vec<AuditRow>, StoreError> {
        // An action filter is the range [action, action + "/"): '/' follows '.', and the
        // characters of action names ([a-z0-9_.]) never fall between them.
        let action_end = filter.action.as_ref().map(|a| format!("{a}/"));
        let sql = if filter.session.is_some() {
            search_events!("session_id = $4")
        } else if filter.user.is_some() {
            search_events!("user_name = $1")
        } else if filter.action.is_some() {
            search_events!("action >= $2 AND action < $3")
        } else {
            search_events!("1 = 1")
        };
        let rows = sqlx::query(sql)
            .bind(filter.user.as_deref())
            .bind(filter.action.as_deref())
            .bind(action_end.as_deref())
            .bind(filter.session.as_deref())
            .bind(filter.since.map(to_micros).transpose()?)
            .bind(filter.until.map(to_micros).transpose()?)
            .bind(i64::from(filter.limit.unwrap_or(1000)))
            .fetch_all(self.pool())
            .await
            .map_err(self.db("searching audit events"))?;
        rows.iter().map(|r| self.event_from_row(r)).collect()
    }

    fn event_from_row(&self, row: &SqliteRow) -> Result<AuditRow, StoreError> {
        let op = "reading an audit event row";
        Ok(AuditRow {
            seq: self.seq(row.try_get("seq").map_err(self.db(op))?)?,
            id: row.try_get("event_id").map_err(self.db(op))?,
            at_us: row.try_get("at_us").map_err(self.db(op))?,
            action: row.try_get("action").map_err(self.db(op))?,
            user: row.try_get("user_name").map_err(self.db(op))?,
            session: row.try_get("session_id").map_err(self.db(op))?,
            doc: row.try_get("doc").map_err(self.db(op))?,
            prev_hash: row.try_get("prev_hash").map_err(self.db(op))?,
            hash: row.try_get("hash").map_err(self.db(op))?,
        })
    }

    // ----- checkpoints -------------------------------------------------------------------

    /// Up to `limit` checkpoints signing events after `seq`, oldest first.
    pub async fn checkpoints(
        &self,
        seq: u64,
        limit: u32,
    ) -> Result<Vec<CheckpointRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, head_hash, at_us, signature FROM audit_checkpoints \
             WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(to_i64(seq)?)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await
        .map_err(self.db("reading audit checkpoints"))?;
        rows.iter().map(|r| self.checkpoint_from_row(r)).collect()
    }

    /// The newest checkpoint, if there is one.
    pub async fn last_checkpoint(&self) -> Result<Option<CheckpointRow>, StoreError> {
        let row = sqlx::query(
            "SELECT seq, head_hash, at_us, signature FROM audit_checkpoints \
             ORDER BY seq DESC LIMIT 1",
        )
        .fetch_optional(self.pool())
        .await
        .map_err(self.db("reading the last audit checkpoint"))?;
        row.map(|r| self.checkpoint_from_row(&r)).transpose()
    }

    /// The checkpoint that signs event `seq`, if there is one.
    pub async fn checkpoint(&self, seq: u64) -> Result<Option<CheckpointRow>, StoreError> {
        let row = sqlx::query(
            "SELECT seq, head_hash, at_us, signature FROM audit_checkpoints WHERE seq = $1",
        )
        .bind(to_i64(seq)?)
        .fetch_optional(self.pool())
        .await
        .map_err(self.db(format!("reading the audit checkpoint at {seq}")))?;
        row.map(|r| self.checkpoint_from_row(&r)).transpose()
    }

    fn checkpoint_from_row(&self, row: &SqliteRow) -> Result<CheckpointRow, StoreError> {
        let op = "reading an audit checkpoint row";
        Ok(CheckpointRow {
            seq: self.seq(row.try_get("seq").map_err(self.db(op))?)?,
            head_hash: row.try_get("head_hash").map_err(self.db(op))?,
            at_us: row.try_get("at_us").map_err(self.db(op))?,
            signature: row.try_get("signature").map_err(self.db(op))?,
        })
    }

    // ----- sink cursors ------------------------------------------------------------------

    /// The last sequence number `sink` acknowledged, `None` if it never delivered anything.
    pub async fn sink_cursor(&self, sink: &str) -> Result<Option<u64>, StoreError> {
        let row = sqlx::query("SELECT seq FROM sink_cursors WHERE sink = $1")
            .bind(sink)
            .fetch_optional(self.pool())
            .await
            .map_err(self.db(format!("reading the cursor of sink '{sink}'")))?;
        match row {
            None => Ok(None),
            Some(r) => {
                let v: i64 = r
                    .try_get("seq")
                    .map_err(self.db(format!("reading the cursor of sink '{sink}'")))?;
                self.seq(v).map(Some)
            }
        }
    }

    /// Records that `sink` has delivered every event up to `seq`. The cursor may move back
    /// (to deliver events again); sinks de-duplicate by event id.
    pub async fn set_sink_cursor(&self, sink: &str, seq: u64) -> Result<(), StoreError> {
        if sink.is_empty() {
            return Err(StoreError::Invalid("a sink name cannot be empty".into()));
        }
        sqlx::query(
            "INSERT INTO sink_cursors (sink, seq, updated_us) VALUES ($1, $2, $3) \
             ON CONFLICT (sink) DO UPDATE SET seq = excluded.seq, updated_us = excluded.updated_us",
        )
        .bind(sink)
        .bind(to_i64(seq)?)
        .bind(crate::store::now_micros())
        .execute(self.pool())
        .await
        .map_err(self.db(format!("moving the cursor of sink '{sink}'")))?;
        Ok(())
    }

    /// Every sink cursor, by sink name.
    pub async fn sink_cursors(&self) -> Result<Vec<SinkCursor>, StoreError> {
        let op = "listing sink cursors";
        let rows = sqlx::query(
            "SELECT sink, seq, updated_us, failures, last_error, last_error_us, last_success_us \
             FROM sink_cursors ORDER BY sink",
        )
        .fetch_all(self.pool())
        .await
        .map_err(self.db(op))?;
        rows.iter()
            .map(|r| {
                let updated: i64 = r.try_get("updated_us").map_err(self.db(op))?;
                let time = |col: &str| -> Result<Option<OffsetDateTime>, StoreError> {
                    let v: Option<i64> = r.try_get(col).map_err(self.db(op))?;
                    v.map(|v| from_micros(v).ok_or_else(|| self.corrupt(format!("{col} {v}"))))
                        .transpose()
                };
                let failures: i64 = r.try_get("failures").map_err(self.db(op))?;
                Ok(SinkCursor {
                    sink: r.try_get("sink").map_err(self.db(op))?,
                    seq: self.seq(r.try_get("seq").map_err(self.db(op))?)?,
                    updated: from_micros(updated)
                        .ok_or_else(|| self.corrupt(format!("sink cursor time {updated}")))?,
                    failures: u64::try_from(failures).unwrap_or(0),
                    last_error: r.try_get("last_error").map_err(self.db(op))?,
                    last_error_at: time("last_error_us")?,
                    last_success_at: time("last_success_us")?,
                })
            })
            .collect()
    }

    /// Notes a successful delivery by `sink` (its cursor must exist).
    pub async fn record_sink_success(&self, sink: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE sink_cursors SET failures = 0, last_success_us = $2 WHERE sink = $1")
            .bind(sink)
            .bind(crate::store::now_micros())
            .execute(self.pool())
            .await
            .map_err(self.db(format!("recording a delivery of sink '{sink}'")))?;
        Ok(())
    }

    /// Notes a failed delivery attempt by `sink` and why.
    pub async fn record_sink_failure(&self, sink: &str, error: &str) -> Result<(), StoreError> {
        let error: String = error.chars().take(1000).collect();
        sqlx::query(
            "UPDATE sink_cursors SET failures = failures + 1, last_error = $2, \
             last_error_us = $3 WHERE sink = $1",
        )
        .bind(sink)
        .bind(error)
        .bind(crate::store::now_micros())
        .execute(self.pool())
        .await
        .map_err(self.db(format!("recording a failure of sink '{sink}'")))?;
        Ok(())
    }

    fn seq(&self, v: i64) -> Result<u64, StoreError> {
        u64::try_from(v).map_err(|_| self.corrupt(format!("negative audit sequence number {v}")))
    }
}

/// An open append: the write lock is held and [`AuditAppend::head`] is the chain head until
/// [`AuditAppend::commit`]. Dropping it rolls back.
pub struct AuditAppend {
    tx: sqlx::Transaction<'static, sqlx::Sqlite>,
    head: AuditHead,
    path: PathBuf,
}

impl fmt::Debug for AuditAppend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditAppend")
            .field("head", &self.head)
            .finish_non_exhaustive()
    }
}

impl AuditAppend {
    /// The chain head when the append began (updated by nothing: the caller tracks its own
    /// inserts).
    pub fn head(&self) -> &AuditHead {
        &self.head
    }

    fn db(&self, op: String) -> impl FnOnce(sqlx::Error) -> StoreError + '_ {
        move |source| StoreError::Database {
            path: self.path.clone(),
            op,
            source: Box::new(source),
        }
    }

    /// Inserts events, which must continue the chain in order (the schema refuses anything
    /// else).
    pub async fn insert_events(&mut self, rows: &[AuditRow]) -> Result<(), StoreError> {
        // Full chunks go in one multi-row statement each (one round trip to the database
        // thread instead of one per row); the remainder row by row.
        let mut chunks = rows.chunks_exact(ROWS_PER_INSERT);
        for chunk in chunks.by_ref() {
            let mut q = sqlx::query(AssertSqlSafe(multi_row_insert()));
            for r in chunk {
                q = bind_event(q, r)?;
            }
            if let Err(e) = q.execute(&mut *self.tx).await {
                let (first, last) = (chunk[0].seq, chunk[chunk.len() - 1].seq);
                return Err(self.db(format!("appending audit events {first} to {last}"))(e));
            }
        }
        for r in chunks.remainder() {
            let q = sqlx::query(
                "INSERT INTO audit_events (seq, event_id, at_us, action, user_name, session_id, \
                 doc, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            );
            if let Err(e) = bind_event(q, r)?.execute(&mut *self.tx).await {
                return Err(self.db(format!("appending audit event {}", r.seq))(e));
            }
        }
        Ok(())
    }

    /// Inserts a checkpoint of an event already in the log (or inserted in this append).
    pub async fn insert_checkpoint(&mut self, cp: &CheckpointRow) -> Result<(), StoreError> {
        let done = sqlx::query(
            "INSERT INTO audit_checkpoints (seq, head_hash, at_us, signature) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(to_i64(cp.seq)?)
        .bind(cp.head_hash.as_slice())
        .bind(cp.at_us)
        .bind(&cp.signature)
        .execute(&mut *self.tx)
        .await;
        match done {
            Ok(_) => Ok(()),
            Err(e) => Err(self
                .db(format!("storing the audit checkpoint at {}", cp.seq))(
                e
            )),
        }
    }

    /// Makes the append durable and releases the write lock.
    pub async fn commit(self) -> Result<(), StoreError> {
        let path = self.path;
        self.tx
            .commit()
            .await
            .map_err(|source| StoreError::Database {
                path,
                op: "committing audit events".into(),
                source: Box::new(source),
            })
    }
}

/// Rows per multi-row INSERT: 9 parameters each, far below SQLite's limit of 32766.
const ROWS_PER_INSERT: usize = 64;

/// `INSERT ... VALUES (...), (...)` for [`ROWS_PER_INSERT`] rows. Built once at run time
/// because it is too repetitive to write out; it contains only placeholders, never data,
/// which is why it may be passed to the driver as SQL.
fn multi_row_insert() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| {
        let mut sql = String::from(
            "INSERT INTO audit_events (seq, event_id, at_us, action, user_name, session_id, \
             doc, prev_hash, hash) VALUES ",
        );
        for row in 0..ROWS_PER_INSERT {
            if row > 0 {
                sql.push_str(", ");
            }
            let p = row * 9;
            let _ = write!(
                sql,
                "(${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${})",
                p + 1,
                p + 2,
                p + 3,
                p + 4,
                p + 5,
                p + 6,
                p + 7,
                p + 8,
                p + 9
            );
        }
        sql
    })
}

type SqliteQuery<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>;

fn bind_event<'q>(q: SqliteQuery<'q>, r: &'q AuditRow) -> Result<SqliteQuery<'q>, StoreError> {
    Ok(q.bind(to_i64(r.seq)?)
        .bind(&r.id)
        .bind(r.at_us)
        .bind(&r.action)
        .bind(r.user.as_deref())
        .bind(r.session.as_deref())
        .bind(&r.doc)
        .bind(r.prev_hash.as_slice())
        .bind(r.hash.as_slice()))
}

fn to_i64(v: u64) -> Result<i64, StoreError> {
    i64::try_from(v)
        .map_err(|_| StoreError::Invalid(format!("audit sequence number {v} is too large")))
}

fn to_micros(t: OffsetDateTime) -> Result<i64, StoreError> {
    crate::store::to_micros(t)
}

fn from_micros(us: i64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000).ok()
}
