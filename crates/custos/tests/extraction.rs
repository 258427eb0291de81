//! Interactive command extraction, end to end: the real `ssh` client on a terminal, the
//! gateway, and bash behind a real OpenSSH sshd. Each test types the way a person does (line
//! editing, completion, history, pastes, continuation lines, a full-screen program, a no-echo
//! prompt, evasions of a blocking rule) and compares the commands the gateway stored — the
//! exact text, and nothing more — with what the shell received (docs/command-audit.md).

mod support;

use custos_testkit::{Keypair, Pty, Sshd};
use serde_json::Value;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use support::Gateway;

/// Generous: the machine running the tests may be busy.
const T: Duration = Duration::from_secs(30);

/// The target shell's prompt, set by its rc file.
const PROMPT: &str = "prompt$ ";

/// A blocking rule on recursive deletes of the canary directory.
const CANARY_RULE: &str = r#"- id: site.canary-rm
  description: Recursive delete of the canary directory.
  severity: high
  mitre: [T1485]
  action: block
  match:
    command:
      program: rm
      args: ['-[a-zA-Z]*[rR][a-zA-Z]*|--recursive', '.*custos-canary.*']
  examples:
    match: ["rm -rf /tmp/custos-canary"]
    no_match: ["rm -rf /tmp/other", "ls custos-canary"]
"#;

/// A gateway, a target sshd whose sessions run bash with a known prompt in a folder of the
/// test's own, and user `alice` granted that target.
struct Lab {
    dir: tempfile::TempDir,
    gw: Gateway,
    alice: Keypair,
    _sshd: Sshd,
}

impl Lab {
    fn new() -> Lab {
        Lab::with_rules(None)
    }

    /// `rules`: a local rule file loaded next to the default pack.
    fn with_rules(rules: Option<&str>) -> Lab {
        let dir = tempfile::Builder::new()
            .prefix("custos-extraction-")
            .tempdir()
            .unwrap();
        let cwd = dir.path().join("cwd");
        std::fs::create_dir(&cwd).unwrap();
        // Every shell session of the target runs this rc file and nothing else: no profile,
        // no prompt command, a history file of its own, a predictable prompt.
        let rc = dir.path().join("bashrc");
        std::fs::write(
            &rc,
            format!(
                "PS1='{PROMPT}'\nPS2='> '\nPROMPT_COMMAND=\nHISTFILE='{}'\nHISTCONTROL=\ncd '{}'\n",
                dir.path().join("history").display(),
                cwd.display()
            ),
        )
        .unwrap();
        let sshd = Sshd::start_with(&format!(
            "ForceCommand exec /bin/bash --noprofile --rcfile {} -i\n",
            rc.display()
        ))
        .unwrap();
        let mut gw = Gateway::init().unwrap();
        if let Some(rules) = rules {
            let rules_dir = gw.data.join("rules");
            std::fs::create_dir_all(&rules_dir).unwrap();
            std::fs::write(rules_dir.join("site.yaml"), rules).unwrap();
        }
        let alice = gw.add_key_user("alice").unwrap();
        gw.cli(&[
            "target",
            "add",
            "srv",
            "--host",
            "127.0.0.1",
            "--port",
            &sshd.port().to_string(),
            "--login",
            &sshd.login(),
            "--key",
            &sshd.client_key_path().display().to_string(),
            "--host-key",
            &sshd.host_key_line(),
        ])
        .unwrap();
        gw.cli(&["grant", "alice", "srv"]).unwrap();
        gw.start().unwrap();
        Lab {
            dir,
            gw,
            alice,
            _sshd: sshd,
        }
    }

    /// The target shell's working directory.
    fn cwd(&self) -> PathBuf {
        self.dir.path().join("cwd")
    }

    /// An interactive session through the gateway, at its first prompt.
    fn shell(&self) -> Shell {
        let mut c = self.gw.ssh(&self.alice.private, "alice:srv");
        c.arg("-tt");
        let mut p = Pty::spawn(c, 120, 40).unwrap();
        p.expect(PROMPT, T).unwrap();
        Shell { p }
    }

    /// Every stored command of the (single, finished) session, oldest first, after checking
    /// that all were read off the terminal.
    fn commands(&self) -> Vec<String> {
        self.gw.wait_idle(T).unwrap();
        let mut found: Vec<Value> = serde_json::from_str(
            &self
                .gw
                .cli(&["commands", "search", "", "--limit", "1000", "--json"])
                .unwrap(),
        )
        .unwrap();
        found.sort_by_key(|c| c["offset_us"].as_u64());
        for c in &found {
            assert_eq!(c["kind"], "shell", "{c}");
        }
        found
            .iter()
            .map(|c| c["text"].as_str().unwrap().to_string())
            .collect()
    }

    fn alerts(&self) -> Vec<Value> {
        serde_json::from_str(&self.gw.cli(&["alerts", "list", "--json"]).unwrap()).unwrap()
    }
}

/// The user's terminal, driven like a keyboard.
struct Shell {
    p: Pty,
}

impl Shell {
    /// Types `text` (printable, no line editing) and waits until the shell has echoed it.
    fn type_text(&mut self, text: &str) {
        self.p.write(text.as_bytes()).unwrap();
        self.p.expect(text, T).unwrap();
    }

    /// Types `text` and waits until the terminal shows it, escape sequences aside (an
    /// incremental search redraws its query a character at a time, with highlighting).
    fn type_visible(&mut self, text: &str) {
        let from = self.output().len();
        self.p.write(text.as_bytes()).unwrap();
        wait_output(self, from, text, |o| visible(o).contains(text));
    }

    /// Types raw keys (control keys, escape sequences) without waiting for anything.
    fn keys(&mut self, keys: &[u8]) {
        self.p.write(keys).unwrap();
    }

    fn expect(&mut self, text: &str) {
        self.p.expect(text, T).unwrap();
    }

    /// Presses Enter, waits for `output` (when given) and for the next prompt.
    fn enter(&mut self, output: Option<&str>) {
        self.p.write(b"\r").unwrap();
        if let Some(out) = output {
            self.p.expect(out, T).unwrap();
        }
        self.p.expect(PROMPT, T).unwrap();
    }

    /// Types `command`, waits for its echo, presses Enter and waits for `output` and the
    /// next prompt.
    fn run(&mut self, command: &str, output: &str) {
        self.type_text(command);
        self.enter(Some(output));
    }

    /// Leaves the shell with Ctrl-D at an empty prompt (no command is typed for it).
    fn exit(mut self) {
        self.p.send_control('d').unwrap();
        self.p.wait(T).unwrap();
    }

    /// Types `keys` (ending in Enter), waits for the gateway's refusal by `rule` and then for
    /// the shell's next prompt.
    ///
    /// The gateway refuses a line by interrupting it with Ctrl-C. Now and then bash takes that
    /// interrupt without drawing a new prompt and keeps waiting with the refused line still in
    /// its buffer, where an Enter would run it (see
    /// `a_refused_line_does_not_run_when_enter_is_pressed_twice`). A second Ctrl-C, which is
    /// what a user facing no prompt would safely press, brings the prompt back.
    fn refused(&mut self, keys: &[u8], rule: &str) {
        let from = self.output().len();
        self.keys(keys);
        let told = format!("custos: blocked by rule {rule}");
        // The message, and bash's `^C` for the interrupt, in either order.
        wait_output(self, from, "the refusal", |o| {
            o.contains(&told) && o.contains("^C")
        });
        let prompt_after_interrupt =
            |o: &str| o.find("^C").is_some_and(|i| o[i..].contains(PROMPT));
        if prompt_after_interrupt(self.output().get(from..).unwrap_or("")) {
            return;
        }
        let from = self.output().len();
        self.keys(b"\x03");
        wait_output(
            self,
            from,
            "a prompt after a second Ctrl-C",
            prompt_after_interrupt,
        );
    }

    /// Everything the terminal showed.
    fn output(&self) -> String {
        self.p.output()
    }
}

/// Waits until `f` holds for the terminal output after byte `from`.
fn wait_output(sh: &Shell, from: usize, what: &str, f: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + T;
    loop {
        let out = sh.output();
        if f(out.get(from..).unwrap_or("")) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not appear within {T:?}; output after {from}: {:?}",
            out.get(from..).unwrap_or("")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Terminal output without escape sequences (CSI and OSC) and backspaces.
fn visible(output: &str) -> String {
    let mut out = String::new();
    let mut chars = output.chars();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                let end = match chars.next() {
                    Some('[') => |c: char| ('@'..='~').contains(&c),
                    Some(']') => |c: char| c == '\x07',
                    _ => continue,
                };
                for c in chars.by_ref() {
                    if end(c) {
                        break;
                    }
                }
            }
            '\x08' => {}
            c => out.push(c),
        }
    }
    out
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

const LEFT: &[u8] = b"\x1b[D";
const UP: &[u8] = b"\x1b[A";

#[test]
fn line_editing_stores_the_edited_line() {
    let lab = Lab::new();
    let mut sh = lab.shell();
    // Left arrow twice, then an insert: `echo helo` becomes `echo hello`.
    sh.type_text("echo helo");
    sh.keys(LEFT);
    sh.keys(LEFT);
    sh.type_text("l");
    sh.enter(Some("hello\r\n"));
    // Ctrl-W drops the last word, Backspace the last character.
    sh.type_text("echo wrong");
    sh.keys(b"\x17");
    sh.type_text("rightt");
    sh.keys(b"\x7f");
    sh.enter(Some("right\r\n"));
    // Ctrl-A to the start of the line for a missing letter, Ctrl-E back to its end.
    sh.type_text("cho start");
    sh.keys(b"\x01");
    sh.type_text("e");
    sh.keys(b"\x05");
    sh.type_text(" end");
    sh.enter(Some("start end\r\n"));
    // Ctrl-U discards everything typed so far.
    sh.type_text("echo discarded");
    sh.keys(b"\x15");
    sh.type_text("echo kept");
    sh.enter(Some("kept\r\n"));
    sh.exit();
    assert_eq!(
        lab.commands(),
        strings(&["echo hello", "echo right", "echo start end", "echo kept"])
    );
}

#[test]
fn tab_completion_stores_the_completed_name() {
    let lab = Lab::new();
    let name = "zq-extraction-completed-file-name.txt";
    std::fs::write(lab.cwd().join(name), "completed\n").unwrap();
    let mut sh = lab.shell();
    sh.type_text("cat zq-ex");
    sh.keys(b"\t");
    sh.expect("completed-file-name.txt ");
    sh.enter(Some("completed\r\n"));
    // Two candidates: Tab twice lists them and bash draws the prompt and the line again
    // below the list; one more letter and Tab complete it.
    for name in ["zq-list-alpha.txt", "zq-list-beta.txt"] {
        std::fs::write(lab.cwd().join(name), format!("{name}-content\n")).unwrap();
    }
    sh.type_text("cat zq-li");
    sh.keys(b"\t");
    sh.expect("st-");
    sh.keys(b"\t\t");
    sh.expect("zq-list-beta.txt");
    sh.expect(&format!("{PROMPT}cat zq-list-"));
    sh.type_text("b");
    sh.keys(b"\t");
    sh.expect("eta.txt ");
    sh.enter(Some("zq-list-beta.txt-content\r\n"));
    sh.exit();
    assert_eq!(
        lab.commands(),
        [format!("cat {name}"), "cat zq-list-beta.txt".to_string()]
    );
}

#[test]
fn history_recall_stores_the_recalled_line_again() {
    let lab = Lab::new();
    let mut sh = lab.shell();
    sh.run("echo first-$((6*7))", "first-42\r\n");
    sh.run("echo second-$((2+3))", "second-5\r\n");
    // Up twice: the line before last (readline redraws only what differs).
    sh.keys(UP);
    sh.expect("echo second-$((2+3))");
    sh.keys(UP);
    sh.expect("first-$((6*7))");
    sh.enter(Some("first-42\r\n"));
    // Ctrl-R and a few letters of an older line; Enter runs the line found.
    sh.keys(b"\x12");
    sh.expect("reverse-i-search");
    sh.type_visible("secon");
    sh.enter(Some("second-5\r\n"));
    sh.exit();
    assert_eq!(
        lab.commands(),
        strings(&[
            "echo first-$((6*7))",
            "echo second-$((2+3))",
            "echo first-$((6*7))",
            "echo second-$((2+3))",
        ])
    );
}

#[test]
fn pasted_lines_are_stored_one_by_one() {
    let lab = Lab::new();
    let mut sh = lab.shell();
    assert!(
        sh.output().contains("\x1b[?2004h"),
        "bash is expected to enable bracketed paste: {:?}",
        sh.output()
    );
    // A bracketed paste of two lines (a terminal sends the line breaks as CR), then Enter.
    sh.keys(b"\x1b[200~echo paste-$((10+1))\recho paste-$((10+2))\r\x1b[201~");
    sh.expect("echo paste-$((10+2))");
    sh.enter(Some("paste-12\r\n"));
    assert!(sh.output().contains("paste-11\r\n"), "{:?}", sh.output());
    // Without bracketed paste the lines arrive as typed keys, Enter included.
    sh.run("bind 'set enable-bracketed-paste off'", "\n");
    sh.keys(b"echo plain-$((20+1))\recho plain-$((20+2))\r");
    sh.expect("plain-22\r\n");
    sh.expect(PROMPT);
    sh.exit();
    assert_eq!(
        lab.commands(),
        strings(&[
            "echo paste-$((10+1))",
            "echo paste-$((10+2))",
            "bind 'set enable-bracketed-paste off'",
            "echo plain-$((20+1))",
            "echo plain-$((20+2))",
        ])
    );
}

#[test]
fn continuation_lines_are_joined_and_compound_commands_stored_per_line() {
    let lab = Lab::new();
    let mut sh = lab.shell();
    // A trailing backslash: the shell asks for more at its `> ` prompt.
    sh.type_text("echo one \\");
    sh.keys(b"\r");
    sh.expect("> ");
    sh.type_text("two");
    sh.enter(Some("one two\r\n"));
    // An open quote.
    sh.type_text("echo \"open");
    sh.keys(b"\r");
    sh.expect("> ");
    sh.type_text("quote\"");
    sh.enter(Some("open\r\nquote\r\n"));
    // A loop: complete lines the shell continues on its own.
    sh.type_text("for i in 1 2; do");
    sh.keys(b"\r");
    sh.expect("> ");
    sh.type_text("echo loop-$i");
    sh.keys(b"\r");
    sh.expect("> ");
    sh.type_text("done");
    sh.enter(Some("loop-2\r\n"));
    sh.exit();
    assert_eq!(
        lab.commands(),
        strings(&[
            "echo one \\\ntwo",
            "echo \"open\nquote\"",
            "for i in 1 2; do",
            "echo loop-$i",
            "done",
        ])
    );
}

#[test]
fn keys_typed_inside_full_screen_programs_are_not_commands() {
    for tool in ["/usr/bin/less", "/usr/bin/vi"] {
        assert!(
            std::path::Path::new(tool).exists(),
            "{tool} is needed on the target (Debian packages less and vim)"
        );
    }
    let lab = Lab::new();
    let text: String = (1..=200)
        .map(|i| format!("line {i} of the pager\n"))
        .collect();
    std::fs::write(lab.cwd().join("notes.txt"), text).unwrap();
    let mut sh = lab.shell();
    // less: search, scroll, quit.
    sh.type_text("less notes.txt");
    sh.keys(b"\r");
    sh.expect("line 1 of the pager");
    sh.keys(b"/line 150\r");
    sh.expect("line 151 of the pager");
    sh.keys(b"G");
    sh.expect("line 200 of the pager");
    sh.keys(b"q");
    sh.expect(PROMPT);
    // vi: insert text that reads like a command, then quit without saving.
    sh.type_text("vi notes.txt");
    sh.keys(b"\r");
    sh.expect("line 1 of the pager");
    sh.keys(b"Oecho typed-in-vi\x1b");
    sh.expect("echo typed-in-vi");
    sh.keys(b":q!");
    sh.expect(":q!");
    sh.keys(b"\r");
    sh.expect(PROMPT);
    sh.run("echo after-$((1+1))", "after-2\r\n");
    sh.exit();
    assert_eq!(
        lab.commands(),
        strings(&["less notes.txt", "vi notes.txt", "echo after-$((1+1))"])
    );
}

#[test]
fn a_secret_typed_at_a_no_echo_prompt_is_stored_nowhere() {
    let lab = Lab::new();
    let typed = "Zq7-hunter2-typed";
    let pasted = "Zq7-hunter2-pasted";
    let mut sh = lab.shell();
    // Typed and sent like a password: the shell does not echo it.
    sh.type_text("read -s -p 'secret: ' x");
    sh.keys(b"\r");
    sh.expect("secret: ");
    sh.keys(format!("{typed}\r").as_bytes());
    sh.expect(PROMPT);
    // Pasted where readline reads without echo: bash asks for bracketed paste there too, and
    // shows nothing.
    sh.type_text("read -e -s -p 'Password: ' y");
    sh.keys(b"\r");
    sh.expect("Password: ");
    sh.keys(format!("\x1b[200~{pasted}\x1b[201~").as_bytes());
    sh.keys(b"\r");
    sh.expect(PROMPT);
    sh.run(
        "echo length-${#x}-${#y}",
        &format!("length-{}-{}\r\n", typed.len(), pasted.len()),
    );
    sh.exit();

    assert_eq!(
        lab.commands(),
        strings(&[
            "read -s -p 'secret: ' x",
            "read -e -s -p 'Password: ' y",
            "echo length-${#x}-${#y}",
        ])
    );
    let found = lab.gw.cli_raw(&["commands", "search", "hunter2"]).unwrap();
    let shown = format!(
        "{}{}",
        String::from_utf8_lossy(&found.stdout),
        String::from_utf8_lossy(&found.stderr)
    );
    assert!(shown.contains("no commands found"), "{shown}");
    for a in lab.alerts() {
        assert!(!a.to_string().contains("hunter2"), "{a}");
    }
    assert!(!lab.gw.log().contains("hunter2"), "{}", lab.gw.log());
    let id = lab.gw.last_session().unwrap();
    for format in ["text", "jsonl", "asciicast-v2"] {
        let export = lab.gw.cli(&["export", &id, "--format", format]).unwrap();
        assert!(export.contains("length-"), "{format}: {export}");
        assert!(!export.contains("hunter2"), "{format}: {export}");
    }
    assert!(!stored_in_clear(&lab, "hunter2"));
}

/// Whether any file of the gateway's data directory (the database with its journal, the
/// encrypted recordings) holds `text` as plain bytes.
fn stored_in_clear(lab: &Lab, text: &str) -> bool {
    lab.gw.wait_idle(T).unwrap();
    lab.gw.data_files().iter().any(|f| {
        std::fs::read(f)
            .map(|b| b.windows(text.len()).any(|w| w == text.as_bytes()))
            .unwrap_or(false)
    })
}

#[test]
fn evasions_of_a_blocking_rule_are_all_blocked() {
    let lab = Lab::with_rules(Some(CANARY_RULE));
    let canary = lab.cwd().join("custos-canary");
    std::fs::create_dir(&canary).unwrap();
    std::fs::write(canary.join("keep"), "still here\n").unwrap();
    let attempts = [
        r"r\m -rf custos-canary",
        "'r'm -rf custos-canary",
        "\"r\"m -rf custos-canary",
        "rm${IFS}-rf${IFS}custos-canary",
        "/bin/rm -rf custos-canary",
        "sudo rm -rf custos-canary",
        "env rm -rf custos-canary",
        "nice rm -rf custos-canary",
        "command rm -rf custos-canary",
        "true; rm -rf custos-canary",
        "true && rm -rf custos-canary",
        "false || rm -rf custos-canary",
        "echo $(rm -rf custos-canary)",
        "echo `rm -rf custos-canary`",
        "rm   -rf    custos-canary",
        "rm -r -f ./custos-canary/",
    ];
    let mut sh = lab.shell();
    // Each attempt is typed and echoed before its Enter, as a person types.
    for attempt in attempts {
        sh.type_text(attempt);
        sh.refused(b"\r", "site.canary-rm");
        assert!(canary.join("keep").exists(), "{attempt} deleted the canary");
    }
    // Split over a continuation line: checked once the shell has the whole command.
    sh.type_text("r\\");
    sh.keys(b"\r");
    sh.expect("> ");
    sh.type_text("m -rf custos-canary");
    sh.refused(b"\r", "site.canary-rm");
    // The shell is still usable and the canary still there for it.
    sh.run("ls custos-canary", "keep\r\n");
    // The second line of a bracketed paste, behind a harmless first line. The rest of the
    // paste reaches bash after the interrupt and leaves its line editor in disarray (see
    // `a_refused_line_drops_the_rest_of_its_paste`), so this comes last and the user hangs up.
    let from = sh.output().len();
    sh.keys(b"\x1b[200~true\rrm -rf custos-canary\r\x1b[201~");
    wait_output(&sh, from, "the refusal", |o| {
        o.contains("custos: blocked by rule site.canary-rm")
    });
    drop(sh);
    lab.gw.wait_idle(T).unwrap();
    assert!(canary.join("keep").exists());

    let continued = "r\\\nm -rf custos-canary";
    let mut expected = strings(&attempts);
    expected.extend(strings(&[
        continued,
        "ls custos-canary",
        "true",
        "rm -rf custos-canary",
    ]));
    assert_eq!(lab.commands(), expected);
    // One alert per refused line, for the rule that refused it, and no other about commands.
    let alerts = lab.alerts();
    let mut blocked: Vec<(String, String)> = alerts
        .iter()
        .filter(|a| a["event"] == "command")
        .map(|a| {
            assert_eq!(a["action"], "block", "{a}");
            (
                a["rule"].as_str().unwrap().to_string(),
                a["text"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    blocked.sort();
    let mut want: Vec<(String, String)> = attempts
        .iter()
        .chain(&[continued, "rm -rf custos-canary"])
        .map(|a| ("site.canary-rm".to_string(), a.to_string()))
        .collect();
    want.sort();
    assert_eq!(blocked, want);
}

/// A refused line is interrupted with Ctrl-C instead of its Enter. Keys sent right behind the
/// interrupt (a double Enter, a paste ending in an empty line) could reach bash before it has
/// discarded the line, and bash 5.2 would then accept the line without its first character —
/// with a sacrificial leading space, the refused command in full. The gateway drops what
/// follows a refused line and waits for the shell's answer to the interrupt before forwarding
/// anything more, so the refused command never runs.
#[test]
fn a_refused_line_does_not_run_when_enter_is_pressed_twice() {
    let lab = Lab::with_rules(Some(CANARY_RULE));
    let canary = lab.cwd().join("custos-canary");
    std::fs::create_dir(&canary).unwrap();
    std::fs::write(canary.join("keep"), "still here\n").unwrap();
    let mut sh = lab.shell();
    let from = sh.output().len();
    sh.refused(b" rm -rf custos-canary\r\r", "site.canary-rm");
    // Once this has run, whatever the shell accepted above has run too.
    sh.run("echo probe-$((1+1))", "probe-2\r\n");
    let seen = visible(&sh.output()[from..]);
    sh.exit();
    assert!(
        canary.join("keep").exists(),
        "the refused line ran: {seen:?}"
    );
}

/// The rest of a paste after a refused line is dropped: it never reaches the shell (where it
/// could run, or garble the next line), and the next line the user types runs intact.
#[test]
fn a_refused_line_drops_the_rest_of_its_paste() {
    let lab = Lab::with_rules(Some(CANARY_RULE));
    let canary = lab.cwd().join("custos-canary");
    std::fs::create_dir(&canary).unwrap();
    let mut sh = lab.shell();
    for paste in [
        &b"\x1b[200~rm -rf custos-canary\recho after-$((40+2))\r\x1b[201~"[..],
        b"rm -rf custos-canary\recho after-$((40+2))\r",
    ] {
        let from = sh.output().len();
        sh.refused(paste, "site.canary-rm");
        sh.type_visible("echo next-$((1+1))");
        let typed = sh.output().len();
        sh.keys(b"\r");
        wait_output(&sh, typed, "a new prompt", |o| o.contains(PROMPT));
        let seen = visible(&sh.output()[from..]);
        assert!(canary.exists());
        // Neither echoed nor run: the shell never received the line.
        assert!(
            !seen.contains("after-"),
            "a line pasted after a refused one reached the shell: {seen:?}"
        );
        assert!(
            seen.contains("prompt$ echo next-$((1+1))\r\n") && seen.contains("next-2\r\n"),
            "the next line was garbled: {seen:?}"
        );
        sh.run("bind 'set enable-bracketed-paste off'", "\n");
    }
    sh.exit();
}

/// A "not echoed" verdict can arrive after its line was submitted (the no-echo prompt names no
/// secret, so the verdict waits for the program's bare line feed, or for the 1.5 s timeout).
/// It must not mark the *next* line secret: that command is still stored and alert rules
/// (`credential.shadow-read`) still see it.
#[test]
fn the_command_after_a_no_echo_prompt_is_still_audited() {
    let lab = Lab::new();
    let mut sh = lab.shell();
    sh.type_text("read -s -p 'value: ' y; echo");
    sh.keys(b"\r");
    sh.expect("value: ");
    sh.keys(b"Zq7-typed-value\r");
    sh.expect(PROMPT);
    sh.run(
        "cat /etc/shadow > /dev/null; echo next-$((1+1))",
        "next-2\r\n",
    );
    sh.exit();
    assert_eq!(
        lab.commands(),
        strings(&[
            "read -s -p 'value: ' y; echo",
            "cat /etc/shadow > /dev/null; echo next-$((1+1))",
        ])
    );
    assert!(
        lab.alerts()
            .iter()
            .any(|a| a["rule"] == "credential.shadow-read"),
        "{:?}",
        lab.alerts()
    );
}
