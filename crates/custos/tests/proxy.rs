//! The proxy through a real OpenSSH target: exec with stdin and exit status, bulk binary data,
//! sftp, scp and rsync, each through the real OpenSSH clients.

mod support;

use std::process::Command;
use std::time::Duration;
use support::{Setup, run_with_stdin};

fn sha256(data: &[u8]) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn exec_pipes_stdin_and_returns_exit_status() {
    let s = Setup::new().unwrap();
    let mut c = s.ssh();
    c.arg("tr a-z A-Z; echo to-stderr >&2; exit 3");
    let out = run_with_stdin(c, b"hello gateway\n").unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "HELLO GATEWAY\n",
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("to-stderr"));
    assert_eq!(out.status.code(), Some(3));

    let out = s.ssh().arg("true").output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A command killed by a signal: OpenSSH's client exits 255 and the recording keeps the signal.
    let out = s.ssh().arg("kill -TERM $$").output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(255),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    s.gw.wait_idle(Duration::from_secs(10)).unwrap();
    let id = s.gw.last_session().unwrap();
    let jsonl = s.gw.cli(&["export", &id, "--format", "jsonl"]).unwrap();
    assert!(
        jsonl.contains("\"exit_signal\"") && jsonl.contains("TERM"),
        "{jsonl}"
    );

    let sessions = s.gw.sessions().unwrap();
    assert_eq!(sessions.len(), 3);
    let first = sessions.last().unwrap();
    assert_eq!(first["user"], "alice");
    assert_eq!(first["target"], "srv");
    assert_eq!(first["exit_status"], 3);
    assert_eq!(first["state"], "ended");
    assert_eq!(first["bytes_in"], 14);
    assert!(first["bytes_out"].as_u64().unwrap() >= 14);
    assert!(s.gw.log().contains("session started"));

    // Filters.
    let count = |args: &[&str]| -> usize {
        let mut a = vec!["sessions", "list", "--json"];
        a.extend_from_slice(args);
        serde_json::from_str::<Vec<serde_json::Value>>(&s.gw.cli(&a).unwrap())
            .unwrap()
            .len()
    };
    assert_eq!(count(&["--user", "alice"]), 3);
    assert_eq!(count(&["--user", "bob"]), 0);
    assert_eq!(count(&["--target", "srv"]), 3);
    assert_eq!(count(&["--since", "2000-01-01T00:00:00Z"]), 3);
    assert_eq!(count(&["--since", "2999-01-01T00:00:00Z"]), 0);
    assert_eq!(count(&["--live"]), 0);
    let table = s.gw.cli(&["sessions", "list"]).unwrap();
    assert_eq!(table.lines().count(), 4, "{table}");
    let id = sessions[0]["id"].as_str().unwrap();
    let shown = s.gw.cli(&["sessions", "show", &id[..10]]).unwrap();
    assert!(
        shown.contains("exit status:") && shown.contains("alice"),
        "{shown}"
    );
    // The exec commands are searchable, with their exit status and offset.
    let found: Vec<serde_json::Value> = serde_json::from_str(
        &s.gw
            .cli(&["commands", "search", "tr a-z", "--json"])
            .unwrap(),
    )
    .unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["kind"], "exec");
    assert_eq!(found[0]["exit_status"], 3);
    assert_eq!(found[0]["user"], "alice");
    let all =
        s.gw.cli(&["commands", "search", "", "--user", "alice"])
            .unwrap();
    assert_eq!(all.lines().count(), 4, "{all}");
    assert!(all.contains("kill -TERM"));
    let bad =
        s.gw.cli_raw(&["sessions", "list", "--since", "yesterday"])
            .unwrap();
    assert!(String::from_utf8_lossy(&bad.stderr).contains("RFC 3339"));
}

#[test]
fn pipelines_terminate_on_eof() {
    let s = Setup::new().unwrap();
    let mut c = s.ssh();
    c.arg("wc -l");
    let out = run_with_stdin(c, b"a\nb\nc\n").unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "3");
    assert!(out.status.success());
}

#[test]
fn hundred_megabytes_of_binary_round_trip_intact() {
    let s = Setup::new().unwrap();
    let mut data = vec![0u8; 100 * 1024 * 1024];
    // A cheap deterministic generator: every byte value appears, nothing compresses well.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let mut c = s.ssh();
    c.arg("cat");
    let out = run_with_stdin(c, &data).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len(), data.len());
    assert_eq!(sha256(&out.stdout), sha256(&data));
    s.gw.wait_idle(Duration::from_secs(30)).unwrap();
    let v = s.gw.cli(&["recordings", "verify"]).unwrap();
    assert!(v.contains("ok"), "{v}");
}

#[test]
fn sftp_operations_are_recorded() {
    let s = Setup::new().unwrap();
    let work = tempfile::tempdir().unwrap();
    let remote = tempfile::tempdir().unwrap();
    let r = remote.path().display();
    let local = work.path().join("up.bin");
    std::fs::write(&local, vec![7u8; 300_000]).unwrap();
    let batch = work.path().join("batch");
    let back = work.path().join("back.bin");
    std::fs::write(
        &batch,
        format!(
            "put {l} {r}/up.bin\nget {r}/up.bin {b}\nrename {r}/up.bin {r}/moved.bin\nmkdir {r}/dir\nrm {r}/moved.bin\n",
            l = local.display(),
            b = back.display()
        ),
    )
    .unwrap();
    let mut c = custos_testkit::sftp_cmd(s.gw.port, Some(&s.alice.private));
    c.arg("-b").arg(&batch).arg("alice+srv@127.0.0.1");
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(&back).unwrap().len(), 300_000);
    assert!(!remote.path().join("moved.bin").exists());
    assert!(remote.path().join("dir").is_dir());
    s.gw.wait_idle(Duration::from_secs(10)).unwrap();
    let id = s.gw.last_session().unwrap();
    let jsonl = s.gw.cli(&["export", &id, "--format", "jsonl"]).unwrap();
    let ops: Vec<serde_json::Value> = jsonl
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["type"] == "sftp")
        .collect();
    let has = |op: &str, path_end: &str| {
        ops.iter()
            .any(|v| v["op"] == op && v["path"].as_str().is_some_and(|p| p.ends_with(path_end)))
    };
    assert!(has("write", "up.bin"), "{ops:?}");
    assert!(
        ops.iter()
            .any(|v| v["op"] == "write" && v["bytes"] == 300_000),
        "{ops:?}"
    );
    assert!(has("read", "up.bin"), "{ops:?}");
    assert!(
        ops.iter().any(|v| v["op"] == "rename"
            && v["target_path"]
                .as_str()
                .is_some_and(|p| p.ends_with("moved.bin"))),
        "{ops:?}"
    );
    assert!(has("mkdir", "dir"), "{ops:?}");
    assert!(has("remove", "moved.bin"), "{ops:?}");
    let found = s.gw.cli(&["commands", "search", "moved.bin"]).unwrap();
    assert!(
        found.contains("rename") && found.contains("remove") && found.contains(" file "),
        "{found}"
    );
}

#[test]
fn scp_both_protocols_and_rsync_work() {
    let s = Setup::new().unwrap();
    let work = tempfile::tempdir().unwrap();
    let remote = tempfile::tempdir().unwrap();
    let src = work.path().join("f.txt");
    std::fs::write(&src, "scp payload\n").unwrap();
    for legacy in [false, true] {
        let dest = remote
            .path()
            .join(if legacy { "legacy.txt" } else { "modern.txt" });
        let mut c = custos_testkit::scp_cmd(s.gw.port, Some(&s.alice.private));
        if legacy {
            c.arg("-O");
        }
        c.arg(&src)
            .arg(format!("alice+srv@127.0.0.1:{}", dest.display()));
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "legacy={legacy}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "scp payload\n");
        // And back.
        let back = work.path().join(format!("back-{legacy}.txt"));
        let mut c = custos_testkit::scp_cmd(s.gw.port, Some(&s.alice.private));
        if legacy {
            c.arg("-O");
        }
        c.arg(format!("alice+srv@127.0.0.1:{}", dest.display()))
            .arg(&back);
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(std::fs::read_to_string(&back).unwrap(), "scp payload\n");
    }
    s.gw.wait_idle(Duration::from_secs(10)).unwrap();
    let sessions = s.gw.sessions().unwrap();
    let legacy_upload = sessions[1]["id"].as_str().unwrap().to_string();
    let jsonl =
        s.gw.cli(&["export", &legacy_upload, "--format", "jsonl"])
            .unwrap();
    assert!(
        jsonl.contains("legacy.txt") && jsonl.contains("\"sftp\""),
        "{jsonl}"
    );

    // rsync over the gateway.
    let rdest = remote.path().join("rsynced");
    let ssh = format!(
        "ssh {}",
        custos_testkit::ssh_base_args(s.gw.port, Some(&s.alice.private)).join(" ")
    );
    let out = Command::new("rsync")
        .arg("-a")
        .arg("-e")
        .arg(&ssh)
        .arg(work.path().join("f.txt"))
        .arg(format!("alice+srv@127.0.0.1:{}", rdest.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&rdest).unwrap(), "scp payload\n");
}

/// A one-shot TCP service on the target host that greets and closes.
fn greeter() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            use std::io::Write;
            let _ = c.write_all(b"hello-through-the-tunnel\n");
        }
    });
    port
}

#[test]
fn port_forwarding_is_refused_by_default_and_recorded_when_allowed() {
    let port = greeter();
    let dest = format!("127.0.0.1:{port}");

    let s = Setup::new().unwrap();
    let out = s
        .ssh()
        .arg("-W")
        .arg(&dest)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("hello-through"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("prohibited") || err.contains("forwarding failed"),
        "{err}"
    );
    s.gw.wait_log("port forward refused", Duration::from_secs(5))
        .unwrap();

    let s = Setup::with_target_args(&["--allow-port-forwarding"]).unwrap();
    let out = s
        .ssh()
        .arg("-W")
        .arg(&dest)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello-through-the-tunnel\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    s.gw.wait_idle(Duration::from_secs(10)).unwrap();
    let id = s.gw.last_session().unwrap();
    let jsonl = s.gw.cli(&["export", &id, "--format", "jsonl"]).unwrap();
    let fwd: Vec<serde_json::Value> = jsonl
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["type"] == "port_forward")
        .collect();
    assert_eq!(fwd.len(), 1, "{jsonl}");
    assert_eq!(fwd[0]["port"], port);
    assert_eq!(fwd[0]["allowed"], true);
}

#[test]
fn only_allow_listed_environment_reaches_the_target() {
    let mut gw = support::Gateway::init().unwrap();
    let k = gw.add_key_user("erin").unwrap();
    gw.cli(&["grant", "erin", "local"]).unwrap();
    gw.start().unwrap();
    let out = gw
        .ssh(&k.private, "erin:local")
        .arg("-o")
        .arg("SetEnv=LC_PROBE=allowed EVIL_PROBE=blocked")
        .arg("echo \"[$LC_PROBE][$EVIL_PROBE]\"")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "[allowed][]\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
