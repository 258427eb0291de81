//! Every way a session can be refused: each is explained to the user and logged.

mod support;

use custos_testkit::{Askpass, Keypair, Sshd, free_port};
use std::time::{Duration, Instant};
use support::{Gateway, Setup};

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn password_login_wrong_password_and_unknown_user() {
    let s = Setup::new().unwrap();
    s.gw.cli_stdin(
        &["user", "add", "bob", "--password-stdin"],
        "correct horse\n",
    )
    .unwrap();
    s.gw.cli(&["grant", "bob", "srv"]).unwrap();

    let ok = Askpass::new("correct horse").unwrap();
    let out = ok
        .ssh_cmd(s.gw.port)
        .arg("bob:srv@127.0.0.1")
        .arg("echo in")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "in\n",
        "{}",
        stderr(&out)
    );

    let bad = Askpass::new("wrong").unwrap();
    let out = bad
        .ssh_cmd(s.gw.port)
        .arg("bob:srv@127.0.0.1")
        .arg("true")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(255));
    assert!(
        stderr(&out).contains("Permission denied"),
        "{}",
        stderr(&out)
    );
    s.gw.wait_log("wrong password", Duration::from_secs(5))
        .unwrap();

    let out = bad
        .ssh_cmd(s.gw.port)
        .arg("nobody:srv@127.0.0.1")
        .arg("true")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(255));
    assert!(stderr(&out).contains("Permission denied"));
    s.gw.wait_log("user=\"nobody\"", Duration::from_secs(5))
        .or_else(|_| s.gw.wait_log("user=nobody", Duration::from_secs(1)))
        .unwrap();
    assert!(!s.gw.log().contains("correct horse"));
}

#[test]
fn repeated_failures_are_rate_limited() {
    let s = Setup::new().unwrap();
    s.gw.cli_stdin(
        &["user", "add", "carol", "--password-stdin"],
        "right-password\n",
    )
    .unwrap();
    s.gw.cli(&["grant", "carol", "srv"]).unwrap();
    let bad = Askpass::new("nope").unwrap();
    for _ in 0..5 {
        let _ = bad
            .ssh_cmd(s.gw.port)
            .arg("carol:srv@127.0.0.1")
            .arg("true")
            .output()
            .unwrap();
    }
    // Now even the right password is refused for a while.
    let ok = Askpass::new("right-password").unwrap();
    let out = ok
        .ssh_cmd(s.gw.port)
        .arg("carol:srv@127.0.0.1")
        .arg("true")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(255), "{}", stderr(&out));
    s.gw.wait_log("too many recent failures", Duration::from_secs(5))
        .unwrap();
}

#[test]
fn locked_and_expired_users_are_told_why() {
    let s = Setup::new().unwrap();
    s.gw.cli(&["user", "lock", "alice"]).unwrap();
    let out = s.ssh().arg("echo should-not-run").output().unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("should-not-run"));
    assert!(
        stderr(&out).contains("account is locked"),
        "{}",
        stderr(&out)
    );
    s.gw.cli(&["user", "unlock", "alice"]).unwrap();
    let out = s.ssh().arg("echo back").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "back\n");

    let k = Keypair::generate(s.keys_dir.path(), "dave").unwrap();
    s.gw.cli(&[
        "user",
        "add",
        "dave",
        "--ssh-key",
        &k.public_path().display().to_string(),
        "--expires",
        "2020-01-01T00:00:00Z",
    ])
    .unwrap();
    s.gw.cli(&["grant", "dave", "srv"]).unwrap();
    let out =
        s.gw.ssh(&k.private, "dave:srv")
            .arg("true")
            .output()
            .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("account has expired"),
        "{}",
        stderr(&out)
    );
    assert!(s.gw.log().contains("account is locked") && s.gw.log().contains("account has expired"));
}

#[test]
fn unknown_and_ungranted_targets_are_refused() {
    let s = Setup::new().unwrap();
    let out =
        s.gw.ssh(&s.alice.private, "alice:nosuch")
            .arg("true")
            .output()
            .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no target named 'nosuch'"),
        "{}",
        stderr(&out)
    );

    s.gw.cli(&["target", "add", "other", "--local"]).unwrap();
    let out =
        s.gw.ssh(&s.alice.private, "alice:other")
            .arg("true")
            .output()
            .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("not granted access to target 'other'"),
        "{}",
        stderr(&out)
    );
    s.gw.wait_log("session refused", Duration::from_secs(5))
        .unwrap();

    // No target and no terminal: the user is told how to choose one.
    let out =
        s.gw.ssh(&s.alice.private, "alice")
            .arg("true")
            .output()
            .unwrap();
    assert!(
        stderr(&out).contains("alice:TARGET@gateway") && stderr(&out).contains("srv"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn target_down_is_reported_quickly() {
    let mut gw = Gateway::init().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let k = gw.add_key_user("alice").unwrap();
    let tk = Keypair::generate(keys.path(), "target").unwrap();
    let port = free_port().to_string();
    gw.cli(&[
        "target",
        "add",
        "down",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--login",
        "root",
        "--key",
        &tk.private.display().to_string(),
        "--trust-on-first-use",
    ])
    .unwrap();
    gw.cli(&["grant", "alice", "down"]).unwrap();
    gw.start().unwrap();
    let t = Instant::now();
    let out = gw
        .ssh(&k.private, "alice:down")
        .arg("true")
        .output()
        .unwrap();
    assert!(t.elapsed() < Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("target down (127.0.0.1:") && stderr(&out).contains("unreachable"),
        "{}",
        stderr(&out)
    );
}

/// A TCP relay on a fixed port whose backend can be switched: "the machine behind the
/// address was replaced".
struct Relay {
    port: u16,
    backend: std::sync::Arc<std::sync::atomic::AtomicU16>,
}

impl Relay {
    fn start(backend: u16) -> Relay {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let b = std::sync::Arc::new(std::sync::atomic::AtomicU16::new(backend));
        let b2 = b.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) =
                    std::net::TcpStream::connect(("127.0.0.1", b2.load(Ordering::SeqCst)))
                else {
                    continue;
                };
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    });
                }
            }
        });
        Relay { port, backend: b }
    }
}

#[test]
fn host_key_mismatch_is_refused_and_tofu_pins() {
    let sshd = Sshd::start().unwrap();
    let other = Sshd::start().unwrap();
    let mut gw = Gateway::init().unwrap();
    let k = gw.add_key_user("alice").unwrap();
    let port = sshd.port().to_string();
    let key = sshd.client_key_path().display().to_string();
    let login = sshd.login();
    let relay = Relay::start(sshd.port());
    let relay_port = relay.port.to_string();
    // Pinned to another server's key.
    gw.cli(&[
        "target",
        "add",
        "pinned",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--login",
        &login,
        "--key",
        &key,
        "--host-key",
        &other.host_key_line(),
    ])
    .unwrap();
    gw.cli(&[
        "target",
        "add",
        "tofu",
        "--host",
        "127.0.0.1",
        "--port",
        &relay_port,
        "--login",
        &login,
        "--key",
        &key,
        "--trust-on-first-use",
    ])
    .unwrap();
    gw.cli(&["grant", "alice", "pinned"]).unwrap();
    gw.cli(&["grant", "alice", "tofu"]).unwrap();
    gw.start().unwrap();

    let out = gw
        .ssh(&k.private, "alice:pinned")
        .arg("true")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("does not match the pinned key"),
        "{}",
        stderr(&out)
    );
    assert!(gw.log().contains("does not match the pinned key"));

    let out = gw
        .ssh(&k.private, "alice:tofu")
        .arg("echo first")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "first\n",
        "{}",
        stderr(&out)
    );
    let listed = gw.cli(&["target", "list"]).unwrap();
    assert!(listed.contains("tofu-pinned"), "{listed}");
    gw.wait_log("pinned host key on first use", Duration::from_secs(5))
        .unwrap();

    // The machine behind the address is replaced (another host key): refused from now on.
    relay
        .backend
        .store(other.port(), std::sync::atomic::Ordering::SeqCst);
    let out = gw
        .ssh(&k.private, "alice:tofu")
        .arg("echo second")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("second"));
    assert!(
        stderr(&out).contains("does not match the pinned key"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn sessions_are_refused_or_ended_when_the_recording_cannot_be_written() {
    let mut s = Setup::new().unwrap();
    // A broken recordings folder: where the day's folder should be there is a file.
    let year = time_year();
    let year_dir = s.gw.data.join("recordings").join(&year);
    std::fs::create_dir_all(year_dir.parent().unwrap()).unwrap();
    let _ = std::fs::remove_dir_all(&year_dir);
    std::fs::write(&year_dir, b"not a folder").unwrap();
    let out = s.ssh().arg("echo should-not-run").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("should-not-run"));
    assert!(
        stderr(&out).contains("cannot be recorded"),
        "{}",
        stderr(&out)
    );
    s.gw.wait_log("recording cannot be started", Duration::from_secs(5))
        .unwrap();
    std::fs::remove_file(&year_dir).unwrap();

    // A gateway whose files may not grow past 2 MiB: a session producing more is ended.
    s.gw.stop();
    s.gw.start_limited(Some(2048)).unwrap();
    let t = Instant::now();
    let out = s
        .ssh()
        .arg("head -c 20000000 /dev/urandom; sleep 30")
        .output()
        .unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(25),
        "the session was not ended"
    );
    assert_ne!(out.status.code(), Some(0));
    assert!(out.stdout.len() < 20_000_000);
    assert!(
        stderr(&out).contains("recording could not be written"),
        "{}",
        stderr(&out)
    );
    s.gw.wait_log("recording failed", Duration::from_secs(5))
        .unwrap();
    s.gw.wait_idle(Duration::from_secs(10)).unwrap();
    let sessions = s.gw.sessions().unwrap();
    assert!(
        sessions[0]["end_reason"]
            .as_str()
            .unwrap_or("")
            .contains("recording"),
        "{sessions:?}"
    );
}

fn time_year() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn refused_credential_and_silent_target_are_reported_within_the_timeout() {
    let sshd = Sshd::start().unwrap();
    let mut gw = Gateway::init().unwrap();
    // A target that accepts TCP connections and never says anything.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port().to_string();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in silent.incoming().flatten() {
            held.push(c);
        }
    });
    let cfg = gw.data.join("custos.toml");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("connect_timeout_secs = 10", "connect_timeout_secs = 2");
    std::fs::write(&cfg, text).unwrap();
    let keys = tempfile::tempdir().unwrap();
    let k = gw.add_key_user("alice").unwrap();
    let wrong = Keypair::generate(keys.path(), "wrong").unwrap();
    let port = sshd.port().to_string();
    let login = sshd.login();
    gw.cli(&[
        "target",
        "add",
        "badcred",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--login",
        &login,
        "--key",
        &wrong.private.display().to_string(),
        "--host-key",
        &sshd.host_key_line(),
    ])
    .unwrap();
    gw.cli(&[
        "target",
        "add",
        "silent",
        "--host",
        "127.0.0.1",
        "--port",
        &silent_port,
        "--login",
        "x",
        "--key",
        &wrong.private.display().to_string(),
        "--trust-on-first-use",
    ])
    .unwrap();
    gw.cli(&["grant", "alice", "badcred"]).unwrap();
    gw.cli(&["grant", "alice", "silent"]).unwrap();
    gw.start().unwrap();

    let out = gw
        .ssh(&k.private, "alice:badcred")
        .arg("true")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("refused the gateway's credential"),
        "{}",
        stderr(&out)
    );

    let t = Instant::now();
    let out = gw
        .ssh(&k.private, "alice:silent")
        .arg("true")
        .output()
        .unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("did not answer within 2 s"),
        "{}",
        stderr(&out)
    );
    assert!(gw.log().contains("did not answer within 2 s"));
}
