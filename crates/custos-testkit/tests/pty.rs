//! The pseudo-terminal driver, locally and through ssh.

use std::process::Command;
use std::time::{Duration, Instant};

use custos_testkit::{Pty, Sshd};

const STEP: Duration = Duration::from_secs(10);

fn bash() -> Command {
    let mut cmd = Command::new("bash");
    cmd.args(["--norc", "--noprofile", "-i"])
        .env("PS1", "custos$ ")
        .env_remove("PROMPT_COMMAND");
    cmd
}

#[test]
fn bash_sees_initial_size_and_resize() {
    let mut pty = Pty::spawn(bash(), 80, 24).expect("bash starts");
    pty.expect("custos$ ", STEP).unwrap();
    pty.send_line("stty size").unwrap();
    pty.expect("24 80", STEP).unwrap();
    pty.expect("custos$ ", STEP).unwrap();

    pty.resize(100, 30).unwrap();
    pty.send_line("stty size").unwrap();
    pty.expect("30 100", STEP).unwrap();

    // $((...)) keeps the typed (echoed) command from matching the expected result.
    pty.send_line("echo $((6 * 7)); tty").unwrap();
    pty.expect("42", STEP).unwrap();
    pty.expect("/dev/pts/", STEP).unwrap();

    pty.send_line("exit 7").unwrap();
    let status = pty.wait(STEP).unwrap();
    assert_eq!(status.code(), Some(7));
    pty.expect_eof(STEP).unwrap();
}

#[test]
fn expect_consumes_output_and_reports_what_it_saw() {
    let mut pty = Pty::spawn(Command::new("cat"), 80, 24).expect("cat starts");
    pty.send_line("first marker").unwrap();
    // The terminal echoes the typed line and cat prints it again: two occurrences.
    pty.expect("first marker", STEP).unwrap();
    pty.expect("first marker", STEP).unwrap();
    let started = Instant::now();
    let err = pty
        .expect("first marker", Duration::from_millis(200))
        .expect_err("only two copies exist");
    assert!(started.elapsed() < Duration::from_secs(2));
    let message = format!("{err:#}");
    assert!(message.contains("did not appear"), "{message}");
    assert!(message.contains("first marker"), "{message}");
    assert_eq!(pty.output().matches("first marker").count(), 2);

    pty.send_control('d').unwrap();
    assert!(pty.wait(STEP).unwrap().success());
    pty.expect_eof(STEP).unwrap();
    let err = pty.expect("anything", STEP).expect_err("output ended");
    assert!(format!("{err:#}").contains("end of output"), "{err:#}");
}

#[test]
fn drop_kills_a_running_program() {
    let pty = Pty::spawn(
        {
            let mut cmd = Command::new("sleep");
            cmd.arg("600");
            cmd
        },
        80,
        24,
    )
    .unwrap();
    let pid = pty.pid() as libc::pid_t;
    let started = Instant::now();
    drop(pty);
    assert!(started.elapsed() < Duration::from_secs(2));
    // Reaped: the pid no longer exists (barring immediate reuse).
    assert_ne!(unsafe { libc::kill(pid, 0) }, 0);
}

#[test]
fn ssh_tty_session_echo_resize_and_exit_status() {
    let sshd = Sshd::start().expect("sshd starts");
    let mut cmd = sshd.ssh();
    cmd.arg("-tt").arg(sshd.destination());
    let mut pty = Pty::spawn(cmd, 80, 24).expect("ssh starts");

    pty.send_line("echo hel''lo").unwrap();
    pty.expect("hello", STEP).unwrap();
    pty.send_line("stty size").unwrap();
    pty.expect("24 80", STEP).unwrap();

    // The window-change request travels asynchronously to the remote pty, so poll for it.
    pty.resize(120, 40).unwrap();
    let deadline = Instant::now() + STEP;
    loop {
        pty.send_line("stty size").unwrap();
        if pty.expect("40 120", Duration::from_millis(500)).is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "remote never saw 40x120: {}",
            pty.output()
        );
    }

    pty.send_line("exit 3").unwrap();
    let status = pty.wait(STEP).unwrap();
    assert_eq!(status.code(), Some(3), "{}", pty.output());
    let log = sshd.log();
    assert!(log.contains("Accepted publickey"), "{log}");
}
