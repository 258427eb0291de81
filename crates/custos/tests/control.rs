//! Live control through the admin socket: an administrator ends a session, or locks a user,
//! and the user is told why within a second.

mod support;

use custos_testkit::Pty;
use std::time::{Duration, Instant};
use support::Setup;

const T: Duration = Duration::from_secs(15);

fn live_ids(s: &Setup) -> Vec<String> {
    let out = s.gw.cli(&["sessions", "list", "--live", "--json"]).unwrap();
    let v: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    v.iter()
        .filter_map(|s| s["id"].as_str().map(str::to_string))
        .collect()
}

fn shell(s: &Setup) -> Pty {
    let mut c = s.ssh();
    c.arg("-tt");
    let mut p = Pty::spawn(c, 80, 24).unwrap();
    p.send_line("echo ready-$((2*21))").unwrap();
    p.expect("ready-42", T).unwrap();
    p
}

#[test]
fn kill_ends_a_live_session_within_a_second_with_the_reason() {
    let s = Setup::new().unwrap();
    let mut p = shell(&s);
    let ids = live_ids(&s);
    assert_eq!(ids.len(), 1);
    let t = Instant::now();
    let out =
        s.gw.cli(&[
            "sessions",
            "kill",
            &ids[0][..12],
            "--reason",
            "change window closed",
        ])
        .unwrap();
    assert!(out.contains("ended"), "{out}");
    p.expect("change window closed", T).unwrap();
    p.wait(T).unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
    s.gw.wait_idle(T).unwrap();
    let shown = s.gw.cli(&["sessions", "show", &ids[0]]).unwrap();
    assert!(shown.contains("killed: change window closed"), "{shown}");
    assert!(
        s.gw.cli(&["recordings", "verify", &ids[0]])
            .unwrap()
            .starts_with("ok")
    );
    // Killing it again is refused clearly.
    let again = s.gw.cli_raw(&["sessions", "kill", &ids[0]]).unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not live"));
}

#[test]
fn locking_a_user_ends_their_live_sessions_and_refuses_new_ones() {
    let s = Setup::new().unwrap();
    let mut a = shell(&s);
    let mut b = shell(&s);
    assert_eq!(live_ids(&s).len(), 2);
    let out = s.gw.cli(&["user", "lock", "alice"]).unwrap();
    assert!(out.contains("ended 2 live session"), "{out}");
    a.expect("account locked by an administrator", T).unwrap();
    b.expect("account locked by an administrator", T).unwrap();
    s.gw.wait_idle(T).unwrap();
    let out = s.ssh().arg("true").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("account is locked"));
}
