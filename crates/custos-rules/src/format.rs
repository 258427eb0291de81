//! The YAML rule file format, as read by serde. See docs/rules.md for the reference.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};

use crate::model::{Action, Severity};

/// One rule as written in a file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RuleDef {
    pub id: String,
    pub description: String,
    pub severity: Severity,
    #[serde(deserialize_with = "one_or_many")]
    pub mitre: Vec<String>,
    pub action: Action,
    #[serde(rename = "match")]
    pub matcher: MatchKeys,
    #[serde(default)]
    pub conditions: ConditionsDef,
    #[serde(default)]
    pub examples: ExamplesDef,
}

/// The event kind a rule looks at, as written: exactly one key (`command: {...}`, ...).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MatchKeys {
    pub command: Option<CommandDef>,
    pub exec: Option<CommandDef>,
    pub file_transfer: Option<FileDef>,
    pub port_forward: Option<PortDef>,
    pub output: Option<OutputDef>,
    pub session_start: Option<SessionDef>,
}

/// The event kind a rule looks at, with its kind-specific match.
#[derive(Debug)]
pub(crate) enum MatchDef {
    Command(CommandDef),
    Exec(CommandDef),
    FileTransfer(FileDef),
    PortForward(PortDef),
    Output(OutputDef),
    SessionStart(SessionDef),
}

impl MatchKeys {
    /// The single kind given, or an error naming the problem.
    pub fn into_single(self) -> Result<MatchDef, String> {
        let mut found = Vec::new();
        if let Some(c) = self.command {
            found.push(MatchDef::Command(c));
        }
        if let Some(c) = self.exec {
            found.push(MatchDef::Exec(c));
        }
        if let Some(f) = self.file_transfer {
            found.push(MatchDef::FileTransfer(f));
        }
        if let Some(p) = self.port_forward {
            found.push(MatchDef::PortForward(p));
        }
        if let Some(o) = self.output {
            found.push(MatchDef::Output(o));
        }
        if let Some(s) = self.session_start {
            found.push(MatchDef::SessionStart(s));
        }
        match found.len() {
            1 => found.pop().ok_or_else(String::new),
            0 => Err("`match` needs one event kind: command, exec, file_transfer, port_forward, output, session_start".into()),
            _ => Err("`match` holds more than one event kind; write one rule per kind".into()),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CommandDef {
    #[serde(default, deserialize_with = "one_or_many")]
    pub program: Vec<String>,
    #[serde(default, deserialize_with = "one_or_many")]
    pub args: Vec<String>,
    #[serde(default, deserialize_with = "one_or_many")]
    pub regex: Vec<String>,
    #[serde(default, deserialize_with = "one_or_many")]
    pub not_regex: Vec<String>,
    #[serde(default, deserialize_with = "one_or_many")]
    pub env: Vec<String>,
    #[serde(default, deserialize_with = "one_or_many")]
    pub piped_from: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileDef {
    #[serde(default, deserialize_with = "one_or_many")]
    pub operation: Vec<String>,
    #[serde(default, deserialize_with = "one_or_many")]
    pub path: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PortDef {
    #[serde(default, deserialize_with = "one_or_many")]
    pub host: Vec<String>,
    #[serde(default)]
    pub port: Vec<u16>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OutputDef {
    #[serde(deserialize_with = "one_or_many")]
    pub regex: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SessionDef {
    #[serde(default, deserialize_with = "one_or_many")]
    pub source: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConditionsDef {
    #[serde(default, deserialize_with = "one_or_many")]
    pub users: Vec<String>,
    #[serde(default, deserialize_with = "one_or_many")]
    pub not_users: Vec<String>,
    #[serde(default, deserialize_with = "one_or_many")]
    pub targets: Vec<String>,
    #[serde(default, deserialize_with = "one_or_many")]
    pub not_targets: Vec<String>,
    #[serde(default)]
    pub target_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub within: Vec<WindowDef>,
    #[serde(default)]
    pub outside: Vec<WindowDef>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WindowDef {
    #[serde(default, deserialize_with = "one_or_many")]
    pub days: Vec<String>,
    pub from: String,
    pub to: String,
    #[serde(default)]
    pub utc_offset: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExamplesDef {
    #[serde(default, rename = "match")]
    pub matches: Vec<ExampleDef>,
    #[serde(default)]
    pub no_match: Vec<ExampleDef>,
}

/// An example: a plain string, or a mapping that also sets the context.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum ExampleDef {
    Text(String),
    Full(ExampleFull),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExampleFull {
    pub input: String,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub time: Option<String>,
}

/// Accept `key: value` as well as `key: [a, b]` for list fields.
fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a string or a list of strings")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(vec![v.to_string()])
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(vec![v.to_string()])
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(s) = seq.next_element::<String>()? {
                out.push(s);
            }
            Ok(out)
        }
    }
    d.deserialize_any(V)
}
