//! Holds answered by a moderator (approve, deny, no answer), session-start, output and
//! file-transfer rules, and session limits — through the real ssh client, a real sshd target
//! and the running gateway's admin socket.

mod support;

use serde_json::Value;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::Setup;

const T: Duration = Duration::from_secs(20);

/// Rules used by these tests, written to the data directory before the gateway starts.
const LOCAL_RULES: &str = r#"
- id: site.hold-marker
  description: Creating marker files needs a moderator's approval.
  severity: high
  mitre: [T1485]
  action: hold
  match: {command: {program: touch, args: ['.*/held-.*']}}
  examples: {match: ["touch /tmp/held-1"], no_match: ["touch /tmp/other"]}

- id: site.secret-output
  description: Output carrying a TOPSECRET marker is withheld from the terminal.
  severity: high
  mitre: [T1005]
  action: block
  match: {output: {regex: ['TOPSECRET-[0-9]+']}}
  examples: {match: ["x TOPSECRET-42 y"], no_match: ["TOPSECRET-"]}

- id: site.no-delete-keep
  description: Files under a keep folder are not deleted over SFTP.
  severity: medium
  mitre: [T1485]
  action: block
  match: {file_transfer: {operation: delete, path: ['/keep/']}}
  examples: {match: ["delete /srv/keep/a"], no_match: ["delete /srv/tmp/a"]}

- id: site.bob-needs-approval
  description: Sessions of bob need a moderator's approval.
  severity: medium
  mitre: [T1078]
  action: hold
  match: {session_start: {}}
  conditions: {users: [bob]}
  examples: {match: [{input: 192.0.2.4, user: bob}], no_match: [{input: 192.0.2.4, user: carol}]}

- id: site.no-mallory
  description: mallory may not open sessions.
  severity: high
  mitre: [T1078]
  action: block
  match: {session_start: {}}
  conditions: {users: [mallory]}
  examples: {match: [{input: 192.0.2.4, user: mallory}], no_match: [{input: 192.0.2.4, user: carol}]}
"#;

/// A gateway with the local rules and a short hold timeout.
fn setup(hold_timeout_secs: u64) -> Setup {
    let mut s = Setup::new().unwrap();
    s.gw.stop();
    let rules = s.gw.data.join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(rules.join("site.yaml"), LOCAL_RULES).unwrap();
    let conf = s.gw.data.join("custos.toml");
    let text = std::fs::read_to_string(&conf).unwrap();
    let text = text.replace(
        "hold_timeout_secs = 300",
        &format!("hold_timeout_secs = {hold_timeout_secs}"),
    );
    assert!(text.contains(&format!("hold_timeout_secs = {hold_timeout_secs}")));
    std::fs::write(&conf, text).unwrap();
    s.gw.start().unwrap();
    s
}

fn alerts(s: &Setup, args: &[&str]) -> Vec<Value> {
    let mut a = vec!["alerts", "list", "--json"];
    a.extend_from_slice(args);
    serde_json::from_str(&s.gw.cli(&a).unwrap()).unwrap()
}

/// Waits until exactly one hold is pending and returns its alert id.
fn pending_hold(s: &Setup) -> i64 {
    let deadline = Instant::now() + T;
    loop {
        let p = alerts(s, &["--pending"]);
        if p.len() == 1 {
            assert_eq!(p[0]["action"], "hold");
            assert_eq!(p[0]["decision"]["state"], "pending");
            return p[0]["id"].as_i64().unwrap();
        }
        assert!(Instant::now() < deadline, "no pending hold: {p:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn spawn(mut c: Command) -> Child {
    c.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

fn finish(c: Child) -> (Output, String, String) {
    let out = c.wait_with_output().unwrap();
    let o = String::from_utf8_lossy(&out.stdout).into_owned();
    let e = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, o, e)
}

fn decision(s: &Setup, id: i64) -> Value {
    alerts(s, &[]).into_iter().find(|a| a["id"] == id).unwrap()["decision"].clone()
}

#[test]
fn holds_are_approved_denied_or_time_out() {
    let s = setup(4);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();

    // Approved: the command runs once the moderator says yes.
    let mut c = s.ssh();
    c.arg(format!("touch {d}/held-approved && echo made"));
    let child = spawn(c);
    let id = pending_hold(&s);
    assert!(!dir.path().join("held-approved").exists());
    let out =
        s.gw.cli(&["alerts", "approve", &id.to_string(), "--by", "mod-ann"])
            .unwrap();
    assert!(out.contains("approved by mod-ann"), "{out}");
    let (out, o, e) = finish(child);
    assert_eq!(out.status.code(), Some(0), "{e}");
    assert_eq!(o, "made\n");
    assert!(e.contains("held by rule site.hold-marker"), "{e}");
    assert!(e.contains("approved by a moderator"), "{e}");
    assert!(dir.path().join("held-approved").exists());
    let dec = decision(&s, id);
    assert_eq!(dec["state"], "approved");
    assert_eq!(dec["by"], "mod-ann");

    // A decided hold cannot be decided again.
    let again = s.gw.cli_raw(&["alerts", "deny", &id.to_string()]).unwrap();
    assert_ne!(again.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("not waiting for a decision"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    // Denied: the command never runs; the user sees who denied it and why.
    let mut c = s.ssh();
    c.arg(format!("touch {d}/held-denied"));
    let child = spawn(c);
    let id = pending_hold(&s);
    s.gw.cli(&[
        "alerts",
        "deny",
        &id.to_string(),
        "--by",
        "mod-bo",
        "--reason",
        "not during the freeze",
    ])
    .unwrap();
    let (out, _, e) = finish(child);
    assert_eq!(out.status.code(), Some(1), "{e}");
    assert!(e.contains("denied by moderator mod-bo"), "{e}");
    assert!(e.contains("not during the freeze"), "{e}");
    assert!(!dir.path().join("held-denied").exists());
    let dec = decision(&s, id);
    assert_eq!(dec["state"], "denied");
    assert_eq!(dec["note"], "not during the freeze");

    // No answer: denied when the timeout passes.
    let started = Instant::now();
    let out = s
        .ssh()
        .arg(format!("touch {d}/held-ignored"))
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{e}");
    assert!(e.contains("no moderator answered within 4s"), "{e}");
    assert!(started.elapsed() >= Duration::from_secs(4));
    assert!(!dir.path().join("held-ignored").exists());
    let timed_out: Vec<Value> = alerts(&s, &[])
        .into_iter()
        .filter(|a| a["decision"]["state"] == "timed_out")
        .collect();
    assert_eq!(timed_out.len(), 1, "{timed_out:?}");
    let table = s.gw.cli(&["alerts", "list"]).unwrap();
    assert!(table.contains("hold:timed_out"), "{table}");

    // Unknown ids are refused clearly.
    let bad = s.gw.cli_raw(&["alerts", "approve", "99999"]).unwrap();
    assert_ne!(bad.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("alert 99999"));

    // An interactive line waits with its Enter held, then runs when approved.
    let mut c = s.ssh();
    c.arg("-tt");
    let mut p = custos_testkit::Pty::spawn(c, 100, 30).unwrap();
    p.send_line("export PS1='pr''ompt$ '").unwrap();
    p.expect("prompt$ ", T).unwrap();
    p.send_line(&format!("touch {d}/held-typed; echo typed-$((6*7))"))
        .unwrap();
    p.expect("held by rule site.hold-marker", T).unwrap();
    let id = pending_hold(&s);
    assert!(!p.output().contains("typed-42"));
    s.gw.cli(&["alerts", "approve", &id.to_string()]).unwrap();
    p.expect("approved by a moderator", T).unwrap();
    p.expect("typed-42", T).unwrap();
    p.expect("prompt$ ", T).unwrap();
    assert!(dir.path().join("held-typed").exists());
    p.send_line("exit").unwrap();
    p.wait(T).unwrap();
}

#[test]
fn session_start_rules_refuse_or_hold_before_the_target_is_reached() {
    let s = setup(30);
    let mallory = s.gw.add_key_user("mallory").unwrap();
    let bob = s.gw.add_key_user("bob").unwrap();
    s.gw.cli(&["grant", "mallory", "srv"]).unwrap();
    s.gw.cli(&["grant", "bob", "srv"]).unwrap();

    let out =
        s.gw.ssh(&mallory.private, "mallory:srv")
            .arg("echo in")
            .output()
            .unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(e.contains("session refused by rule site.no-mallory"), "{e}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("in"));

    let mut c = s.gw.ssh(&bob.private, "bob:srv");
    c.arg("echo bob-$((2+3))");
    let child = spawn(c);
    let id = pending_hold(&s);
    s.gw.cli(&["alerts", "approve", &id.to_string()]).unwrap();
    let (out, o, e) = finish(child);
    assert_eq!(out.status.code(), Some(0), "{e}");
    assert_eq!(o, "bob-5\n");
    assert!(e.contains("held by rule site.bob-needs-approval"), "{e}");

    let all = alerts(&s, &[]);
    let m = all.iter().find(|a| a["rule"] == "site.no-mallory").unwrap();
    assert_eq!(m["event"], "session");
    assert_eq!(m["action"], "block");
    assert_eq!(m["user"], "mallory");
}

#[test]
fn terminal_output_rules_withhold_output_and_file_rules_stop_transfers() {
    let s = setup(30);
    let mut c = s.ssh();
    c.arg("-tt");
    let mut p = custos_testkit::Pty::spawn(c, 100, 30).unwrap();
    p.send_line("export PS1='pr''ompt$ '").unwrap();
    p.expect("prompt$ ", T).unwrap();
    p.send_line("echo TOPSECRET-$((40+2))").unwrap();
    p.expect("output withheld by rule site.secret-output", T)
        .unwrap();
    p.expect("prompt$ ", T).unwrap();
    p.send_line("echo visible-$((1+1))").unwrap();
    p.expect("visible-2", T).unwrap();
    p.send_line("exit").unwrap();
    p.wait(T).unwrap();
    assert!(!p.output().contains("TOPSECRET-42"), "{}", p.output());
    s.gw.wait_idle(T).unwrap();
    let a = alerts(&s, &[]);
    let hit = a
        .iter()
        .find(|a| a["rule"] == "site.secret-output")
        .unwrap();
    assert_eq!(hit["event"], "output");
    // The alert names the rule, never the output itself.
    assert!(!hit["text"].as_str().unwrap().contains("TOPSECRET-42"));

    // A default-pack output rule raises an alert (the session continues).
    let out = s
        .ssh()
        .arg("-tt")
        .arg("printf '%s\\n' '-----BEGIN OPENSSH PRIVATE ''KEY-----'; echo after")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("after"));
    s.gw.wait_idle(T).unwrap();
    assert!(
        alerts(&s, &[])
            .iter()
            .any(|a| a["event"] == "output" && a["action"] == "alert"),
        "{:?}",
        alerts(&s, &[])
    );

    // An SFTP delete under a keep folder stops the transfer and is alerted.
    let dir = tempfile::tempdir().unwrap();
    let keep = dir.path().join("keep");
    std::fs::create_dir_all(&keep).unwrap();
    std::fs::write(keep.join("a.txt"), "x").unwrap();
    std::fs::write(keep.join("b.txt"), "x").unwrap();
    let batch = format!("rm {k}/a.txt\nrm {k}/b.txt\n", k = keep.display());
    let batch_file = dir.path().join("batch");
    std::fs::write(&batch_file, batch).unwrap();
    let mut sftp = custos_testkit::sftp_cmd(s.gw.port, Some(&s.alice.private));
    sftp.arg("-b").arg(&batch_file).arg("alice+srv@127.0.0.1");
    let out = sftp.output().unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{e}");
    assert!(
        keep.join("b.txt").exists(),
        "the transfer must stop at the first refused operation"
    );
    s.gw.wait_idle(T).unwrap();
    assert!(
        alerts(&s, &[])
            .iter()
            .any(|a| a["rule"] == "site.no-delete-keep" && a["event"] == "file"),
        "{:?}",
        alerts(&s, &[])
    );
}

#[test]
fn sessions_end_at_their_idle_timeout_and_maximum_duration() {
    let s = setup(30);
    // Validation names the option and the problem.
    let bad =
        s.gw.cli_raw(&["target", "limits", "srv", "--idle-timeout", "5w"])
            .unwrap();
    assert_ne!(bad.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--idle-timeout"));

    s.gw.cli(&["target", "limits", "srv", "--idle-timeout", "4s"])
        .unwrap();
    let shown = s.gw.cli(&["target", "list"]).unwrap();
    assert!(shown.contains("idle 4s"), "{shown}");

    // Idle: warned, then ended with the reason; typing resets the clock.
    let mut c = s.ssh();
    c.arg("-tt");
    let mut p = custos_testkit::Pty::spawn(c, 100, 30).unwrap();
    p.send_line("export PS1='pr''ompt$ '").unwrap();
    p.expect("prompt$ ", T).unwrap();
    let started = Instant::now();
    p.expect("this session ends in", T).unwrap();
    p.expect("session ended: idle for 4s without input", T)
        .unwrap();
    assert!(started.elapsed() >= Duration::from_secs(3));
    p.wait(T).unwrap();
    s.gw.wait_idle(T).unwrap();
    let sess = s.gw.sessions().unwrap();
    assert!(
        sess[0]["end_reason"]
            .as_str()
            .unwrap()
            .contains("limit: idle for 4s"),
        "{sess:?}"
    );

    // Maximum duration from the grant, tighter than the target's (none): a long command is
    // cut off with the reason.
    s.gw.cli(&["target", "limits", "srv", "--idle-timeout", "none"])
        .unwrap();
    s.gw.cli(&["grant", "alice", "srv", "--max-duration", "3s"])
        .unwrap();
    let started = Instant::now();
    let out = s.ssh().arg("sleep 30; echo finished").output().unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("finished"));
    assert!(e.contains("maximum session duration of 3s reached"), "{e}");
    s.gw.wait_idle(T).unwrap();
    let sess = s.gw.sessions().unwrap();
    assert!(
        sess[0]["end_reason"]
            .as_str()
            .unwrap()
            .contains("limit: maximum session duration of 3s"),
        "{sess:?}"
    );
}
