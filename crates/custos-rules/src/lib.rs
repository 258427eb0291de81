//! Rule files → compiled ruleset; a pure `evaluate(event) -> Decision` with no IO; the default
//! rule pack.
//!
//! The gateway hands every command, exec request, file transfer, port forward, piece of terminal
//! output and session start to [`Ruleset::evaluate`] and acts on the returned [`Decision`].
//! Commands are first [normalised](normalize()) so that quoting, `$IFS`, absolute paths,
//! wrappers (`sudo`, `env`, `nohup`, ...) and compound lines do not hide what runs.
//!
//! This crate does no IO except reading rule files in [`Ruleset::from_files`] and
//! [`check_files`]; evaluation is deterministic and its result serialisable. The rule format is
//! described in `docs/rules.md`.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod check;
mod engine;
mod format;
mod model;
mod normalize;
mod output;

pub use check::{check_files, check_sources, test_command};
pub use engine::{DEFAULT_PACK, Diagnostic, RuleSummary, RulesError, Ruleset};
pub use model::{Action, Context, Decision, Event, FileOp, RuleMatch, Severity};
pub use normalize::{NormalizedCommand, normalize};
pub use output::{BULK_CHUNK, BURST_CHECKED, OutputWindow, SEAM};
