//! The typed audit event schema and its mapping to the ECS JSON document.
//!
//! An [`AuditEvent`] is the common context (who, from where, which session and target, when,
//! a stable id) plus one [`EventKind`] that says what happened. [`AuditEvent::to_document`]
//! turns it into the JSON document that is hashed, stored and shipped; docs/audit-events.md
//! lists every action with an example produced by [`schema_examples`].

use crate::document::{Document, Fields, format_time};
use custos_core::Id;
use std::net::{IpAddr, SocketAddr};
use time::OffsetDateTime;

/// The version of the Custos audit schema written in `custos.schema_version`. The minor
/// number grows when actions or optional fields are added; the major number when a field
/// changes meaning or disappears.
pub const SCHEMA_VERSION: &str = "1.0";

/// The Elastic Common Schema version whose field names the documents follow.
pub const ECS_VERSION: &str = "8.11.0";

/// How serious an event is. Ordered from least to most serious.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Routine activity.
    Info,
    /// Worth a look.
    Low,
    /// Needs attention.
    Medium,
    /// Needs attention now.
    High,
    /// An incident.
    Critical,
}

impl Severity {
    /// The name used in `custos.severity` and in rule files.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// Reads a severity name.
    pub fn parse(s: &str) -> Option<Severity> {
        Some(match s {
            "info" => Severity::Info,
            "low" => Severity::Low,
            "medium" => Severity::Medium,
            "high" => Severity::High,
            "critical" => Severity::Critical,
            _ => return None,
        })
    }

    /// The 0–10 score written in `event.severity` and used by CEF and LEEF.
    pub fn score(self) -> u8 {
        match self {
            Severity::Info => 1,
            Severity::Low => 3,
            Severity::Medium => 5,
            Severity::High => 8,
            Severity::Critical => 10,
        }
    }

    /// The severity whose score is the highest not above `score`.
    pub fn from_score(score: u64) -> Severity {
        match score {
            0..=2 => Severity::Info,
            3..=4 => Severity::Low,
            5..=7 => Severity::Medium,
            8..=9 => Severity::High,
            _ => Severity::Critical,
        }
    }
}

/// ECS `event.outcome`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// What was attempted happened.
    Success,
    /// What was attempted did not happen (refused, blocked, failed).
    Failure,
    /// Not known (yet).
    Unknown,
}

impl Outcome {
    /// The ECS value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Unknown => "unknown",
        }
    }
}

/// Where a connection came from: `source.ip` and `source.port`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Source {
    /// The peer address.
    pub ip: IpAddr,
    /// The peer port, if known.
    pub port: Option<u16>,
}

impl From<SocketAddr> for Source {
    fn from(a: SocketAddr) -> Source {
        Source {
            ip: a.ip(),
            port: Some(a.port()),
        }
    }
}

impl From<IpAddr> for Source {
    fn from(ip: IpAddr) -> Source {
        Source { ip, port: None }
    }
}

/// The machine a session reaches: `custos.target.name`, `destination.address`,
/// `destination.port` and the login used there, `destination.user.name`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The target's name in Custos.
    pub name: String,
    /// Host name or address.
    pub address: Option<String>,
    /// Port.
    pub port: Option<u16>,
    /// The account used on the target.
    pub login: Option<String>,
}

impl Target {
    /// A target known only by name.
    pub fn named(name: impl Into<String>) -> Target {
        Target {
            name: name.into(),
            address: None,
            port: None,
            login: None,
        }
    }
}

/// Where in a session's recording something happened: `custos.recording.channel` and
/// `custos.recording.offset_us` (`custos play SESSION --at` jumps there).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    /// SSH channel number inside the recording.
    pub channel: u32,
    /// Microseconds since the start of the recording.
    pub offset_us: u64,
}

/// How a user authenticated (`custos.auth.method`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMethod {
    /// A password.
    Password,
    /// An SSH public key.
    PublicKey,
    /// Keyboard-interactive prompts.
    KeyboardInteractive,
    /// The `none` method (always refused; logged when tried).
    None,
}

impl AuthMethod {
    /// The SSH method name.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Password => "password",
            AuthMethod::PublicKey => "publickey",
            AuthMethod::KeyboardInteractive => "keyboard-interactive",
            AuthMethod::None => "none",
        }
    }
}

/// The rule behind a decision: `rule.id`, `rule.description` and its severity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleRef {
    /// The rule's id.
    pub id: String,
    /// The rule's severity; it becomes the event's severity.
    pub severity: Severity,
    /// What the rule is about.
    pub description: Option<String>,
}

/// What a rule matched (`custos.match.subject`): the text goes to `process.command_line`
/// for commands and exec requests, to `custos.match.text` otherwise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Match {
    /// `command`, `exec`, `file`, `forward`, `output` or `session`.
    pub subject: String,
    /// The matched text (a command line, a path, `host:port`, a line of output).
    pub text: String,
    /// Where it happened in the recording, if inside a channel.
    pub position: Option<Position>,
}

/// Who made something happen (`custos.initiator.kind` and `.name`; a rule also fills
/// `rule.*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Initiator {
    /// A rule matched.
    Rule(RuleRef),
    /// An administrator, by name.
    Admin(String),
    /// The gateway itself (limits, shutdown, failures).
    System,
}

/// The fate of a held command: `hold.<state>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldState {
    /// The command waits for a reviewer.
    Requested,
    /// A reviewer let it run.
    Approved,
    /// A reviewer refused it.
    Denied,
    /// Nobody decided in time; it was refused.
    TimedOut,
    /// The session ended before a decision.
    Withdrawn,
}

impl HoldState {
    /// The name used in the action.
    pub fn as_str(self) -> &'static str {
        match self {
            HoldState::Requested => "requested",
            HoldState::Approved => "approved",
            HoldState::Denied => "denied",
            HoldState::TimedOut => "timed_out",
            HoldState::Withdrawn => "withdrawn",
        }
    }
}

/// The kind of object an administrative change touched: `admin.<object>.<operation>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminObject {
    /// A gateway user account.
    User,
    /// An SSH key of a user.
    UserKey,
    /// A user's password.
    UserPassword,
    /// A target.
    Target,
    /// The vaulted credential of a target.
    TargetCredential,
    /// The pinned host key of a target.
    TargetHostKey,
    /// A grant of a target to a user.
    Grant,
    /// The rule set.
    Rules,
    /// The gateway configuration.
    Config,
}

impl AdminObject {
    /// The name used in the action.
    pub fn as_str(self) -> &'static str {
        match self {
            AdminObject::User => "user",
            AdminObject::UserKey => "user_key",
            AdminObject::UserPassword => "user_password",
            AdminObject::Target => "target",
            AdminObject::TargetCredential => "target_credential",
            AdminObject::TargetHostKey => "target_host_key",
            AdminObject::Grant => "grant",
            AdminObject::Rules => "rules",
            AdminObject::Config => "config",
        }
    }

    fn is_iam(self) -> bool {
        matches!(
            self,
            AdminObject::User
                | AdminObject::UserKey
                | AdminObject::UserPassword
                | AdminObject::Grant
        )
    }
}

/// What an administrative change did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminOperation {
    /// Something was added.
    Create,
    /// Something was changed.
    Update,
    /// Something was removed.
    Delete,
}

impl AdminOperation {
    /// The name used in the action.
    pub fn as_str(self) -> &'static str {
        match self {
            AdminOperation::Create => "create",
            AdminOperation::Update => "update",
            AdminOperation::Delete => "delete",
        }
    }

    fn ecs_type(self) -> &'static str {
        match self {
            AdminOperation::Create => "creation",
            AdminOperation::Update => "change",
            AdminOperation::Delete => "deletion",
        }
    }
}

/// How a recording was accessed: `recording.<access>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordingAccess {
    /// Played back.
    Play,
    /// Exported to another format or file.
    Export,
    /// Watched live.
    Watch,
}

impl RecordingAccess {
    /// The name used in the action.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordingAccess::Play => "play",
            RecordingAccess::Export => "export",
            RecordingAccess::Watch => "watch",
        }
    }
}

/// What was done with a key: `key.<operation>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyOperation {
    /// A new key was made.
    Generate,
    /// A key was read from its file at start-up.
    Load,
    /// A key was replaced by a new one.
    Rotate,
    /// A key was removed.
    Delete,
}

impl KeyOperation {
    /// The name used in the action.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyOperation::Generate => "generate",
            KeyOperation::Load => "load",
            KeyOperation::Rotate => "rotate",
            KeyOperation::Delete => "delete",
        }
    }
}

/// Direction of a port forward (`custos.forward.direction`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForwardDirection {
    /// `ssh -L`: the client asks the gateway to connect somewhere (direct-tcpip).
    Local,
    /// `ssh -R`: the client asks to listen on the far side (tcpip-forward).
    Remote,
}

impl ForwardDirection {
    /// The name used in documents.
    pub fn as_str(self) -> &'static str {
        match self {
            ForwardDirection::Local => "local",
            ForwardDirection::Remote => "remote",
        }
    }
}

/// What happened. Each variant is one action (or, for holds, administrative changes, recording
/// access and key operations, one family of actions).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// `auth.success`: a user authenticated at the gateway.
    AuthSuccess {
        /// The method that succeeded.
        method: AuthMethod,
        /// For public-key authentication, the key's `SHA256:` fingerprint.
        key_fingerprint: Option<String>,
    },
    /// `auth.failure`: an authentication attempt was refused. Never carries what was typed.
    AuthFailure {
        /// The method tried.
        method: AuthMethod,
        /// Why it was refused (`unknown user`, `wrong password`, `account is locked`, ...).
        reason: String,
    },
    /// `session.start`: a session to a target began.
    SessionStart {
        /// The recording file, relative to the recordings folder.
        recording: Option<String>,
    },
    /// `session.end`: a session ended normally or was ended.
    SessionEnd {
        /// Why it ended.
        reason: String,
        /// Exit status of the shell or command, if the target sent one.
        exit_status: Option<u32>,
        /// Bytes from the user to the target (`source.bytes`).
        bytes_in: u64,
        /// Bytes from the target to the user (`destination.bytes`).
        bytes_out: u64,
        /// How long the session lasted (`event.duration`, nanoseconds).
        duration: Option<std::time::Duration>,
    },
    /// `session.interrupted`: a session stopped abnormally (gateway crash found at restart,
    /// recording failure, lost connection to the target).
    SessionInterrupted {
        /// What happened.
        reason: String,
    },
    /// `session.command`: a command line typed at a terminal, read off the screen at Enter.
    Command {
        /// Where in the recording.
        position: Position,
        /// The command line.
        command_line: String,
        /// The working directory, when the shell reports it.
        working_directory: Option<String>,
    },
    /// `session.exec`: an SSH exec request (`ssh gw 'command'`).
    Exec {
        /// Where in the recording.
        position: Position,
        /// The requested command.
        command_line: String,
    },
    /// `session.file_transfer`: a file operation over SFTP or scp.
    FileTransfer {
        /// Where in the recording.
        position: Position,
        /// `sftp` or `scp`.
        protocol: String,
        /// `upload`, `download`, `remove`, `rename`, `mkdir`, `rmdir`, `setstat`, ...
        operation: String,
        /// The path on the target.
        path: String,
        /// For a rename, the new path.
        new_path: Option<String>,
        /// Bytes transferred, when known.
        bytes: Option<u64>,
        /// Whether the operation succeeded (or was refused).
        outcome: Outcome,
    },
    /// `session.port_forward`: a port-forwarding request, allowed or refused.
    PortForward {
        /// The forward's channel, once opened.
        position: Option<Position>,
        /// `ssh -L` or `ssh -R`.
        direction: ForwardDirection,
        /// Host to connect to (local) or to listen on (remote).
        host: String,
        /// Port.
        port: u32,
        /// Address that originated the connection, as reported by the client.
        originator: Option<String>,
        /// Whether the gateway let it through.
        allowed: bool,
    },
    /// `rule.alert`: a rule matched; the action went ahead.
    Alert {
        /// The rule.
        rule: RuleRef,
        /// What it matched.
        matched: Match,
    },
    /// `rule.block`: a rule matched and the action was refused; the session goes on.
    Block {
        /// The rule.
        rule: RuleRef,
        /// What it matched.
        matched: Match,
    },
    /// `hold.requested`, `hold.approved`, `hold.denied`, `hold.timed_out`, `hold.withdrawn`:
    /// a command held for review, and what became of it.
    Hold {
        /// The rule that held it.
        rule: RuleRef,
        /// What it matched.
        matched: Match,
        /// Where the hold stands.
        state: HoldState,
        /// Who decided, for approvals and denials.
        by: Option<String>,
        /// The reviewer's note.
        note: Option<String>,
    },
    /// `session.terminate`: the gateway ended a session on purpose.
    Terminate {
        /// Why.
        reason: String,
        /// A rule, an administrator (`custos sessions kill`) or the gateway (a limit).
        by: Initiator,
    },
    /// `user.lock`: an account was locked.
    Lock {
        /// The locked account (`user.target.name`).
        account: String,
        /// Why.
        reason: String,
        /// A rule or an administrator.
        by: Initiator,
    },
    /// `user.unlock`: an account was unlocked.
    Unlock {
        /// The unlocked account (`user.target.name`).
        account: String,
        /// Usually an administrator.
        by: Initiator,
    },
    /// `admin.<object>.<operation>`: an administrative change, logged after it took effect.
    /// Carries the names of the changed fields, never their values.
    AdminChange {
        /// What kind of object.
        object: AdminObject,
        /// Added, changed or removed.
        operation: AdminOperation,
        /// The object's name: `alice`, `db1`, `alice -> db1` for a grant,
        /// `alice/SHA256:...` (user and key fingerprint) for a user key, the file for rules
        /// and configuration.
        name: String,
        /// Names of the fields that changed (`expires`, `locked`, `labels`, ...).
        fields: Vec<String>,
    },
    /// `recording.play`, `recording.export`, `recording.watch`: someone accessed a session's
    /// recording (the session is the event's `custos.session.id`).
    RecordingAccess {
        /// How.
        access: RecordingAccess,
        /// For exports, the format (`asciicast-v2`, `text`, `jsonl`, ...).
        format: Option<String>,
    },
    /// `key.generate`, `key.load`, `key.rotate`, `key.delete`: an operation on one of the
    /// gateway's keys. Never carries key material.
    KeyOperation {
        /// Which key (`host`, `recording-kek`, `recording-signing`, `audit-signing`, `vault`).
        key: String,
        /// What was done.
        operation: KeyOperation,
        /// The public fingerprint or key id, when the key has one.
        fingerprint: Option<String>,
    },
    /// `server.start`: the gateway started serving.
    ServerStart {
        /// Custos version.
        version: String,
        /// Addresses it listens on.
        listen: Vec<String>,
    },
    /// `server.stop`: the gateway stopped serving.
    ServerStop {
        /// Why (`signal`, `admin request`, ...).
        reason: String,
    },
}

/// One audit event: the common context plus what happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEvent {
    /// Stable id (`event.id`): SIEMs de-duplicate on it.
    pub id: Id,
    /// When it happened (`@timestamp`), to the microsecond.
    pub time: OffsetDateTime,
    /// The gateway user the event is about, or the administrator for administrative events
    /// (`user.name`).
    pub user: Option<String>,
    /// Where the user connected from.
    pub source: Option<Source>,
    /// The session it belongs to (`custos.session.id`).
    pub session: Option<Id>,
    /// The target of that session.
    pub target: Option<Target>,
    /// What happened.
    pub kind: EventKind,
}

impl AuditEvent {
    /// An event of `kind` happening now, with a fresh id and no context.
    pub fn new(kind: EventKind) -> AuditEvent {
        let time = truncate_to_micros(OffsetDateTime::now_utc());
        AuditEvent {
            id: new_id(time),
            time,
            user: None,
            source: None,
            session: None,
            target: None,
            kind,
        }
    }

    /// Sets `user.name`.
    pub fn user(mut self, name: impl Into<String>) -> AuditEvent {
        self.user = Some(name.into());
        self
    }

    /// Sets `source.ip` and `source.port`.
    pub fn source(mut self, source: impl Into<Source>) -> AuditEvent {
        self.source = Some(source.into());
        self
    }

    /// Sets `custos.session.id`.
    pub fn session(mut self, id: Id) -> AuditEvent {
        self.session = Some(id);
        self
    }

    /// Sets the target fields.
    pub fn target(mut self, target: Target) -> AuditEvent {
        self.target = Some(target);
        self
    }

    /// Sets the time (dropping precision finer than a microsecond).
    pub fn at(mut self, time: OffsetDateTime) -> AuditEvent {
        self.time = truncate_to_micros(time);
        self
    }

    /// Sets the id (for events replayed from elsewhere, and for tests).
    pub fn with_id(mut self, id: Id) -> AuditEvent {
        self.id = id;
        self
    }

    /// `event.action`.
    pub fn action(&self) -> String {
        match &self.kind {
            EventKind::Hold { state, .. } => format!("hold.{}", state.as_str()),
            EventKind::AdminChange {
                object, operation, ..
            } => format!("admin.{}.{}", object.as_str(), operation.as_str()),
            EventKind::RecordingAccess { access, .. } => format!("recording.{}", access.as_str()),
            EventKind::KeyOperation { operation, .. } => format!("key.{}", operation.as_str()),
            k => fixed_action(k).to_string(),
        }
    }

    /// How serious the event is: the rule's severity for rule decisions, a fixed level per
    /// action otherwise.
    pub fn severity(&self) -> Severity {
        use EventKind as K;
        match &self.kind {
            K::AuthSuccess { .. } => Severity::Info,
            K::AuthFailure { .. } => Severity::Low,
            K::SessionStart { .. } | K::SessionEnd { .. } => Severity::Info,
            K::SessionInterrupted { .. } => Severity::Medium,
            K::Command { .. } | K::Exec { .. } | K::FileTransfer { .. } => Severity::Info,
            K::PortForward { allowed, .. } => {
                if *allowed {
                    Severity::Info
                } else {
                    Severity::Low
                }
            }
            K::Alert { rule, .. } | K::Block { rule, .. } | K::Hold { rule, .. } => rule.severity,
            K::Terminate { by, .. } => match by {
                Initiator::Rule(r) => r.severity,
                Initiator::Admin(_) => Severity::Medium,
                Initiator::System => Severity::Low,
            },
            K::Lock { by, .. } => match by {
                Initiator::Rule(r) => r.severity.max(Severity::High),
                _ => Severity::High,
            },
            K::Unlock { .. } => Severity::Medium,
            K::AdminChange { .. } => Severity::Medium,
            K::RecordingAccess { .. } => Severity::Low,
            K::KeyOperation { operation, .. } => match operation {
                KeyOperation::Load => Severity::Info,
                _ => Severity::Medium,
            },
            K::ServerStart { .. } => Severity::Info,
            K::ServerStop { .. } => Severity::Medium,
        }
    }

    /// `event.outcome`.
    pub fn outcome(&self) -> Outcome {
        use EventKind as K;
        match &self.kind {
            K::AuthFailure { .. } | K::SessionInterrupted { .. } | K::Block { .. } => {
                Outcome::Failure
            }
            K::FileTransfer { outcome, .. } => *outcome,
            K::PortForward { allowed, .. } => {
                if *allowed {
                    Outcome::Success
                } else {
                    Outcome::Failure
                }
            }
            K::Hold { state, .. } => match state {
                HoldState::Requested => Outcome::Unknown,
                HoldState::Approved => Outcome::Success,
                _ => Outcome::Failure,
            },
            _ => Outcome::Success,
        }
    }

    /// The JSON document of this event at position `seq` of the chain. Its
    /// [`Document::canonical`] bytes are what the chain hashes.
    pub fn to_document(&self, seq: u64) -> Document {
        self.fields(seq).document()
    }

    /// The canonical encoding of [`AuditEvent::to_document`], rendered without building the
    /// JSON tree.
    pub fn canonical(&self, seq: u64) -> String {
        self.fields(seq).canonical()
    }

    fn fields(&self, seq: u64) -> Fields<'_> {
        let mut d = Fields::new();
        let action = self.action();
        let severity = self.severity();
        let (kind, categories, types) = self.ecs_classification();
        d.set("@timestamp", format_time(self.time));
        d.set("ecs.version", ECS_VERSION);
        d.set("event.id", self.id.to_string());
        d.set("event.action", action);
        d.set("event.kind", kind);
        d.set("event.category", categories.as_slice());
        d.set("event.type", types.as_slice());
        d.set("event.outcome", self.outcome().as_str());
        d.set("event.severity", severity.score());
        d.set("event.module", "custos");
        d.set("event.dataset", "custos.audit");
        d.set("custos.schema_version", SCHEMA_VERSION);
        d.set("custos.seq", seq);
        d.set("custos.severity", severity.as_str());
        d.set_opt("user.name", self.user.as_deref());
        if let Some(s) = &self.source {
            d.set("source.ip", s.ip.to_string());
            d.set_opt("source.port", s.port);
        }
        d.set_opt("custos.session.id", self.session.map(|s| s.to_string()));
        if let Some(t) = &self.target {
            d.set("custos.target.name", &t.name);
            d.set_opt("destination.address", t.address.as_deref());
            d.set_opt("destination.port", t.port);
            d.set_opt("destination.user.name", t.login.as_deref());
        }
        self.kind_fields(&mut d);
        d
    }

    fn ecs_classification(&self) -> (&'static str, Vec<&'static str>, Vec<&'static str>) {
        use EventKind as K;
        let (kind, cat, ty): (&str, Vec<&str>, Vec<&str>) = match &self.kind {
            K::AuthSuccess { .. } | K::AuthFailure { .. } => {
                ("event", vec!["authentication"], vec!["start"])
            }
            K::SessionStart { .. } => ("event", vec!["session"], vec!["start"]),
            K::SessionEnd { .. } | K::SessionInterrupted { .. } => {
                ("event", vec!["session"], vec!["end"])
            }
            K::Command { .. } | K::Exec { .. } => ("event", vec!["process"], vec!["start"]),
            K::FileTransfer { operation, .. } => {
                ("event", vec!["file"], vec![file_type(operation)])
            }
            K::PortForward { allowed, .. } => (
                "event",
                vec!["network"],
                vec!["connection", if *allowed { "allowed" } else { "denied" }],
            ),
            K::Alert { .. } => ("alert", vec!["intrusion_detection"], vec!["info"]),
            K::Block { .. } => ("alert", vec!["intrusion_detection"], vec!["denied"]),
            K::Hold { state, .. } => (
                "alert",
                vec!["intrusion_detection"],
                vec![match state {
                    HoldState::Requested => "info",
                    HoldState::Approved => "allowed",
                    _ => "denied",
                }],
            ),
            K::Terminate { by, .. } => (
                if matches!(by, Initiator::Rule(_)) {
                    "alert"
                } else {
                    "event"
                },
                vec!["session"],
                vec!["end"],
            ),
            K::Lock { .. } | K::Unlock { .. } => ("event", vec!["iam"], vec!["user", "change"]),
            K::AdminChange {
                object, operation, ..
            } => {
                if object.is_iam() {
                    (
                        "event",
                        vec!["iam", "configuration"],
                        vec![operation.ecs_type()],
                    )
                } else {
                    ("event", vec!["configuration"], vec![operation.ecs_type()])
                }
            }
            K::RecordingAccess { .. } => ("event", vec!["file"], vec!["access"]),
            K::KeyOperation { operation, .. } => (
                "event",
                vec!["configuration"],
                vec![match operation {
                    KeyOperation::Generate => "creation",
                    KeyOperation::Load => "access",
                    KeyOperation::Rotate => "change",
                    KeyOperation::Delete => "deletion",
                }],
            ),
            K::ServerStart { .. } => ("event", vec!["host"], vec!["start"]),
            K::ServerStop { .. } => ("event", vec!["host"], vec!["end"]),
        };
        (kind, cat, ty)
    }

    fn kind_fields<'a>(&'a self, d: &mut Fields<'a>) {
        use EventKind as K;
        match &self.kind {
            K::AuthSuccess {
                method,
                key_fingerprint,
            } => {
                d.set("custos.auth.method", method.as_str());
                d.set_opt("custos.auth.key_fingerprint", key_fingerprint.as_deref());
            }
            K::AuthFailure { method, reason } => {
                d.set("custos.auth.method", method.as_str());
                d.set("event.reason", reason.as_str());
            }
            K::SessionStart { recording } => {
                d.set_opt("custos.recording.file", recording.as_deref());
            }
            K::SessionEnd {
                reason,
                exit_status,
                bytes_in,
                bytes_out,
                duration,
            } => {
                d.set("event.reason", reason.as_str());
                d.set_opt("custos.session.exit_status", *exit_status);
                d.set("source.bytes", *bytes_in);
                d.set("destination.bytes", *bytes_out);
                d.set_opt(
                    "event.duration",
                    duration.map(|x| u64::try_from(x.as_nanos()).unwrap_or(u64::MAX)),
                );
            }
            K::SessionInterrupted { reason } => d.set("event.reason", reason.as_str()),
            K::Command {
                position,
                command_line,
                working_directory,
            } => {
                set_position(d, Some(*position));
                d.set("process.command_line", command_line.as_str());
                d.set_opt("process.working_directory", working_directory.as_deref());
            }
            K::Exec {
                position,
                command_line,
            } => {
                set_position(d, Some(*position));
                d.set("process.command_line", command_line.as_str());
            }
            K::FileTransfer {
                position,
                protocol,
                operation,
                path,
                new_path,
                bytes,
                outcome: _,
            } => {
                set_position(d, Some(*position));
                d.set("custos.transfer.protocol", protocol.as_str());
                d.set("custos.transfer.operation", operation.as_str());
                d.set("file.path", path.as_str());
                d.set_opt("custos.transfer.new_path", new_path.as_deref());
                d.set_opt("custos.transfer.bytes", *bytes);
            }
            K::PortForward {
                position,
                direction,
                host,
                port,
                originator,
                allowed: _,
            } => {
                set_position(d, *position);
                d.set("custos.forward.direction", direction.as_str());
                d.set("custos.forward.host", host.as_str());
                d.set("custos.forward.port", *port);
                d.set_opt("custos.forward.originator", originator.as_deref());
            }
            K::Alert { rule, matched } | K::Block { rule, matched } => {
                set_rule(d, rule);
                set_match(d, matched);
            }
            K::Hold {
                rule,
                matched,
                state,
                by,
                note,
            } => {
                set_rule(d, rule);
                set_match(d, matched);
                d.set("custos.hold.state", state.as_str());
                d.set_opt("custos.hold.by", by.as_deref());
                d.set_opt("custos.hold.note", note.as_deref());
            }
            K::Terminate { reason, by } => {
                d.set("event.reason", reason.as_str());
                set_initiator(d, by);
            }
            K::Lock {
                account,
                reason,
                by,
            } => {
                d.set("user.target.name", account.as_str());
                d.set("event.reason", reason.as_str());
                set_initiator(d, by);
            }
            K::Unlock { account, by } => {
                d.set("user.target.name", account.as_str());
                set_initiator(d, by);
            }
            K::AdminChange {
                object,
                operation,
                name,
                fields,
            } => {
                d.set("custos.admin.object", object.as_str());
                d.set("custos.admin.operation", operation.as_str());
                d.set("custos.admin.name", name.as_str());
                if !fields.is_empty() {
                    d.set("custos.admin.fields", fields.as_slice());
                }
                if matches!(object, AdminObject::User | AdminObject::UserPassword) {
                    d.set("user.target.name", name.as_str());
                }
            }
            K::RecordingAccess { access, format } => {
                d.set("custos.recording.access", access.as_str());
                d.set_opt("custos.recording.format", format.as_deref());
            }
            K::KeyOperation {
                key,
                operation,
                fingerprint,
            } => {
                d.set("custos.key.name", key.as_str());
                d.set("custos.key.operation", operation.as_str());
                d.set_opt("custos.key.fingerprint", fingerprint.as_deref());
            }
            K::ServerStart { version, listen } => {
                d.set("service.version", version.as_str());
                if !listen.is_empty() {
                    d.set("custos.server.listen", listen.as_slice());
                }
            }
            K::ServerStop { reason } => d.set("event.reason", reason.as_str()),
        }
    }
}

fn fixed_action(k: &EventKind) -> &'static str {
    use EventKind as K;
    match k {
        K::AuthSuccess { .. } => "auth.success",
        K::AuthFailure { .. } => "auth.failure",
        K::SessionStart { .. } => "session.start",
        K::SessionEnd { .. } => "session.end",
        K::SessionInterrupted { .. } => "session.interrupted",
        K::Command { .. } => "session.command",
        K::Exec { .. } => "session.exec",
        K::FileTransfer { .. } => "session.file_transfer",
        K::PortForward { .. } => "session.port_forward",
        K::Alert { .. } => "rule.alert",
        K::Block { .. } => "rule.block",
        K::Terminate { .. } => "session.terminate",
        K::Lock { .. } => "user.lock",
        K::Unlock { .. } => "user.unlock",
        K::ServerStart { .. } => "server.start",
        K::ServerStop { .. } => "server.stop",
        // Composed in `AuditEvent::action`.
        K::Hold { .. } => "hold",
        K::AdminChange { .. } => "admin",
        K::RecordingAccess { .. } => "recording",
        K::KeyOperation { .. } => "key",
    }
}

fn file_type(operation: &str) -> &'static str {
    match operation {
        "download" | "read" | "open" | "stat" | "list" => "access",
        "remove" | "rmdir" | "delete" => "deletion",
        "mkdir" | "create" | "symlink" => "creation",
        _ => "change",
    }
}

fn set_position(d: &mut Fields<'_>, p: Option<Position>) {
    if let Some(p) = p {
        d.set("custos.recording.channel", p.channel);
        d.set("custos.recording.offset_us", p.offset_us);
    }
}

fn set_rule<'a>(d: &mut Fields<'a>, rule: &'a RuleRef) {
    d.set("rule.id", rule.id.as_str());
    d.set_opt("rule.description", rule.description.as_deref());
}

fn set_match<'a>(d: &mut Fields<'a>, m: &'a Match) {
    d.set("custos.match.subject", m.subject.as_str());
    if m.subject == "command" || m.subject == "exec" {
        d.set("process.command_line", m.text.as_str());
    } else {
        d.set("custos.match.text", m.text.as_str());
    }
    set_position(d, m.position);
}

fn set_initiator<'a>(d: &mut Fields<'a>, by: &'a Initiator) {
    match by {
        Initiator::Rule(r) => {
            d.set("custos.initiator.kind", "rule");
            d.set("custos.initiator.name", r.id.as_str());
            set_rule(d, r);
        }
        Initiator::Admin(name) => {
            d.set("custos.initiator.kind", "admin");
            d.set("custos.initiator.name", name.as_str());
        }
        Initiator::System => d.set("custos.initiator.kind", "system"),
    }
}

fn truncate_to_micros(t: OffsetDateTime) -> OffsetDateTime {
    // Invariant: rounding nanoseconds down to whole microseconds stays within 0..1e9.
    t.replace_nanosecond(t.nanosecond() / 1000 * 1000)
        .expect("valid nanosecond")
}

/// A fresh time-ordered id for an event made at `time`.
fn new_id(time: OffsetDateTime) -> Id {
    let mut r = [0u8; 10];
    if aws_lc_rs::rand::fill(&mut r).is_err() {
        // The system generator failing is not a reason to lose an audit event: fall back to
        // a process-wide counter mixed with the clock, which is still unique in this process.
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        r[..8].copy_from_slice(&n.to_be_bytes());
        r[8..].copy_from_slice(&(time.nanosecond() as u16).to_be_bytes());
    }
    let ms = u64::try_from(time.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
    Id::from_parts(ms, r)
}

/// One example of every action, with fixed ids and times: the examples in
/// docs/audit-events.md are these documents (a test keeps them in step).
pub fn schema_examples() -> Vec<(u64, AuditEvent)> {
    let base =
        OffsetDateTime::from_unix_timestamp(1_793_700_000).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let session = Id::from_parts(1_793_699_990_000, [0x5E; 10]);
    let db1 = || Target {
        name: "db1".into(),
        address: Some("db1.prod.example.com".into()),
        port: Some(22),
        login: Some("postgres".into()),
    };
    let src: SocketAddr = ([192, 0, 2, 10], 52144).into();
    let rule = |id: &str, sev: Severity, desc: &str| RuleRef {
        id: id.into(),
        severity: sev,
        description: Some(desc.into()),
    };
    let at = |c: u32, us: u64| Position {
        channel: c,
        offset_us: us,
    };
    let in_session = |kind: EventKind| {
        AuditEvent::new(kind)
            .user("alice")
            .source(src)
            .session(session)
            .target(db1())
    };
    let drop_table = Match {
        subject: "command".into(),
        text: "psql -c 'DROP TABLE payments'".into(),
        position: Some(at(0, 84_250_000)),
    };
    let drop_rule = || rule("sql-drop", Severity::High, "Destructive SQL statement");
    let events: Vec<AuditEvent> = vec![
        AuditEvent::new(EventKind::AuthSuccess {
            method: AuthMethod::PublicKey,
            key_fingerprint: Some("SHA256:mVPwvezndPv/ARoIadVY98vAC0g+P/5633yTC4d/wXE".into()),
        })
        .user("alice")
        .source(src),
        AuditEvent::new(EventKind::AuthFailure {
            method: AuthMethod::Password,
            reason: "wrong password".into(),
        })
        .user("mallory")
        .source(SocketAddr::from(([198, 51, 100, 7], 40022))),
        in_session(EventKind::SessionStart {
            recording: Some(format!(
                "{:04}/{:02}/{:02}/{session}.custos",
                base.year(),
                u8::from(base.month()),
                base.day()
            )),
        }),
        in_session(EventKind::Command {
            position: at(0, 12_480_311),
            command_line: "sudo systemctl restart pgbouncer".into(),
            working_directory: Some("/var/lib/postgresql".into()),
        }),
        in_session(EventKind::Exec {
            position: at(1, 0),
            command_line: "pg_dump -Fc billing > /tmp/billing.dump".into(),
        }),
        in_session(EventKind::FileTransfer {
            position: at(2, 3_100_000),
            protocol: "sftp".into(),
            operation: "download".into(),
            path: "/tmp/billing.dump".into(),
            new_path: None,
            bytes: Some(48_213_504),
            outcome: Outcome::Success,
        }),
        in_session(EventKind::PortForward {
            position: None,
            direction: ForwardDirection::Local,
            host: "10.20.0.5".into(),
            port: 5432,
            originator: Some("127.0.0.1:60112".into()),
            allowed: false,
        }),
        in_session(EventKind::Alert {
            rule: rule("sudo-shell", Severity::Medium, "Interactive root shell"),
            matched: Match {
                subject: "command".into(),
                text: "sudo -i".into(),
                position: Some(at(0, 40_002_117)),
            },
        }),
        in_session(EventKind::Block {
            rule: drop_rule(),
            matched: drop_table.clone(),
        }),
        in_session(EventKind::Hold {
            rule: rule(
                "prod-restart",
                Severity::Medium,
                "Service restarts need a second pair of eyes",
            ),
            matched: Match {
                subject: "command".into(),
                text: "systemctl restart postgresql".into(),
                position: Some(at(0, 91_000_000)),
            },
            state: HoldState::Requested,
            by: None,
            note: None,
        }),
        in_session(EventKind::Hold {
            rule: rule(
                "prod-restart",
                Severity::Medium,
                "Service restarts need a second pair of eyes",
            ),
            matched: Match {
                subject: "command".into(),
                text: "systemctl restart postgresql".into(),
                position: Some(at(0, 91_000_000)),
            },
            state: HoldState::Approved,
            by: Some("bob".into()),
            note: Some("maintenance window CHG-1182".into()),
        }),
        in_session(EventKind::Terminate {
            reason: "rule sql-drop: Destructive SQL statement".into(),
            by: Initiator::Rule(drop_rule()),
        }),
        in_session(EventKind::Lock {
            account: "alice".into(),
            reason: "rule sql-drop: Destructive SQL statement".into(),
            by: Initiator::Rule(drop_rule()),
        }),
        in_session(EventKind::SessionEnd {
            reason: "killed: rule sql-drop".into(),
            exit_status: None,
            bytes_in: 18_311,
            bytes_out: 48_402_876,
            duration: Some(std::time::Duration::from_micros(95_512_004)),
        }),
        in_session(EventKind::SessionInterrupted {
            reason: "the gateway stopped while the session ran".into(),
        }),
        AuditEvent::new(EventKind::Unlock {
            account: "alice".into(),
            by: Initiator::Admin("root".into()),
        })
        .user("root"),
        AuditEvent::new(EventKind::AdminChange {
            object: AdminObject::User,
            operation: AdminOperation::Update,
            name: "carol".into(),
            fields: vec!["expires".into()],
        })
        .user("root"),
        AuditEvent::new(EventKind::AdminChange {
            object: AdminObject::UserKey,
            operation: AdminOperation::Create,
            name: "carol/SHA256:Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYg".into(),
            fields: vec![],
        })
        .user("root"),
        AuditEvent::new(EventKind::AdminChange {
            object: AdminObject::Target,
            operation: AdminOperation::Create,
            name: "db2".into(),
            fields: vec![
                "host".into(),
                "port".into(),
                "login".into(),
                "credential".into(),
            ],
        })
        .user("root"),
        AuditEvent::new(EventKind::AdminChange {
            object: AdminObject::Grant,
            operation: AdminOperation::Create,
            name: "carol -> db1".into(),
            fields: vec![],
        })
        .user("root"),
        AuditEvent::new(EventKind::AdminChange {
            object: AdminObject::Rules,
            operation: AdminOperation::Update,
            name: "rules/prod.yaml".into(),
            fields: vec!["sql-drop".into(), "prod-restart".into()],
        })
        .user("root"),
        AuditEvent::new(EventKind::AdminChange {
            object: AdminObject::Config,
            operation: AdminOperation::Update,
            name: "custos.toml".into(),
            fields: vec!["audit.checkpoint_every".into()],
        })
        .user("root"),
        AuditEvent::new(EventKind::RecordingAccess {
            access: RecordingAccess::Play,
            format: None,
        })
        .user("auditor")
        .session(session),
        AuditEvent::new(EventKind::RecordingAccess {
            access: RecordingAccess::Watch,
            format: None,
        })
        .user("bob")
        .session(session),
        AuditEvent::new(EventKind::RecordingAccess {
            access: RecordingAccess::Export,
            format: Some("asciicast-v2".into()),
        })
        .user("auditor")
        .session(session),
        AuditEvent::new(EventKind::KeyOperation {
            key: "audit-signing".into(),
            operation: KeyOperation::Generate,
            fingerprint: Some("SHA256:Qm9vZ0ZpbmdlcnByaW50T2ZUaGVBdWRpdEtleTEyMzQ".into()),
        }),
        AuditEvent::new(EventKind::ServerStart {
            version: "0.1.0".into(),
            listen: vec!["0.0.0.0:2222".into()],
        }),
        AuditEvent::new(EventKind::ServerStop {
            reason: "signal SIGTERM".into(),
        }),
    ];
    events
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let n = i as u64;
            let time = base + time::Duration::milliseconds(250 * n as i64);
            let id = Id::from_parts(
                u64::try_from(time.unix_timestamp_nanos() / 1_000_000).unwrap_or(0),
                [n as u8; 10],
            );
            (1000 + n, e.at(time).with_id(id))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_document_has_the_common_fields() {
        for (seq, e) in schema_examples() {
            let d = e.to_document(seq);
            for f in [
                "@timestamp",
                "ecs.version",
                "event.id",
                "event.action",
                "event.kind",
                "event.category",
                "event.type",
                "event.outcome",
                "event.severity",
                "custos.schema_version",
                "custos.seq",
                "custos.severity",
            ] {
                assert!(d.get(f).is_some(), "{} lacks {f}", e.action());
            }
            assert_eq!(d.u64("custos.seq"), Some(seq));
            assert_eq!(d.str("event.action"), Some(e.action().as_str()));
            assert_eq!(d.str("event.id"), Some(e.id.to_string().as_str()));
        }
    }

    #[test]
    fn examples_cover_every_action_family_once() {
        let actions: Vec<String> = schema_examples().iter().map(|(_, e)| e.action()).collect();
        for a in [
            "auth.success",
            "auth.failure",
            "session.start",
            "session.end",
            "session.interrupted",
            "session.command",
            "session.exec",
            "session.file_transfer",
            "session.port_forward",
            "rule.alert",
            "rule.block",
            "hold.requested",
            "hold.approved",
            "session.terminate",
            "user.lock",
            "user.unlock",
            "admin.user.update",
            "admin.user_key.create",
            "admin.target.create",
            "admin.grant.create",
            "admin.rules.update",
            "admin.config.update",
            "recording.play",
            "recording.export",
            "recording.watch",
            "key.generate",
            "server.start",
            "server.stop",
        ] {
            assert_eq!(actions.iter().filter(|x| *x == a).count(), 1, "{a}");
        }
    }

    #[test]
    fn the_fast_canonical_rendering_equals_the_document_one() {
        let mut events: Vec<(u64, AuditEvent)> = schema_examples();
        events.push((
            u64::MAX,
            AuditEvent::new(EventKind::Command {
                position: Position {
                    channel: u32::MAX,
                    offset_us: 0,
                },
                command_line: "printf '\"\\\u{1}\u{7f}\t\n' | tee /tmp/é☃".into(),
                working_directory: Some(String::new()),
            })
            .user("")
            .source(IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1])),
        ));
        for (seq, e) in events {
            let fast = e.canonical(seq);
            assert_eq!(fast, e.to_document(seq).canonical(), "{}", e.action());
            assert_eq!(Document::parse(&fast).unwrap(), e.to_document(seq));
        }
    }

    #[test]
    fn composed_actions() {
        let e = |k| AuditEvent::new(k).action();
        assert_eq!(
            e(EventKind::AdminChange {
                object: AdminObject::TargetCredential,
                operation: AdminOperation::Delete,
                name: "db1".into(),
                fields: vec![],
            }),
            "admin.target_credential.delete"
        );
        assert_eq!(
            e(EventKind::RecordingAccess {
                access: RecordingAccess::Watch,
                format: None
            }),
            "recording.watch"
        );
        assert_eq!(
            e(EventKind::KeyOperation {
                key: "vault".into(),
                operation: KeyOperation::Rotate,
                fingerprint: None
            }),
            "key.rotate"
        );
    }

    #[test]
    fn command_text_goes_to_process_command_line_other_matches_to_match_text() {
        let r = RuleRef {
            id: "r".into(),
            severity: Severity::Critical,
            description: None,
        };
        let cmd = AuditEvent::new(EventKind::Block {
            rule: r.clone(),
            matched: Match {
                subject: "exec".into(),
                text: "rm -rf /".into(),
                position: None,
            },
        });
        let d = cmd.to_document(1);
        assert_eq!(d.str("process.command_line"), Some("rm -rf /"));
        assert_eq!(d.get("custos.match.text"), None);
        assert_eq!(d.u64("event.severity"), Some(10));
        assert_eq!(d.str("event.outcome"), Some("failure"));
        let out = AuditEvent::new(EventKind::Alert {
            rule: r,
            matched: Match {
                subject: "output".into(),
                text: "BEGIN RSA PRIVATE KEY".into(),
                position: None,
            },
        });
        let d = out.to_document(1);
        assert_eq!(d.str("custos.match.text"), Some("BEGIN RSA PRIVATE KEY"));
        assert_eq!(d.get("process"), None);
    }

    #[test]
    fn times_are_microseconds_and_ids_follow_time() {
        let e = AuditEvent::new(EventKind::ServerStop { reason: "x".into() });
        assert_eq!(e.time.nanosecond() % 1000, 0);
        let ms = u64::try_from(e.time.unix_timestamp_nanos() / 1_000_000).unwrap();
        assert_eq!(e.id.unix_millis(), ms);
        let other = AuditEvent::new(EventKind::ServerStop { reason: "x".into() });
        assert_ne!(e.id, other.id);
    }

    #[test]
    fn severity_scores_round_trip() {
        for s in [
            Severity::Info,
            Severity::Low,
            Severity::Medium,
            Severity::High,
            Severity::Critical,
        ] {
            assert_eq!(Severity::from_score(u64::from(s.score())), s);
            assert_eq!(Severity::parse(s.as_str()), Some(s));
        }
    }
}
