//! The sshd fixture against the real OpenSSH client.

use std::fs;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};
use std::time::Duration;

use custos_testkit::{SSH, Sshd, free_port, ssh_base_args, wait_for_port};

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("client runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn fixture_exposes_keys_login_and_log() {
    let sshd = Sshd::start().expect("sshd starts");
    assert_ne!(sshd.port(), 0);
    let host_key = sshd.host_key_line();
    let fields: Vec<&str> = host_key.split(' ').collect();
    assert_eq!(fields.len(), 2, "{host_key}");
    assert_eq!(fields[0], "ssh-ed25519");
    assert!(fields[1].starts_with("AAAA"), "{host_key}");

    let mode = fs::metadata(sshd.client_key_path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(!sshd.login().is_empty());
    if unsafe { libc::geteuid() } == 0 {
        assert_eq!(sshd.login(), "root");
    }
    let log = sshd.log();
    assert!(log.contains(&format!("port {}", sshd.port())), "{log}");
    wait_for_port(sshd.port(), Duration::from_secs(1)).expect("port accepts TCP");
}

#[test]
fn ssh_exec_output_and_exit_status() {
    let sshd = Sshd::start().expect("sshd starts");
    let ok = run(sshd.ssh().arg(sshd.destination()).arg("echo ok"));
    assert!(ok.status.success(), "{}\n{}", stderr(&ok), sshd.log());
    assert_eq!(stdout(&ok), "ok\n");
    // LogLevel=ERROR keeps client noise such as "Permanently added" out of stderr.
    assert_eq!(stderr(&ok), "");

    let three = run(sshd.ssh().arg(sshd.destination()).arg("exit 3"));
    assert_eq!(three.status.code(), Some(3), "{}", stderr(&three));

    let log = sshd.log();
    assert!(
        log.contains(&format!("Accepted publickey for {}", sshd.login())),
        "{log}"
    );
}

#[test]
fn host_key_line_is_the_key_the_server_presents() {
    let sshd = Sshd::start().expect("sshd starts");
    let known_hosts = sshd.dir().join("pinned_known_hosts");
    let connect = |line: &str| {
        fs::write(&known_hosts, format!("{line}\n")).unwrap();
        // ssh keeps the first value of an option, so these must precede the base arguments.
        let mut cmd = Command::new(SSH);
        cmd.arg("-o")
            .arg("StrictHostKeyChecking=yes")
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
            .args(ssh_base_args(sshd.port(), Some(sshd.client_key_path())))
            .arg(sshd.destination())
            .arg("true");
        run(&mut cmd)
    };
    let pinned = connect(&sshd.known_hosts_line());
    assert!(pinned.status.success(), "{}", stderr(&pinned));

    let other = Sshd::start().expect("second sshd starts");
    assert_ne!(other.port(), sshd.port());
    assert_ne!(other.host_key_line(), sshd.host_key_line());
    let wrong = connect(&format!(
        "[127.0.0.1]:{} {}",
        sshd.port(),
        other.host_key_line()
    ));
    assert!(!wrong.status.success());
    assert!(
        stderr(&wrong).contains("Host key verification failed"),
        "{}",
        stderr(&wrong)
    );
}

#[test]
fn extra_config_overrides_and_match_blocks_apply() {
    let sshd = Sshd::start_with(&format!(
        "PermitUserEnvironment no\nMatch User {}\n    ForceCommand echo forced\n",
        custos_testkit::current_user().unwrap()
    ))
    .expect("sshd starts with extra config");
    let out = run(sshd.ssh().arg(sshd.destination()).arg("echo ordinary"));
    assert!(out.status.success(), "{}\n{}", stderr(&out), sshd.log());
    assert_eq!(stdout(&out), "forced\n");
}

#[test]
fn broken_extra_config_reports_the_sshd_log() {
    let err = Sshd::start_with("NoSuchKeyword yes\n").expect_err("sshd rejects the config");
    let message = format!("{err:#}");
    assert!(message.contains("NoSuchKeyword"), "{message}");
}

#[test]
fn stop_releases_the_port() {
    let mut sshd = Sshd::start().expect("sshd starts");
    let port = sshd.port();
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
    sshd.stop();
    assert!(sshd.pid().is_none());
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    sshd.stop();
}

#[test]
fn free_port_is_bindable() {
    let port = free_port();
    assert_ne!(port, 0);
    std::net::TcpListener::bind(("127.0.0.1", port)).expect("port is free");
}
