//! The quickstart path: `init` creates an admin with a one-time password and the demo target
//! `local`; the admin logs in with the real ssh client, through the menu or by name.

mod support;

use custos_testkit::{Askpass, Pty};
use std::time::Duration;
use support::Gateway;

const T: Duration = Duration::from_secs(15);

#[test]
fn admin_reaches_the_local_target_by_name_and_through_the_menu() {
    let mut gw = Gateway::init().unwrap();
    let password = gw.admin_password().expect("init prints the admin password");
    assert!(password.len() >= 16);
    gw.start().unwrap();
    let ask = Askpass::new(&password).unwrap();

    // Without a terminal the one-time password cannot be replaced, so nothing runs.
    let out = ask
        .ssh_cmd(gw.port)
        .arg("admin:local@127.0.0.1")
        .arg("echo should-not-run")
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("should-not-run"));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("one-time password"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Interactive, through the menu, choosing a new password first.
    let mut c = ask.ssh_cmd(gw.port);
    c.arg("-tt").arg("admin@127.0.0.1");
    let mut p = Pty::spawn(c, 80, 24).unwrap();
    p.expect("New password: ", T).unwrap();
    p.send_line("short").unwrap();
    p.expect("at least 12 characters", T).unwrap();
    p.expect("New password: ", T).unwrap();
    p.send_line("My-Own-Passw0rd-2026").unwrap();
    p.expect("Retype new password: ", T).unwrap();
    p.send_line("My-Own-Passw0rd-2026").unwrap();
    p.expect("Password changed", T).unwrap();
    p.expect("Choose a target", T).unwrap();
    assert!(p.output().contains("local"));
    p.send_line("1").unwrap();
    p.expect("Connecting to local", T).unwrap();
    p.send_line("echo menu-$((4*4))").unwrap();
    p.expect("menu-16", T).unwrap();
    p.send_line("exit").unwrap();
    p.wait(T).unwrap();

    // The one-time password no longer works; the new one does, by target name.
    let out = ask
        .ssh_cmd(gw.port)
        .arg("admin:local@127.0.0.1")
        .arg("true")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(255));
    let mine = Askpass::new("My-Own-Passw0rd-2026").unwrap();
    let out = mine
        .ssh_cmd(gw.port)
        .arg("admin:local@127.0.0.1")
        .arg("echo local-$((2+3)); id -un")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("local-5\n"),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success());
    gw.wait_idle(T).unwrap();
    let users = gw.cli(&["user", "list"]).unwrap();
    assert!(
        users
            .lines()
            .any(|l| l.starts_with("admin") && l.contains(" yes ")),
        "{users}"
    );

    let sessions = gw.sessions().unwrap();
    assert_eq!(sessions.len(), 2);
    assert!(
        sessions
            .iter()
            .all(|s| s["target"] == "local" && s["user"] == "admin")
    );
    let id = sessions[1]["id"].as_str().unwrap().to_string();
    let text = gw.cli(&["export", &id, "--format", "text"]).unwrap();
    assert!(!text.contains("My-Own-Passw0rd"));
    assert!(text.contains("menu-16"), "{text}");
    let all = gw.cli(&["recordings", "verify"]).unwrap();
    assert_eq!(
        all.lines().filter(|l| l.starts_with("ok")).count(),
        2,
        "{all}"
    );
}

#[test]
fn cli_manages_users_targets_and_grants_without_leaking_credentials() {
    let gw = Gateway::init().unwrap();
    gw.add_key_user("erin").unwrap();
    let users: serde_json::Value =
        serde_json::from_str(&gw.cli(&["user", "list", "--json"]).unwrap()).unwrap();
    assert!(
        users
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["name"] == "erin")
    );
    gw.cli_stdin(
        &[
            "target",
            "add",
            "db1",
            "--host",
            "db1.example",
            "--login",
            "postgres",
            "--password-stdin",
            "--trust-on-first-use",
            "--label",
            "env=prod",
        ],
        "TargetPassw0rd!\n",
    )
    .unwrap();
    let listed = gw.cli(&["target", "list", "--json"]).unwrap();
    assert!(listed.contains("db1.example") && listed.contains("env"));
    assert!(!listed.contains("TargetPassw0rd"));
    for f in gw.data_files() {
        let b = std::fs::read(&f).unwrap();
        assert!(
            !b.windows(14).any(|w| w == b"TargetPassw0rd"),
            "credential in plaintext in {}",
            f.display()
        );
    }
    gw.cli(&["grant", "erin", "db1"]).unwrap();
    let out = gw.cli_raw(&["grant", "erin", "nope"]).unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));
    gw.cli(&["revoke", "erin", "db1"]).unwrap();
    let out = gw
        .cli_raw(&[
            "target",
            "add",
            "x",
            "--host",
            "h",
            "--login",
            "l",
            "--password-stdin",
        ])
        .unwrap();
    assert!(!out.status.success());
    gw.cli(&["user", "remove", "erin"]).unwrap();
    gw.cli(&["target", "remove", "db1"]).unwrap();
    // Bad input is explained.
    let out = gw.cli_raw(&["user", "add", "bad:name"]).unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("contains ':'"));
    let out = gw
        .cli_raw(&["user", "add", "f", "--expires", "tomorrow"])
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("RFC 3339"));
}

#[test]
fn local_target_os_user_and_refused_x11_forwarding() {
    let mut gw = Gateway::init().unwrap();
    let k = gw.add_key_user("erin").unwrap();
    let me = custos_testkit::current_user().unwrap();
    gw.cli(&["target", "add", "asme", "--local", "--os-user", &me])
        .unwrap();
    gw.cli(&[
        "target",
        "add",
        "ghost",
        "--local",
        "--os-user",
        "no-such-account-here",
    ])
    .unwrap();
    gw.cli(&["grant", "erin", "asme"]).unwrap();
    gw.cli(&["grant", "erin", "ghost"]).unwrap();
    gw.start().unwrap();

    let out = gw
        .ssh(&k.private, "erin:asme")
        .arg("id -un")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), me);

    let out = gw
        .ssh(&k.private, "erin:ghost")
        .arg("true")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no OS account named 'no-such-account-here'"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // X11 forwarding is refused, and the refusal is in the recording.
    let out = gw
        .ssh(&k.private, "erin:asme")
        .arg("-X")
        .env("DISPLAY", "127.0.0.1:99")
        .arg("echo x11-$((1+1))")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("x11-2"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    gw.wait_idle(T).unwrap();
    let id = gw.last_session().unwrap();
    let jsonl = gw.cli(&["export", &id, "--format", "jsonl"]).unwrap();
    assert!(jsonl.contains("refused X11 forwarding"), "{jsonl}");
}
