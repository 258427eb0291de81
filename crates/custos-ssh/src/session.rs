//! One user session: the SSH connection from a user to one target, its recording, its
//! metadata row and its live controls.

use custos_core::{EndReason, Id, Name, SessionLimits, SessionRecord, SessionState, TargetRecord};
use custos_recording::{Event, EventKind, RecorderHandle, Watch, WatchRefused};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, oneshot, watch};

use crate::commands::CommandLog;
use crate::target::TargetConn;

/// A session in progress.
pub struct LiveSession {
    pub id: Id,
    pub user: Name,
    /// The user's address.
    pub source: std::net::SocketAddr,
    pub target: TargetRecord,
    pub conn: TargetConn,
    pub recorder: RecorderHandle,
    pub commands: CommandLog,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub exit_status: Mutex<Option<u32>>,
    next_channel: AtomicU32,
    /// Set when the session must end (administrator kill, recording failure); carries the reason.
    pub stop: watch::Sender<Option<EndReason>>,
    /// The tightest of the target's and the grant's limits.
    pub limits: SessionLimits,
    /// When the user was last active (µs on the session clock): input on any channel, or data
    /// moving on a channel without a terminal (a transfer the user started).
    last_activity_us: AtomicU64,
    /// Messages for the user's terminals (limit warnings, hold outcomes).
    notices: broadcast::Sender<Arc<str>>,
    /// Where the session's audit events go.
    audit: Option<custos_audit::AuditLog>,
}

impl LiveSession {
    pub fn new(
        id: Id,
        user: Name,
        source: std::net::SocketAddr,
        target: TargetRecord,
        conn: TargetConn,
        recorder: RecorderHandle,
        commands: CommandLog,
    ) -> LiveSession {
        LiveSession {
            id,
            user,
            source,
            target,
            conn,
            recorder,
            commands,
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            exit_status: Mutex::new(None),
            next_channel: AtomicU32::new(0),
            stop: watch::channel(None).0,
            limits: SessionLimits::default(),
            last_activity_us: AtomicU64::new(0),
            notices: broadcast::channel(16).0,
            audit: None,
        }
    }

    /// Sends the session's audit events to `log` (before it is shared).
    pub fn with_audit(mut self, log: custos_audit::AuditLog) -> LiveSession {
        self.audit = Some(log);
        self
    }

    /// Raises an audit event about this session (never waits).
    pub fn audit(&self, kind: custos_audit::EventKind) {
        if let Some(log) = &self.audit
            && let Err(e) = log.emit(crate::audit::in_session(self, kind))
        {
            tracing::warn!(session = %self.id, error = %e, "an audit event could not be queued");
        }
    }

    /// Sets the session's limits (before it is shared).
    pub fn with_limits(mut self, limits: SessionLimits) -> LiveSession {
        self.limits = limits;
        self
    }

    /// Notes user activity now (for the idle timeout).
    pub fn touch(&self) {
        self.last_activity_us
            .store(self.now_us(), Ordering::Relaxed);
    }

    /// When the user was last active, µs on the session clock.
    pub fn last_activity_us(&self) -> u64 {
        self.last_activity_us.load(Ordering::Relaxed)
    }

    /// Shows `text` on every terminal of the session (no-op without one).
    pub fn notify(&self, text: &str) {
        let _ = self.notices.send(Arc::from(text));
    }

    /// Receives what [`LiveSession::notify`] sends.
    pub fn notices(&self) -> broadcast::Receiver<Arc<str>> {
        self.notices.subscribe()
    }

    /// Microseconds since the session started, on the monotonic clock.
    pub fn now_us(&self) -> u64 {
        self.recorder.now_us()
    }

    /// A recording-local channel number (0, 1, ...) for a new channel.
    pub fn allocate_channel(&self) -> u32 {
        self.next_channel.fetch_add(1, Ordering::Relaxed)
    }

    /// Records an event stamped now. Returns false when the recording has failed, in which case
    /// the session is being stopped.
    pub async fn record(&self, channel: u32, kind: EventKind) -> bool {
        let ev = Event {
            time_us: self.now_us(),
            channel,
            kind,
        };
        match self.recorder.record(ev).await {
            Ok(()) => true,
            Err(e) => {
                self.request_stop(EndReason::RecordingFailed(e.to_string()));
                false
            }
        }
    }

    /// Asks every channel of the session to end with `reason` (the first reason wins).
    pub fn request_stop(&self, reason: EndReason) {
        self.stop.send_if_modified(|r| {
            if r.is_none() {
                *r = Some(reason);
                true
            } else {
                false
            }
        });
    }

    pub fn stop_reason(&self) -> Option<EndReason> {
        self.stop.borrow().clone()
    }

    pub fn set_exit_status(&self, s: u32) {
        *self.exit_status.lock().unwrap_or_else(|p| p.into_inner()) = Some(s);
    }

    pub fn exit_status(&self) -> Option<u32> {
        *self.exit_status.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The metadata row for this session as it starts.
    pub fn record_row(&self, source: &str, recording: &str) -> SessionRecord {
        SessionRecord {
            id: self.id,
            user: self.user.clone(),
            source: source.to_string(),
            target: self.target.name.clone(),
            login: self.target.login(),
            start: time::OffsetDateTime::now_utc(),
            end: None,
            state: SessionState::Live,
            bytes_in: 0,
            bytes_out: 0,
            exit_status: None,
            end_reason: None,
            recording: recording.to_string(),
        }
    }
}

/// A moderator's answer to a held request.
#[derive(Clone, Debug)]
pub struct HoldAnswer {
    pub approve: bool,
    /// Who decided.
    pub by: String,
    pub note: Option<String>,
}

/// A request waiting for a moderator.
struct PendingHold {
    session: Id,
    answer: oneshot::Sender<HoldAnswer>,
}

/// What the registry exposes about a live session.
#[derive(Clone, Debug)]
pub struct LiveSessionInfo {
    pub id: Id,
    pub user: Name,
    pub target: Name,
}

/// The sessions running in this gateway process, for administrative control.
#[derive(Default, Clone)]
pub struct LiveRegistry {
    inner: Arc<Mutex<HashMap<Id, Arc<LiveSession>>>>,
    /// Held requests by alert id.
    holds: Arc<Mutex<HashMap<i64, PendingHold>>>,
}

impl LiveRegistry {
    pub(crate) fn insert(&self, s: Arc<LiveSession>) {
        self.lock().insert(s.id, s);
    }

    pub(crate) fn remove(&self, id: &Id) {
        self.lock().remove(id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Id, Arc<LiveSession>>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The live sessions.
    pub fn list(&self) -> Vec<LiveSessionInfo> {
        self.lock()
            .values()
            .map(|s| LiveSessionInfo {
                id: s.id,
                user: s.user.clone(),
                target: s.target.name.clone(),
            })
            .collect()
    }

    /// Ends a live session with a reason shown to its user; returns who and where it was, or
    /// `None` if no such session is live.
    pub fn kill_info(&self, id: &Id, reason: &str) -> Option<LiveSessionInfo> {
        let g = self.lock();
        let s = g.get(id)?;
        s.request_stop(EndReason::Killed(reason.to_string()));
        Some(LiveSessionInfo {
            id: s.id,
            user: s.user.clone(),
            target: s.target.name.clone(),
        })
    }

    /// Ends a live session with a reason shown to its user. Returns false if no such session.
    pub fn kill(&self, id: &Id, reason: &str) -> bool {
        match self.lock().get(id) {
            Some(s) => {
                s.request_stop(EndReason::Killed(reason.to_string()));
                true
            }
            None => false,
        }
    }

    /// Starts a read-only watch of a live session through its recorder: the current screens,
    /// then its terminal output as it is recorded (see [`RecorderHandle::watch`]).
    pub async fn watch(&self, id: &Id) -> Result<(LiveSessionInfo, Watch), WatchRefused> {
        // Clone out of the lock: it must not be held across the await.
        let session = self.lock().get(id).cloned();
        let Some(s) = session else {
            return Err(WatchRefused(format!(
                "session {id} is not live on this gateway"
            )));
        };
        let info = LiveSessionInfo {
            id: s.id,
            user: s.user.clone(),
            target: s.target.name.clone(),
        };
        // Between the end of the recording and the removal from the registry the recorder
        // refuses, saying the recording is finished.
        let watch = s.recorder.watch().await?;
        Ok((info, watch))
    }

    /// Ends every live session of a user. Returns how many were ended.
    pub fn kill_user(&self, user: &Name, reason: &str) -> usize {
        let g = self.lock();
        let mut n = 0;
        for s in g.values().filter(|s| &s.user == user) {
            s.request_stop(EndReason::Killed(reason.to_string()));
            n += 1;
        }
        n
    }

    /// Registers a held request; the receiver gets the moderator's answer.
    pub(crate) fn hold(&self, alert: i64, session: Id) -> oneshot::Receiver<HoldAnswer> {
        let (tx, rx) = oneshot::channel();
        self.holds_lock().insert(
            alert,
            PendingHold {
                session,
                answer: tx,
            },
        );
        rx
    }

    /// Forgets a held request (answered, timed out or abandoned).
    pub(crate) fn unhold(&self, alert: i64) {
        self.holds_lock().remove(&alert);
    }

    /// Answers a held request. Returns the session it belongs to, or an explanation when no
    /// request is waiting under that alert id.
    pub fn decide(&self, alert: i64, answer: HoldAnswer) -> Result<Id, String> {
        let pending = self.holds_lock().remove(&alert);
        match pending {
            Some(p) => {
                let session = p.session;
                p.answer.send(answer).map_err(|_| {
                    format!("alert {alert} stopped waiting before the decision arrived")
                })?;
                Ok(session)
            }
            None => Err(format!(
                "alert {alert} is not waiting for a decision on this gateway \
                 (not a hold, already decided, timed out, or its session ended)"
            )),
        }
    }

    /// The alert ids of the requests waiting for a moderator.
    pub fn pending_holds(&self) -> Vec<i64> {
        let mut v: Vec<i64> = self.holds_lock().keys().copied().collect();
        v.sort_unstable();
        v
    }

    fn holds_lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, PendingHold>> {
        self.holds.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ends every live session (gateway shutdown).
    pub fn stop_all(&self, reason: EndReason) {
        for s in self.lock().values() {
            s.request_stop(reason.clone());
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
