//! The audit trail of a real gateway: what users and administrators do becomes chained,
//! checkpointed events (`custos audit search|tail|verify`), tampering with the database is
//! caught, a checkpoint verifies with stock `ssh-keygen`, and the events reach a real rsyslogd
//! and a JSON-lines file (`custos sinks status`).

mod support;

use serde_json::Value;
use std::process::Command;
use std::time::{Duration, Instant};
use support::Setup;

const T: Duration = Duration::from_secs(30);

fn search(s: &Setup, args: &[&str]) -> Vec<Value> {
    let mut a = vec!["audit", "search", "--json"];
    a.extend_from_slice(args);
    s.gw.cli(&a)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn actions(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["event"]["action"].as_str().unwrap().to_string())
        .collect()
}

/// Waits until the audit log holds an event with `action` (sessions write theirs when they end).
fn wait_action(s: &Setup, action: &str) -> Vec<Value> {
    let deadline = Instant::now() + T;
    loop {
        let all = search(s, &[]);
        if actions(&all).iter().any(|a| a == action) {
            return all;
        }
        assert!(
            Instant::now() < deadline,
            "no {action} in {:?}",
            actions(&all)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn sqlite(db: &std::path::Path, sql: &str) {
    let out = Command::new("sqlite3").arg(db).arg(sql).output().unwrap();
    assert!(
        out.status.success(),
        "sqlite3 {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn sessions_and_administration_are_audited_chained_and_verifiable() {
    let mut s = Setup::new().unwrap();
    let out = s
        .ssh()
        .arg("cat /etc/shadow > /dev/null; echo audited-$((20+1))")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("audited-21"));
    s.gw.wait_idle(T).unwrap();
    let all = wait_action(&s, "session.end");
    let acts = actions(&all);
    for a in [
        "key.generate",
        "admin.user.create",
        "admin.target.create",
        "admin.grant.create",
        "server.start",
        "admin.config.update",
        "key.load",
        "auth.success",
        "session.start",
        "session.exec",
        "rule.alert",
        "session.end",
    ] {
        assert!(acts.iter().any(|x| x == a), "{a} missing from {acts:?}");
    }
    let exec = all
        .iter()
        .find(|e| e["event"]["action"] == "session.exec")
        .unwrap();
    assert_eq!(exec["user"]["name"], "alice");
    assert_eq!(
        exec["process"]["command_line"],
        "cat /etc/shadow > /dev/null; echo audited-$((20+1))"
    );
    assert!(exec["source"]["ip"].as_str().unwrap().starts_with("127."));
    // Sequence numbers are consecutive: nothing is missing.
    let seqs: Vec<u64> = all
        .iter()
        .map(|e| e["custos"]["seq"].as_u64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");

    // A login with a key that is not alice's is a failure event.
    let stranger = custos_testkit::Keypair::generate(s.keys_dir.path(), "stranger").unwrap();
    let out =
        s.gw.ssh(&stranger.private, "alice:srv")
            .arg("true")
            .output()
            .unwrap();
    assert!(!out.status.success());
    let fails = search(&s, &["--action", "auth.failure"]);
    assert!(
        fails
            .iter()
            .any(|e| e["user"]["name"] == "alice" && e["source"]["ip"].is_string()),
        "{fails:?}"
    );

    // Administrative changes and recording access carry the operator.
    s.gw.cli(&["user", "lock", "alice"]).unwrap();
    s.gw.cli(&["user", "unlock", "alice"]).unwrap();
    let id = s.gw.last_session().unwrap();
    s.gw.cli(&["export", &id, "--format", "text"]).unwrap();
    let acts = actions(&search(&s, &[]));
    for a in ["user.lock", "user.unlock", "recording.export"] {
        assert!(acts.iter().any(|x| x == a), "{a} missing from {acts:?}");
    }
    let export = search(&s, &["--action", "recording.export"]);
    assert_eq!(export[0]["custos"]["session"]["id"], id.as_str());

    // Filters: by user, by session, by action prefix.
    let mine = search(&s, &["--user", "alice"]);
    assert!(mine.iter().all(|e| e["user"]["name"] == "alice"));
    let of_session = search(&s, &["--session", &id]);
    assert!(of_session.len() >= 4, "{:?}", actions(&of_session));
    let sessions = search(&s, &["--action", "session"]);
    assert!(
        actions(&sessions).iter().all(|a| a.starts_with("session.")),
        "{:?}",
        actions(&sessions)
    );
    let table = s.gw.cli(&["audit", "tail", "-n", "5"]).unwrap();
    assert_eq!(table.lines().count(), 6, "{table}");

    // The chain verifies; a checkpoint verifies with ssh-keygen alone.
    s.gw.stop();
    let ok = s.gw.cli(&["audit", "verify"]).unwrap();
    assert!(ok.starts_with("ok: "), "{ok}");
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("cp");
    s.gw.cli(&[
        "audit",
        "checkpoint",
        "--out",
        &out_dir.display().to_string(),
    ])
    .unwrap();
    let v = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ssh-keygen -Y verify -f {d}/allowed_signers -I custos-audit -n custos-audit@v1 -s {d}/checkpoint.sig < {d}/checkpoint.txt",
            d = out_dir.display()
        ))
        .output()
        .unwrap();
    assert!(
        v.status.success(),
        "{}{}",
        String::from_utf8_lossy(&v.stdout),
        String::from_utf8_lossy(&v.stderr)
    );

    // Unknown ids and checkpoints are refused with what was asked for.
    let none = s.gw.cli_raw(&["audit", "show", "01NOSUCHEVENT"]).unwrap();
    assert_ne!(none.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&none.stderr).contains("no audit event with id 01NOSUCHEVENT"));
    let none =
        s.gw.cli_raw(&[
            "audit",
            "checkpoint",
            "999999",
            "--out",
            &out_dir.display().to_string(),
        ])
        .unwrap();
    assert_ne!(none.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&none.stderr).contains("no such checkpoint at event 999999"));

    // Tampering with one event is caught and named, even with the triggers removed.
    let db = s.gw.data.join("custos.db");
    sqlite(&db, "DROP TRIGGER audit_events_no_update");
    sqlite(
        &db,
        "UPDATE audit_events SET doc = replace(doc, 'audited-', 'innocent-') \
         WHERE action = 'session.exec'",
    );
    let bad = s.gw.cli_raw(&["audit", "verify"]).unwrap();
    assert_eq!(bad.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad.stderr);
    let seq = exec["custos"]["seq"].as_u64().unwrap();
    assert!(
        err.contains("altered") && err.contains(&format!("event {seq}")),
        "{err}"
    );
}

#[test]
fn events_reach_rsyslog_and_a_jsonl_file_and_sinks_report_their_state() {
    let mut s = Setup::new().unwrap();
    let rs = custos_testkit::Rsyslog::start(None).unwrap();
    s.gw.stop();
    let conf = s.gw.data.join("custos.toml");
    let mut text = std::fs::read_to_string(&conf)
        .unwrap()
        .replace("interval_secs = 10", "interval_secs = 1");
    text.push_str(&format!(
        "\n[[sinks]]\nname = \"rsyslog\"\ntype = \"syslog\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:{}\"\nformat = \"cef\"\n\n[[sinks]]\nname = \"archive\"\ntype = \"file\"\npath = \"audit/custos.jsonl\"\n",
        rs.tcp_port
    ));
    std::fs::write(&conf, text).unwrap();
    s.gw.start().unwrap();
    let out = s.ssh().arg("echo siem-$((3*3))").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("siem-9"));
    s.gw.wait_idle(T).unwrap();
    wait_action(&s, "session.end");

    let deadline = Instant::now() + T;
    let file = s.gw.data.join("audit/custos.jsonl");
    loop {
        let status: Vec<Value> =
            serde_json::from_str(&s.gw.cli(&["sinks", "status", "--json"]).unwrap()).unwrap();
        let done = status
            .iter()
            .all(|x| x["behind"] == 0 && x["delivered_seq"].as_u64().unwrap() > 0);
        if done {
            assert!(status.iter().all(|x| x["failures"] == 0), "{status:?}");
            break;
        }
        assert!(Instant::now() < deadline, "{status:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let lines = std::fs::read_to_string(&file).unwrap();
    assert!(lines.contains("\"echo siem-$((3*3))\""), "{lines}");
    let cef: Vec<String> = rs.messages();
    assert!(
        cef.iter()
            .any(|m| m.contains("CEF:0|Custos|Custos|") && m.contains("session.exec")),
        "{cef:#?}"
    );
    let table = s.gw.cli(&["sinks", "status"]).unwrap();
    assert!(
        table.contains("rsyslog") && table.contains("archive"),
        "{table}"
    );
    // The metrics file shows the same, for a scraper.
    let prom = s.gw.data.join("metrics/custos.prom");
    let deadline = Instant::now() + T;
    loop {
        let m = std::fs::read_to_string(&prom).unwrap_or_default();
        if m.contains("custos_sink_behind_events{sink=\"archive\"} 0")
            && m.contains("custos_sink_behind_events{sink=\"rsyslog\"} 0")
        {
            assert!(m.contains("# TYPE custos_sink_lag_seconds gauge"), "{m}");
            assert!(m.contains("custos_audit_head_seq "), "{m}");
            break;
        }
        assert!(Instant::now() < deadline, "{m}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // A sink that cannot start (missing secret) stops the gateway from starting, with why.
    s.gw.stop();
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str(
        "\n[[sinks]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/x\"\nsecret_file = \"keys/missing.secret\"\n",
    );
    std::fs::write(&conf, text).unwrap();
    let out = Command::new("timeout")
        .arg("60")
        .arg(support::BIN)
        .arg("--data")
        .arg(&s.gw.data)
        .arg("serve")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("sink 'hook'") && err.contains("missing.secret"),
        "{err}"
    );
}
