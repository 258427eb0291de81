//! Rules enforced on exec requests through the real ssh client: alert, block, terminate and
//! lock, each raising an alert that `custos alerts list` shows.

mod support;

use std::time::Duration;
use support::Setup;

const T: Duration = Duration::from_secs(15);

fn alerts(s: &Setup, args: &[&str]) -> Vec<serde_json::Value> {
    let mut a = vec!["alerts", "list", "--json"];
    a.extend_from_slice(args);
    let all: Vec<serde_json::Value> = serde_json::from_str(&s.gw.cli(&a).unwrap()).unwrap();
    // Session-start rules of the default pack depend on the time of day; leave them out.
    all.into_iter()
        .filter(|a| a["event"] != "session")
        .collect()
}

#[test]
fn exec_requests_are_alerted_blocked_terminated_and_locked_by_rules() {
    let s = Setup::new().unwrap();

    // Alert: the command runs, the alert is stored.
    let out = s
        .ssh()
        .arg("cat /etc/shadow > /dev/null; echo done-$((1+1))")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "done-2\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    s.gw.wait_idle(T).unwrap();
    let a = alerts(&s, &[]);
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(a[0]["rule"], "credential.shadow-read");
    assert_eq!(a[0]["action"], "alert");
    assert_eq!(a[0]["user"], "alice");
    assert_eq!(a[0]["event"], "exec");
    assert_eq!(a[0]["session"], s.gw.last_session().unwrap().as_str());

    // Block: the command never reaches the target, and the user is told which rule.
    let out = s
        .ssh()
        .arg("history -c; echo should-not-run")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("should-not-run"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("blocked by rule evasion.history-clear"),
        "{err}"
    );

    // Terminate: refused and the session ends naming the rule.
    let out = s
        .ssh()
        .arg("python3 -c 'import pty; pty.spawn(\"/bin/sh\")'")
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("revshell.python-pty-spawn"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    s.gw.wait_idle(T).unwrap();
    let sessions = s.gw.sessions().unwrap();
    assert!(
        sessions[0]["end_reason"]
            .as_str()
            .unwrap()
            .contains("terminated by rule revshell.python-pty-spawn"),
        "{sessions:?}"
    );

    // Lock: refused, the account is locked, later logins are refused.
    let out = s.ssh().arg("nc -e /bin/sh 127.0.0.1 9").output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("account locked by rule revshell.netcat-exec"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let users = s.gw.cli(&["user", "list"]).unwrap();
    assert!(
        users
            .lines()
            .any(|l| l.starts_with("alice") && l.contains("locked")),
        "{users}"
    );
    let out = s.ssh().arg("true").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("account is locked"));

    s.gw.wait_idle(T).unwrap();
    let all = alerts(&s, &[]);
    let rules: Vec<&str> = all.iter().filter_map(|a| a["rule"].as_str()).collect();
    for r in [
        "credential.shadow-read",
        "evasion.history-clear",
        "revshell.python-pty-spawn",
        "revshell.netcat-exec",
    ] {
        assert!(rules.contains(&r), "{r} missing from {rules:?}");
    }
    let critical = alerts(&s, &["--severity", "critical"]);
    assert!(critical.iter().all(|a| a["severity"] == "critical"));
    assert!(critical.iter().any(|a| a["rule"] == "revshell.netcat-exec"));
    let table = s.gw.cli(&["alerts", "list"]).unwrap();
    assert!(table.contains("evasion.history-clear"));
    assert!(s.gw.log().contains("rule matched"));
    let bad =
        s.gw.cli_raw(&["alerts", "list", "--severity", "urgent"])
            .unwrap();
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown severity"));
}

#[test]
fn rules_cli_checks_files_and_tests_commands() {
    let gw = support::Gateway::init().unwrap();
    let out = gw
        .cli(&["rules", "test", "--command", "r\\m -rf /"])
        .unwrap();
    assert!(
        out.contains("destructive.rm-rf-root") && out.starts_with("block"),
        "{out}"
    );
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "- id: x\n  description: d\n  severity: urgent\n").unwrap();
    let out = gw
        .cli_raw(&["rules", "check", &bad.display().to_string()])
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yaml") && err.contains(":3"), "{err}");
}

#[test]
fn interactive_commands_are_read_off_the_screen_checked_and_blocked() {
    let s = Setup::new().unwrap();
    let mut c = s.ssh();
    c.arg("-tt");
    let mut p = custos_testkit::Pty::spawn(c, 100, 30).unwrap();
    p.send_line("export PS1='pr''ompt$ '").unwrap();
    p.expect("prompt$ ", T).unwrap();
    // Line editing: what the shell receives is what is stored.
    p.write(b"echo abX").unwrap();
    p.expect("abX", T).unwrap();
    p.write(b"\x7fc\r").unwrap();
    p.expect("abc\r\n", T).unwrap();
    p.expect("prompt$ ", T).unwrap();
    // A blocked command never runs; the shell stays usable.
    p.send_line("history -c; echo ran-$((7*6))").unwrap();
    p.expect("blocked by rule evasion.history-clear", T)
        .unwrap();
    // Type at the fresh prompt, as a person would (docs/command-audit.md: typing ahead).
    p.expect("prompt$ ", T).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    p.send_line("echo after-$((2*2))").unwrap();
    p.expect("after-4", T).unwrap();
    p.expect("prompt$ ", T).unwrap();
    assert!(!p.output().contains("ran-42"), "{}", p.output());
    // Typed ahead while another command runs: still checked, still blocked.
    p.send_line("sleep 1").unwrap();
    p.send_line("history -c; echo ran2-$((7*7))").unwrap();
    p.expect("blocked by rule evasion.history-clear", T)
        .unwrap();
    p.send_line("echo fine-$((3*3))").unwrap();
    p.expect("fine-9", T).unwrap();
    p.expect("prompt$ ", T).unwrap();
    assert!(!p.output().contains("ran2-49"), "{}", p.output());
    p.send_line("exit").unwrap();
    p.wait(T).unwrap();
    s.gw.wait_idle(T).unwrap();

    let found: Vec<serde_json::Value> =
        serde_json::from_str(&s.gw.cli(&["commands", "search", "", "--json"]).unwrap()).unwrap();
    let texts: Vec<&str> = found.iter().filter_map(|c| c["text"].as_str()).collect();
    assert!(texts.contains(&"echo abc"), "{texts:?}");
    assert!(texts.contains(&"echo after-$((2*2))"), "{texts:?}");
    assert!(
        texts.contains(&"history -c; echo ran-$((7*6))"),
        "{texts:?}"
    );
    assert!(found.iter().all(|c| c["kind"] == "shell"));
    let a = alerts(&s, &[]);
    assert!(
        a.iter()
            .any(|a| a["rule"] == "evasion.history-clear" && a["event"] == "command"),
        "{a:?}"
    );
    // The search result's offset replays the session from there.
    let hit: Vec<serde_json::Value> = serde_json::from_str(
        &s.gw
            .cli(&["commands", "search", "after-", "--json"])
            .unwrap(),
    )
    .unwrap();
    let at = hit[0]["offset_us"].as_u64().unwrap() as f64 / 1e6;
    let id = hit[0]["session"].as_str().unwrap().to_string();
    let replay =
        s.gw.cli(&["play", &id, "--speed", "1000", "--at", &format!("{at:.3}")])
            .unwrap();
    assert!(replay.contains("after-4"), "{replay}");
}

#[test]
fn rules_reload_on_sighup_and_on_file_change_and_a_broken_file_changes_nothing() {
    let s = Setup::new().unwrap();
    let dir = s.gw.data.join("rules");
    std::fs::create_dir_all(&dir).unwrap();
    let site = dir.join("site.yaml");
    let rule = |word: &str| {
        format!(
            "- id: site.no-{word}\n  description: The word {word} is not run here.\n  severity: medium\n  mitre: [T1059]\n  action: block\n  match: {{command: {{program: [echo], args: ['{word}']}}}}\n  examples: {{match: [\"echo {word}\"], no_match: [\"echo hello\"]}}\n"
        )
    };
    let run = |word: &str| s.ssh().arg(format!("echo {word}")).output().unwrap();

    // Picked up when the file appears.
    std::fs::write(&site, rule("alpha")).unwrap();
    s.gw.wait_log("rules reloaded", T).unwrap();
    let out = run("alpha");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("blocked by rule site.no-alpha"));

    // A broken file is refused with its error; the rules in force stay.
    std::fs::write(&site, "- id: broken\n  severity: urgent\n").unwrap();
    s.gw.wait_log("rules not reloaded", T).unwrap();
    assert!(s.gw.log().contains("site.yaml"), "{}", s.gw.log());
    assert_eq!(
        run("alpha").status.code(),
        Some(1),
        "the previous rules must stay in force"
    );

    // SIGHUP reloads too (the file's mtime may not have moved within the poll interval).
    std::fs::write(&site, rule("beta")).unwrap();
    let pid = s.gw.pid().unwrap();
    std::process::Command::new("kill")
        .arg("-HUP")
        .arg(pid.to_string())
        .status()
        .unwrap();
    let deadline = std::time::Instant::now() + T;
    while s.gw.log().matches("rules reloaded").count() < 2 {
        assert!(std::time::Instant::now() < deadline, "{}", s.gw.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(String::from_utf8_lossy(&run("alpha").stdout), "alpha\n");
    assert_eq!(run("beta").status.code(), Some(1));
}
