//! The russh server: accepts connections, authenticates users, routes channel requests to
//! their channel tasks, and opens and closes user sessions.

use custos_core::{EndReason, Id, Name, Secret, SessionState, TargetRecord, UserRecord};
use custos_recording::{Metadata, Recorder, RecordingKeys};
use custos_store::Store;
use russh::keys::{PrivateKey, PublicKey};
use russh::server::{Auth, Msg, Session};
use russh::{Channel, ChannelId, MethodKind, MethodSet, Pty};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{OnceCell, mpsc};
use tracing::{error, info, warn};

use crate::channel::{self, ChanReq};
use crate::limiter::{AuthLimiter, AuthLimits, Blocked};
use crate::local::PtyParams;
use crate::session::{LiveRegistry, LiveSession};
use crate::target::{self, StartRequest};

/// Settings of the SSH front door.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// How long connecting and authenticating to a target may take.
    pub connect_timeout: Duration,
    /// Environment variables passed to targets; a trailing `*` matches a prefix.
    pub env_allow: Vec<String>,
    pub auth_limits: AuthLimits,
    /// Where recordings are written.
    pub recordings_dir: PathBuf,
    /// Delay before a failed authentication is answered.
    pub auth_rejection_time: Duration,
    /// How long a request held by a `hold` rule waits for a moderator before it is denied.
    pub hold_timeout: Duration,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            connect_timeout: Duration::from_secs(10),
            env_allow: vec!["LANG".into(), "LC_*".into(), "TZ".into()],
            auth_limits: AuthLimits::default(),
            recordings_dir: PathBuf::from("recordings"),
            auth_rejection_time: Duration::from_millis(500),
            hold_timeout: Duration::from_secs(300),
        }
    }
}

pub(crate) struct Ctx {
    pub store: Store,
    pub rules: RulesHandle,
    pub keys: Arc<RecordingKeys>,
    pub config: GatewayConfig,
    pub limiter: Mutex<AuthLimiter>,
    pub live: LiveRegistry,
    pub audit: custos_audit::AuditLog,
    /// Stores every session's commands and alerts.
    pub commands: crate::commands::CommandWriter,
}

/// The ruleset in force, replaceable while the gateway runs (a reload swaps it whole; sessions
/// see the new rules at their next check).
#[derive(Clone)]
pub struct RulesHandle(Arc<std::sync::RwLock<Arc<custos_rules::Ruleset>>>);

impl RulesHandle {
    /// The rules in force now.
    pub fn current(&self) -> Arc<custos_rules::Ruleset> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Puts `rules` in force.
    pub fn replace(&self, rules: custos_rules::Ruleset) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(rules);
    }
}

/// The gateway: everything needed to serve SSH connections.
pub struct Gateway {
    ctx: Arc<Ctx>,
    host_key: PrivateKey,
}

/// A password hash that never verifies, used so unknown users cost the same as known ones.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$0000000000000000000000000000000000000000000";

impl Gateway {
    /// A gateway over `store`; call it inside a Tokio runtime, where it starts the command
    /// writer.
    pub fn new(
        store: Store,
        keys: Arc<RecordingKeys>,
        rules: Arc<custos_rules::Ruleset>,
        host_key: PrivateKey,
        config: GatewayConfig,
        audit: custos_audit::AuditLog,
    ) -> Gateway {
        let limiter = Mutex::new(AuthLimiter::new(config.auth_limits.clone()));
        Gateway {
            ctx: Arc::new(Ctx {
                commands: crate::commands::CommandWriter::start(store.clone()),
                store,
                rules: RulesHandle(Arc::new(std::sync::RwLock::new(rules))),
                keys,
                config,
                limiter,
                live: LiveRegistry::default(),
                audit,
            }),
            host_key,
        }
    }

    /// The rules in force, for reloading.
    pub fn rules(&self) -> RulesHandle {
        self.ctx.rules.clone()
    }

    /// The sessions running in this process.
    pub fn live(&self) -> LiveRegistry {
        self.ctx.live.clone()
    }

    /// Serves connections from `listener` until `shutdown` resolves; then ends every live
    /// session and waits (briefly) for their recordings to be sealed.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> std::io::Result<()> {
        let config = Arc::new(russh::server::Config {
            server_id: russh::SshId::Standard("SSH-2.0-Custos".into()),
            methods: MethodSet::from(&[MethodKind::PublicKey, MethodKind::Password][..]),
            auth_rejection_time: self.ctx.config.auth_rejection_time,
            auth_rejection_time_initial: Some(Duration::ZERO),
            keys: vec![self.host_key.clone()],
            inactivity_timeout: None,
            keepalive_interval: Some(Duration::from_secs(30)),
            keepalive_max: 4,
            window_size: WINDOW,
            maximum_packet_size: 32 * 1024,
            // The session loop must never wait on a channel queue (see `adjust_window`).
            channel_buffer_size: 1 << 20,
            max_auth_attempts: 6,
            nodelay: true,
            ..Default::default()
        });
        let mut tasks = tokio::task::JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => {
                    let (socket, peer) = match accepted {
                        Ok(x) => x,
                        Err(e) => {
                            warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let _ = socket.set_nodelay(true);
                    let ctx = self.ctx.clone();
                    let config = config.clone();
                    tasks.spawn(async move { serve_connection(ctx, config, socket, peer).await });
                }
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        info!("shutting down: ending live sessions");
        self.ctx.live.stop_all(EndReason::Shutdown);
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        Ok(())
    }
}

async fn serve_connection(
    ctx: Arc<Ctx>,
    config: Arc<russh::server::Config>,
    socket: tokio::net::TcpStream,
    peer: SocketAddr,
) {
    let shared = Arc::new(ConnShared {
        ctx: ctx.clone(),
        peer,
        login: Mutex::new(None),
        session: OnceCell::new(),
        handle: std::sync::OnceLock::new(),
        backlog: std::sync::atomic::AtomicI64::new(0),
    });
    let handler = Conn {
        shared: shared.clone(),
        channels: HashMap::new(),
    };
    match russh::server::run_stream(config, socket, handler).await {
        Ok(running) => {
            let _ = shared.handle.set(running.handle());
            if let Err(e) = running.await {
                info!(peer = %peer, error = %e, "connection ended with an error");
            }
        }
        Err(e) => info!(peer = %peer, error = %e, "SSH handshake failed"),
    }
    shared.finish().await;
}

/// Who logged in on a connection and what they asked for.
#[derive(Clone)]
pub(crate) struct Login {
    pub user: UserRecord,
    pub requested_target: Option<String>,
    /// Set when the user authenticated but may not proceed (locked, expired); shown to them.
    pub refusal: Option<String>,
    /// The user logged in with a one-time password and must choose a new one first.
    pub must_change_password: bool,
}

/// State shared by a connection's handler and its channel tasks.
pub(crate) struct ConnShared {
    pub ctx: Arc<Ctx>,
    pub peer: SocketAddr,
    pub login: Mutex<Option<Login>>,
    /// The session, created by the first channel that needs the target.
    pub session: OnceCell<Result<Arc<LiveSession>, String>>,
    pub handle: std::sync::OnceLock<russh::server::Handle>,
    /// Bytes received from the user and not yet handed to the target (see `adjust_window`).
    pub backlog: std::sync::atomic::AtomicI64,
}

/// The receive window offered to clients while the pump keeps up.
const WINDOW: u32 = 2 * 1024 * 1024;
/// The window offered while more than `BACKLOG_HIGH` bytes wait for the target.
const WINDOW_THROTTLED: u32 = 2;
/// Backlog above which the client's window is throttled.
const BACKLOG_HIGH: i64 = 4 * 1024 * 1024;

impl ConnShared {
    /// Records that the user replaced their one-time password.
    pub fn password_changed(&self) {
        if let Some(l) = self
            .login
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            l.must_change_password = false;
            l.user.password_one_time = false;
        }
    }

    pub fn login(&self) -> Option<Login> {
        self.login.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Returns the session for `target`, opening it on first use. Errors are user-facing text.
    /// `tell` reaches the user while the session waits for a moderator, if a rule holds it.
    pub async fn session(
        self: &Arc<Self>,
        target: &str,
        tell: Option<&crate::enforce::UserWrite>,
    ) -> Result<Arc<LiveSession>, String> {
        self.session
            .get_or_init(|| async { self.open_session(target, tell).await })
            .await
            .clone()
    }

    async fn open_session(
        self: &Arc<Self>,
        target: &str,
        tell: Option<&crate::enforce::UserWrite>,
    ) -> Result<Arc<LiveSession>, String> {
        let login = self.login().ok_or("not authenticated")?;
        let user = &login.user.name;
        let store = &self.ctx.store;
        let refuse = |why: String| {
            warn!(user = %user, target, peer = %self.peer, reason = %why, "session refused");
            why
        };
        let tname = Name::new(target)
            .map_err(|e| refuse(format!("'{target}' is not a valid target name: {e}")))?;
        let record: TargetRecord = match store.target(&tname).await {
            Ok(Some(t)) => t,
            Ok(None) => return Err(refuse(format!("there is no target named '{target}'"))),
            Err(e) => return Err(refuse(format!("the gateway cannot read its store: {e}"))),
        };
        let grant = match store.grant_of(user, &tname).await {
            Ok(Some(g)) => g,
            Ok(None) => {
                return Err(refuse(format!(
                    "user '{user}' is not granted access to target '{target}'"
                )));
            }
            Err(e) => return Err(refuse(format!("the gateway cannot read its store: {e}"))),
        };
        let limits = record.limits.tightest(grant.limits);
        let id = new_id();
        if let Some(why) =
            crate::enforce::check_session_start(self, id, user, &record, self.peer, tell).await
        {
            return Err(refuse(why));
        }
        let credential = store.target_credential(&tname).await.map_err(|e| {
            refuse(format!(
                "the credential for target '{target}' cannot be read: {e}"
            ))
        })?;
        let connected = target::connect(&record, credential, self.ctx.config.connect_timeout)
            .await
            .map_err(|e| refuse(e.to_string()))?;
        if let Some(key) = &connected.key_to_pin {
            match store.pin_host_key(&tname, key).await {
                Ok(_) => {
                    info!(target, fingerprint = %target::fingerprint(key), "pinned host key on first use");
                    crate::audit::emit(
                        &self.ctx,
                        custos_audit::AuditEvent::new(custos_audit::EventKind::AdminChange {
                            object: custos_audit::AdminObject::TargetHostKey,
                            operation: custos_audit::AdminOperation::Create,
                            name: target.to_string(),
                            fields: vec!["host_key".into()],
                        })
                        .user("gateway")
                        .source(self.peer),
                    );
                }
                Err(e) => {
                    connected.conn.disconnect().await;
                    return Err(refuse(format!(
                        "cannot pin the host key of '{target}': {e}"
                    )));
                }
            }
        }
        let now = time::OffsetDateTime::now_utc();
        let rel = format!(
            "{:04}/{:02}/{:02}/{id}.custos",
            now.year(),
            now.month() as u8,
            now.day()
        );
        let path = self.ctx.config.recordings_dir.join(&rel);
        let meta = Metadata {
            session_id: id.to_string(),
            user: user.to_string(),
            target: record.name.to_string(),
            login: record.login(),
            source: self.peer.to_string(),
            extra: Default::default(),
        };
        let recorder = match Recorder::start(&path, self.ctx.keys.clone(), meta).await {
            Ok(r) => r,
            Err(e) => {
                connected.conn.disconnect().await;
                error!(path = %path.display(), error = %e, "recording cannot be started; session refused");
                return Err(format!(
                    "the session cannot be recorded ({e}); refusing to connect without a recording"
                ));
            }
        };
        let commands = self
            .ctx
            .commands
            .session(id, user.clone(), record.name.clone());
        let session = Arc::new(
            LiveSession::new(
                id,
                user.clone(),
                self.peer,
                record,
                connected.conn,
                recorder,
                commands,
            )
            .with_limits(limits)
            .with_audit(self.ctx.audit.clone()),
        );
        let row = session.record_row(&self.peer.to_string(), &rel);
        if let Err(e) = store.create_session(&row).await {
            let _ = session
                .recorder
                .finish("session could not be registered")
                .await;
            session.conn.disconnect().await;
            return Err(refuse(format!("the session cannot be registered: {e}")));
        }
        self.ctx.live.insert(session.clone());
        info!(session = %id, user = %user, target, login = %row.login, peer = %self.peer, "session started");
        session.audit(custos_audit::EventKind::SessionStart {
            recording: Some(rel.clone()),
        });
        spawn_stop_watch(self.clone(), session.clone());
        if !limits.is_none() {
            spawn_limit_watch(&session);
        }
        spawn_counter_flush(self.ctx.clone(), session.clone());
        Ok(session)
    }

    /// The connection is over: seal the recording and close the metadata row.
    async fn finish(&self) {
        let Some(Ok(session)) = self.session.get() else {
            return;
        };
        let reason = session.stop_reason().unwrap_or(EndReason::Closed);
        session.conn.disconnect().await;
        let summary = session.recorder.finish(&reason.to_string()).await;
        session.commands.flush().await;
        let state = SessionState::Ended;
        let reason_text = match &summary {
            Ok(_) => reason.to_string(),
            Err(e) => {
                error!(session = %session.id, error = %e, "recording could not be sealed");
                format!("{reason}; recording could not be sealed: {e}")
            }
        };
        let (bi, bo) = (
            session.bytes_in.load(std::sync::atomic::Ordering::Relaxed),
            session.bytes_out.load(std::sync::atomic::Ordering::Relaxed),
        );
        if let Err(e) = self
            .ctx
            .store
            .end_session(
                &session.id,
                time::OffsetDateTime::now_utc(),
                state,
                session.exit_status(),
                &reason_text,
                bi,
                bo,
            )
            .await
        {
            error!(session = %session.id, error = %e, "cannot close the session row");
        }
        self.ctx.live.remove(&session.id);
        info!(session = %session.id, user = %session.user, target = %session.target.name, reason = %reason_text, bytes_in = bi, bytes_out = bo, "session ended");
        if let EndReason::RecordingFailed(e) = &reason {
            session.audit(custos_audit::EventKind::SessionInterrupted {
                reason: format!("recording failed: {e}"),
            });
        }
        session.audit(custos_audit::EventKind::SessionEnd {
            reason: reason_text.clone(),
            exit_status: session.exit_status(),
            bytes_in: bi,
            bytes_out: bo,
            duration: Some(std::time::Duration::from_micros(session.now_us())),
        });
    }
}

/// Ends the whole connection when the session is asked to stop.
fn spawn_stop_watch(shared: Arc<ConnShared>, session: Arc<LiveSession>) {
    // Weak references only: the task must not keep a finished session (and its target
    // connection) alive. It ends when the session is dropped, which closes the watch.
    let mut rx = session.stop.subscribe();
    let failed = session.recorder.clone();
    let (shared, session) = (Arc::downgrade(&shared), Arc::downgrade(&session));
    tokio::spawn(async move {
        let reason = tokio::select! {
            r = async { rx.wait_for(|r| r.is_some()).await.map(|r| r.clone()) } => match r {
                Ok(Some(r)) => r,
                _ => return,
            },
            e = failed.failed() => {
                let Some(session) = session.upgrade() else { return };
                error!(session = %session.id, error = %e, "recording failed; ending the session");
                let r = EndReason::RecordingFailed(e);
                session.request_stop(r.clone());
                r
            }
        };
        // Give the channel tasks a moment to show the reason, then drop the connection.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if let Some(h) = shared.handle.get() {
            let _ = h
                .disconnect(
                    russh::Disconnect::ByApplication,
                    format!("custos: session ended: {reason}"),
                    "en".into(),
                )
                .await;
        }
    });
}

/// Ends the session when it reaches its maximum duration or has been idle too long, warning
/// the user shortly before.
fn spawn_limit_watch(session: &Arc<LiveSession>) {
    let weak = Arc::downgrade(session);
    let limits = session.limits;
    tokio::spawn(async move {
        let max = limits
            .max_duration_secs
            .map(|s| s.saturating_mul(1_000_000));
        let idle = limits
            .idle_timeout_secs
            .map(|s| s.saturating_mul(1_000_000));
        // Warn a minute ahead, or a quarter of the limit ahead for short limits.
        let lead = |limit: u64| (limit / 4).min(60_000_000);
        let (mut warned_max, mut warned_idle_at) = (false, None);
        loop {
            let Some(s) = weak.upgrade() else { return };
            if s.stop_reason().is_some() {
                return;
            }
            let now = s.now_us();
            let mut next = u64::MAX;
            if let Some(max) = max {
                if now >= max {
                    let why = format!(
                        "maximum session duration of {} reached",
                        custos_core::format_secs(max / 1_000_000)
                    );
                    end_at_limit(&s, why).await;
                    return;
                }
                let warn_at = max - lead(max);
                if !warned_max && now >= warn_at && lead(max) >= 1_000_000 {
                    warned_max = true;
                    s.notify(&format!(
                        "this session ends in {} (maximum duration {})",
                        custos_core::format_secs((max - now).div_ceil(1_000_000)),
                        custos_core::format_secs(max / 1_000_000)
                    ));
                }
                next = next.min(if warned_max || lead(max) < 1_000_000 {
                    max
                } else {
                    warn_at
                });
            }
            if let Some(idle) = idle {
                let last = s.last_activity_us();
                let end = last.saturating_add(idle);
                if now >= end {
                    let why = format!(
                        "idle for {} without input",
                        custos_core::format_secs(idle / 1_000_000)
                    );
                    end_at_limit(&s, why).await;
                    return;
                }
                let warn_at = end - lead(idle);
                if warned_idle_at != Some(last) && now >= warn_at && lead(idle) >= 1_000_000 {
                    warned_idle_at = Some(last);
                    s.notify(&format!(
                        "idle: this session ends in {} without input (idle timeout {})",
                        custos_core::format_secs((end - now).div_ceil(1_000_000)),
                        custos_core::format_secs(idle / 1_000_000)
                    ));
                }
                next = next.min(if warned_idle_at == Some(last) || lead(idle) < 1_000_000 {
                    end
                } else {
                    warn_at
                });
            }
            drop(s);
            // Wake at the next deadline, and at least every few seconds to see new activity
            // (which only ever moves deadlines later).
            let wait = next.saturating_sub(now).clamp(50_000, 5_000_000);
            tokio::time::sleep(Duration::from_micros(wait)).await;
        }
    });
}

/// Ends a session that reached a limit: noted in the recording, audited, and the user told.
async fn end_at_limit(s: &LiveSession, why: String) {
    info!(session = %s.id, user = %s.user, "{why}; ending the session");
    s.record(0, custos_recording::EventKind::Note(why.clone()))
        .await;
    s.audit(custos_audit::EventKind::Terminate {
        reason: why.clone(),
        by: custos_audit::Initiator::System,
    });
    s.request_stop(EndReason::Limit(why));
}

/// Keeps the byte counters of the metadata row roughly current, so a crash loses little.
fn spawn_counter_flush(ctx: Arc<Ctx>, session: Arc<LiveSession>) {
    let weak = Arc::downgrade(&session);
    drop(session);
    tokio::spawn(async move {
        let mut last = (0, 0);
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let Some(s) = weak.upgrade() else { return };
            if s.stop_reason().is_some() {
                return;
            }
            let now = (
                s.bytes_in.load(std::sync::atomic::Ordering::Relaxed),
                s.bytes_out.load(std::sync::atomic::Ordering::Relaxed),
            );
            if now != last {
                let _ = ctx.store.update_session_bytes(&s.id, now.0, now.1).await;
                last = now;
            }
        }
    });
}

/// A fresh time-ordered id.
pub fn new_id() -> Id {
    let mut r = [0u8; 10];
    let _ = aws_lc_rs::rand::fill(&mut r);
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    Id::from_parts(ms, r)
}

/// The russh handler of one connection.
struct Conn {
    shared: Arc<ConnShared>,
    channels: HashMap<ChannelId, mpsc::UnboundedSender<ChanReq>>,
}

/// Splits `alice:db1` into user and target. `alice+db1` means the same, for the clients that
/// read a `:` in `user@host:path` as the end of the host name (scp, sftp, rsync).
fn parse_login(s: &str) -> (&str, Option<&str>) {
    match s.split_once([':', '+']) {
        Some((u, t)) => (u, Some(t)),
        None => (s, None),
    }
}

fn keys_match(a: &PublicKey, line: &str) -> bool {
    PublicKey::from_openssh(line).is_ok_and(|k| k.key_data() == a.key_data())
}

impl Conn {
    fn ctx(&self) -> &Ctx {
        &self.shared.ctx
    }

    fn blocked(&self, user: &str) -> bool {
        let limiter = self.ctx().limiter.lock().unwrap_or_else(|p| p.into_inner());
        match limiter.check(self.shared.peer.ip(), user, Instant::now()) {
            Ok(()) => false,
            Err(b) => {
                let what = match b {
                    Blocked::Source => "source address",
                    Blocked::User => "user name",
                };
                warn!(user, peer = %self.shared.peer, "authentication refused: too many recent failures for this {what}");
                crate::audit::auth_failure(
                    self.ctx(),
                    user,
                    self.shared.peer,
                    "none",
                    &format!("too many recent failures for this {what}"),
                );
                true
            }
        }
    }

    fn failed(&self, user: &str, method: &str, why: &str) {
        warn!(user, peer = %self.shared.peer, method, reason = why, "authentication failed");
        crate::audit::auth_failure(self.ctx(), user, self.shared.peer, method, why);
        self.ctx()
            .limiter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .fail(self.shared.peer.ip(), user, Instant::now());
    }

    async fn load_user(&self, name: &str) -> Option<UserRecord> {
        let name = Name::new(name).ok()?;
        self.ctx().store.user(&name).await.ok().flatten()
    }

    /// Completes a successful authentication.
    fn accept(
        &self,
        user: UserRecord,
        target: Option<&str>,
        method: &str,
        key_fingerprint: Option<&str>,
    ) -> Auth {
        self.ctx()
            .limiter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .succeed(self.shared.peer.ip(), user.name.as_str());
        let refusal = user
            .refusal(time::OffsetDateTime::now_utc())
            .map(|r| format!("access refused: {r}"));
        match &refusal {
            Some(r) => {
                warn!(user = %user.name, peer = %self.shared.peer, method, reason = %r, "authenticated, but the account may not log in");
                crate::audit::auth_failure(
                    self.ctx(),
                    user.name.as_str(),
                    self.shared.peer,
                    method,
                    r,
                );
            }
            None => {
                info!(user = %user.name, peer = %self.shared.peer, method, target = target.unwrap_or("(menu)"), "authenticated");
                crate::audit::emit(
                    self.ctx(),
                    custos_audit::AuditEvent::new(custos_audit::EventKind::AuthSuccess {
                        method: crate::audit::auth_method(method),
                        key_fingerprint: key_fingerprint.map(str::to_string),
                    })
                    .user(user.name.as_str())
                    .source(self.shared.peer),
                );
            }
        }
        let must_change_password = method == "password" && user.password_one_time;
        *self.shared.login.lock().unwrap_or_else(|p| p.into_inner()) = Some(Login {
            user,
            requested_target: target.map(str::to_string),
            refusal,
            must_change_password,
        });
        Auth::Accept
    }

    fn send(&self, channel: ChannelId, req: ChanReq) -> bool {
        self.channels
            .get(&channel)
            .is_some_and(|tx| tx.send(req).is_ok())
    }
}

impl russh::server::Handler for Conn {
    type Error = russh::Error;

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        let (name, target) = parse_login(user);
        if self.blocked(name) {
            return Ok(Auth::reject());
        }
        let hash = match Name::new(name) {
            Ok(n) => self.ctx().store.user_password_hash(&n).await.ok().flatten(),
            Err(_) => None,
        };
        let known = hash.is_some();
        let secret = Secret::from(password.to_string());
        let phc = hash.unwrap_or_else(|| DUMMY_HASH.to_string());
        let ok = tokio::task::spawn_blocking(move || custos_store::password::verify(&secret, &phc))
            .await
            .unwrap_or(false);
        if !ok || !known {
            self.failed(
                name,
                "password",
                if known {
                    "wrong password"
                } else {
                    "unknown user or no password set"
                },
            );
            return Ok(Auth::reject());
        }
        match self.load_user(name).await {
            Some(u) => Ok(self.accept(u, target, "password", None)),
            None => {
                self.failed(name, "password", "unknown user");
                Ok(Auth::reject())
            }
        }
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: russh::server::PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        let (name, _) = parse_login(user);
        if self.blocked(name) {
            return Ok(Auth::reject());
        }
        match self.load_user(name).await {
            Some(u) if u.ssh_keys.iter().any(|k| keys_match(offer.public_key, k)) => {
                Ok(Auth::Accept)
            }
            _ => {
                // Not counted against the rate limits (clients offer every key they hold),
                // but audited: a key probe is a failed login attempt.
                let fp = offer
                    .public_key
                    .fingerprint(russh::keys::HashAlg::Sha256)
                    .to_string();
                crate::audit::auth_failure(
                    self.ctx(),
                    name,
                    self.shared.peer,
                    "publickey",
                    &format!("key {fp} not registered for this user"),
                );
                Ok(Auth::reject())
            }
        }
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: russh::server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        let (name, target) = parse_login(user);
        if self.blocked(name) {
            return Ok(Auth::reject());
        }
        match self.load_user(name).await {
            Some(u) if u.ssh_keys.iter().any(|k| keys_match(key.public_key, k)) => {
                let fp = key
                    .public_key
                    .fingerprint(russh::keys::HashAlg::Sha256)
                    .to_string();
                Ok(self.accept(u, target, "publickey", Some(&fp)))
            }
            _ => {
                self.failed(name, "publickey", "key not registered for this user");
                Ok(Auth::reject())
            }
        }
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: russh::server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.channels.insert(channel.id(), tx);
        reply.accept().await;
        let shared = self.shared.clone();
        tokio::spawn(channel::run_session_channel(shared, channel, rx));
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host: &str,
        port: u32,
        originator: &str,
        originator_port: u32,
        reply: russh::server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let shared = self.shared.clone();
        let (host, originator) = (host.to_string(), originator.to_string());
        tokio::spawn(channel::run_forward_channel(
            shared,
            channel,
            reply,
            host,
            port,
            originator,
            originator_port,
        ));
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        term: &str,
        col_width: u32,
        row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        modes: &[(Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let p = PtyParams {
            term: term.to_string(),
            cols: col_width,
            rows: row_height,
        };
        if self.send(channel, ChanReq::Pty(p, modes.to_vec())) {
            session.channel_success(channel)?;
        } else {
            session.channel_failure(channel)?;
        }
        Ok(())
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let allowed = self
            .ctx()
            .config
            .env_allow
            .iter()
            .any(|p| match p.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => p == name,
            });
        self.send(
            channel,
            ChanReq::Env {
                name: name.to_string(),
                value: value.to_string(),
                allowed,
            },
        );
        if allowed {
            session.channel_success(channel)?;
        } else {
            session.channel_failure(channel)?;
        }
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.start(channel, StartRequest::Shell, session)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.start(
            channel,
            StartRequest::Exec(bytes::Bytes::copy_from_slice(data)),
            session,
        )
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.start(channel, StartRequest::Subsystem(name.to_string()), session)
    }

    async fn window_change_request(
        &mut self,
        channel: ChannelId,
        col_width: u32,
        row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.send(channel, ChanReq::Resize(col_width, row_height));
        Ok(())
    }

    async fn signal(
        &mut self,
        channel: ChannelId,
        signal: russh::Sig,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.send(channel, ChanReq::Signal(target::sig_name(&signal)));
        Ok(())
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single_connection: bool,
        _x11_auth_protocol: &str,
        _x11_auth_cookie: &str,
        _x11_screen_number: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.send(channel, ChanReq::Refused("X11 forwarding".into()));
        session.channel_failure(channel)?;
        Ok(())
    }

    async fn agent_request(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        self.send(channel, ChanReq::Refused("agent forwarding".into()));
        Ok(false)
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        warn!(peer = %self.shared.peer, address, port = *port, "remote port forwarding refused");
        Ok(false)
    }

    async fn data(
        &mut self,
        _channel: ChannelId,
        data: &[u8],
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.shared
            .backlog
            .fetch_add(data.len() as i64, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Flow control toward the user's client.
    ///
    /// russh tops a channel's receive window up as data arrives, not as the pump consumes it,
    /// and a session loop that waits on a full channel queue stops reading the client's window
    /// adjustments too — with an echoing target (`ssh gw cat < big`) both directions then wait
    /// on each other forever. So the session loop never waits (the channel queues are
    /// effectively unbounded) and memory is bounded here instead: while more than
    /// `BACKLOG_HIGH` bytes wait for the target, the window is topped up only a couple of
    /// bytes at a time, which slows the client to a trickle while the loop stays live.
    fn adjust_window(&mut self, _channel: ChannelId, _current: u32) -> u32 {
        if self
            .shared
            .backlog
            .load(std::sync::atomic::Ordering::Relaxed)
            > BACKLOG_HIGH
        {
            WINDOW_THROTTLED
        } else {
            WINDOW
        }
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.remove(&channel);
        Ok(())
    }
}

impl Conn {
    fn start(
        &mut self,
        channel: ChannelId,
        req: StartRequest,
        session: &mut Session,
    ) -> Result<(), russh::Error> {
        if self.send(channel, ChanReq::Start(req)) {
            session.channel_success(channel)?;
        } else {
            session.channel_failure(channel)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_names() {
        assert_eq!(parse_login("alice"), ("alice", None));
        assert_eq!(parse_login("alice:db1"), ("alice", Some("db1")));
        assert_eq!(parse_login("alice:db1:x"), ("alice", Some("db1:x")));
        assert_eq!(parse_login("alice+db1"), ("alice", Some("db1")));
    }
}
