//! The data that goes in (events, context) and comes out (decisions) of the engine.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::normalize::NormalizedCommand;

/// How serious a rule's finding is. Ordered from `Info` (lowest) to `Critical`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth recording, not worth a look on its own.
    Info,
    /// Unusual; look at it when reviewing the session.
    Low,
    /// Suspicious; review soon.
    Medium,
    /// Likely harmful or a policy breach.
    High,
    /// Destructive or an active compromise.
    Critical,
}

/// What the gateway should do when a rule matches. Ordered by strength:
/// `Alert` < `Hold` < `Block` < `Terminate` < `Lock`; a decision takes the strongest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Let it run, raise an alert.
    Alert,
    /// Pause the command until a reviewer approves or rejects it.
    Hold,
    /// Refuse this command; the session goes on.
    Block,
    /// Refuse the command and end the session.
    Terminate,
    /// End the session and lock the user's account until an administrator unlocks it.
    Lock,
}

/// A file operation seen on an SFTP or scp channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileOp {
    /// A file read from the target (sent to the client).
    Download,
    /// A file written on the target (sent by the client).
    Upload,
    /// A file removed.
    Delete,
    /// A file renamed or moved.
    Rename,
    /// A directory created.
    Mkdir,
    /// A directory removed.
    Rmdir,
    /// Attributes (mode, owner, times) changed.
    Setattr,
    /// A symbolic or hard link created.
    Link,
    /// A directory listed.
    List,
}

impl FileOp {
    /// Parse the lowercase name used in rule files and examples.
    pub fn parse(s: &str) -> Option<FileOp> {
        Some(match s {
            "download" => FileOp::Download,
            "upload" => FileOp::Upload,
            "delete" => FileOp::Delete,
            "rename" => FileOp::Rename,
            "mkdir" => FileOp::Mkdir,
            "rmdir" => FileOp::Rmdir,
            "setattr" => FileOp::Setattr,
            "link" => FileOp::Link,
            "list" => FileOp::List,
            _ => return None,
        })
    }
}

/// Something that happened in a session and is checked against the rules.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// A command line typed in an interactive shell (extracted from the terminal at Enter).
    Command {
        /// The line as typed.
        text: String,
    },
    /// A command requested with an SSH `exec` channel request (`ssh host 'cmd'`).
    Exec {
        /// The requested command string.
        command: String,
    },
    /// A file operation over SFTP or scp.
    FileTransfer {
        /// What was done.
        op: FileOp,
        /// Path on the target.
        path: String,
    },
    /// A port forward opened through the gateway.
    PortForward {
        /// Destination host as requested by the client.
        host: String,
        /// Destination port.
        port: u16,
    },
    /// Terminal output from the target.
    Output {
        /// Output text (the gateway decides the chunking, usually a line or a screen update).
        text: String,
    },
    /// A session being opened.
    SessionStart {
        /// Gateway user name.
        user: String,
        /// Target name.
        target: String,
        /// Client source address as text.
        source: String,
        /// When the session starts.
        #[serde(with = "time::serde::rfc3339")]
        time: OffsetDateTime,
    },
}

/// Who, where and when: what rule conditions are checked against.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context {
    /// Gateway user name.
    pub user: String,
    /// Target name.
    pub target: String,
    /// The target's labels (`env: prod`, ...).
    #[serde(default)]
    pub target_labels: BTreeMap<String, String>,
    /// Time of the event; time windows in rules are read against it.
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
}

impl Context {
    /// A context with no target labels.
    pub fn new(user: impl Into<String>, target: impl Into<String>, time: OffsetDateTime) -> Self {
        Self {
            user: user.into(),
            target: target.into(),
            target_labels: BTreeMap::new(),
            time,
        }
    }

    /// Add a target label.
    pub fn with_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.target_labels.insert(key.into(), value.into());
        self
    }
}

/// One rule that matched an event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleMatch {
    /// Rule id.
    pub id: String,
    /// Rule severity.
    pub severity: Severity,
    /// Rule action.
    pub action: Action,
    /// MITRE ATT&CK technique ids.
    pub mitre: Vec<String>,
    /// What the rule detects, for a reviewer.
    pub description: String,
    /// For command events: index into [`Decision::normalized`] of the first part that matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<usize>,
}

/// The outcome of evaluating one event: every matching rule and the strongest action.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// The strongest action of the matching rules; `None` when nothing matched (allow).
    pub action: Option<Action>,
    /// Every matching rule, in ruleset order, each once.
    pub matches: Vec<RuleMatch>,
    /// For command and exec events: the normalised parts the rules were checked against.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub normalized: Vec<NormalizedCommand>,
}

impl Decision {
    /// True when no rule matched.
    pub fn is_allowed(&self) -> bool {
        self.action.is_none()
    }

    /// True when the rule with this id matched.
    pub fn matched(&self, id: &str) -> bool {
        self.matches.iter().any(|m| m.id == id)
    }

    /// The highest severity among the matches.
    pub fn severity(&self) -> Option<Severity> {
        self.matches.iter().map(|m| m.severity).max()
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        })
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Alert => "alert",
            Action::Hold => "hold",
            Action::Block => "block",
            Action::Terminate => "terminate",
            Action::Lock => "lock",
        })
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.action {
            None => writeln!(f, "allow (no rule matched)")?,
            Some(a) => writeln!(f, "{a} ({} rule(s) matched)", self.matches.len())?,
        }
        for m in &self.matches {
            write!(
                f,
                "  [{}] {} -> {} {}: {}",
                m.severity,
                m.id,
                m.action,
                m.mitre.join(","),
                m.description
            )?;
            if let Some(p) = m.part.and_then(|p| self.normalized.get(p)) {
                write!(f, " (on `{p}`)")?;
            }
            writeln!(f)?;
        }
        for (i, p) in self.normalized.iter().enumerate() {
            writeln!(f, "  part {i}: {p}")?;
        }
        Ok(())
    }
}
