//! File transfer clients (sftp, scp, rsync) through the sshd fixture.

use std::fs;
use std::process::{Command, Output};

use custos_testkit::Sshd;

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("client runs")
}

fn check(output: &Output, sshd: &Sshd) {
    assert!(
        output.status.success(),
        "status {}\nstdout {}\nstderr {}\nsshd log:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        sshd.log()
    );
}

/// Binary content that would expose newline or encoding mangling.
fn payload() -> Vec<u8> {
    (0..64 * 1024).map(|i: u32| (i * 31 % 251) as u8).collect()
}

#[test]
fn sftp_put_and_get_round_trip() {
    let sshd = Sshd::start().expect("sshd starts");
    let work = tempfile::tempdir().unwrap();
    let local = work.path().join("local.bin");
    let remote = work.path().join("remote.bin");
    let back = work.path().join("back.bin");
    fs::write(&local, payload()).unwrap();
    let batch = work.path().join("batch");
    fs::write(
        &batch,
        format!(
            "put {} {}\nget {} {}\n",
            local.display(),
            remote.display(),
            remote.display(),
            back.display()
        ),
    )
    .unwrap();
    let out = run(sshd.sftp().arg("-b").arg(&batch).arg(sshd.destination()));
    check(&out, &sshd);
    assert_eq!(fs::read(&remote).unwrap(), payload());
    assert_eq!(fs::read(&back).unwrap(), payload());
    assert!(sshd.log().contains("subsystem 'sftp'"), "{}", sshd.log());
}

#[test]
fn scp_upload_and_download() {
    let sshd = Sshd::start().expect("sshd starts");
    let work = tempfile::tempdir().unwrap();
    let local = work.path().join("up.bin");
    let remote = work.path().join("there.bin");
    let back = work.path().join("down.bin");
    fs::write(&local, payload()).unwrap();
    let remote_spec = format!("{}:{}", sshd.destination(), remote.display());
    check(&run(sshd.scp().arg(&local).arg(&remote_spec)), &sshd);
    check(&run(sshd.scp().arg(&remote_spec).arg(&back)), &sshd);
    assert_eq!(fs::read(&back).unwrap(), payload());
}

#[test]
fn rsync_over_ssh() {
    let sshd = Sshd::start().expect("sshd starts");
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("src");
    fs::create_dir_all(source.join("nested")).unwrap();
    fs::write(source.join("a.txt"), "alpha\n").unwrap();
    fs::write(source.join("nested/b.bin"), payload()).unwrap();
    let target = work.path().join("dst");
    let out = run(sshd
        .rsync()
        .arg("-a")
        .arg(format!("{}/", source.display()))
        .arg(format!("{}:{}/", sshd.destination(), target.display())));
    check(&out, &sshd);
    assert_eq!(fs::read_to_string(target.join("a.txt")).unwrap(), "alpha\n");
    assert_eq!(fs::read(target.join("nested/b.bin")).unwrap(), payload());
}
