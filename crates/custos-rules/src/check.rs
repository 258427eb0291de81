//! Checks for the CLI: validate rule files, run their examples, try a command.

use std::path::Path;

use crate::engine::{Diagnostic, Ruleset};
use crate::model::{Context, Decision, Event};

/// Load rule files and run every rule's examples; returns every problem found (empty = good).
///
/// Besides load errors (bad YAML, unknown field, bad regex, duplicate id), reports each
/// `examples.match` entry the rule does not match and each `examples.no_match` entry it does.
pub fn check_files<P: AsRef<Path>>(paths: &[P]) -> Vec<Diagnostic> {
    match Ruleset::from_files(paths) {
        Ok(rs) => example_failures(&rs),
        Err(e) => e.diagnostics,
    }
}

/// As [`check_files`], on named YAML texts instead of files.
pub fn check_sources(sources: impl IntoIterator<Item = (String, String)>) -> Vec<Diagnostic> {
    match Ruleset::from_sources(sources) {
        Ok(rs) => example_failures(&rs),
        Err(e) => e.diagnostics,
    }
}

/// Evaluate one command line as an interactive command in `ctx`.
pub fn test_command(ruleset: &Ruleset, command: &str, ctx: &Context) -> Decision {
    ruleset.evaluate(
        &Event::Command {
            text: command.to_string(),
        },
        ctx,
    )
}

pub(crate) fn example_failures(rs: &Ruleset) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for rule in rs.rules() {
        for (expect, list) in [
            (true, &rule.examples_match),
            (false, &rule.examples_no_match),
        ] {
            for ex in list {
                let d = rs.evaluate(&ex.event, &ex.ctx);
                if d.matched(&rule.id) != expect {
                    let what = if expect {
                        "does not match its example"
                    } else {
                        "matches its no_match example"
                    };
                    let parts: Vec<&str> = d.normalized.iter().map(|p| p.text.as_str()).collect();
                    let norm = if parts.is_empty() {
                        String::new()
                    } else {
                        format!(" (normalised: {})", parts.join(" ; "))
                    };
                    out.push(Diagnostic {
                        file: rule.file.clone(),
                        line: ex.line,
                        message: format!("rule `{}` {what} {:?}{norm}", rule.id, ex.input),
                    });
                }
            }
        }
    }
    out
}
