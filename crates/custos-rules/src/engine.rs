//! Compiling rule files into a [`Ruleset`] and evaluating events against it.
//!
//! Command rules are indexed by program name, so a command is only checked against the rules
//! that name its program (plus the few that name none, which share one `RegexSet` prefilter).
//! Output rules share one `RegexSet`. Everything else is a handful of rules checked in turn.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;

use regex::{Regex, RegexSet};
use serde::{Deserialize, Serialize};
use time::{OffsetDateTime, UtcOffset};

use crate::format::{CommandDef, ConditionsDef, ExampleDef, MatchDef, RuleDef, WindowDef};
use crate::model::{Action, Context, Decision, Event, FileOp, RuleMatch, Severity};
use crate::normalize::{NormalizedCommand, normalize};

/// A problem in a rule file, located by file and line (1-based; 0 when unknown).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    /// File name or path as given.
    pub file: String,
    /// 1-based line, 0 when not known.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

/// Rule files that could not be loaded; every problem found is listed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct RulesError {
    /// The problems, in file order.
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for RulesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// What a listing shows about one rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleSummary {
    /// Rule id.
    pub id: String,
    /// File the rule came from.
    pub file: String,
    /// Line where the rule starts.
    pub line: usize,
    /// Severity.
    pub severity: Severity,
    /// Action.
    pub action: Action,
    /// ATT&CK technique ids.
    pub mitre: Vec<String>,
    /// Description.
    pub description: String,
    /// Event kind: command, exec, file_transfer, port_forward, output, session_start.
    pub kind: String,
    /// Number of `examples.match` entries.
    pub examples_match: usize,
    /// Number of `examples.no_match` entries.
    pub examples_no_match: usize,
}

/// A rule example, ready to evaluate.
#[derive(Clone, Debug)]
pub(crate) struct Example {
    pub event: Event,
    pub ctx: Context,
    pub input: String,
    pub line: usize,
}

/// Glob on names: `*` matches any run of characters.
#[derive(Clone, Debug)]
struct Glob(String);

impl Glob {
    fn matches(&self, s: &str) -> bool {
        wildcard(self.0.as_bytes(), s.as_bytes())
    }
}

fn wildcard(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if pi < p.len() && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi.min(p.len())..].iter().all(|&c| c == b'*')
}

#[derive(Clone, Debug)]
struct Window {
    days: u8,
    from: u16,
    to: u16,
    offset: UtcOffset,
}

impl Window {
    fn contains(&self, t: OffsetDateTime) -> bool {
        let local = t.to_offset(self.offset);
        let day = local.weekday().number_days_from_monday();
        if self.days & (1 << day) == 0 {
            return false;
        }
        let m = u16::from(local.hour()) * 60 + u16::from(local.minute());
        if self.from <= self.to {
            m >= self.from && m < self.to
        } else {
            m >= self.from || m < self.to
        }
    }
}

#[derive(Clone, Debug, Default)]
struct Conditions {
    users: Vec<Glob>,
    not_users: Vec<Glob>,
    targets: Vec<Glob>,
    not_targets: Vec<Glob>,
    labels: BTreeMap<String, String>,
    within: Vec<Window>,
    outside: Vec<Window>,
}

impl Conditions {
    fn holds(
        &self,
        user: &str,
        target: &str,
        labels: &BTreeMap<String, String>,
        time: OffsetDateTime,
    ) -> bool {
        (self.users.is_empty() || self.users.iter().any(|g| g.matches(user)))
            && !self.not_users.iter().any(|g| g.matches(user))
            && (self.targets.is_empty() || self.targets.iter().any(|g| g.matches(target)))
            && !self.not_targets.iter().any(|g| g.matches(target))
            && self
                .labels
                .iter()
                .all(|(k, v)| labels.get(k).is_some_and(|have| v == "*" || have == v))
            && (self.within.is_empty() || self.within.iter().any(|w| w.contains(time)))
            && !self.outside.iter().any(|w| w.contains(time))
    }
}

#[derive(Clone, Debug)]
struct CommandMatcher {
    exec_only: bool,
    programs: Vec<Glob>,
    args: Vec<Regex>,
    regex: Vec<Regex>,
    not_regex: Vec<Regex>,
    env: Vec<Regex>,
    piped_from: Vec<Glob>,
}

#[derive(Clone, Debug)]
enum Matcher {
    Command(CommandMatcher),
    FileTransfer {
        ops: Vec<FileOp>,
        path: Vec<Regex>,
    },
    PortForward {
        host: Vec<Regex>,
        ports: Vec<u16>,
    },
    /// Validated patterns; matched through the ruleset's shared set.
    Output(Vec<String>),
    SessionStart {
        source: Vec<Regex>,
    },
}

#[derive(Clone, Debug)]
pub(crate) struct Rule {
    pub id: String,
    description: String,
    severity: Severity,
    action: Action,
    mitre: Vec<String>,
    matcher: Matcher,
    conditions: Conditions,
    pub file: String,
    pub line: usize,
    pub examples_match: Vec<Example>,
    pub examples_no_match: Vec<Example>,
}

/// A compiled set of rules. Cheap to share (`Arc`) and safe to use from many threads.
#[derive(Clone, Debug)]
pub struct Ruleset {
    rules: Vec<Rule>,
    /// Command rules by exact program name.
    by_program: HashMap<String, Vec<usize>>,
    /// Command rules whose program list has a `*` glob.
    glob_program: Vec<usize>,
    /// Command rules with no program list and no text regex (checked on every part).
    always: Vec<usize>,
    /// Command rules with no program list but a text regex: prefiltered by `anyprog_set`.
    anyprog_set: RegexSet,
    anyprog_map: Vec<usize>,
    /// Output rules' regexes in one set, and the rule of each pattern.
    output_set: RegexSet,
    /// The same patterns one by one: each gets its own literal prefilter, which makes the
    /// common case (no pattern occurs) much faster than one pass of the combined set.
    output_each: Vec<regex::Regex>,
    output_map: Vec<usize>,
    others: Vec<usize>,
}

/// The rule files shipped with the crate: (file name, YAML).
pub const DEFAULT_PACK: &[(&str, &str)] = &[
    (
        "destructive.yaml",
        include_str!("../rules/destructive.yaml"),
    ),
    (
        "credential-access.yaml",
        include_str!("../rules/credential-access.yaml"),
    ),
    (
        "persistence.yaml",
        include_str!("../rules/persistence.yaml"),
    ),
    (
        "defense-evasion.yaml",
        include_str!("../rules/defense-evasion.yaml"),
    ),
    (
        "exfiltration.yaml",
        include_str!("../rules/exfiltration.yaml"),
    ),
    (
        "discovery-lateral.yaml",
        include_str!("../rules/discovery-lateral.yaml"),
    ),
    (
        "privilege-escalation.yaml",
        include_str!("../rules/privilege-escalation.yaml"),
    ),
    (
        "download-execute.yaml",
        include_str!("../rules/download-execute.yaml"),
    ),
    ("database.yaml", include_str!("../rules/database.yaml")),
    (
        "container-kernel.yaml",
        include_str!("../rules/container-kernel.yaml"),
    ),
    (
        "reverse-shell.yaml",
        include_str!("../rules/reverse-shell.yaml"),
    ),
    ("output.yaml", include_str!("../rules/output.yaml")),
    (
        "file-transfer.yaml",
        include_str!("../rules/file-transfer.yaml"),
    ),
    (
        "port-forward.yaml",
        include_str!("../rules/port-forward.yaml"),
    ),
    ("session.yaml", include_str!("../rules/session.yaml")),
];

impl Ruleset {
    /// The shipped default pack (rules/*.yaml, embedded at build time).
    pub fn default_pack() -> Ruleset {
        // The embedded files are checked by the test suite (`default_pack_loads`), so this can
        // only fail on a build whose own tests fail.
        Ruleset::from_sources(
            DEFAULT_PACK
                .iter()
                .map(|(n, y)| (n.to_string(), y.to_string())),
        )
        .expect("the embedded default pack is valid")
    }

    /// Compile one YAML document; `name` is used in diagnostics.
    pub fn from_str(name: &str, yaml: &str) -> Result<Ruleset, RulesError> {
        Ruleset::from_sources([(name.to_string(), yaml.to_string())])
    }

    /// Read and compile rule files. All files are read; every problem is reported.
    pub fn from_files<P: AsRef<Path>>(paths: &[P]) -> Result<Ruleset, RulesError> {
        let mut sources = Vec::new();
        let mut diagnostics = Vec::new();
        for p in paths {
            let name = p.as_ref().display().to_string();
            match std::fs::read_to_string(p) {
                Ok(text) => sources.push((name, text)),
                Err(e) => diagnostics.push(Diagnostic {
                    file: name,
                    line: 0,
                    message: format!("cannot read: {e}"),
                }),
            }
        }
        match Ruleset::from_sources(sources) {
            Ok(rs) if diagnostics.is_empty() => Ok(rs),
            Ok(_) => Err(RulesError { diagnostics }),
            Err(mut e) => {
                diagnostics.append(&mut e.diagnostics);
                Err(RulesError { diagnostics })
            }
        }
    }

    /// Compile several named YAML documents into one ruleset (ids must be unique across them).
    pub fn from_sources(
        sources: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Ruleset, RulesError> {
        let mut rules = Vec::new();
        let mut diags = Vec::new();
        let mut seen: HashMap<String, (String, usize)> = HashMap::new();
        for (name, text) in sources {
            for rule in parse_file(&name, &text, &mut diags) {
                if let Some((f, l)) = seen.get(&rule.id) {
                    diags.push(Diagnostic {
                        file: name.clone(),
                        line: rule.line,
                        message: format!(
                            "duplicate rule id `{}` (first defined at {f}:{l})",
                            rule.id
                        ),
                    });
                    continue;
                }
                seen.insert(rule.id.clone(), (name.clone(), rule.line));
                rules.push(rule);
            }
        }
        if !diags.is_empty() {
            return Err(RulesError { diagnostics: diags });
        }
        Ruleset::index(rules).map_err(|message| RulesError {
            diagnostics: vec![Diagnostic {
                file: String::new(),
                line: 0,
                message,
            }],
        })
    }

    fn index(rules: Vec<Rule>) -> Result<Ruleset, String> {
        let mut by_program: HashMap<String, Vec<usize>> = HashMap::new();
        let mut glob_program = Vec::new();
        let mut always = Vec::new();
        let mut anyprog_pats = Vec::new();
        let mut anyprog_map = Vec::new();
        let mut output_pats = Vec::new();
        let mut output_map = Vec::new();
        let mut others = Vec::new();
        for (i, r) in rules.iter().enumerate() {
            match &r.matcher {
                Matcher::Command(c) => {
                    if c.programs.is_empty() {
                        if c.regex.is_empty() {
                            always.push(i);
                        } else {
                            for re in &c.regex {
                                anyprog_pats.push(re.as_str().to_string());
                                anyprog_map.push(i);
                            }
                        }
                    } else {
                        let mut globbed = false;
                        for g in &c.programs {
                            if g.0.contains('*') {
                                globbed = true;
                            } else {
                                by_program.entry(g.0.clone()).or_default().push(i);
                            }
                        }
                        if globbed {
                            glob_program.push(i);
                        }
                    }
                }
                Matcher::Output(pats) => {
                    for p in pats {
                        output_pats.push(p.clone());
                        output_map.push(i);
                    }
                }
                _ => others.push(i),
            }
        }
        for v in by_program.values_mut() {
            v.dedup();
        }
        let anyprog_set = RegexSet::new(&anyprog_pats).map_err(|e| e.to_string())?;
        let output_set = RegexSet::new(&output_pats).map_err(|e| e.to_string())?;
        let output_each = output_pats
            .iter()
            .map(|p| regex::Regex::new(p))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        Ok(Ruleset {
            rules,
            by_program,
            glob_program,
            always,
            anyprog_set,
            anyprog_map,
            output_set,
            output_each,
            output_map,
            others,
        })
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// True when the ruleset has no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Rule ids, in ruleset order.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| r.id.as_str())
    }

    /// One summary per rule, in ruleset order (for listings and pack checks).
    pub fn summaries(&self) -> Vec<RuleSummary> {
        self.rules
            .iter()
            .map(|r| RuleSummary {
                id: r.id.clone(),
                file: r.file.clone(),
                line: r.line,
                severity: r.severity,
                action: r.action,
                mitre: r.mitre.clone(),
                description: r.description.clone(),
                kind: r.kind().to_string(),
                examples_match: r.examples_match.len(),
                examples_no_match: r.examples_no_match.len(),
            })
            .collect()
    }

    pub(crate) fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Whether some output rule's pattern occurs in `text`, before conditions: a cheap first
    /// test for terminal output, which is then evaluated in full only when this is true.
    pub fn output_may_match(&self, text: &str) -> bool {
        self.output_each.iter().any(|r| r.is_match(text))
    }

    /// Whether some output rule's pattern matches `text` across byte offset `boundary` (starts
    /// before it and ends after it): a match found only by joining two pieces of output.
    pub fn output_matches_across(&self, text: &str, boundary: usize) -> bool {
        self.output_each.iter().any(|r| {
            r.find_iter(text)
                .any(|m| m.start() < boundary && m.end() > boundary)
        })
    }

    /// Check one event. Pure: same ruleset, event and context give the same decision.
    pub fn evaluate(&self, event: &Event, ctx: &Context) -> Decision {
        // Per rule: None = no match; Some(part) = matched, on that normalised part if any.
        let mut hits: Vec<Option<Option<usize>>> = vec![None; self.rules.len()];
        let mut normalized = Vec::new();
        match event {
            Event::Command { text } => {
                normalized = normalize(text);
                self.eval_command(&normalized, false, ctx, &mut hits);
            }
            Event::Exec { command } => {
                normalized = normalize(command);
                self.eval_command(&normalized, true, ctx, &mut hits);
            }
            Event::Output { text } => {
                for pat in self.output_set.matches(text).iter() {
                    if let Some(&ri) = self.output_map.get(pat)
                        && self.rules[ri].conditions_hold(ctx)
                    {
                        hits[ri] = Some(None);
                    }
                }
            }
            _ => {
                for &ri in &self.others {
                    let r = &self.rules[ri];
                    let matched = match (&r.matcher, event) {
                        (
                            Matcher::FileTransfer { ops, path },
                            Event::FileTransfer { op, path: p },
                        ) => {
                            (ops.is_empty() || ops.contains(op))
                                && (path.is_empty() || path.iter().any(|re| re.is_match(p)))
                        }
                        (
                            Matcher::PortForward { host, ports },
                            Event::PortForward { host: h, port },
                        ) => {
                            let h = h
                                .trim_start_matches('[')
                                .trim_end_matches(']')
                                .to_ascii_lowercase();
                            (host.is_empty() || host.iter().any(|re| re.is_match(&h)))
                                && (ports.is_empty() || ports.contains(port))
                        }
                        (
                            Matcher::SessionStart { source },
                            Event::SessionStart {
                                user,
                                target,
                                source: s,
                                time,
                            },
                        ) => {
                            let ok = source.is_empty() || source.iter().any(|re| re.is_match(s));
                            hits[ri] = (ok
                                && r.conditions.holds(user, target, &ctx.target_labels, *time))
                            .then_some(None);
                            continue;
                        }
                        _ => false,
                    };
                    if matched && r.conditions_hold(ctx) {
                        hits[ri] = Some(None);
                    }
                }
            }
        }
        let mut matches = Vec::new();
        for (ri, h) in hits.into_iter().enumerate() {
            if let Some(part) = h {
                let r = &self.rules[ri];
                matches.push(RuleMatch {
                    id: r.id.clone(),
                    severity: r.severity,
                    action: r.action,
                    mitre: r.mitre.clone(),
                    description: r.description.clone(),
                    part,
                });
            }
        }
        let action = matches.iter().map(|m| m.action).max();
        Decision {
            action,
            matches,
            normalized,
        }
    }

    fn eval_command(
        &self,
        parts: &[NormalizedCommand],
        exec: bool,
        ctx: &Context,
        hits: &mut [Option<Option<usize>>],
    ) {
        let mut cands: Vec<usize> = Vec::new();
        for (pi, part) in parts.iter().enumerate() {
            cands.clear();
            if let Some(v) = self.by_program.get(&part.program) {
                cands.extend_from_slice(v);
            }
            cands.extend_from_slice(&self.glob_program);
            cands.extend_from_slice(&self.always);
            if !self.anyprog_map.is_empty() {
                for pat in self.anyprog_set.matches(&part.text).iter() {
                    if let Some(&ri) = self.anyprog_map.get(pat) {
                        cands.push(ri);
                    }
                }
            }
            for &ri in &cands {
                if hits[ri].is_some() {
                    continue;
                }
                let r = &self.rules[ri];
                let Matcher::Command(c) = &r.matcher else {
                    continue;
                };
                if c.exec_only && !exec {
                    continue;
                }
                if c.matches(parts, pi) && r.conditions_hold(ctx) {
                    hits[ri] = Some(Some(pi));
                }
            }
        }
    }
}

impl CommandMatcher {
    fn matches(&self, parts: &[NormalizedCommand], pi: usize) -> bool {
        let part = &parts[pi];
        (self.programs.is_empty() || self.programs.iter().any(|g| g.matches(&part.program)))
            && (self.regex.is_empty() || self.regex.iter().any(|re| re.is_match(&part.text)))
            && self
                .args
                .iter()
                .all(|re| part.args.iter().any(|a| re.is_match(a)))
            && self
                .env
                .iter()
                .all(|re| part.env.iter().any(|e| re.is_match(e)))
            && !self.not_regex.iter().any(|re| re.is_match(&part.text))
            && (self.piped_from.is_empty()
                || upstream(parts, pi)
                    .any(|p| self.piped_from.iter().any(|g| g.matches(&p.program))))
    }
}

/// The parts feeding `pi` through pipes, nearest first.
fn upstream(parts: &[NormalizedCommand], pi: usize) -> impl Iterator<Item = &NormalizedCommand> {
    let mut cur = parts.get(pi).and_then(|p| p.piped_from);
    let mut steps = 0;
    std::iter::from_fn(move || {
        let i = cur?;
        steps += 1;
        if steps > parts.len() || i >= pi {
            return None;
        }
        let p = parts.get(i)?;
        cur = p.piped_from;
        Some(p)
    })
}

impl Rule {
    fn kind(&self) -> &'static str {
        match &self.matcher {
            Matcher::Command(c) if c.exec_only => "exec",
            Matcher::Command(_) => "command",
            Matcher::FileTransfer { .. } => "file_transfer",
            Matcher::PortForward { .. } => "port_forward",
            Matcher::Output(_) => "output",
            Matcher::SessionStart { .. } => "session_start",
        }
    }

    fn conditions_hold(&self, ctx: &Context) -> bool {
        self.conditions
            .holds(&ctx.user, &ctx.target, &ctx.target_labels, ctx.time)
    }
}

/// Parse one file into rules, pushing problems to `diags`.
fn parse_file(name: &str, text: &str, diags: &mut Vec<Diagnostic>) -> Vec<Rule> {
    let diag = |line: usize, message: String| Diagnostic {
        file: name.to_string(),
        line,
        message,
    };
    let yaml_err = |e: serde_norway::Error| {
        let line = e.location().map(|l| l.line()).unwrap_or(0);
        diag(line, e.to_string())
    };
    let shape: serde_norway::Value = match serde_norway::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            diags.push(yaml_err(e));
            return Vec::new();
        }
    };
    let (defs, starts): (Vec<RuleDef>, Vec<usize>) = match shape {
        serde_norway::Value::Null => return Vec::new(),
        serde_norway::Value::Sequence(_) => match serde_norway::from_str::<Vec<RuleDef>>(text) {
            Ok(d) => (d, item_lines(text)),
            Err(e) => {
                diags.push(yaml_err(e));
                return Vec::new();
            }
        },
        serde_norway::Value::Mapping(_) => match serde_norway::from_str::<RuleDef>(text) {
            Ok(d) => {
                let first = text.lines().position(|l| {
                    !l.trim().is_empty() && !l.trim_start().starts_with('#') && l.trim() != "---"
                });
                (vec![d], vec![first.map(|i| i + 1).unwrap_or(1)])
            }
            Err(e) => {
                diags.push(yaml_err(e));
                return Vec::new();
            }
        },
        _ => {
            diags.push(diag(
                1,
                "a rule file holds a rule (mapping) or a list of rules".into(),
            ));
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for (i, def) in defs.into_iter().enumerate() {
        let line = starts.get(i).copied().unwrap_or(0);
        let mut errs = Vec::new();
        let rule = compile(def, name, text, line, &mut errs);
        if errs.is_empty() {
            if let Some(r) = rule {
                out.push(r);
            }
        } else {
            diags.extend(errs);
        }
    }
    out
}

/// Lines (1-based) where the items of a top-level block sequence start.
fn item_lines(text: &str) -> Vec<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| {
            l.starts_with('-')
                && !l.starts_with("---")
                && (l.len() == 1 || l[1..].starts_with([' ', '\t']))
        })
        .map(|(i, _)| i + 1)
        .collect()
}

/// First line at or after `from` containing `needle`, else `from`.
fn find_line(text: &str, from: usize, needle: &str) -> usize {
    if needle.is_empty() {
        return from;
    }
    text.lines()
        .enumerate()
        .skip(from.saturating_sub(1))
        .find(|(_, l)| l.contains(needle))
        .map(|(i, _)| i + 1)
        .unwrap_or(from)
}

fn valid_mitre(id: &str) -> bool {
    let b = id.as_bytes();
    let base = b.len() >= 5 && b[0] == b'T' && b[1..5].iter().all(u8::is_ascii_digit);
    base && (b.len() == 5
        || (b.len() == 9 && b[5] == b'.' && b[6..].iter().all(u8::is_ascii_digit)))
}

struct Ctx<'a> {
    file: &'a str,
    text: &'a str,
    line: usize,
    errs: &'a mut Vec<Diagnostic>,
}

impl Ctx<'_> {
    fn err(&mut self, needle: &str, message: String) {
        let line = find_line(self.text, self.line, needle);
        self.errs.push(Diagnostic {
            file: self.file.to_string(),
            line,
            message,
        });
    }

    fn regexes(&mut self, pats: &[String], anchored: bool, what: &str) -> Vec<Regex> {
        let mut out = Vec::new();
        for p in pats {
            let src = if anchored {
                format!("^(?:{p})$")
            } else {
                p.clone()
            };
            match regex::RegexBuilder::new(&src).size_limit(1 << 22).build() {
                Ok(r) => out.push(r),
                Err(e) => self.err(
                    p,
                    format!("bad regex in `{what}`: {p:?}: {}", one_line(&e.to_string())),
                ),
            }
        }
        out
    }

    fn window(&mut self, w: &WindowDef) -> Option<Window> {
        let mut days = 0u8;
        if w.days.is_empty() {
            days = 0x7f;
        }
        for d in &w.days {
            let bit = match d.to_ascii_lowercase().as_str() {
                "mon" => 0,
                "tue" => 1,
                "wed" => 2,
                "thu" => 3,
                "fri" => 4,
                "sat" => 5,
                "sun" => 6,
                _ => {
                    self.err(
                        d,
                        format!("unknown day `{d}` (use mon, tue, wed, thu, fri, sat, sun)"),
                    );
                    return None;
                }
            };
            days |= 1 << bit;
        }
        let hm = |s: &str| -> Option<u16> {
            let (h, m) = s.split_once(':')?;
            let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
            (h <= 24 && m < 60 && h * 60 + m <= 1440).then_some(h * 60 + m)
        };
        let (Some(from), Some(to)) = (hm(&w.from), hm(&w.to)) else {
            self.err(
                &w.from,
                format!("bad time window `{}`-`{}` (use HH:MM)", w.from, w.to),
            );
            return None;
        };
        let offset = match &w.utc_offset {
            None => UtcOffset::UTC,
            Some(o) => match parse_offset(o) {
                Some(off) => off,
                None => {
                    self.err(o, format!("bad utc_offset `{o}` (use +HH:MM or -HH:MM)"));
                    return None;
                }
            },
        };
        Some(Window {
            days,
            from,
            to,
            offset,
        })
    }
}

fn parse_offset(s: &str) -> Option<UtcOffset> {
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1i8, &s[1..]),
        b'-' => (-1i8, &s[1..]),
        _ => return None,
    };
    let (h, m) = rest.split_once(':')?;
    let (h, m): (i8, i8) = (h.parse().ok()?, m.parse().ok()?);
    UtcOffset::from_hms(sign * h, sign * m, 0).ok()
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn globs(v: &[String]) -> Vec<Glob> {
    v.iter().map(|s| Glob(s.clone())).collect()
}

fn compile(
    mut def: RuleDef,
    file: &str,
    text: &str,
    line: usize,
    errs: &mut Vec<Diagnostic>,
) -> Option<Rule> {
    let mut cx = Ctx {
        file,
        text,
        line,
        errs,
    };
    if def.id.is_empty()
        || !def
            .id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    {
        cx.err(
            "id:",
            format!(
                "bad rule id `{}` (use letters, digits, `.`, `-`, `_`)",
                def.id
            ),
        );
    }
    if def.description.trim().is_empty() {
        cx.err(
            "description:",
            format!("rule `{}`: empty description", def.id),
        );
    }
    if def.mitre.is_empty() {
        cx.err(
            "mitre:",
            format!(
                "rule `{}`: at least one MITRE ATT&CK technique id is required",
                def.id
            ),
        );
    }
    for m in &def.mitre {
        if !valid_mitre(m) {
            cx.err(
                m,
                format!(
                    "rule `{}`: bad ATT&CK technique id `{m}` (expected T1234 or T1234.001)",
                    def.id
                ),
            );
        }
    }
    let match_def = match std::mem::take(&mut def.matcher).into_single() {
        Ok(m) => m,
        Err(msg) => {
            cx.err("match:", format!("rule `{}`: {msg}", def.id));
            return None;
        }
    };
    let matcher = match &match_def {
        MatchDef::Command(c) => command_matcher(&mut cx, &def.id, c, false),
        MatchDef::Exec(c) => command_matcher(&mut cx, &def.id, c, true),
        MatchDef::FileTransfer(f) => {
            let mut ops = Vec::new();
            for o in &f.operation {
                match FileOp::parse(o) {
                    Some(op) => ops.push(op),
                    None => cx.err(o, format!("unknown file operation `{o}` (use download, upload, delete, rename, mkdir, rmdir, setattr, link, list)")),
                }
            }
            let path = cx.regexes(&f.path, false, "path");
            Matcher::FileTransfer { ops, path }
        }
        MatchDef::PortForward(p) => {
            let host = cx.regexes(&p.host, false, "host");
            if p.host.is_empty() && p.port.is_empty() {
                cx.err(
                    "port_forward",
                    format!("rule `{}`: port_forward needs `host` or `port`", def.id),
                );
            }
            Matcher::PortForward {
                host,
                ports: p.port.clone(),
            }
        }
        MatchDef::Output(o) => {
            if o.regex.is_empty() {
                cx.err("output", format!("rule `{}`: output needs `regex`", def.id));
            }
            let _ = cx.regexes(&o.regex, false, "regex");
            Matcher::Output(o.regex.clone())
        }
        MatchDef::SessionStart(s) => Matcher::SessionStart {
            source: cx.regexes(&s.source, false, "source"),
        },
    };
    let conditions = conditions(&mut cx, &def.conditions);
    let kind = match &match_def {
        MatchDef::Command(_) => "command",
        MatchDef::Exec(_) => "exec",
        MatchDef::FileTransfer(_) => "file_transfer",
        MatchDef::PortForward(_) => "port_forward",
        MatchDef::Output(_) => "output",
        MatchDef::SessionStart(_) => "session_start",
    };
    let examples = |list: &[ExampleDef], cx: &mut Ctx| -> Vec<Example> {
        list.iter().filter_map(|e| example(cx, kind, e)).collect()
    };
    let examples_match = examples(&def.examples.matches, &mut cx);
    let examples_no_match = examples(&def.examples.no_match, &mut cx);
    if !cx.errs.is_empty() {
        return None;
    }
    Some(Rule {
        id: def.id,
        description: def.description.trim().to_string(),
        severity: def.severity,
        action: def.action,
        mitre: def.mitre,
        matcher,
        conditions,
        file: file.to_string(),
        line,
        examples_match,
        examples_no_match,
    })
}

fn command_matcher(cx: &mut Ctx, id: &str, c: &CommandDef, exec_only: bool) -> Matcher {
    if c.program.is_empty() && c.regex.is_empty() && c.args.is_empty() && c.env.is_empty() {
        cx.err(
            "match:",
            format!("rule `{id}`: a command match needs at least one of program, args, regex, env"),
        );
    }
    Matcher::Command(CommandMatcher {
        exec_only,
        programs: globs(&c.program),
        args: cx.regexes(&c.args, true, "args"),
        regex: cx.regexes(&c.regex, false, "regex"),
        not_regex: cx.regexes(&c.not_regex, false, "not_regex"),
        env: cx.regexes(&c.env, true, "env"),
        piped_from: globs(&c.piped_from),
    })
}

fn conditions(cx: &mut Ctx, c: &ConditionsDef) -> Conditions {
    Conditions {
        users: globs(&c.users),
        not_users: globs(&c.not_users),
        targets: globs(&c.targets),
        not_targets: globs(&c.not_targets),
        labels: c.target_labels.clone(),
        within: c.within.iter().filter_map(|w| cx.window(w)).collect(),
        outside: c.outside.iter().filter_map(|w| cx.window(w)).collect(),
    }
}

/// The time examples run at unless they say otherwise: a Wednesday, 10:00 UTC.
const EXAMPLE_TIME: i64 = 1_764_064_800;

fn example(cx: &mut Ctx, kind: &str, e: &ExampleDef) -> Option<Example> {
    let (input, user, target, labels, time) = match e {
        ExampleDef::Text(t) => (t.clone(), None, None, BTreeMap::new(), None),
        ExampleDef::Full(f) => (
            f.input.clone(),
            f.user.clone(),
            f.target.clone(),
            f.labels.clone(),
            f.time.clone(),
        ),
    };
    let time = match time {
        None => {
            OffsetDateTime::from_unix_timestamp(EXAMPLE_TIME).unwrap_or(OffsetDateTime::UNIX_EPOCH)
        }
        Some(t) => {
            match OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339) {
                Ok(t) => t,
                Err(err) => {
                    cx.err(&t, format!("example time `{t}` is not RFC 3339: {err}"));
                    return None;
                }
            }
        }
    };
    let user = user.unwrap_or_else(|| "alice".into());
    let target = target.unwrap_or_else(|| "web1".into());
    let line = find_line(cx.text, cx.line, input.lines().next().unwrap_or(""));
    let event = match kind {
        "command" => Event::Command {
            text: input.clone(),
        },
        "exec" => Event::Exec {
            command: input.clone(),
        },
        "output" => Event::Output {
            text: input.clone(),
        },
        "file_transfer" => {
            let parsed = input
                .split_once(' ')
                .and_then(|(op, p)| Some((FileOp::parse(op)?, p.to_string())));
            let Some((op, path)) = parsed else {
                cx.err(
                    &input,
                    format!("file_transfer example `{input}` must be `<operation> <path>`"),
                );
                return None;
            };
            Event::FileTransfer { op, path }
        }
        "port_forward" => {
            let parsed = input
                .rsplit_once(':')
                .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)));
            let Some((host, port)) = parsed else {
                cx.err(
                    &input,
                    format!("port_forward example `{input}` must be `<host>:<port>`"),
                );
                return None;
            };
            Event::PortForward { host, port }
        }
        _ => Event::SessionStart {
            user: user.clone(),
            target: target.clone(),
            source: input.clone(),
            time,
        },
    };
    let ctx = Context {
        user,
        target,
        target_labels: labels,
        time,
    };
    Some(Example {
        event,
        ctx,
        input,
        line,
    })
}
