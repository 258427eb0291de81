//! Shell command normaliser: turns one typed command line into the simple commands it runs.
//!
//! This is not a shell. It undoes the cheap tricks people use to slip a command past a word
//! filter — quoting inside words, `$IFS`, absolute paths, wrapper programs, compound lines,
//! command substitution and `sh -c` bodies — so that rules see `rm -rf /` however it was typed.
//! It never executes or expands anything else: `$HOME` stays `$HOME`, globs stay globs.
//!
//! Limits (documented in docs/rules.md): variables other than `IFS` are not expanded, so
//! `a=rm; $a -rf /` is not recognised as `rm`; aliases and functions are unknown; `eval` and
//! `sh -c` bodies are parsed, but strings handed to interpreters such as `python -c` are not.

use serde::{Deserialize, Serialize};

/// Nesting depth at which substitutions and `sh -c` bodies stop being parsed further.
const MAX_DEPTH: usize = 8;
/// Upper bound on the parts produced for one line, so hostile input cannot grow memory.
const MAX_PARTS: usize = 512;
/// Upper bound on wrapper programs stripped from one simple command.
const MAX_WRAPPERS: usize = 16;

/// One simple command found in a command line, after normalisation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NormalizedCommand {
    /// Program name without its directory and without wrappers (`/usr/bin/sudo rm` → `rm`).
    /// Empty when the part only holds assignments or redirections (`HISTSIZE=0`, `> file`).
    pub program: String,
    /// Arguments with quoting removed; redirection operators (`>`, `2>&`) are kept as words.
    pub args: Vec<String>,
    /// `NAME=value` assignments given before the program, directly or through `env`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// Wrapper programs that were stripped, outermost first (`sudo`, `nohup`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub wrappers: Vec<String>,
    /// Index (in the same result) of the part whose standard output feeds this one via `|`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub piped_from: Option<usize>,
    /// Canonical text: `program arg1 arg2`, single spaces.
    pub text: String,
}

impl NormalizedCommand {
    fn new(program: String, args: Vec<String>, env: Vec<String>, wrappers: Vec<String>) -> Self {
        let mut text = program.clone();
        for a in &args {
            if !text.is_empty() {
                text.push(' ');
            }
            text.push_str(a);
        }
        Self {
            program,
            args,
            env,
            wrappers,
            piped_from: None,
            text,
        }
    }
}

impl std::fmt::Display for NormalizedCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// Split a command line into normalised simple commands (see the module docs for what is undone).
///
/// Never panics; malformed input (unbalanced quotes, stray parentheses) is read as far as it
/// makes sense, an unterminated quote running to the end of the line.
pub fn normalize(command: &str) -> Vec<NormalizedCommand> {
    let mut out = Vec::new();
    normalize_into(command, 0, &mut out);
    out
}

/// How a simple command is joined to the one after it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Joint {
    Pipe,
    Other,
}

/// One raw simple command: its words and how it connects to the next.
struct RawCommand {
    words: Vec<String>,
    joint: Joint,
}

fn normalize_into(command: &str, depth: usize, out: &mut Vec<NormalizedCommand>) {
    if depth > MAX_DEPTH || out.len() >= MAX_PARTS {
        return;
    }
    let mut nested: Vec<String> = Vec::new();
    let raws = tokenize(command, &mut nested);
    let mut prev_pipe: Option<usize> = None;
    for raw in raws {
        if out.len() >= MAX_PARTS {
            return;
        }
        let feeder = prev_pipe.take();
        let idx = build(raw.words, feeder, depth, out);
        if raw.joint == Joint::Pipe {
            prev_pipe = idx;
        }
    }
    for inner in nested {
        normalize_into(&inner, depth + 1, out);
    }
}

/// Shell keywords that may stand where a program would and carry no meaning for rules.
const KEYWORDS: &[&str] = &[
    "{", "}", "!", "if", "then", "else", "elif", "fi", "do", "done", "while", "until", "esac", "in",
];

/// Turn the words of one simple command into parts, pushing them to `out`.
/// Returns the index of the part that represents this command (for pipes).
fn build(
    mut words: Vec<String>,
    feeder: Option<usize>,
    depth: usize,
    out: &mut Vec<NormalizedCommand>,
) -> Option<usize> {
    let keywords = words
        .iter()
        .take_while(|w| KEYWORDS.contains(&w.as_str()))
        .count();
    words.drain(..keywords);
    let mut env = Vec::new();
    let mut wrappers = Vec::new();
    let mut i = 0;
    // Leading assignments.
    while i < words.len() && is_assignment(&words[i]) {
        env.push(words[i].clone());
        i += 1;
    }
    let mut xargs_input: Option<Vec<String>> = None;
    let mut xargs_replace: Option<String> = None;
    let mut rounds = 0;
    loop {
        rounds += 1;
        if i >= words.len() || rounds > MAX_WRAPPERS {
            break;
        }
        let prog = basename(&words[i]).to_string();
        let Some(spec) = wrapper_spec(&prog) else {
            break;
        };
        // `command -v x` and `ionice -p pid` only look something up; they run nothing.
        if (prog == "command" && words.get(i + 1).is_some_and(|w| w == "-v" || w == "-V"))
            || (prog == "ionice" && words[i + 1..].iter().any(|w| w == "-p"))
        {
            break;
        }
        let mut j = i + 1;
        let mut replace = None;
        let mut split_string: Option<String> = None;
        // Options.
        while j < words.len() {
            let w = &words[j];
            if w == "--" {
                j += 1;
                break;
            }
            if !w.starts_with('-') || w == "-" && prog != "env" {
                break;
            }
            if prog == "env" && w == "-" {
                j += 1;
                continue;
            }
            if let Some(long) = w.strip_prefix("--") {
                let (name, has_value) = match long.split_once('=') {
                    Some((n, _)) => (n, true),
                    None => (long, false),
                };
                if !has_value && spec.long_args.contains(&name) {
                    j += 1;
                }
                if prog == "env" && name == "split-string" {
                    split_string = long.split_once('=').map(|(_, v)| v.to_string());
                }
                j += 1;
                continue;
            }
            // Short option cluster: `-u` `root`, `-uroot`, `-n5`, `-10`.
            let cluster: Vec<char> = w.chars().skip(1).collect();
            let mut consumed_next = false;
            for (k, c) in cluster.iter().enumerate() {
                if spec.short_args.contains(*c) {
                    let rest: String = cluster[k + 1..].iter().collect();
                    let value = if rest.is_empty() {
                        consumed_next = true;
                        words.get(j + 1).cloned().unwrap_or_default()
                    } else {
                        rest
                    };
                    if prog == "xargs" && (*c == 'I' || *c == 'i') {
                        replace = Some(if value.is_empty() { "{}".into() } else { value });
                    }
                    if prog == "env" && *c == 'S' {
                        split_string = Some(if consumed_next {
                            words.get(j + 1).cloned().unwrap_or_default()
                        } else {
                            cluster[k + 1..].iter().collect()
                        });
                    }
                    break;
                }
                if prog == "xargs" && *c == 'i' {
                    replace = Some("{}".into());
                }
            }
            j += if consumed_next { 2 } else { 1 };
        }
        if let Some(s) = split_string {
            // `env -S 'rm -rf /'`: the string is a command line of its own.
            normalize_into(&s, depth + 1, out);
            return None;
        }
        // Environment assignments after `env`'s (and `sudo`'s) options.
        if prog == "env" || prog == "sudo" {
            while j < words.len() && is_assignment(&words[j]) {
                env.push(words[j].clone());
                j += 1;
            }
        }
        j += spec.positional;
        if j >= words.len() {
            // Wrapper with nothing to run (`sudo -i`, `xargs` alone): keep it as the program.
            break;
        }
        if prog == "xargs" {
            xargs_input = Some(
                feeder
                    .and_then(|f| out.get(f))
                    .filter(|p| p.program == "echo" || p.program == "printf")
                    .map(|p| {
                        p.args
                            .iter()
                            .filter(|a| !a.starts_with('-'))
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default(),
            );
            xargs_replace = replace;
        }
        wrappers.push(prog);
        i = j;
    }
    let rest = words.get(i..).unwrap_or(&[]);
    let (program, mut args) = match rest.split_first() {
        Some((p, a)) => (basename(p).to_string(), a.to_vec()),
        None => (String::new(), Vec::new()),
    };
    if let Some(input) = xargs_input {
        match xargs_replace {
            Some(r) => {
                let joined = input.join(" ");
                for a in &mut args {
                    if a.contains(r.as_str()) {
                        *a = a.replace(r.as_str(), &joined);
                    }
                }
            }
            None => args.extend(input),
        }
    }
    if program.is_empty() && args.is_empty() && env.is_empty() {
        return None;
    }
    let body = shell_body(&program, &args)
        .or_else(|| (program == "eval").then(|| args.join(" ")))
        .or_else(|| ssh_remote_command(&program, &args))
        .or_else(|| piped_script(&program, &args, feeder, out));
    let mut part = NormalizedCommand::new(program, args, env, wrappers);
    part.piped_from = feeder;
    let idx = out.len();
    out.push(part);
    if let Some(b) = body {
        normalize_into(&b, depth + 1, out);
    }
    Some(idx)
}

/// `echo 'rm -rf /' | sh`: a shell reading its script from `echo`/`printf` runs that text.
fn piped_script(
    program: &str,
    args: &[String],
    feeder: Option<usize>,
    out: &[NormalizedCommand],
) -> Option<String> {
    if !SHELLS.contains(&program) || program == "su" || args.iter().any(|a| !a.starts_with('-')) {
        return None;
    }
    let f = out.get(feeder?)?;
    match f.program.as_str() {
        "echo" => Some(
            f.args
                .iter()
                .filter(|a| !(a.starts_with('-') && a.len() <= 3))
                .cloned()
                .collect::<Vec<_>>()
                .join(" "),
        ),
        "printf" => Some(f.args.join(" ").replace("\\n", "\n")),
        _ => None,
    }
}

/// `ssh [options] host command...`: the remote command, which runs on the next hop.
fn ssh_remote_command(program: &str, args: &[String]) -> Option<String> {
    if program != "ssh" {
        return None;
    }
    const WITH_VALUE: &str = "BbcDEeFIiJLlmOoPpQRSWw";
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if a == "--" {
            i += 1;
            break;
        }
        if !a.starts_with('-') || a.len() < 2 {
            break;
        }
        // `-p 22` takes the next word; `-p22` and flag clusters like `-tt` do not.
        let last = a.chars().last().unwrap_or('-');
        i += if a.len() == 2 && WITH_VALUE.contains(last) {
            2
        } else {
            1
        };
    }
    // args[i] is the host; the rest is the remote command.
    let rest = args.get(i + 1..)?;
    (!rest.is_empty()).then(|| rest.join(" "))
}

/// Program names that run a shell and accept a `-c` command string.
const SHELLS: &[&str] = &[
    "sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "fish", "su", "runuser",
];

/// The command string of `sh -c 'body'`, `bash -lc "body"`, `su -c body`, if any.
fn shell_body(program: &str, args: &[String]) -> Option<String> {
    if !SHELLS.contains(&program) {
        return None;
    }
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if let Some(v) = a.strip_prefix("--command=") {
            return Some(v.to_string());
        }
        if a == "--command" {
            return it.next().cloned();
        }
        if a.starts_with('-') && !a.starts_with("--") && a.contains('c') {
            // The body is the first following word that is not an option.
            return it.find(|w| !w.starts_with('-')).cloned();
        }
    }
    None
}

/// How to skip a wrapper's own options.
struct WrapperSpec {
    /// Short options that take a value.
    short_args: &'static str,
    /// Long options that take a value when not written `--name=value`.
    long_args: &'static [&'static str],
    /// Positional words between the options and the wrapped command (`timeout 10 cmd`).
    positional: usize,
}

fn wrapper_spec(program: &str) -> Option<WrapperSpec> {
    let (short_args, long_args, positional): (&'static str, &'static [&'static str], usize) =
        match program {
            "sudo" => (
                "ughpCDrtUTR",
                &[
                    "user",
                    "group",
                    "host",
                    "prompt",
                    "close-from",
                    "chdir",
                    "role",
                    "type",
                    "other-user",
                    "command-timeout",
                    "chroot",
                ],
                0,
            ),
            "doas" => ("uC", &[], 0),
            "env" => ("uCS", &["unset", "chdir", "split-string"], 0),
            "command" | "builtin" | "nohup" | "busybox" | "setsid" | "unbuffer" => ("", &[], 0),
            "nice" => ("n", &["adjustment"], 0),
            "timeout" => ("sk", &["signal", "kill-after"], 1),
            "xargs" => (
                "ILlnPsdEea",
                &[
                    "arg-file",
                    "delimiter",
                    "eof",
                    "replace",
                    "max-lines",
                    "max-args",
                    "max-procs",
                    "max-chars",
                    "process-slot-var",
                ],
                0,
            ),
            "exec" => ("a", &[], 0),
            "time" => ("fo", &["format", "output"], 0),
            "stdbuf" => ("ioe", &["input", "output", "error"], 0),
            "ionice" => ("cnp", &["class", "classdata", "pid"], 0),
            "chrt" => ("", &[], 1),
            "taskset" => ("", &[], 1),
            "watch" => ("nd", &["interval"], 0),
            "strace" | "ltrace" => ("eoOpsSuEIXbPU", &[], 0),
            _ => return None,
        };
    Some(WrapperSpec {
        short_args,
        long_args,
        positional,
    })
}

fn is_assignment(word: &str) -> bool {
    match word.split_once('=') {
        Some((name, _)) => {
            let name = name.strip_suffix('+').unwrap_or(name);
            !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit())
        }
        None => false,
    }
}

fn basename(word: &str) -> &str {
    let trimmed = word.trim_end_matches('/');
    if trimmed.is_empty() {
        return word;
    }
    match trimmed.rsplit_once('/') {
        Some((_, b)) if !b.is_empty() => b,
        _ => trimmed,
    }
}

/// Lexer state for one command line.
struct Lexer<'a> {
    chars: Vec<char>,
    pos: usize,
    nested: &'a mut Vec<String>,
    commands: Vec<RawCommand>,
    words: Vec<String>,
    word: String,
    /// The current word has content even if empty (`''`).
    in_word: bool,
}

impl Lexer<'_> {
    fn peek(&self, off: usize) -> Option<char> {
        self.chars.get(self.pos + off).copied()
    }

    fn end_word(&mut self) {
        if self.in_word {
            self.words.push(std::mem::take(&mut self.word));
            self.in_word = false;
        }
    }

    fn end_command(&mut self, joint: Joint) {
        self.end_word();
        let words = std::mem::take(&mut self.words);
        // An empty command (`| cmd`, `;;`) has nothing to connect and is dropped.
        if !words.is_empty() {
            self.commands.push(RawCommand { words, joint });
        }
    }

    fn push_char(&mut self, c: char) {
        self.word.push(c);
        self.in_word = true;
    }

    /// Read from `pos` (just after an opening `(`) to the matching `)`; returns the inner text.
    fn take_parens(&mut self) -> String {
        let start = self.pos;
        let mut depth = 1usize;
        while let Some(c) = self.peek(0) {
            match c {
                '\\' => self.pos += 1,
                '\'' => {
                    self.pos += 1;
                    while self.peek(0).is_some_and(|c| c != '\'') {
                        self.pos += 1;
                    }
                }
                '"' => {
                    self.pos += 1;
                    while let Some(c) = self.peek(0) {
                        if c == '\\' {
                            self.pos += 1;
                        } else if c == '"' {
                            break;
                        }
                        self.pos += 1;
                    }
                }
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        let inner: String = self.chars[start..self.pos].iter().collect();
                        self.pos += 1;
                        return inner;
                    }
                }
                _ => {}
            }
            self.pos += 1;
        }
        self.pos = self.pos.min(self.chars.len());
        self.chars[start.min(self.chars.len())..].iter().collect()
    }

    /// Read from `pos` (just after an opening backtick) to the closing one.
    fn take_backticks(&mut self) -> String {
        let mut inner = String::new();
        while let Some(c) = self.peek(0) {
            self.pos += 1;
            match c {
                '\\' => {
                    if let Some(n) = self.peek(0) {
                        if n != '`' && n != '\\' && n != '$' {
                            inner.push('\\');
                        }
                        inner.push(n);
                        self.pos += 1;
                    }
                }
                '`' => return inner,
                _ => inner.push(c),
            }
        }
        inner
    }

    /// Handle `$...` at `pos` (which holds `$`). `quoted`: inside double quotes.
    fn dollar(&mut self, quoted: bool) {
        match self.peek(1) {
            Some('(') if self.peek(2) == Some('(') => {
                // Arithmetic: keep literally, it runs nothing.
                self.pos += 3;
                let inner = self.take_parens();
                self.word.push_str("$((");
                self.word.push_str(&inner);
                self.word.push(')');
                self.in_word = true;
            }
            Some('(') => {
                self.pos += 2;
                let inner = self.take_parens();
                self.substitution("$", inner);
            }
            Some('{') => {
                let rest: String = self.chars[self.pos + 2..].iter().take(4).collect();
                if rest.starts_with("IFS")
                    && matches!(
                        rest.chars().nth(3),
                        Some('}' | ':' | '%' | '#' | '/' | '-' | '+' | '=' | '?' | '^' | ',')
                    )
                {
                    // `${IFS}` and friends: a field separator.
                    while let Some(c) = self.peek(0) {
                        self.pos += 1;
                        if c == '}' {
                            break;
                        }
                    }
                    self.ifs(quoted);
                } else {
                    self.push_char('$');
                    self.pos += 1;
                }
            }
            Some('I')
                if self.chars[self.pos + 1..].starts_with(&['I', 'F', 'S'])
                    && !self
                        .peek(4)
                        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') =>
            {
                self.pos += 4;
                self.ifs(quoted);
            }
            Some('\'') if !quoted => {
                // ANSI-C quoting: `$'r\x6d'`.
                self.pos += 2;
                self.ansi_c();
            }
            _ => {
                self.push_char('$');
                self.pos += 1;
            }
        }
    }

    fn ifs(&mut self, quoted: bool) {
        if quoted {
            self.push_char(' ');
        } else {
            self.end_word();
        }
    }

    fn ansi_c(&mut self) {
        self.in_word = true;
        while let Some(c) = self.peek(0) {
            self.pos += 1;
            match c {
                '\'' => return,
                '\\' => {
                    let Some(n) = self.peek(0) else { return };
                    self.pos += 1;
                    let decoded = match n {
                        'n' => Some('\n'),
                        't' => Some('\t'),
                        'x' => {
                            let hex: String = self.chars[self.pos..]
                                .iter()
                                .take(2)
                                .take_while(|c| c.is_ascii_hexdigit())
                                .collect();
                            self.pos += hex.len();
                            u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32)
                        }
                        '0'..='7' => {
                            let mut oct = String::from(n);
                            oct.extend(
                                self.chars[self.pos..]
                                    .iter()
                                    .take(2)
                                    .take_while(|c| ('0'..='7').contains(c)),
                            );
                            self.pos += oct.len() - 1;
                            u32::from_str_radix(&oct, 8).ok().and_then(char::from_u32)
                        }
                        other => Some(other),
                    };
                    if let Some(d) = decoded {
                        self.word.push(d);
                    }
                }
                other => self.word.push(other),
            }
        }
    }

    /// A command substitution: parse its body separately, leave a marker naming its program.
    fn substitution(&mut self, sigil: &str, inner: String) {
        // Plain words of the body, quotes removed (no recursion here: the body itself is
        // parsed later, with a depth limit).
        let words: Vec<String> = inner
            .split_whitespace()
            .map(|w| {
                w.chars()
                    .filter(|c| !matches!(c, '\'' | '"' | '\\' | '(' | ')' | '$' | '`'))
                    .collect()
            })
            .collect();
        self.in_word = true;
        if words.is_empty() {
            // `r$()m`: an empty substitution adds nothing.
            return;
        }
        let first = basename(&words[0]).to_string();
        // `$(which rm)`, `$(command -v rm)`, `$(echo rm)` stand for a known word: use it, so
        // the program name survives (`$(which rm) -rf /` is `rm -rf /`).
        let looked_up = match (first.as_str(), words.len()) {
            ("which" | "whereis", 2..) => words.last().map(|w| basename(w).to_string()),
            ("command" | "type", 3..)
                if words[1] == "-v" || words[1] == "-P" || words[1] == "-p" =>
            {
                words.last().map(|w| basename(w).to_string())
            }
            ("echo" | "printf", 2) if sigil == "$" => Some(words[1].clone()),
            _ => None,
        };
        match looked_up {
            Some(w) => self.word.push_str(&w),
            None => {
                self.word.push_str(sigil);
                self.word.push('(');
                self.word.push_str(&first);
                self.word.push(')');
            }
        }
        self.nested.push(inner);
    }

    fn run(mut self) -> Vec<RawCommand> {
        while let Some(c) = self.peek(0) {
            match c {
                ' ' | '\t' | '\r' => {
                    self.end_word();
                    self.pos += 1;
                }
                '\n' | ';' | '(' | ')' => {
                    // `( … )` groups commands: for rules it is just another separator.
                    self.end_command(Joint::Other);
                    self.pos += 1;
                    if c == ';' && self.peek(0) == Some(';') {
                        self.pos += 1;
                    }
                }
                '#' if !self.in_word => {
                    while self.peek(0).is_some_and(|c| c != '\n') {
                        self.pos += 1;
                    }
                }
                '|' => {
                    if self.peek(1) == Some('|') {
                        self.end_command(Joint::Other);
                        self.pos += 2;
                    } else {
                        self.end_command(Joint::Pipe);
                        self.pos += if self.peek(1) == Some('&') { 2 } else { 1 };
                    }
                }
                '&' => {
                    if self.peek(1) == Some('>') {
                        self.end_word();
                        self.pos += 1;
                        self.redirect("&");
                    } else {
                        self.end_command(Joint::Other);
                        self.pos += if self.peek(1) == Some('&') { 2 } else { 1 };
                    }
                }
                '<' | '>' => {
                    if self.peek(1) == Some('(') {
                        self.end_word();
                        self.pos += 2;
                        let inner = self.take_parens();
                        self.substitution(if c == '<' { "<" } else { ">" }, inner);
                        self.end_word();
                        continue;
                    }
                    // A word made only of digits right before is the fd number (`2>`).
                    let fd = if self.in_word
                        && !self.word.is_empty()
                        && self.word.chars().all(|c| c.is_ascii_digit())
                    {
                        self.in_word = false;
                        std::mem::take(&mut self.word)
                    } else {
                        self.end_word();
                        String::new()
                    };
                    self.redirect(&fd);
                }
                '\\' => {
                    self.pos += 1;
                    match self.peek(0) {
                        Some('\n') => self.pos += 1,
                        Some(n) => {
                            self.push_char(n);
                            self.pos += 1;
                        }
                        None => {}
                    }
                }
                '\'' => {
                    self.pos += 1;
                    self.in_word = true;
                    while let Some(c) = self.peek(0) {
                        self.pos += 1;
                        if c == '\'' {
                            break;
                        }
                        self.word.push(c);
                    }
                }
                '"' => {
                    self.pos += 1;
                    self.in_word = true;
                    while let Some(c) = self.peek(0) {
                        match c {
                            '"' => {
                                self.pos += 1;
                                break;
                            }
                            '\\' => {
                                self.pos += 1;
                                if let Some(n) = self.peek(0) {
                                    if !matches!(n, '"' | '\\' | '$' | '`' | '\n') {
                                        self.word.push('\\');
                                    }
                                    if n != '\n' {
                                        self.word.push(n);
                                    }
                                    self.pos += 1;
                                }
                            }
                            '$' => self.dollar(true),
                            '`' => {
                                self.pos += 1;
                                let inner = self.take_backticks();
                                self.substitution("$", inner);
                            }
                            _ => {
                                self.word.push(c);
                                self.pos += 1;
                            }
                        }
                    }
                }
                '$' => self.dollar(false),
                '`' => {
                    self.pos += 1;
                    let inner = self.take_backticks();
                    self.substitution("$", inner);
                }
                _ => {
                    self.push_char(c);
                    self.pos += 1;
                }
            }
        }
        self.end_command(Joint::Other);
        self.commands
    }

    /// Read a redirection operator starting at `pos` and emit it as one word (`2>&`, `>>`).
    fn redirect(&mut self, prefix: &str) {
        let mut op = String::from(prefix);
        while let Some(c) = self.peek(0) {
            if c == '<'
                || c == '>'
                || (c == '&' && !op.is_empty())
                || (c == '|' && op.ends_with('>'))
            {
                op.push(c);
                self.pos += 1;
            } else {
                break;
            }
        }
        self.words.push(op);
    }
}

fn tokenize(command: &str, nested: &mut Vec<String>) -> Vec<RawCommand> {
    let lexer = Lexer {
        chars: command.chars().collect(),
        pos: 0,
        nested,
        commands: Vec::new(),
        words: Vec::new(),
        word: String::new(),
        in_word: false,
    };
    lexer.run()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(cmd: &str) -> Vec<String> {
        normalize(cmd).into_iter().map(|p| p.text).collect()
    }

    #[test]
    fn quoting_and_paths_are_undone() {
        assert_eq!(texts(r"r\m -rf /"), ["rm -rf /"]);
        assert_eq!(texts("'r'm -rf /"), ["rm -rf /"]);
        assert_eq!(texts("\"r\"m  -rf\t/"), ["rm -rf /"]);
        assert_eq!(texts("/usr/bin/rm -rf /"), ["rm -rf /"]);
        assert_eq!(texts("rm${IFS}-rf${IFS}/"), ["rm -rf /"]);
        assert_eq!(texts("rm$IFS-rf$IFS/"), ["rm -rf /"]);
        assert_eq!(texts("$'\\x72m' -rf /"), ["rm -rf /"]);
    }

    #[test]
    fn wrappers_are_stripped() {
        assert_eq!(texts("sudo -u root rm -rf /"), ["rm -rf /"]);
        assert_eq!(texts("env -i X=1 rm -rf /"), ["rm -rf /"]);
        assert_eq!(
            texts("nice -n 5 nohup timeout -s 9 10 rm -rf /"),
            ["rm -rf /"]
        );
        assert_eq!(texts("sudo -i"), ["sudo -i"]);
        assert_eq!(texts("command -v rm"), ["command -v rm"]);
        let p = &normalize("sudo -E nohup ls")[0];
        assert_eq!(p.wrappers, ["sudo", "nohup"]);
    }

    #[test]
    fn compound_lines_split() {
        assert_eq!(
            texts("a; b && c || d | e & f\ng"),
            ["a", "b", "c", "d", "e", "f", "g"]
        );
        assert_eq!(texts("echo $(rm -rf /)"), ["echo $(rm)", "rm -rf /"]);
        assert_eq!(texts("echo `rm -rf /`"), ["echo $(rm)", "rm -rf /"]);
        assert_eq!(
            texts("bash -c 'rm -rf /'"),
            ["bash -c rm -rf /", "rm -rf /"]
        );
        assert_eq!(texts("echo / | xargs rm -rf"), ["echo /", "rm -rf /"]);
        assert_eq!(texts("x 2>&1 >/dev/null"), ["x 2>& 1 > /dev/null"]);
        assert_eq!(texts("HISTSIZE=0"), [""]);
        assert_eq!(normalize("HISTSIZE=0")[0].env, ["HISTSIZE=0"]);
    }

    #[test]
    fn lookups_and_piped_scripts_resolve() {
        assert_eq!(texts("$(which rm) -rf /"), ["rm -rf /", "which rm"]);
        assert_eq!(texts("r$()m x"), ["rm x"]);
        assert_eq!(
            texts("echo 'rm -rf /' | sh"),
            ["echo rm -rf /", "sh", "rm -rf /"]
        );
        assert_eq!(
            texts("ssh -p 22 -tt h rm -rf /"),
            ["ssh -p 22 -tt h rm -rf /", "rm -rf /"]
        );
        assert_eq!(texts("ssh h"), ["ssh h"]);
    }

    #[test]
    fn pipes_are_linked() {
        let parts = normalize("curl -s x | tee y | sh");
        assert_eq!(parts[2].piped_from, Some(1));
        assert_eq!(parts[1].piped_from, Some(0));
        assert_eq!(parts[0].piped_from, None);
    }
}
