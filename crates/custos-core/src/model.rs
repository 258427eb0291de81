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
    /// How long sessions on this target may last and stay idle.
    pub limits: SessionLimits,
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
    /// Limits for this user's sessions on this target, on top of the target's own.
    pub limits: SessionLimits,
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
}

/// How long a session may run. A session gets the tightest of its target's and its grant's
/// limits; `None` means no limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SessionLimits {
    /// The session ends this many seconds after it started.
    pub max_duration_secs: Option<u64>,
    /// The session ends after this many seconds without activity from the user.
    pub idle_timeout_secs: Option<u64>,
}

impl SessionLimits {
    /// Each limit is the smaller of the two that are set.
    pub fn tightest(self, other: SessionLimits) -> SessionLimits {
        fn min(a: Option<u64>, b: Option<u64>) -> Option<u64> {
            match (a, b) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        }
        SessionLimits {
            max_duration_secs: min(self.max_duration_secs, other.max_duration_secs),
            idle_timeout_secs: min(self.idle_timeout_secs, other.idle_timeout_secs),
        }
    }

    pub fn is_none(&self) -> bool {
        self.max_duration_secs.is_none() && self.idle_timeout_secs.is_none()
    }
}

impl std::fmt::Display for SessionLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if let Some(s) = self.max_duration_secs {
            parts.push(format!("max {}", format_secs(s)));
        }
        if let Some(s) = self.idle_timeout_secs {
            parts.push(format!("idle {}", format_secs(s)));
        }
        if parts.is_empty() {
            f.pad("-")
        } else {
            f.pad(&parts.join(", "))
        }
    }
}

/// A number of seconds in the largest whole unit that states it exactly: `90s`, `15m`, `8h`, `2d`.
pub fn format_secs(s: u64) -> String {
    match s {
        0 => "0s".into(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Parses a duration written as a number with an optional unit: `90`, `90s`, `15m`, `8h`, `2d`.
pub fn parse_secs(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{text}' is not a duration (examples: 90s, 15m, 8h, 2d)"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "'{text}' has an unknown unit '{unit}' (use s, m, h or d)"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("'{text}' is too long a duration"))
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
    /// An administrator or a rule ended the session.
    Killed(String),
    /// A session limit (maximum duration, idle timeout) was reached; says which.
    Limit(String),
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
            EndReason::Limit(r) => write!(f, "limit: {r}"),
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
    /// What the gateway did: alert, hold, block, terminate or lock.
    pub action: String,
    /// What was evaluated: exec, command, file, forward, output, session.
    pub event: String,
    pub text: String,
    pub description: String,
    /// For a hold: its outcome — pending, approved, denied, timed out or withdrawn.
    pub decision: Option<HoldDecision>,
}

/// What became of a held request.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct HoldDecision {
    /// `pending`, `approved`, `denied`, `timed_out` or `withdrawn` (the session ended first).
    pub state: String,
    /// Who decided (a moderator's name), when someone did.
    pub by: Option<String>,
    /// The moderator's reason, if given.
    pub note: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub at: Option<OffsetDateTime>,
}

#[cfg(test)]
mod limit_tests {
    use super::*;

    #[test]
    fn durations_parse_and_print() {
        assert_eq!(parse_secs("90").unwrap(), 90);
        assert_eq!(parse_secs("90s").unwrap(), 90);
        assert_eq!(parse_secs("15m").unwrap(), 900);
        assert_eq!(parse_secs(" 8h ").unwrap(), 28_800);
        assert_eq!(parse_secs("2d").unwrap(), 172_800);
        assert!(parse_secs("").is_err());
        assert!(parse_secs("m").is_err());
        assert!(parse_secs("5w").unwrap_err().contains("unknown unit"));
        assert!(parse_secs("-5").is_err());
        assert!(parse_secs("99999999999999999999d").is_err());
        assert_eq!(format_secs(90), "90s");
        assert_eq!(format_secs(900), "15m");
        assert_eq!(format_secs(28_800), "8h");
        assert_eq!(format_secs(172_800), "2d");
    }

    #[test]
    fn tightest_limit_wins() {
        let t = SessionLimits {
            max_duration_secs: Some(3600),
            idle_timeout_secs: None,
        };
        let g = SessionLimits {
            max_duration_secs: Some(600),
            idle_timeout_secs: Some(300),
        };
        let both = t.tightest(g);
        assert_eq!(both.max_duration_secs, Some(600));
        assert_eq!(both.idle_timeout_secs, Some(300));
        assert_eq!(t.tightest(SessionLimits::default()), t);
        assert_eq!(both.to_string(), "max 10m, idle 5m");
        assert!(SessionLimits::default().is_none());
    }
}
