//! The stock OpenSSH clients, preconfigured for tests.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use tempfile::TempDir;

/// Path of the OpenSSH client.
pub const SSH: &str = "/usr/bin/ssh";
/// Path of the OpenSSH SFTP client.
pub const SFTP: &str = "/usr/bin/sftp";
/// Path of the OpenSSH copy client.
pub const SCP: &str = "/usr/bin/scp";
/// Name of rsync, looked up on `PATH` like rsync itself looks up `ssh`.
const RSYNC: &str = "rsync";

/// Options shared by ssh, sftp and scp (everything except the port flag).
///
/// - `-F /dev/null`: ignore `~/.ssh/config` and `/etc/ssh/ssh_config`, so the host machine's
///   settings cannot change test behaviour.
/// - host keys are accepted without prompting and never remembered;
/// - `IdentityAgent=none`: a developer's ssh-agent cannot offer extra keys;
/// - `LogLevel=ERROR`: stderr holds errors only (no "Warning: Permanently added").
/// - with a key: `IdentitiesOnly=yes` and `BatchMode=yes`, so a broken key fails at once
///   instead of falling back to a password prompt.
fn common_options(key: Option<&Path>) -> Vec<String> {
    let mut args: Vec<String> = [
        "-F",
        "/dev/null",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "ConnectTimeout=10",
        "-o",
        "IdentityAgent=none",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    if let Some(key) = key {
        args.push("-i".into());
        args.push(key.display().to_string());
        for option in ["IdentitiesOnly=yes", "BatchMode=yes"] {
            args.push("-o".into());
            args.push(option.into());
        }
    }
    args
}

/// Arguments for `ssh` to reach `127.0.0.1:port` in a test: `-p PORT` plus options that make
/// the client non-interactive and independent of the machine's ssh configuration.
///
/// With `key`, only that key is offered and `BatchMode=yes` forbids password prompts. Without
/// a key, nothing forbids prompts; combine with [`Askpass`] for password logins.
///
/// ssh keeps the first value it sees for an option, so to override one of these (for example
/// `-o StrictHostKeyChecking=yes` with a pinned `UserKnownHostsFile`), pass the override
/// before these arguments; passing it after them has no effect.
pub fn ssh_base_args(port: u16, key: Option<&Path>) -> Vec<String> {
    let mut args = vec!["-p".to_string(), port.to_string()];
    args.extend(common_options(key));
    args
}

/// `sftp` and `scp` spell the port flag `-P`.
fn copy_base_args(port: u16, key: Option<&Path>) -> Vec<String> {
    let mut args = vec!["-P".to_string(), port.to_string()];
    args.extend(common_options(key));
    args
}

/// Options that make ssh log in with a password only, asking for it exactly once.
pub fn ssh_password_args() -> Vec<String> {
    [
        "-o",
        "PreferredAuthentications=password,keyboard-interactive",
        "-o",
        "PubkeyAuthentication=no",
        "-o",
        "NumberOfPasswordPrompts=1",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

/// `login@127.0.0.1`.
pub fn destination(login: &str) -> String {
    format!("{login}@127.0.0.1")
}

/// `ssh` with [`ssh_base_args`]. Append the destination, then the remote command, e.g.
/// `ssh_cmd(port, Some(key)).arg(destination("root")).arg("echo ok")`.
pub fn ssh_cmd(port: u16, key: Option<&Path>) -> Command {
    let mut cmd = Command::new(SSH);
    cmd.args(ssh_base_args(port, key));
    cmd
}

/// `sftp` with the test options (`-P PORT`). Append further options such as `-b BATCHFILE`
/// before the destination: sftp stops parsing options at the first operand.
pub fn sftp_cmd(port: u16, key: Option<&Path>) -> Command {
    let mut cmd = Command::new(SFTP);
    cmd.args(copy_base_args(port, key));
    cmd
}

/// `scp` with the test options (`-P PORT`). Append options, sources and the target, where
/// remote paths look like `root@127.0.0.1:/path`.
pub fn scp_cmd(port: u16, key: Option<&Path>) -> Command {
    let mut cmd = Command::new(SCP);
    cmd.args(copy_base_args(port, key));
    cmd
}

/// `rsync -e "ssh ..."` with [`ssh_base_args`] as the remote shell. Append options such as
/// `-a`, then sources and the target.
pub fn rsync_cmd(port: u16, key: Option<&Path>) -> Command {
    let mut shell = vec![SSH.to_string()];
    shell.extend(ssh_base_args(port, key));
    let shell: Vec<String> = shell.iter().map(|arg| rsync_quote(arg)).collect();
    let mut cmd = Command::new(RSYNC);
    cmd.arg("-e").arg(shell.join(" "));
    cmd
}

/// Quotes one word for rsync's own splitting of the `-e` string, which understands single
/// quotes, and backslash escapes inside double quotes.
fn rsync_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_=./:,@+%*".contains(c));
    if plain {
        arg.to_string()
    } else if !arg.contains('\'') {
        format!("'{arg}'")
    } else {
        let escaped = arg.replace('\\', "\\\\").replace('"', "\\\"");
        format!("\"{escaped}\"")
    }
}

/// Supplies a password to ssh, sftp and scp without a terminal, through `SSH_ASKPASS`.
///
/// OpenSSH reads passwords from `/dev/tty`, never from stdin. With `SSH_ASKPASS_REQUIRE=force`
/// it runs the program named by `SSH_ASKPASS` instead and reads the password from its stdout.
/// The program written here prints the password from a 0600 file (so no shell quoting of the
/// password is involved) and records each prompt it was shown, see [`Askpass::prompts`].
#[derive(Debug)]
pub struct Askpass {
    dir: TempDir,
    script: PathBuf,
}

impl Askpass {
    /// Writes the askpass program for `password` into a new temporary directory.
    pub fn new(password: &str) -> Result<Askpass> {
        let dir = tempfile::Builder::new()
            .prefix("custos-askpass-")
            .tempdir()
            .context("creating the askpass directory")?;
        let password_file = dir.path().join("password");
        let prompts_file = dir.path().join("prompts");
        let script = dir.path().join("askpass");
        for path in [&password_file, &prompts_file] {
            if path.to_string_lossy().contains('\'') {
                bail!("temporary path {} cannot be quoted", path.display());
            }
        }
        write_private(&password_file, format!("{password}\n").as_bytes(), 0o600)?;
        let program = format!(
            "#!/bin/sh\nprintf '%s\\n' \"$1\" >> '{prompts}'\nexec cat '{password}'\n",
            prompts = prompts_file.display(),
            password = password_file.display(),
        );
        write_private(&script, program.as_bytes(), 0o700)?;
        Ok(Askpass { dir, script })
    }

    /// The askpass program.
    pub fn script(&self) -> &Path {
        &self.script
    }

    /// The prompts ssh showed the askpass program so far, one per call, oldest first.
    pub fn prompts(&self) -> Vec<String> {
        fs::read_to_string(self.dir.path().join("prompts"))
            .map(|text| text.lines().map(String::from).collect())
            .unwrap_or_default()
    }

    /// Sets the askpass environment and appends [`ssh_password_args`] to `cmd`. Call it before
    /// adding the destination, since the options must precede it.
    pub fn configure<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        cmd.env("SSH_ASKPASS", &self.script)
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env("DISPLAY", ":0")
            .args(ssh_password_args())
    }

    /// [`ssh_cmd`] without a key, set up for password login. Append destination and command.
    pub fn ssh_cmd(&self, port: u16) -> Command {
        let mut cmd = ssh_cmd(port, None);
        self.configure(&mut cmd);
        cmd
    }

    /// [`sftp_cmd`] without a key, set up for password login.
    pub fn sftp_cmd(&self, port: u16) -> Command {
        let mut cmd = sftp_cmd(port, None);
        self.configure(&mut cmd);
        cmd
    }

    /// [`scp_cmd`] without a key, set up for password login.
    pub fn scp_cmd(&self, port: u16) -> Command {
        let mut cmd = scp_cmd(port, None);
        self.configure(&mut cmd);
        cmd
    }
}

/// Creates `path` with `mode` and writes `contents`, never exposing it with wider permissions.
fn write_private(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(contents)
        .with_context(|| format!("writing {}", path.display()))?;
    drop(file);
    // The umask applies to the creation mode; make the final mode exact.
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting permissions of {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_flag_spelling_differs_between_ssh_and_copy_clients() {
        assert_eq!(&ssh_base_args(22, None)[..2], ["-p", "22"]);
        assert_eq!(&copy_base_args(22, None)[..2], ["-P", "22"]);
    }

    #[test]
    fn batch_mode_only_with_a_key() {
        assert!(!ssh_base_args(22, None).contains(&"BatchMode=yes".to_string()));
        let with_key = ssh_base_args(22, Some(Path::new("/k")));
        assert!(with_key.contains(&"BatchMode=yes".to_string()));
        assert!(with_key.contains(&"IdentitiesOnly=yes".to_string()));
    }

    #[test]
    fn rsync_quoting() {
        assert_eq!(rsync_quote("-p"), "-p");
        assert_eq!(rsync_quote("a b"), "'a b'");
        assert_eq!(rsync_quote("it's"), "\"it's\"");
        assert_eq!(rsync_quote(""), "''");
    }
}
