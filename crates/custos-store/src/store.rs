//! The store's domain verbs. SQL stays inside this module and `sqlite.rs`; callers see only
//! custos-core records, the request types below and [`StoreError`].

use crate::keys::check_key_line;
use crate::sqlite::{self, BEGIN_WRITE, Pool};
use crate::{StoreError, Vault, password};
use custos_core::{
    AlertRecord, CommandRecord, Grant, HoldDecision, HostKeyPolicy, Id, Name, Secret,
    SessionLimits, SessionRecord, SessionState, TargetKind, TargetRecord, UserRecord,
};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use time::OffsetDateTime;

/// A user to create with [`Store::add_user`].
#[derive(Clone, Debug)]
pub struct NewUser {
    /// The login name at the gateway.
    pub name: Name,
    /// OpenSSH public key lines (`ALGO BASE64 [comment]`).
    pub ssh_keys: Vec<String>,
    /// A PHC string from [`password::hash`], if the user logs in with a password.
    pub password_hash: Option<String>,
    /// The password is a generated one that must be changed at first use.
    pub password_one_time: bool,
    /// When the account stops working, if ever.
    pub expires: Option<OffsetDateTime>,
}

impl NewUser {
    /// A user called `name` with no keys, no password and no expiry.
    pub fn named(name: Name) -> NewUser {
        NewUser {
            name,
            ssh_keys: Vec::new(),
            password_hash: None,
            password_one_time: false,
            expires: None,
        }
    }
}

/// Which sessions [`Store::sessions`] lists. The default lists every session.
#[derive(Clone, Debug, Default)]
pub struct SessionFilter {
    /// Only sessions that are still running.
    pub live_only: bool,
    /// Only sessions of this user.
    pub user: Option<Name>,
    /// Only sessions to this target.
    pub target: Option<Name>,
    /// Only sessions that started at or after this time.
    pub since: Option<OffsetDateTime>,
    /// At most this many sessions (the newest ones).
    pub limit: Option<u32>,
}

/// Which alerts [`Store::alerts`] returns.
#[derive(Clone, Debug, Default)]
pub struct AlertFilter {
    /// Only alerts raised at or after this time.
    pub since: Option<OffsetDateTime>,
    /// Only alerts of at least this severity (info, low, medium, high, critical).
    pub min_severity: Option<String>,
    /// Only alerts of this session.
    pub session: Option<Id>,
    /// Only holds still waiting for a moderator.
    pub pending: bool,
    /// At most this many (the newest); 1000 when not set.
    pub limit: Option<u32>,
}

/// The rank of a severity name, for filtering; `None` if it is not one.
pub fn severity_rank(s: &str) -> Option<i64> {
    ["info", "low", "medium", "high", "critical"]
        .iter()
        .position(|x| *x == s)
        .map(|p| p as i64)
}

/// Which commands [`Store::search_commands`] returns.
#[derive(Clone, Debug, Default)]
pub struct CommandFilter {
    /// Text the command contains (case-insensitive); empty matches every command.
    pub text: String,
    /// Only commands of this user.
    pub user: Option<Name>,
    /// Only commands on this target.
    pub target: Option<Name>,
    /// Only commands of this session.
    pub session: Option<Id>,
    /// Only commands run at or after this time.
    pub since: Option<OffsetDateTime>,
    /// At most this many (the newest, in the order they were stored); 1000 when not set.
    pub limit: Option<u32>,
}

/// A handle on the metadata store. Cloning is cheap and shares the connection pool; several
/// `Store`s (in several processes) may use the same database file at once.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    vault: Vault,
    path: PathBuf,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

// The SELECT macros keep each column list in one place while every statement stays a
// `&'static str` (the driver refuses runtime-built SQL without an explicit assertion, and no
// statement here needs to be built at run time).
macro_rules! select_users {
    ($rest:literal) => {
        concat!(
            "SELECT name, locked, expires_us, password_hash, password_one_time, created_us ",
            "FROM users ",
            $rest
        )
    };
}
macro_rules! select_targets {
    ($rest:literal) => {
        concat!(
            "SELECT t.name, t.kind, t.host, t.port, t.login, t.host_key_mode, t.host_key, ",
            "t.credential_kind, t.os_user, t.labels_json, t.allow_port_forwarding, t.created_us, ",
            "t.max_session_secs, t.idle_timeout_secs ",
            "FROM targets t ",
            $rest
        )
    };
}
macro_rules! select_sessions {
    ($rest:literal) => {
        concat!(
            "SELECT id, user_name, source, target_name, login, start_us, end_us, state, ",
            "bytes_in, bytes_out, exit_status, end_reason, recording FROM sessions ",
            $rest
        )
    };
}

impl Store {
    /// Opens the database at `db_path`, creating the file and schema if needed. `vault` seals
    /// and opens target credentials.
    pub async fn open(db_path: &Path, vault: Vault) -> Result<Store, StoreError> {
        let pool = sqlite::open(db_path).await?;
        Ok(Store {
            inner: Arc::new(Inner {
                pool,
                vault,
                path: db_path.to_path_buf(),
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The vault that seals this store's credentials.
    pub fn vault(&self) -> &Vault {
        &self.inner.vault
    }

    /// Closes every connection; later calls on any clone of this store fail.
    pub async fn close(&self) {
        self.inner.pool.close().await;
    }

    fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    /// Maps a driver error to [`StoreError::Database`] naming the file and `op`.
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

    async fn begin_write(
        &self,
        op: &str,
    ) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, StoreError> {
        self.pool()
            .begin_with(BEGIN_WRITE)
            .await
            .map_err(self.db(op))
    }

    // ----- users -------------------------------------------------------------------------

    /// Creates a user. Fails with [`StoreError::Exists`] if the name is taken, and with
    /// [`StoreError::Invalid`] for a malformed key line or password hash.
    pub async fn add_user(&self, user: NewUser) -> Result<UserRecord, StoreError> {
        let name = user.name;
        let mut keys = Vec::with_capacity(user.ssh_keys.len());
        for line in &user.ssh_keys {
            let key = check_key_line(line)?;
            if keys.iter().any(|k: &crate::keys::KeyLine| k.id == key.id) {
                return Err(StoreError::Invalid(format!(
                    "the same SSH key is listed twice for user '{name}'"
                )));
            }
            keys.push(key);
        }
        if let Some(h) = &user.password_hash {
            check_hash(h)?;
        }
        let created = now_micros();
        let op = format!("adding user '{name}'");
        let mut tx = self.begin_write(&op).await?;
        let inserted = sqlx::query(
            "INSERT INTO users (name, locked, expires_us, password_hash, password_one_time, \
             created_us) VALUES ($1, 0, $2, $3, $4, $5)",
        )
        .bind(name.as_str())
        .bind(user.expires.map(to_micros).transpose()?)
        .bind(user.password_hash.as_deref())
        .bind(user.password_one_time && user.password_hash.is_some())
        .bind(created)
        .execute(&mut *tx)
        .await;
        match inserted {
            Err(e) if sqlite::is_unique_violation(&e) => {
                return Err(StoreError::exists("user", &name));
            }
            other => {
                other.map_err(self.db(op.clone()))?;
            }
        }
        for (position, key) in keys.iter().enumerate() {
            sqlx::query(
                "INSERT INTO user_keys (user_name, key_id, key_line, position, created_us) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(name.as_str())
            .bind(&key.id)
            .bind(&key.line)
            .bind(i64::try_from(position).unwrap_or(i64::MAX))
            .bind(created)
            .execute(&mut *tx)
            .await
            .map_err(self.db(op.clone()))?;
        }
        tx.commit().await.map_err(self.db(op))?;
        self.user(&name)
            .await?
            .ok_or_else(|| StoreError::not_found("user", &name))
    }

    /// The user called `name`, if there is one.
    pub async fn user(&self, name: &Name) -> Result<Option<UserRecord>, StoreError> {
        let op = format!("reading user '{name}'");
        let row = sqlx::query(select_users!("WHERE name = $1"))
            .bind(name.as_str())
            .fetch_optional(self.pool())
            .await
            .map_err(self.db(op.clone()))?;
        let Some(row) = row else { return Ok(None) };
        let keys = sqlx::query(
            "SELECT key_line FROM user_keys WHERE user_name = $1 ORDER BY position, key_id",
        )
        .bind(name.as_str())
        .fetch_all(self.pool())
        .await
        .map_err(self.db(op.clone()))?;
        let keys = keys
            .iter()
            .map(|r| r.try_get::<String, _>("key_line"))
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.db(op))?;
        self.user_from_row(&row, keys).map(Some)
    }

    /// Every user, ordered by name.
    pub async fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        let op = "listing users";
        let rows = sqlx::query(select_users!("ORDER BY name"))
            .fetch_all(self.pool())
            .await
            .map_err(self.db(op))?;
        let key_rows = sqlx::query(
            "SELECT user_name, key_line FROM user_keys ORDER BY user_name, position, key_id",
        )
        .fetch_all(self.pool())
        .await
        .map_err(self.db(op))?;
        let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for r in &key_rows {
            let user: String = r.try_get("user_name").map_err(self.db(op))?;
            let line: String = r.try_get("key_line").map_err(self.db(op))?;
            keys.entry(user).or_default().push(line);
        }
        rows.iter()
            .map(|row| {
                let name: String = row.try_get("name").map_err(self.db(op))?;
                let k = keys.remove(&name).unwrap_or_default();
                self.user_from_row(row, k)
            })
            .collect()
    }

    fn user_from_row(
        &self,
        row: &SqliteRow,
        ssh_keys: Vec<String>,
    ) -> Result<UserRecord, StoreError> {
        let op = "reading a user row";
        let name: String = row.try_get("name").map_err(self.db(op))?;
        let hash: Option<String> = row.try_get("password_hash").map_err(self.db(op))?;
        Ok(UserRecord {
            name: self.name(&name)?,
            locked: row.try_get("locked").map_err(self.db(op))?,
            expires: self.opt_time(row.try_get("expires_us").map_err(self.db(op))?)?,
            ssh_keys,
            has_password: hash.is_some(),
            password_one_time: row.try_get("password_one_time").map_err(self.db(op))?,
            created: self.time(row.try_get("created_us").map_err(self.db(op))?)?,
        })
    }

    /// The password hash (PHC string) of `name`: `None` if the user has no password.
    /// Fails with [`StoreError::NotFound`] for an unknown user.
    pub async fn user_password_hash(&self, name: &Name) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT password_hash FROM users WHERE name = $1")
            .bind(name.as_str())
            .fetch_optional(self.pool())
            .await
            .map_err(self.db(format!("reading the password of user '{name}'")))?;
        let Some(row) = row else {
            return Err(StoreError::not_found("user", name));
        };
        row.try_get("password_hash")
            .map_err(self.db(format!("reading the password of user '{name}'")))
    }

    /// Sets (or with `None`, removes) the password hash of `name`. `one_time` marks a
    /// generated password that must be changed at first use.
    pub async fn set_password(
        &self,
        name: &Name,
        hash: Option<&str>,
        one_time: bool,
    ) -> Result<(), StoreError> {
        if let Some(h) = hash {
            check_hash(h)?;
        }
        let done = sqlx::query(
            "UPDATE users SET password_hash = $2, password_one_time = $3 WHERE name = $1",
        )
        .bind(name.as_str())
        .bind(hash)
        .bind(one_time && hash.is_some())
        .execute(self.pool())
        .await
        .map_err(self.db(format!("setting the password of user '{name}'")))?;
        expect_one(done.rows_affected(), "user", name)
    }

    /// Locks or unlocks `name`. A locked user cannot log in; their record stays.
    pub async fn set_locked(&self, name: &Name, locked: bool) -> Result<(), StoreError> {
        let done = sqlx::query("UPDATE users SET locked = $2 WHERE name = $1")
            .bind(name.as_str())
            .bind(locked)
            .execute(self.pool())
            .await
            .map_err(self.db(format!("locking user '{name}'")))?;
        expect_one(done.rows_affected(), "user", name)
    }

    /// Sets or clears the expiry time of `name`.
    pub async fn set_expires(
        &self,
        name: &Name,
        expires: Option<OffsetDateTime>,
    ) -> Result<(), StoreError> {
        let done = sqlx::query("UPDATE users SET expires_us = $2 WHERE name = $1")
            .bind(name.as_str())
            .bind(expires.map(to_micros).transpose()?)
            .execute(self.pool())
            .await
            .map_err(self.db(format!("setting the expiry of user '{name}'")))?;
        expect_one(done.rows_affected(), "user", name)
    }

    /// Removes `name` with their keys and grants. Sessions keep the name as history.
    pub async fn remove_user(&self, name: &Name) -> Result<(), StoreError> {
        // Keys and grants go by ON DELETE CASCADE.
        let done = sqlx::query("DELETE FROM users WHERE name = $1")
            .bind(name.as_str())
            .execute(self.pool())
            .await
            .map_err(self.db(format!("removing user '{name}'")))?;
        expect_one(done.rows_affected(), "user", name)
    }

    /// Adds an SSH public key line to `name`. Fails with [`StoreError::Exists`] if the user
    /// already has this key (whatever its comment).
    pub async fn add_user_key(&self, name: &Name, key_line: &str) -> Result<(), StoreError> {
        let key = check_key_line(key_line)?;
        let op = format!("adding a key to user '{name}'");
        let mut tx = self.begin_write(&op).await?;
        let exists = sqlx::query("SELECT 1 AS one FROM users WHERE name = $1")
            .bind(name.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(self.db(op.clone()))?;
        if exists.is_none() {
            return Err(StoreError::not_found("user", name));
        }
        let inserted = sqlx::query(
            "INSERT INTO user_keys (user_name, key_id, key_line, position, created_us) \
             SELECT $1, $2, $3, COALESCE(MAX(position), -1) + 1, $4 \
             FROM user_keys WHERE user_name = $1",
        )
        .bind(name.as_str())
        .bind(&key.id)
        .bind(&key.line)
        .bind(now_micros())
        .execute(&mut *tx)
        .await;
        match inserted {
            Err(e) if sqlite::is_unique_violation(&e) => {
                return Err(StoreError::exists("SSH key of user", name));
            }
            other => {
                other.map_err(self.db(op.clone()))?;
            }
        }
        tx.commit().await.map_err(self.db(op))
    }

    /// Removes the key identified by `key_line` (its comment is ignored) from `name`.
    pub async fn remove_user_key(&self, name: &Name, key_line: &str) -> Result<(), StoreError> {
        let key = check_key_line(key_line)?;
        let done = sqlx::query("DELETE FROM user_keys WHERE user_name = $1 AND key_id = $2")
            .bind(name.as_str())
            .bind(&key.id)
            .execute(self.pool())
            .await
            .map_err(self.db(format!("removing a key of user '{name}'")))?;
        expect_one(done.rows_affected(), "SSH key of user", name)
    }

    // ----- targets -----------------------------------------------------------------------

    /// Creates a target. `credential` (a password or private key for SSH targets) is stored
    /// only sealed by the vault, bound to the target name. A host key is stored as
    /// `ALGO BASE64`, without its comment; the returned record shows what was stored.
    pub async fn add_target(
        &self,
        target: TargetRecord,
        credential: Option<Secret>,
    ) -> Result<TargetRecord, StoreError> {
        let name = target.name.clone();
        let cols = TargetColumns::from_record(&target)?;
        if credential.is_some() && matches!(target.kind, TargetKind::Local { .. }) {
            return Err(StoreError::Invalid(format!(
                "target '{name}' is a local target and takes no credential"
            )));
        }
        let sealed = credential
            .as_ref()
            .map(|c| self.inner.vault.seal(name.as_str(), c))
            .transpose()?;
        let op = format!("adding target '{name}'");
        let mut tx = self.begin_write(&op).await?;
        let inserted = sqlx::query(
            "INSERT INTO targets (name, kind, host, port, login, host_key_mode, host_key, \
             credential_kind, os_user, labels_json, allow_port_forwarding, created_us, \
             max_session_secs, idle_timeout_secs) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(name.as_str())
        .bind(cols.kind)
        .bind(cols.host)
        .bind(cols.port)
        .bind(cols.login)
        .bind(cols.host_key_mode)
        .bind(cols.host_key)
        .bind(cols.credential_kind)
        .bind(cols.os_user)
        .bind(cols.labels_json)
        .bind(target.allow_port_forwarding)
        .bind(to_micros(target.created)?)
        .bind(limit_col(target.limits.max_duration_secs)?)
        .bind(limit_col(target.limits.idle_timeout_secs)?)
        .execute(&mut *tx)
        .await;
        match inserted {
            Err(e) if sqlite::is_unique_violation(&e) => {
                return Err(StoreError::exists("target", &name));
            }
            other => {
                other.map_err(self.db(op.clone()))?;
            }
        }
        if let Some(sealed) = sealed {
            sqlx::query("INSERT INTO target_credentials (target_name, sealed) VALUES ($1, $2)")
                .bind(name.as_str())
                .bind(sealed)
                .execute(&mut *tx)
                .await
                .map_err(self.db(op.clone()))?;
        }
        tx.commit().await.map_err(self.db(op))?;
        self.target(&name)
            .await?
            .ok_or_else(|| StoreError::not_found("target", &name))
    }

    /// The target called `name`, if there is one.
    pub async fn target(&self, name: &Name) -> Result<Option<TargetRecord>, StoreError> {
        let row = sqlx::query(select_targets!("WHERE t.name = $1"))
            .bind(name.as_str())
            .fetch_optional(self.pool())
            .await
            .map_err(self.db(format!("reading target '{name}'")))?;
        row.map(|r| self.target_from_row(&r)).transpose()
    }

    /// Every target, ordered by name.
    pub async fn targets(&self) -> Result<Vec<TargetRecord>, StoreError> {
        let rows = sqlx::query(select_targets!("ORDER BY t.name"))
            .fetch_all(self.pool())
            .await
            .map_err(self.db("listing targets"))?;
        rows.iter().map(|r| self.target_from_row(r)).collect()
    }

    /// The decrypted credential of target `name` (`None` if it has none). Fails with
    /// [`StoreError::NotFound`] for an unknown target and [`StoreError::Vault`] when the
    /// vault key does not open it.
    pub async fn target_credential(&self, name: &Name) -> Result<Option<Secret>, StoreError> {
        let op = format!("reading the credential of target '{name}'");
        let row = sqlx::query(
            "SELECT c.sealed AS sealed FROM targets t \
             LEFT JOIN target_credentials c ON c.target_name = t.name WHERE t.name = $1",
        )
        .bind(name.as_str())
        .fetch_optional(self.pool())
        .await
        .map_err(self.db(op.clone()))?;
        let Some(row) = row else {
            return Err(StoreError::not_found("target", name));
        };
        let sealed: Option<Vec<u8>> = row.try_get("sealed").map_err(self.db(op))?;
        sealed
            .map(|s| {
                self.inner.vault.open(name.as_str(), &s).map_err(|_| {
                    StoreError::Vault(format!(
                        "the credential of target '{name}' could not be decrypted: \
                         wrong vault key, or the stored data was altered"
                    ))
                })
            })
            .transpose()
    }

    /// Replaces (or with `None`, removes) the credential of target `name`.
    pub async fn set_target_credential(
        &self,
        name: &Name,
        credential: Option<Secret>,
    ) -> Result<(), StoreError> {
        let op = format!("setting the credential of target '{name}'");
        let target = self
            .target(name)
            .await?
            .ok_or_else(|| StoreError::not_found("target", name))?;
        if credential.is_some() && matches!(target.kind, TargetKind::Local { .. }) {
            return Err(StoreError::Invalid(format!(
                "target '{name}' is a local target and takes no credential"
            )));
        }
        let sealed = credential
            .as_ref()
            .map(|c| self.inner.vault.seal(name.as_str(), c))
            .transpose()?;
        let mut tx = self.begin_write(&op).await?;
        sqlx::query("DELETE FROM target_credentials WHERE target_name = $1")
            .bind(name.as_str())
            .execute(&mut *tx)
            .await
            .map_err(self.db(op.clone()))?;
        if let Some(sealed) = sealed {
            let inserted =
                sqlx::query("INSERT INTO target_credentials (target_name, sealed) VALUES ($1, $2)")
                    .bind(name.as_str())
                    .bind(sealed)
                    .execute(&mut *tx)
                    .await;
            match inserted {
                // The target was removed meanwhile.
                Err(e) if sqlite::is_foreign_key_violation(&e) => {
                    return Err(StoreError::not_found("target", name));
                }
                other => {
                    other.map_err(self.db(op.clone()))?;
                }
            }
        }
        tx.commit().await.map_err(self.db(op))
    }

    /// Trust on first use: pins `key` (`ALGO BASE64 [comment]`) as the host key of SSH
    /// target `name` if none is pinned yet, returning `true`. Returns `false` if this same key
    /// is already pinned, and fails with [`StoreError::HostKeyMismatch`] if another is.
    pub async fn pin_host_key(&self, name: &Name, key: &str) -> Result<bool, StoreError> {
        let key = check_key_line(key)?.id;
        let op = format!("pinning the host key of target '{name}'");
        // The conditional update makes concurrent first connections agree on one key.
        let done = sqlx::query(
            "UPDATE targets SET host_key = $2 \
             WHERE name = $1 AND kind = 'ssh' AND host_key IS NULL",
        )
        .bind(name.as_str())
        .bind(&key)
        .execute(self.pool())
        .await
        .map_err(self.db(op))?;
        if done.rows_affected() == 1 {
            return Ok(true);
        }
        let target = self
            .target(name)
            .await?
            .ok_or_else(|| StoreError::not_found("target", name))?;
        let TargetKind::Ssh { host_key, .. } = &target.kind else {
            return Err(StoreError::Invalid(format!(
                "target '{name}' is a local target and has no host key"
            )));
        };
        match host_key.pinned_key() {
            Some(pinned) if same_key(pinned, &key) => Ok(false),
            _ => Err(StoreError::HostKeyMismatch {
                target: name.to_string(),
            }),
        }
    }

    /// Removes target `name` with its credential and grants. Sessions keep the name.
    pub async fn remove_target(&self, name: &Name) -> Result<(), StoreError> {
        let done = sqlx::query("DELETE FROM targets WHERE name = $1")
            .bind(name.as_str())
            .execute(self.pool())
            .await
            .map_err(self.db(format!("removing target '{name}'")))?;
        expect_one(done.rows_affected(), "target", name)
    }

    fn target_from_row(&self, row: &SqliteRow) -> Result<TargetRecord, StoreError> {
        let op = "reading a target row";
        let get_s = |col: &str| -> Result<Option<String>, StoreError> {
            row.try_get::<Option<String>, _>(col).map_err(self.db(op))
        };
        let name: String = row.try_get("name").map_err(self.db(op))?;
        let kind: String = row.try_get("kind").map_err(self.db(op))?;
        let missing = |col: &str| self.corrupt(format!("target '{name}' has no {col}"));
        let kind = match kind.as_str() {
            "ssh" => {
                let port: Option<i64> = row.try_get("port").map_err(self.db(op))?;
                let port = port.ok_or_else(|| missing("port"))?;
                let port = u16::try_from(port)
                    .map_err(|_| self.corrupt(format!("target '{name}' has port {port}")))?;
                let host_key = get_s("host_key")?;
                let host_key = match get_s("host_key_mode")?.as_deref() {
                    Some("pinned") => HostKeyPolicy::Pinned {
                        key: host_key.ok_or_else(|| missing("pinned host key"))?,
                    },
                    Some("tofu") => HostKeyPolicy::TrustOnFirstUse { key: host_key },
                    other => {
                        return Err(self.corrupt(format!(
                            "target '{name}' has unknown host key mode {other:?}"
                        )));
                    }
                };
                TargetKind::Ssh {
                    host: get_s("host")?.ok_or_else(|| missing("host"))?,
                    port,
                    login: get_s("login")?.ok_or_else(|| missing("login"))?,
                    host_key,
                    credential_kind: get_s("credential_kind")?.unwrap_or_default(),
                }
            }
            "local" => TargetKind::Local {
                os_user: get_s("os_user")?,
            },
            other => {
                return Err(self.corrupt(format!("target '{name}' has unknown kind '{other}'")));
            }
        };
        let labels_json: String = row.try_get("labels_json").map_err(self.db(op))?;
        let labels: BTreeMap<String, String> = serde_json::from_str(&labels_json)
            .map_err(|e| self.corrupt(format!("target '{name}' has unreadable labels: {e}")))?;
        Ok(TargetRecord {
            name: self.name(&name)?,
            kind,
            labels,
            allow_port_forwarding: row.try_get("allow_port_forwarding").map_err(self.db(op))?,
            limits: self.limits_from_row(row)?,
            created: self.time(row.try_get("created_us").map_err(self.db(op))?)?,
        })
    }

    // ----- grants ------------------------------------------------------------------------

    /// Allows `user` to open sessions on `target`. Both must exist. Granting twice is not an
    /// error; the first grant's time is kept.
    pub async fn grant(&self, user: &Name, target: &Name) -> Result<(), StoreError> {
        let op = format!("granting '{user}' access to '{target}'");
        let mut tx = self.begin_write(&op).await?;
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM users WHERE name = $1) AS u, \
                    (SELECT COUNT(*) FROM targets WHERE name = $2) AS t",
        )
        .bind(user.as_str())
        .bind(target.as_str())
        .fetch_one(&mut *tx)
        .await
        .map_err(self.db(op.clone()))?;
        let users: i64 = row.try_get("u").map_err(self.db(op.clone()))?;
        let targets: i64 = row.try_get("t").map_err(self.db(op.clone()))?;
        if users == 0 {
            return Err(StoreError::not_found("user", user));
        }
        if targets == 0 {
            return Err(StoreError::not_found("target", target));
        }
        sqlx::query(
            "INSERT INTO grants (user_name, target_name, created_us) VALUES ($1, $2, $3) \
             ON CONFLICT (user_name, target_name) DO NOTHING",
        )
        .bind(user.as_str())
        .bind(target.as_str())
        .bind(now_micros())
        .execute(&mut *tx)
        .await
        .map_err(self.db(op.clone()))?;
        tx.commit().await.map_err(self.db(op))
    }

    /// Withdraws a grant. Fails with [`StoreError::NotFound`] if there is no such grant.
    pub async fn revoke(&self, user: &Name, target: &Name) -> Result<(), StoreError> {
        let done = sqlx::query("DELETE FROM grants WHERE user_name = $1 AND target_name = $2")
            .bind(user.as_str())
            .bind(target.as_str())
            .execute(self.pool())
            .await
            .map_err(self.db(format!("revoking '{user}' access to '{target}'")))?;
        expect_one(done.rows_affected(), "grant", format!("{user} -> {target}"))
    }

    /// Every grant, ordered by user then target.
    pub async fn grants(&self) -> Result<Vec<Grant>, StoreError> {
        let op = "listing grants";
        let rows = sqlx::query(
            "SELECT user_name, target_name, created_us, max_session_secs, idle_timeout_secs \
             FROM grants \
             ORDER BY user_name, target_name",
        )
        .fetch_all(self.pool())
        .await
        .map_err(self.db(op))?;
        rows.iter().map(|r| self.grant_from_row(r)).collect()
    }

    fn grant_from_row(&self, r: &SqliteRow) -> Result<Grant, StoreError> {
        let op = "reading a grant row";
        Ok(Grant {
            user: self.name(&r.try_get::<String, _>("user_name").map_err(self.db(op))?)?,
            target: self.name(&r.try_get::<String, _>("target_name").map_err(self.db(op))?)?,
            limits: self.limits_from_row(r)?,
            created: self.time(r.try_get("created_us").map_err(self.db(op))?)?,
        })
    }

    /// The grant of `user` on `target`, if there is one.
    pub async fn grant_of(&self, user: &Name, target: &Name) -> Result<Option<Grant>, StoreError> {
        let row = sqlx::query(
            "SELECT user_name, target_name, created_us, max_session_secs, idle_timeout_secs \
             FROM grants WHERE user_name = $1 AND target_name = $2",
        )
        .bind(user.as_str())
        .bind(target.as_str())
        .fetch_optional(self.pool())
        .await
        .map_err(self.db(format!("reading the grant of '{user}' on '{target}'")))?;
        row.map(|r| self.grant_from_row(&r)).transpose()
    }

    /// Sets the session limits of an existing grant.
    pub async fn set_grant_limits(
        &self,
        user: &Name,
        target: &Name,
        limits: SessionLimits,
    ) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE grants SET max_session_secs = $3, idle_timeout_secs = $4 \
             WHERE user_name = $1 AND target_name = $2",
        )
        .bind(user.as_str())
        .bind(target.as_str())
        .bind(limit_col(limits.max_duration_secs)?)
        .bind(limit_col(limits.idle_timeout_secs)?)
        .execute(self.pool())
        .await
        .map_err(self.db(format!("setting the limits of '{user}' on '{target}'")))?;
        expect_one(done.rows_affected(), "grant", format!("{user} -> {target}"))
    }

    /// Sets the session limits of a target.
    pub async fn set_target_limits(
        &self,
        name: &Name,
        limits: SessionLimits,
    ) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE targets SET max_session_secs = $2, idle_timeout_secs = $3 WHERE name = $1",
        )
        .bind(name.as_str())
        .bind(limit_col(limits.max_duration_secs)?)
        .bind(limit_col(limits.idle_timeout_secs)?)
        .execute(self.pool())
        .await
        .map_err(self.db(format!("setting the limits of target '{name}'")))?;
        expect_one(done.rows_affected(), "target", name)
    }

    fn limits_from_row(&self, r: &SqliteRow) -> Result<SessionLimits, StoreError> {
        let op = "reading session limits";
        let get = |col: &str| -> Result<Option<u64>, StoreError> {
            let v: Option<i64> = r.try_get(col).map_err(self.db(op))?;
            v.map(|v| {
                u64::try_from(v).map_err(|_| self.corrupt(format!("{col} is negative ({v})")))
            })
            .transpose()
        };
        Ok(SessionLimits {
            max_duration_secs: get("max_session_secs")?,
            idle_timeout_secs: get("idle_timeout_secs")?,
        })
    }

    /// The targets `user` may reach, ordered by name. Fails with [`StoreError::NotFound`] for
    /// an unknown user.
    pub async fn targets_for_user(&self, user: &Name) -> Result<Vec<TargetRecord>, StoreError> {
        let rows = sqlx::query(select_targets!(
            "JOIN grants g ON g.target_name = t.name WHERE g.user_name = $1 ORDER BY t.name"
        ))
        .bind(user.as_str())
        .fetch_all(self.pool())
        .await
        .map_err(self.db(format!("listing the targets of user '{user}'")))?;
        if rows.is_empty() && self.user(user).await?.is_none() {
            return Err(StoreError::not_found("user", user));
        }
        rows.iter().map(|r| self.target_from_row(r)).collect()
    }

    /// Whether `user` may open sessions on `target`. Unknown names are simply not granted.
    pub async fn is_granted(&self, user: &Name, target: &Name) -> Result<bool, StoreError> {
        let row =
            sqlx::query("SELECT 1 AS one FROM grants WHERE user_name = $1 AND target_name = $2")
                .bind(user.as_str())
                .bind(target.as_str())
                .fetch_optional(self.pool())
                .await
                .map_err(self.db(format!("checking the grant of '{user}' on '{target}'")))?;
        Ok(row.is_some())
    }

    // ----- sessions ----------------------------------------------------------------------

    /// Records a new session. Fails with [`StoreError::Exists`] if the id is taken.
    pub async fn create_session(&self, s: &SessionRecord) -> Result<(), StoreError> {
        let op = format!("recording session {}", s.id);
        let inserted = sqlx::query(
            "INSERT INTO sessions (id, user_name, source, target_name, login, start_us, end_us, \
             state, bytes_in, bytes_out, exit_status, end_reason, recording) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(s.id.to_string())
        .bind(s.user.as_str())
        .bind(&s.source)
        .bind(s.target.as_str())
        .bind(&s.login)
        .bind(to_micros(s.start)?)
        .bind(s.end.map(to_micros).transpose()?)
        .bind(s.state.as_str())
        .bind(to_i64(s.bytes_in, "bytes_in")?)
        .bind(to_i64(s.bytes_out, "bytes_out")?)
        .bind(s.exit_status.map(i64::from))
        .bind(s.end_reason.as_deref())
        .bind(&s.recording)
        .execute(self.pool())
        .await;
        match inserted {
            Err(e) if sqlite::is_unique_violation(&e) => Err(StoreError::exists("session", s.id)),
            other => other.map(drop).map_err(self.db(op)),
        }
    }

    /// Updates the byte counters of a session (called periodically while it runs).
    pub async fn update_session_bytes(
        &self,
        id: &Id,
        bytes_in: u64,
        bytes_out: u64,
    ) -> Result<(), StoreError> {
        let done = sqlx::query("UPDATE sessions SET bytes_in = $2, bytes_out = $3 WHERE id = $1")
            .bind(id.to_string())
            .bind(to_i64(bytes_in, "bytes_in")?)
            .bind(to_i64(bytes_out, "bytes_out")?)
            .execute(self.pool())
            .await
            .map_err(self.db(format!("updating session {id}")))?;
        expect_one(done.rows_affected(), "session", id)
    }

    /// Records the end of a session. `state` must be `Ended` or `Interrupted`.
    #[allow(clippy::too_many_arguments)]
    pub async fn end_session(
        &self,
        id: &Id,
        end: OffsetDateTime,
        state: SessionState,
        exit_status: Option<u32>,
        end_reason: &str,
        bytes_in: u64,
        bytes_out: u64,
    ) -> Result<(), StoreError> {
        if state == SessionState::Live {
            return Err(StoreError::Invalid(format!(
                "session {id} cannot end in state 'live'"
            )));
        }
        let done = sqlx::query(
            "UPDATE sessions SET end_us = $2, state = $3, exit_status = $4, end_reason = $5, \
             bytes_in = $6, bytes_out = $7 WHERE id = $1",
        )
        .bind(id.to_string())
        .bind(to_micros(end)?)
        .bind(state.as_str())
        .bind(exit_status.map(i64::from))
        .bind(end_reason)
        .bind(to_i64(bytes_in, "bytes_in")?)
        .bind(to_i64(bytes_out, "bytes_out")?)
        .execute(self.pool())
        .await
        .map_err(self.db(format!("ending session {id}")))?;
        expect_one(done.rows_affected(), "session", id)
    }

    /// The session with this id, if there is one.
    pub async fn session(&self, id: &Id) -> Result<Option<SessionRecord>, StoreError> {
        let row = sqlx::query(select_sessions!("WHERE id = $1"))
            .bind(id.to_string())
            .fetch_optional(self.pool())
            .await
            .map_err(self.db(format!("reading session {id}")))?;
        row.map(|r| self.session_from_row(&r)).transpose()
    }

    /// The one session whose id is or starts with `prefix` (case-insensitive; `O`, `I` and
    /// `L` read as `0`, `1`, `1` as in ids). Fails with [`StoreError::NotFound`] or
    /// [`StoreError::Ambiguous`].
    pub async fn find_session(&self, prefix: &str) -> Result<SessionRecord, StoreError> {
        let wanted = normalize_id_prefix(prefix)?;
        let rows = sqlx::query(select_sessions!("WHERE id LIKE $1 ORDER BY id LIMIT 2"))
            .bind(format!("{wanted}%"))
            .fetch_all(self.pool())
            .await
            .map_err(self.db(format!("looking up session '{prefix}'")))?;
        match rows.as_slice() {
            [] => Err(StoreError::not_found("session", prefix.trim())),
            [one] => self.session_from_row(one),
            _ => Err(StoreError::Ambiguous {
                what: "session",
                prefix: prefix.trim().to_string(),
            }),
        }
    }

    /// Sessions matching `filter`, newest first.
    pub async fn sessions(&self, filter: SessionFilter) -> Result<Vec<SessionRecord>, StoreError> {
        let rows = sqlx::query(select_sessions!(
            "WHERE ($1 = 0 OR state = 'live') \
               AND ($2 IS NULL OR user_name = $2) \
               AND ($3 IS NULL OR target_name = $3) \
               AND ($4 IS NULL OR start_us >= $4) \
             ORDER BY start_us DESC, id DESC LIMIT $5"
        ))
        .bind(filter.live_only)
        .bind(filter.user.as_ref().map(Name::as_str))
        .bind(filter.target.as_ref().map(Name::as_str))
        .bind(filter.since.map(to_micros).transpose()?)
        .bind(filter.limit.map_or(i64::MAX, i64::from))
        .fetch_all(self.pool())
        .await
        .map_err(self.db("listing sessions"))?;
        rows.iter().map(|r| self.session_from_row(r)).collect()
    }

    /// Sessions still marked live, newest first.
    pub async fn live_sessions(&self) -> Result<Vec<SessionRecord>, StoreError> {
        self.sessions(SessionFilter {
            live_only: true,
            ..SessionFilter::default()
        })
        .await
    }

    /// At server start: marks every session still recorded as live as interrupted at `now`
    /// (the previous server process stopped without ending them) and returns them as updated.
    /// Only one server may use a database, or it would interrupt the other's sessions.
    pub async fn mark_live_sessions_interrupted(
        &self,
        now: OffsetDateTime,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        let op = "marking live sessions interrupted";
        let reason = custos_core::EndReason::Interrupted.to_string();
        let mut tx = self.begin_write(op).await?;
        let rows = sqlx::query(select_sessions!(
            "WHERE state = 'live' ORDER BY start_us DESC, id DESC"
        ))
        .fetch_all(&mut *tx)
        .await
        .map_err(self.db(op))?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut s = self.session_from_row(row)?;
            // A session that started after `now` (clock step) still ends no earlier than it began.
            let end = now.max(s.start);
            sqlx::query(
                "UPDATE sessions SET state = $2, end_us = $3, end_reason = $4 \
                 WHERE id = $1 AND state = 'live'",
            )
            .bind(s.id.to_string())
            .bind(SessionState::Interrupted.as_str())
            .bind(to_micros(end)?)
            .bind(&reason)
            .execute(&mut *tx)
            .await
            .map_err(self.db(op))?;
            s.state = SessionState::Interrupted;
            s.end = Some(self.time(to_micros(end)?)?);
            s.end_reason = Some(reason.clone());
            out.push(s);
        }
        tx.commit().await.map_err(self.db(op))?;
        Ok(out)
    }

    fn session_from_row(&self, row: &SqliteRow) -> Result<SessionRecord, StoreError> {
        let op = "reading a session row";
        let id: String = row.try_get("id").map_err(self.db(op))?;
        let parsed_id: Id = id
            .parse()
            .map_err(|e| self.corrupt(format!("session id '{id}' is not valid: {e}")))?;
        let state: String = row.try_get("state").map_err(self.db(op))?;
        let state = SessionState::parse(&state)
            .ok_or_else(|| self.corrupt(format!("session {id} has unknown state '{state}'")))?;
        let count = |col: &str| -> Result<u64, StoreError> {
            let v: i64 = row.try_get(col).map_err(self.db(op))?;
            u64::try_from(v).map_err(|_| self.corrupt(format!("session {id} has {col} = {v}")))
        };
        let exit: Option<i64> = row.try_get("exit_status").map_err(self.db(op))?;
        let exit_status = exit
            .map(|v| {
                u32::try_from(v)
                    .map_err(|_| self.corrupt(format!("session {id} has exit status {v}")))
            })
            .transpose()?;
        Ok(SessionRecord {
            id: parsed_id,
            user: self.name(&row.try_get::<String, _>("user_name").map_err(self.db(op))?)?,
            source: row.try_get("source").map_err(self.db(op))?,
            target: self.name(
                &row.try_get::<String, _>("target_name")
                    .map_err(self.db(op))?,
            )?,
            login: row.try_get("login").map_err(self.db(op))?,
            start: self.time(row.try_get("start_us").map_err(self.db(op))?)?,
            end: self.opt_time(row.try_get("end_us").map_err(self.db(op))?)?,
            state,
            bytes_in: count("bytes_in")?,
            bytes_out: count("bytes_out")?,
            exit_status,
            end_reason: row.try_get("end_reason").map_err(self.db(op))?,
            recording: row.try_get("recording").map_err(self.db(op))?,
        })
    }

    // ----- decoding helpers --------------------------------------------------------------

    fn name(&self, s: &str) -> Result<Name, StoreError> {
        Name::new(s).map_err(|e| self.corrupt(format!("stored name is not valid: {e}")))
    }

    fn time(&self, micros: i64) -> Result<OffsetDateTime, StoreError> {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000)
            .map_err(|_| self.corrupt(format!("timestamp {micros} is out of range")))
    }

    fn opt_time(&self, micros: Option<i64>) -> Result<Option<OffsetDateTime>, StoreError> {
        micros.map(|m| self.time(m)).transpose()
    }
}

/// Target fields flattened to columns.
struct TargetColumns {
    kind: &'static str,
    host: Option<String>,
    port: Option<i64>,
    login: Option<String>,
    host_key_mode: Option<&'static str>,
    host_key: Option<String>,
    credential_kind: Option<String>,
    os_user: Option<String>,
    labels_json: String,
}

impl TargetColumns {
    fn from_record(t: &TargetRecord) -> Result<TargetColumns, StoreError> {
        let labels_json = serde_json::to_string(&t.labels)
            .map_err(|e| StoreError::Invalid(format!("labels of target '{}': {e}", t.name)))?;
        Ok(match &t.kind {
            TargetKind::Ssh {
                host,
                port,
                login,
                host_key,
                credential_kind,
            } => {
                if host.trim().is_empty() {
                    return Err(StoreError::Invalid(format!(
                        "target '{}' needs a host",
                        t.name
                    )));
                }
                if login.trim().is_empty() {
                    return Err(StoreError::Invalid(format!(
                        "target '{}' needs a login name",
                        t.name
                    )));
                }
                let (mode, key) = match host_key {
                    HostKeyPolicy::Pinned { key } => ("pinned", Some(check_key_line(key)?.id)),
                    HostKeyPolicy::TrustOnFirstUse { key } => (
                        "tofu",
                        key.as_deref()
                            .map(check_key_line)
                            .transpose()?
                            .map(|k| k.id),
                    ),
                };
                TargetColumns {
                    kind: "ssh",
                    host: Some(host.clone()),
                    port: Some(i64::from(*port)),
                    login: Some(login.clone()),
                    host_key_mode: Some(mode),
                    host_key: key,
                    credential_kind: Some(credential_kind.clone()),
                    os_user: None,
                    labels_json,
                }
            }
            TargetKind::Local { os_user } => TargetColumns {
                kind: "local",
                host: None,
                port: None,
                login: None,
                host_key_mode: None,
                host_key: None,
                credential_kind: None,
                os_user: os_user.clone(),
                labels_json,
            },
        })
    }
}

/// Whether two key lines name the same key (comments ignored).
fn same_key(a: &str, b: &str) -> bool {
    a.split_whitespace()
        .take(2)
        .eq(b.split_whitespace().take(2))
}

fn check_hash(h: &str) -> Result<(), StoreError> {
    if password::is_valid_hash(h) {
        Ok(())
    } else {
        // The value itself is not repeated: it might be a password pasted in the wrong place.
        Err(StoreError::Invalid(
            "the password hash is not an argon2 PHC string".into(),
        ))
    }
}

fn expect_one(rows: u64, what: &'static str, name: impl ToString) -> Result<(), StoreError> {
    if rows == 0 {
        Err(StoreError::not_found(what, name))
    } else {
        Ok(())
    }
}

/// Why one row of a batch could not be inserted.
enum InsertError {
    Invalid(StoreError),
    Db(sqlx::Error),
}

impl From<StoreError> for InsertError {
    fn from(e: StoreError) -> Self {
        InsertError::Invalid(e)
    }
}

/// A session limit as stored: `NULL` for none.
fn limit_col(v: Option<u64>) -> Result<Option<i64>, StoreError> {
    v.map(|v| to_i64(v, "session limit")).transpose()
}

fn to_i64(v: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Invalid(format!("{what} {v} is too large to store")))
}

/// Timestamps are stored as microseconds since the Unix epoch; finer precision is dropped.
pub(crate) fn to_micros(t: OffsetDateTime) -> Result<i64, StoreError> {
    i64::try_from(t.unix_timestamp_nanos() / 1000)
        .map_err(|_| StoreError::Invalid(format!("time {t} is out of range")))
}

pub(crate) fn now_micros() -> i64 {
    // Invariant: the current time is within ±292,000 years of 1970.
    to_micros(OffsetDateTime::now_utc()).unwrap_or(i64::MAX)
}

/// Upper-cases an id prefix and maps look-alike letters, refusing anything that cannot be part
/// of an id.
fn normalize_id_prefix(prefix: &str) -> Result<String, StoreError> {
    const ALPHABET: &str = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let prefix = prefix.trim();
    if prefix.is_empty() {
        return Err(StoreError::Invalid(
            "a session id prefix cannot be empty".into(),
        ));
    }
    if prefix.chars().count() > 26 {
        return Err(StoreError::Invalid(format!(
            "'{prefix}' is longer than a session id (26 characters)"
        )));
    }
    prefix
        .chars()
        .map(|c| match c.to_ascii_uppercase() {
            'O' => Ok('0'),
            'I' | 'L' => Ok('1'),
            c if ALPHABET.contains(c) => Ok(c),
            _ => Err(StoreError::Invalid(format!(
                "'{prefix}' is not a session id prefix (ids use 0-9 and A-Z without I, L, O, U)"
            ))),
        })
        .collect()
}

/// Escapes `text` as one FTS5 phrase.
fn fts_phrase(text: &str) -> String {
    format!("\"{}\"", text.replace('"', "\"\""))
}

/// Escapes `%`, `_` and `\\` for a LIKE pattern with `ESCAPE '\\'`.
fn like_pattern(text: &str) -> String {
    let mut p = String::with_capacity(text.len() + 2);
    p.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

impl Store {
    /// Stores a command; returns its row id (for [`Store::set_command_exit`]).
    pub async fn record_command(&self, c: &CommandRecord) -> Result<i64, StoreError> {
        Ok(self.record_commands(std::slice::from_ref(c)).await?[0])
    }

    /// Stores several commands in one transaction (one disk sync); returns their ids in order.
    /// Either all are stored or none.
    pub async fn record_commands(&self, cs: &[CommandRecord]) -> Result<Vec<i64>, StoreError> {
        if cs.is_empty() {
            return Ok(Vec::new());
        }
        let op = format!(
            "recording {} commands of session {}",
            cs.len(),
            cs[0].session
        );
        let mut tx = self.begin_write(&op).await?;
        let mut ids = Vec::with_capacity(cs.len());
        for c in cs {
            ids.push(
                Self::insert_command(&mut tx, c)
                    .await
                    .map_err(|e| match e {
                        InsertError::Invalid(e) => e,
                        InsertError::Db(e) => self.db(op.clone())(e),
                    })?,
            );
        }
        tx.commit().await.map_err(self.db(op))?;
        Ok(ids)
    }

    async fn insert_command(
        tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
        c: &CommandRecord,
    ) -> Result<i64, InsertError> {
        let row = sqlx::query(
            "INSERT INTO commands (session_id, channel, offset_us, at_us, kind, text, cwd, \
             exit_status, user_name, target_name) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
        )
        .bind(c.session.to_string())
        .bind(i64::from(c.channel))
        .bind(to_i64(c.offset_us, "offset")?)
        .bind(to_micros(c.at)?)
        .bind(&c.kind)
        .bind(&c.text)
        .bind(c.cwd.as_deref())
        .bind(c.exit_status.map(i64::from))
        .bind(c.user.as_str())
        .bind(c.target.as_str())
        .fetch_one(&mut **tx)
        .await
        .map_err(InsertError::Db)?;
        row.try_get("id").map_err(InsertError::Db)
    }

    /// Sets the exit status of a stored command.
    pub async fn set_command_exit(&self, id: i64, exit_status: i32) -> Result<(), StoreError> {
        sqlx::query("UPDATE commands SET exit_status = $1 WHERE id = $2")
            .bind(i64::from(exit_status))
            .bind(id)
            .execute(self.pool())
            .await
            .map_err(self.db("recording a command's exit status"))?;
        Ok(())
    }

    /// Commands matching `filter`, newest first. Text of three characters or more is looked up
    /// in the trigram index; shorter text falls back to a scan.
    pub async fn search_commands(
        &self,
        filter: &CommandFilter,
    ) -> Result<Vec<CommandRecord>, StoreError> {
        let text = filter.text.trim();
        let indexed = text.chars().count() >= 3;
        let sql = command_search_sql(indexed);
        let pattern = if text.is_empty() {
            String::new()
        } else if indexed {
            fts_phrase(text)
        } else {
            like_pattern(text)
        };
        let rows = sqlx::query(sql)
            .bind(pattern)
            .bind(filter.user.as_ref().map(Name::as_str))
            .bind(filter.target.as_ref().map(Name::as_str))
            .bind(filter.session.map(|s| s.to_string()))
            .bind(filter.since.map(to_micros).transpose()?)
            .bind(i64::from(filter.limit.unwrap_or(1000)))
            .fetch_all(self.pool())
            .await
            .map_err(self.db("searching commands"))?;
        rows.iter().map(|r| self.command_from_row(r)).collect()
    }

    /// The columns commands and alerts share: when, which session and channel, the offset in
    /// the recording, user and target.
    fn event_columns(&self, row: &SqliteRow, what: &str) -> Result<EventColumns, StoreError> {
        let op = format!("reading {what} row");
        let session: String = row.try_get("session_id").map_err(self.db(op.clone()))?;
        let session: Id = session
            .parse()
            .map_err(|e| self.corrupt(format!("{what} of session '{session}': {e}")))?;
        let channel: i64 = row.try_get("channel").map_err(self.db(op.clone()))?;
        let offset: i64 = row.try_get("offset_us").map_err(self.db(op.clone()))?;
        let user: String = row.try_get("user_name").map_err(self.db(op.clone()))?;
        let target: String = row.try_get("target_name").map_err(self.db(op.clone()))?;
        Ok(EventColumns {
            at: self.time(row.try_get("at_us").map_err(self.db(op))?)?,
            session,
            channel: u32::try_from(channel)
                .map_err(|_| self.corrupt(format!("{what} channel {channel}")))?,
            offset_us: u64::try_from(offset)
                .map_err(|_| self.corrupt(format!("{what} offset {offset}")))?,
            user: self.name(&user)?,
            target: self.name(&target)?,
        })
    }

    fn command_from_row(&self, row: &SqliteRow) -> Result<CommandRecord, StoreError> {
        let op = "reading a command row";
        let c = self.event_columns(row, "a command")?;
        let exit: Option<i64> = row.try_get("exit_status").map_err(self.db(op))?;
        Ok(CommandRecord {
            session: c.session,
            channel: c.channel,
            offset_us: c.offset_us,
            at: c.at,
            kind: row.try_get("kind").map_err(self.db(op))?,
            text: row.try_get("text").map_err(self.db(op))?,
            cwd: row.try_get("cwd").map_err(self.db(op))?,
            exit_status: exit.and_then(|v| i32::try_from(v).ok()),
            user: c.user,
            target: c.target,
        })
    }
}

/// See [`Store::event_columns`].
struct EventColumns {
    at: OffsetDateTime,
    session: Id,
    channel: u32,
    offset_us: u64,
    user: Name,
    target: Name,
}

impl Store {
    /// Stores an alert; `alert.id` is ignored and the new id returned.
    pub async fn record_alert(&self, a: &AlertRecord) -> Result<i64, StoreError> {
        let rank = severity_rank(&a.severity)
            .ok_or_else(|| StoreError::Invalid(format!("unknown severity '{}'", a.severity)))?;
        let row = sqlx::query(
            "INSERT INTO alerts (at_us, session_id, channel, offset_us, user_name, target_name, \
             rule_id, severity, severity_rank, action, event, text, description, decision) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING id",
        )
        .bind(to_micros(a.at)?)
        .bind(a.session.to_string())
        .bind(i64::from(a.channel))
        .bind(to_i64(a.offset_us, "offset")?)
        .bind(a.user.as_str())
        .bind(a.target.as_str())
        .bind(&a.rule)
        .bind(&a.severity)
        .bind(rank)
        .bind(&a.action)
        .bind(&a.event)
        .bind(&a.text)
        .bind(&a.description)
        .bind(a.decision.as_ref().map(|d| d.state.as_str()))
        .fetch_one(self.pool())
        .await
        .map_err(self.db(format!("recording an alert of session {}", a.session)))?;
        row.try_get("id").map_err(self.db("reading an alert id"))
    }

    /// Alerts matching `filter`, newest first.
    pub async fn alerts(&self, filter: &AlertFilter) -> Result<Vec<AlertRecord>, StoreError> {
        let min = match &filter.min_severity {
            Some(s) => Some(severity_rank(s).ok_or_else(|| {
                StoreError::Invalid(format!(
                    "unknown severity '{s}' (use info, low, medium, high or critical)"
                ))
            })?),
            None => None,
        };
        let rows = sqlx::query(
            "SELECT id, at_us, session_id, channel, offset_us, user_name, target_name, rule_id, \
                    severity, action, event, text, description, decision, decided_by, \
                    decision_note, decided_us \
             FROM alerts \
             WHERE ($1 IS NULL OR at_us >= $1) AND ($2 IS NULL OR severity_rank >= $2) \
               AND ($3 IS NULL OR session_id = $3) AND (NOT $5 OR decision = 'pending') \
             ORDER BY at_us DESC, id DESC LIMIT $4",
        )
        .bind(filter.since.map(to_micros).transpose()?)
        .bind(min)
        .bind(filter.session.map(|s| s.to_string()))
        .bind(i64::from(filter.limit.unwrap_or(1000)))
        .bind(filter.pending)
        .fetch_all(self.pool())
        .await
        .map_err(self.db("listing alerts"))?;
        rows.iter().map(|r| self.alert_from_row(r)).collect()
    }

    fn alert_from_row(&self, row: &SqliteRow) -> Result<AlertRecord, StoreError> {
        let op = "reading an alert row";
        let c = self.event_columns(row, "an alert")?;
        Ok(AlertRecord {
            id: row.try_get("id").map_err(self.db(op))?,
            at: c.at,
            session: c.session,
            channel: c.channel,
            offset_us: c.offset_us,
            user: c.user,
            target: c.target,
            rule: row.try_get("rule_id").map_err(self.db(op))?,
            severity: row.try_get("severity").map_err(self.db(op))?,
            action: row.try_get("action").map_err(self.db(op))?,
            event: row.try_get("event").map_err(self.db(op))?,
            text: row.try_get("text").map_err(self.db(op))?,
            description: row.try_get("description").map_err(self.db(op))?,
            decision: match row
                .try_get::<Option<String>, _>("decision")
                .map_err(self.db(op))?
            {
                None => None,
                Some(state) => Some(HoldDecision {
                    state,
                    by: row.try_get("decided_by").map_err(self.db(op))?,
                    note: row.try_get("decision_note").map_err(self.db(op))?,
                    at: row
                        .try_get::<Option<i64>, _>("decided_us")
                        .map_err(self.db(op))?
                        .map(|t| self.time(t))
                        .transpose()?,
                }),
            },
        })
    }

    /// Records the outcome of a pending hold. Returns false when the alert is not a pending
    /// hold (unknown, or already decided).
    pub async fn decide_hold(
        &self,
        id: i64,
        state: &str,
        by: Option<&str>,
        note: Option<&str>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE alerts SET decision = $2, decided_by = $3, decision_note = $4, decided_us = $5 \
             WHERE id = $1 AND decision = 'pending'",
        )
        .bind(id)
        .bind(state)
        .bind(by)
        .bind(note)
        .bind(now_micros())
        .execute(self.pool())
        .await
        .map_err(self.db(format!("recording the decision on alert {id}")))?;
        Ok(done.rows_affected() == 1)
    }

    /// The alert with this id.
    pub async fn alert(&self, id: i64) -> Result<Option<AlertRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT id, at_us, session_id, channel, offset_us, user_name, target_name, rule_id, \
                    severity, action, event, text, description, decision, decided_by, \
                    decision_note, decided_us \
             FROM alerts WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(self.pool())
        .await
        .map_err(self.db(format!("reading alert {id}")))?;
        row.map(|r| self.alert_from_row(&r)).transpose()
    }

    /// Marks every hold still pending as withdrawn (the gateway stopped before a decision).
    pub async fn withdraw_pending_holds(&self, why: &str) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE alerts SET decision = 'withdrawn', decision_note = $1, decided_us = $2 \
             WHERE decision = 'pending'",
        )
        .bind(why)
        .bind(now_micros())
        .execute(self.pool())
        .await
        .map_err(self.db("withdrawing pending holds"))?;
        Ok(done.rows_affected())
    }
}

/// The query behind [`Store::search_commands`]: through the trigram index when `indexed`.
///
/// Newest first means in the order stored: ids grow as commands are stored, moments after
/// they ran. Ordering by id rather than by time lets SQLite walk the trigram index (or the
/// table) backwards and stop at the limit, so a search costs about the same whether a term
/// matches a hundred commands or millions; sorting every match by time cost about a tenth of
/// a second per million matches.
fn command_search_sql(indexed: bool) -> &'static str {
    macro_rules! search_sql {
        ($from:literal, $cond:literal, $order:literal) => {
            concat!(
                "SELECT c.session_id, c.channel, c.offset_us, c.at_us, c.kind, c.text, c.cwd, \
                        c.exit_status, c.user_name, c.target_name \
                 FROM ",
                $from,
                " WHERE ",
                $cond,
                " AND ($2 IS NULL OR c.user_name = $2) \
                   AND ($3 IS NULL OR c.target_name = $3) \
                   AND ($4 IS NULL OR c.session_id = $4) \
                   AND ($5 IS NULL OR c.at_us >= $5) \
                 ORDER BY ",
                $order,
                " DESC LIMIT $6"
            )
        };
    }
    if indexed {
        search_sql!(
            "commands_fts f JOIN commands c ON c.id = f.rowid",
            "f.commands_fts MATCH $1",
            "f.rowid"
        )
    } else {
        search_sql!(
            "commands c",
            "($1 = '' OR c.text LIKE $1 ESCAPE '\\')",
            "c.id"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_prefixes_normalize() {
        assert_eq!(normalize_id_prefix(" 01hxo ").unwrap(), "01HX0");
        assert_eq!(normalize_id_prefix("il").unwrap(), "11");
        assert!(normalize_id_prefix("").is_err());
        assert!(normalize_id_prefix("abc%").is_err());
        assert!(normalize_id_prefix("u").is_err());
        assert!(normalize_id_prefix(&"0".repeat(27)).is_err());
    }

    /// Both command searches stream in order and stop at the limit: no sort of every match.
    #[tokio::test]
    async fn command_search_needs_no_sort() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            &dir.path().join("plan.db"),
            Vault::generate_ephemeral().unwrap(),
        )
        .await
        .unwrap();
        for indexed in [true, false] {
            let sql = format!("EXPLAIN QUERY PLAN {}", command_search_sql(indexed));
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for _ in 0..6 {
                q = q.bind(Option::<String>::None);
            }
            let plan: Vec<String> = q
                .fetch_all(store.pool())
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<String, _>("detail"))
                .collect();
            assert!(
                !plan.iter().any(|d| d.contains("TEMP B-TREE")),
                "indexed {indexed}: {plan:?}"
            );
        }
    }

    #[test]
    fn micros_round_trip() {
        let t = time::macros::datetime!(2026-11-25 14:00:00.123456 UTC);
        assert_eq!(to_micros(t).unwrap(), 1_795_615_200_123_456);
    }
}
