//! A private OpenSSH server for end-to-end tests.

use std::ffi::CStr;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tempfile::TempDir;

use crate::client::{rsync_cmd, scp_cmd, sftp_cmd, ssh_cmd};
use crate::keys::Keypair;
use crate::net::{check_port, free_port};

/// Path of the OpenSSH server binary. sshd re-executes itself and insists on an absolute path.
pub const SSHD: &str = "/usr/sbin/sshd";

/// Path of the OpenSSH SFTP server that the fixture registers as the `sftp` subsystem.
pub const SFTP_SERVER: &str = "/usr/lib/openssh/sftp-server";

/// Privilege separation directory that sshd checks for before it starts.
const PRIVSEP_DIR: &str = "/run/sshd";

/// How long sshd gets to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How long sshd gets to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// How many ports to try when another process grabs the chosen free port first.
const BIND_ATTEMPTS: usize = 5;

/// A running `sshd -D` on `127.0.0.1` with its own host key, config, authorized key and log.
///
/// Everything lives in a temporary directory that is removed after the server is stopped (on
/// [`Sshd::stop`] or drop). The generated client key is authorized for every account through
/// `AuthorizedKeysFile`, so [`Sshd::ssh`] logs in as [`Sshd::login`] (the current user) without
/// a password.
///
/// The server runs with `UsePAM no`, so sshd applies its own account checks: an account whose
/// shadow password field starts with `!` (locked, as `passwd -l` leaves it) cannot log in even
/// with a key, and the log says "account is locked". Accounts with `*` or a real hash are fine.
#[derive(Debug)]
pub struct Sshd {
    child: Option<Child>,
    port: u16,
    host_key_line: String,
    client_key: Keypair,
    login: String,
    config_path: PathBuf,
    log_path: PathBuf,
    // Declared last so the directory outlives the server while the value is dropped.
    dir: TempDir,
}

impl Sshd {
    /// Starts a server with the default test configuration.
    pub fn start() -> Result<Sshd> {
        Sshd::start_with("")
    }

    /// Starts a server with `extra_config` merged into the default configuration.
    ///
    /// sshd keeps the first value it reads for most keywords, so plain lines of `extra_config`
    /// are placed before the defaults and override them. From the first `Match` line on, the
    /// text is appended after the defaults instead, because a `Match` block extends to the end
    /// of the file. Keywords that may appear only once per name, such as `Subsystem sftp`,
    /// cannot be redefined this way: sshd rejects the duplicate and the start fails with its
    /// log in the error.
    pub fn start_with(extra_config: &str) -> Result<Sshd> {
        ensure_privsep_dir()?;
        let dir = tempfile::Builder::new()
            .prefix("custos-sshd-")
            .tempdir()
            .context("creating the sshd fixture directory")?;
        let host_key = Keypair::generate(dir.path(), "ssh_host_ed25519_key")?;
        let client_key = Keypair::generate(dir.path(), "client_ed25519")?;
        let authorized_keys = dir.path().join("authorized_keys");
        fs::write(&authorized_keys, format!("{}\n", client_key.public_line))
            .with_context(|| format!("writing {}", authorized_keys.display()))?;
        let login = current_user()?;
        let config_path = dir.path().join("sshd_config");
        let log_path = dir.path().join("sshd.log");
        let pid_path = dir.path().join("sshd.pid");

        let mut last_error = None;
        for _ in 0..BIND_ATTEMPTS {
            let port = free_port();
            check_port(port)?;
            let config = render_config(
                port,
                &host_key.private,
                &authorized_keys,
                &pid_path,
                extra_config,
            );
            fs::write(&config_path, config)
                .with_context(|| format!("writing {}", config_path.display()))?;
            let log = File::create(&log_path)
                .with_context(|| format!("creating {}", log_path.display()))?;
            // A stale pid file from an earlier attempt would fool the readiness check.
            let _ = fs::remove_file(&pid_path);
            let mut child = Command::new(SSHD)
                .arg("-D")
                .arg("-e")
                .arg("-f")
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(log.try_clone().context("duplicating the sshd log handle")?)
                .stderr(log)
                .spawn()
                .with_context(|| format!("spawning {SSHD}"))?;
            match wait_ready(&mut child, port, &pid_path, &log_path, &config_path) {
                Ok(()) => {
                    return Ok(Sshd {
                        child: Some(child),
                        port,
                        host_key_line: host_key.public_line,
                        client_key,
                        login,
                        config_path,
                        log_path,
                        dir,
                    });
                }
                Err(err) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    if !read_log(&log_path).contains("Address already in use") {
                        return Err(err);
                    }
                    last_error = Some(err);
                }
            }
        }
        Err(last_error
            .unwrap_or_else(|| anyhow::anyhow!("sshd did not start"))
            .context(format!(
                "sshd could not bind a port in {BIND_ATTEMPTS} attempts"
            )))
    }

    /// The TCP port the server listens on (on `127.0.0.1`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id of the listening sshd, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The public host key as `ssh-ed25519 AAAA...`, without comment.
    pub fn host_key_line(&self) -> String {
        self.host_key_line.clone()
    }

    /// A `known_hosts` line for this server: `[127.0.0.1]:PORT ssh-ed25519 AAAA...`.
    pub fn known_hosts_line(&self) -> String {
        format!("[127.0.0.1]:{} {}", self.port, self.host_key_line)
    }

    /// The private key (mode 0600) that may log in as any account on this server.
    pub fn client_key_path(&self) -> &Path {
        &self.client_key.private
    }

    /// The client key pair authorized on this server.
    pub fn client_key(&self) -> &Keypair {
        &self.client_key
    }

    /// The account to log in as: the user running the tests.
    pub fn login(&self) -> String {
        self.login.clone()
    }

    /// `login@127.0.0.1`, the destination argument for `ssh` and `sftp`.
    pub fn destination(&self) -> String {
        format!("{}@127.0.0.1", self.login)
    }

    /// Everything sshd (and its per-connection processes) wrote to stderr so far.
    pub fn log(&self) -> String {
        read_log(&self.log_path)
    }

    /// The generated `sshd_config`.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The fixture's temporary directory (keys, config, log, pid file).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `ssh` with the client key and test options; append the destination and command.
    pub fn ssh(&self) -> Command {
        ssh_cmd(self.port, Some(self.client_key_path()))
    }

    /// `sftp` with the client key and test options; append e.g. `-b FILE` and the destination.
    pub fn sftp(&self) -> Command {
        sftp_cmd(self.port, Some(self.client_key_path()))
    }

    /// `scp` with the client key and test options; append sources and target.
    pub fn scp(&self) -> Command {
        scp_cmd(self.port, Some(self.client_key_path()))
    }

    /// `rsync` tunnelled through `ssh` with the client key; append options, sources and target.
    pub fn rsync(&self) -> Command {
        rsync_cmd(self.port, Some(self.client_key_path()))
    }

    /// Stops the server: SIGTERM to sshd and its connection processes, SIGKILL after a grace
    /// period, then reaps it. Calling it again does nothing.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let Ok(pid) = libc::pid_t::try_from(child.id()) else {
            let _ = child.kill();
            let _ = child.wait();
            return;
        };
        let descendants = descendants_of(pid);
        signal(pid, libc::SIGTERM);
        for &child_pid in &descendants {
            signal(child_pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + STOP_GRACE;
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        for &child_pid in &descendants {
            if process_alive(child_pid) {
                signal(child_pid, libc::SIGKILL);
            }
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Polls until sshd listens, or fails with its log if it exits or takes too long.
fn wait_ready(
    child: &mut Child,
    port: u16,
    pid_path: &Path,
    log_path: &Path,
    config_path: &Path,
) -> Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    let listening = format!("Server listening on 127.0.0.1 port {port}");
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    loop {
        if let Some(status) = child.try_wait().context("polling sshd")? {
            bail!(
                "sshd exited during startup ({status}); config {}; log:\n{}",
                config_path.display(),
                read_log(log_path)
            );
        }
        // The log line is printed right after listen(2). The pid file is written once the
        // sockets are bound, so it plus a probe covers configs with a quiet LogLevel.
        if read_log(log_path).contains(&listening) {
            return Ok(());
        }
        if pid_path.exists()
            && TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok()
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "sshd did not listen on {addr} within {START_TIMEOUT:?}; log:\n{}",
                read_log(log_path)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Reads a log file as text; a missing file reads as empty.
fn read_log(path: &Path) -> String {
    fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}

/// The name of the account this process runs as (effective uid).
pub fn current_user() -> Result<String> {
    let uid = unsafe { libc::geteuid() };
    let mut buf = vec![0 as libc::c_char; 4096];
    loop {
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: all pointers are valid for the call; `buf` outlives the use of `pwd`.
        let rc =
            unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc))
                .with_context(|| format!("looking up the account of uid {uid}"));
        }
        if result.is_null() || pwd.pw_name.is_null() {
            bail!("uid {uid} has no passwd entry; sshd cannot log it in");
        }
        // SAFETY: getpwuid_r succeeded, so pw_name points to a NUL-terminated string in `buf`.
        let name = unsafe { CStr::from_ptr(pwd.pw_name) };
        return Ok(name.to_string_lossy().into_owned());
    }
}

/// Creates `/run/sshd` (root-owned, 0755) when it is missing.
fn ensure_privsep_dir() -> Result<()> {
    let path = Path::new(PRIVSEP_DIR);
    if path.is_dir() {
        return Ok(());
    }
    match fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(path)
    {
        Ok(()) => {}
        Err(err) if path.is_dir() => drop(err),
        Err(err) => {
            return Err(err).with_context(|| {
                format!("creating the sshd privilege separation directory {PRIVSEP_DIR}")
            });
        }
    }
    // The umask may have narrowed the mode; sshd wants it not group/world writable, and
    // readable is the conventional state.
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("setting permissions of {PRIVSEP_DIR}"))
}

/// Builds the sshd_config text.
fn render_config(
    port: u16,
    host_key: &Path,
    authorized_keys: &Path,
    pid_file: &Path,
    extra: &str,
) -> String {
    let (extra_head, extra_tail) = split_at_match(extra);
    let mut config = String::new();
    if !extra_head.trim().is_empty() {
        let _ = writeln!(config, "# Overrides given by the test (first value wins)");
        config.push_str(extra_head);
        if !extra_head.ends_with('\n') {
            config.push('\n');
        }
    }
    let _ = write!(
        config,
        "\
# Defaults of the custos-testkit sshd fixture
ListenAddress 127.0.0.1
Port {port}
HostKey {host_key}
PidFile {pid_file}
AuthorizedKeysFile {authorized_keys}
PasswordAuthentication yes
KbdInteractiveAuthentication yes
PubkeyAuthentication yes
PermitRootLogin yes
UsePAM no
StrictModes no
UseDNS no
PrintMotd no
PrintLastLog no
Subsystem sftp {SFTP_SERVER}
AcceptEnv LANG LC_*
AllowTcpForwarding yes
LogLevel VERBOSE
LoginGraceTime 30
MaxStartups 200:30:400
MaxSessions 100
MaxAuthTries 20
",
        host_key = host_key.display(),
        pid_file = pid_file.display(),
        authorized_keys = authorized_keys.display(),
    );
    if sshd_has_source_penalties() {
        // OpenSSH 9.8+ blocks a source address after failed logins; tests fail on purpose.
        config.push_str("PerSourcePenalties no\n");
    }
    if !extra_tail.is_empty() {
        config.push_str(extra_tail);
        if !extra_tail.ends_with('\n') {
            config.push('\n');
        }
    }
    config
}

/// Splits config text before its first `Match` line.
fn split_at_match(extra: &str) -> (&str, &str) {
    let mut offset = 0;
    for line in extra.split_inclusive('\n') {
        let keyword = line.split_whitespace().next().unwrap_or("");
        if keyword.eq_ignore_ascii_case("match") {
            return extra.split_at(offset);
        }
        offset += line.len();
    }
    (extra, "")
}

/// Whether the installed sshd knows `PerSourcePenalties` (OpenSSH 9.8 and later).
fn sshd_has_source_penalties() -> bool {
    static KNOWN: OnceLock<bool> = OnceLock::new();
    *KNOWN.get_or_init(|| sshd_version().is_some_and(|version| version >= (9, 8)))
}

/// The OpenSSH version of [`SSHD`] as (major, minor), read from its usage/version banner.
fn sshd_version() -> Option<(u32, u32)> {
    let output = Command::new(SSHD)
        .arg("-V")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let mut text = String::from_utf8_lossy(&output.stderr).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stdout));
    parse_openssh_version(&text)
}

/// Parses `OpenSSH_9.2p1 ...` into (9, 2).
fn parse_openssh_version(text: &str) -> Option<(u32, u32)> {
    let rest = &text[text.find("OpenSSH_")? + "OpenSSH_".len()..];
    let mut parts = rest.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Sends `sig` to `pid`, ignoring processes that are already gone.
fn signal(pid: libc::pid_t, sig: libc::c_int) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Whether `pid` still exists (zombies included).
fn process_alive(pid: libc::pid_t) -> bool {
    // SAFETY: signal 0 only checks for existence and permission.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// All live descendants of `root`, found through `/proc/*/stat`.
fn descendants_of(root: libc::pid_t) -> Vec<libc::pid_t> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut parents = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // Format: "pid (comm) state ppid ..."; comm may contain spaces and parentheses.
        let Some(after_comm) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let ppid = after_comm
            .split_whitespace()
            .nth(1)
            .and_then(|field| field.parse::<libc::pid_t>().ok());
        if let Some(ppid) = ppid {
            parents.push((pid, ppid));
        }
    }
    let mut found = vec![root];
    let mut index = 0;
    while index < found.len() {
        let parent = found[index];
        for &(pid, ppid) in &parents {
            if ppid == parent && !found.contains(&pid) {
                found.push(pid);
            }
        }
        index += 1;
    }
    found.remove(0);
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn match_blocks_go_last_and_plain_lines_first() {
        let extra = "Banner none\nmatch User nobody\n  PasswordAuthentication no\n";
        let (head, tail) = split_at_match(extra);
        assert_eq!(head, "Banner none\n");
        assert_eq!(tail, "match User nobody\n  PasswordAuthentication no\n");
        let config = render_config(
            2222,
            Path::new("/k"),
            Path::new("/a"),
            Path::new("/p"),
            extra,
        );
        let banner = config.find("Banner none").unwrap();
        let listen = config.find("ListenAddress").unwrap();
        let matched = config.find("match User").unwrap();
        assert!(banner < listen && listen < matched, "{config}");
    }

    #[test]
    fn openssh_versions_parse() {
        assert_eq!(
            parse_openssh_version("unknown option -- V\nOpenSSH_9.2p1 Debian-2+deb12u10, OpenSSL"),
            Some((9, 2))
        );
        assert_eq!(
            parse_openssh_version("OpenSSH_10.0p2 Debian"),
            Some((10, 0))
        );
        assert_eq!(parse_openssh_version("nothing"), None);
    }
}
