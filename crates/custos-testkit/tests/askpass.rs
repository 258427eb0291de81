//! Password logins through SSH_ASKPASS.

use std::process::Stdio;
use std::time::{Duration, Instant};

use custos_testkit::{Askpass, Sshd};

#[test]
fn wrong_password_is_refused_quickly() {
    let sshd = Sshd::start().expect("sshd starts");
    let askpass = Askpass::new("definitely-not-the-password").unwrap();
    let started = Instant::now();
    let out = askpass
        .ssh_cmd(sshd.port())
        .arg(sshd.destination())
        .arg("echo should-not-run")
        .stdin(Stdio::null())
        .output()
        .expect("ssh runs");
    let elapsed = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("Permission denied"), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("should-not-run"));
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");

    // The askpass program was asked exactly once, and sshd checked a password (not a key).
    let prompts = askpass.prompts();
    assert_eq!(prompts.len(), 1, "{prompts:?}");
    assert!(prompts[0].contains("password"), "{prompts:?}");
    let log = sshd.log();
    assert!(
        log.contains(&format!("Failed password for {}", sshd.login()))
            || log.contains("account is locked"),
        "{log}"
    );
    assert!(!log.contains("Accepted"), "{log}");
}

#[test]
fn password_options_disable_keys() {
    let askpass = Askpass::new("x").unwrap();
    let cmd = askpass.ssh_cmd(22);
    let args: Vec<String> = cmd
        .get_args()
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect();
    assert!(args.contains(&"PubkeyAuthentication=no".to_string()));
    assert!(!args.contains(&"BatchMode=yes".to_string()));
    let envs: Vec<_> = cmd.get_envs().collect();
    assert!(
        envs.iter().any(
            |(key, value)| *key == "SSH_ASKPASS_REQUIRE" && value.is_some_and(|v| v == "force")
        )
    );
}
