//! Records shared between the store, the gateway and the command line.

use crate::{Id, Name};
use std::collections::BTreeMap;
use time::OffsetDateTime;

/// A person who may log in to the gateway.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct UserRecord {
    pub name: Name,
    pub locked: bool,
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires: Option<OffsetDateTime>,
    /// OpenSSH public key lines (`ALGO BASE64 [comment]`).
    pub ssh_keys: Vec<String>,
    pub has_password: bool,
    /// The password is a generated one-time password that must be changed at first use.
    pub password_one_time: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
}

impl UserRecord {
    /// Why this user may not log in right now, if there is a reason.
    pub fn refusal(&self, now: OffsetDateTime) -> Option<&'static str> {
        if self.locked {
            return Some("account is locked");
        }
        if self.expires.is_some_and(|e| e <= now) {
            return Some("account has expired");
        }
        None
    }
}

/// How the gateway checks a remote target's host key.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum HostKeyPolicy {
    /// Only this key (`ALGO BASE64`) is accepted.
    Pinned { key: String },
    /// The first key seen is pinned; until then `key` is `None`.
    TrustOnFirstUse { key: Option<String> },
}

impl HostKeyPolicy {
    pub fn pinned_key(&self) -> Option<&str> {
        match self {
            HostKeyPolicy::Pinned { key } => Some(key),
            HostKeyPolicy::TrustOnFirstUse { key } => key.as_deref(),
        }
    }
}

/// Where a target's sessions go.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TargetKind {
    /// A remote SSH server reached with a vaulted credential.
    Ssh {
        host: String,
        port: u16,
        login: String,
        host_key: HostKeyPolicy,
        /// `key` or `password`; the credential itself never leaves the store unencrypted.
        credential_kind: String,
    },
    /// A shell on the gateway host itself.
    Local { os_user: Option<String> },
}

/// A machine users reach through the gateway. The credential is not part of this record.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TargetRecord {
    pub name: Name,
    pub kind: TargetKind,
    pub labels: BTreeMap<String, String>,
    /// Local port forwarding through this target is allowed (and recorded).
    pub allow_port_forwarding: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
}

impl TargetRecord {
    /// The login name shown in session metadata.
    pub fn login(&self) -> String {
        match &self.kind {
            TargetKind::Ssh { login, .. } => login.clone(),
            TargetKind::Local { os_user } => {
                os_user.clone().unwrap_or_else(|| "(gateway user)".into())
            }
        }
    }
}

/// Permission for a user to open sessions on a target. Kept as its own record (not a flag on
/// the user) so that later conditions — time windows, approvals, label selectors — attach here.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Grant {
    pub user: Name,
    pub target: Name,
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
}

/// Whether a session is still running.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    Live,
    Ended,
    /// The gateway stopped without closing the session (crash, kill); found at restart.
    Interrupted,
}

impl SessionState {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Live => "live",
            SessionState::Ended => "ended",
            SessionState::Interrupted => "interrupted",
        }
    }

    pub fn parse(s: &str) -> Option<SessionState> {
        match s {
            "live" => Some(SessionState::Live),
            "ended" => Some(SessionState::Ended),
            "interrupted" => Some(SessionState::Interrupted),
            _ => None,
        }
    }
}

/// Why a session ended.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The user closed the connection or every channel finished normally.
    Closed,
    /// The target closed the connection.
    TargetClosed,
    /// The recording could not be written, so the session was ended.
    RecordingFailed(String),
    /// The gateway was stopped or killed while the session ran.
    Interrupted,
    /// An administrator ended the session.
    Killed(String),
    /// The gateway shut down.
    Shutdown,
    /// Any other error, described.
    Error(String),
}

impl std::fmt::Display for EndReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EndReason::Closed => f.write_str("closed"),
            EndReason::TargetClosed => f.write_str("target closed"),
            EndReason::RecordingFailed(e) => write!(f, "recording failed: {e}"),
            EndReason::Interrupted => f.write_str("interrupted"),
            EndReason::Killed(r) => write!(f, "killed: {r}"),
            EndReason::Shutdown => f.write_str("gateway shutdown"),
            EndReason::Error(e) => write!(f, "error: {e}"),
        }
    }
}

/// The metadata of one session: who, from where, to what, when, how much and how it ended.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SessionRecord {
    pub id: Id,
    pub user: Name,
    pub source: String,
    pub target: Name,
    pub login: String,
    #[serde(with = "time::serde::rfc3339")]
    pub start: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub end: Option<OffsetDateTime>,
    pub state: SessionState,
    /// Bytes from the user to the target.
    pub bytes_in: u64,
    /// Bytes from the target to the user.
    pub bytes_out: u64,
    pub exit_status: Option<u32>,
    pub end_reason: Option<String>,
    /// The recording file, relative to the recordings folder.
    pub recording: String,
}

impl SessionRecord {
    /// Whole seconds between start and end (or `now` for a live session).
    pub fn duration_secs(&self, now: OffsetDateTime) -> i64 {
        (self.end.unwrap_or(now) - self.start).whole_seconds()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals() {
        let now = OffsetDateTime::now_utc();
        let mut u = UserRecord {
            name: Name::new("alice").unwrap(),
            locked: false,
            expires: None,
            ssh_keys: vec![],
            has_password: false,
            password_one_time: false,
            created: now,
        };
        assert_eq!(u.refusal(now), None);
        u.expires = Some(now - time::Duration::seconds(1));
        assert_eq!(u.refusal(now), Some("account has expired"));
        u.locked = true;
        assert_eq!(u.refusal(now), Some("account is locked"));
    }
}

/// One command a user ran, from an interactive terminal (read off the emulated screen) or from
/// the protocol (exec requests, file transfers).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CommandRecord {
    pub session: Id,
    /// The channel inside the session's recording.
    pub channel: u32,
    /// Microseconds from the start of the recording: `custos play SESSION --at` jumps there.
    pub offset_us: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// `shell` (typed at a terminal), `exec` (an SSH exec request) or `file` (SFTP or scp).
    pub kind: String,
    pub text: String,
    pub cwd: Option<String>,
    pub exit_status: Option<i32>,
    pub user: Name,
    pub target: Name,
}

/// A rule matched something a user did.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AlertRecord {
    pub id: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub session: Id,
    pub channel: u32,
    /// Microseconds from the start of the recording.
    pub offset_us: u64,
    pub user: Name,
    pub target: Name,
    pub rule: String,
    /// info, low, medium, high or critical.
    pub severity: String,
    /// What the gateway did: alert, block, terminate, lock (hold is not yet enforced).
    pub action: String,
    /// What was evaluated: exec, command, file, forward.
    pub event: String,
    pub text: String,
    pub description: String,
}
