//! A Custos gateway process for end-to-end tests: its own data directory, a free port, the
//! real `custos` binary, and helpers that set up users and targets through the real CLI.
#![allow(dead_code)]

use anyhow::{Context, Result, bail};
use custos_testkit::{Keypair, Sshd, free_port, wait_for_port};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_custos");

pub struct Gateway {
    pub dir: tempfile::TempDir,
    pub data: PathBuf,
    pub port: u16,
    child: Option<Child>,
    log: PathBuf,
    pub init_stdout: String,
}

impl Gateway {
    /// `custos init` in a fresh data directory (not started).
    pub fn init() -> Result<Gateway> {
        let dir = tempfile::Builder::new().prefix("custos-e2e-").tempdir()?;
        let data = dir.path().join("data");
        let out = Command::new(BIN)
            .arg("--data")
            .arg(&data)
            .arg("init")
            .output()?;
        if !out.status.success() {
            bail!(
                "custos init failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let log = dir.path().join("gateway.log");
        Ok(Gateway {
            dir,
            data,
            port: free_port(),
            child: None,
            log,
            init_stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        })
    }

    /// The admin password printed by `init`.
    pub fn admin_password(&self) -> Option<String> {
        self.init_stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix("password:"))
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_string)
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--data").arg(&self.data);
        c
    }

    /// Runs a CLI command, failing the test with its output if it does not succeed.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        let out = self.cmd().args(args).output()?;
        if !out.status.success() {
            bail!(
                "custos {:?} failed ({}): {}{}",
                args,
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs a CLI command and returns its whole output, whatever its exit status.
    pub fn cli_raw(&self, args: &[&str]) -> Result<Output> {
        Ok(self.cmd().args(args).output()?)
    }

    /// Runs a CLI command with `stdin` as standard input.
    pub fn cli_stdin(&self, args: &[&str], stdin: &str) -> Result<String> {
        let mut child = self
            .cmd()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .context("stdin")?
            .write_all(stdin.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "custos {:?} failed: {}",
                args,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn start(&mut self) -> Result<()> {
        self.start_limited(None)
    }

    /// Starts the gateway, optionally with a file-size limit (in KiB) on its process.
    pub fn start_limited(&mut self, max_file_kib: Option<u64>) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut cmd = match max_file_kib {
            None => Command::new(BIN),
            Some(kib) => {
                let mut c = Command::new("bash");
                c.arg("-c")
                    .arg(format!("ulimit -f {kib}; exec \"$0\" \"$@\""))
                    .arg(BIN);
                c
            }
        };
        let child = cmd
            .arg("--data")
            .arg(&self.data)
            .args(["serve", "--ssh-listen", &format!("127.0.0.1:{}", self.port)])
            .env("CUSTOS_LOG", "info,russh=warn")
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        wait_for_port(self.port, Duration::from_secs(20))
            .with_context(|| format!("gateway did not start: {}", self.log()))?;
        Ok(())
    }

    /// Adds user `name` with a fresh key pair (kept in the test's folder) and returns it.
    pub fn add_key_user(&self, name: &str) -> Result<Keypair> {
        let k = Keypair::generate(self.dir.path(), &format!("user-{name}"))?;
        self.cli(&[
            "user",
            "add",
            name,
            "--ssh-key",
            &k.public_path().display().to_string(),
        ])?;
        Ok(k)
    }

    /// The gateway's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Stops the gateway with SIGKILL (no chance to clean up).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the gateway with SIGTERM and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe_free_sigterm(c.id());
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the gateway log contains `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("gateway log never showed {needle:?}:\n{}", self.log())
    }

    /// An ssh command to the gateway with a key.
    pub fn ssh(&self, key: &Path, login: &str) -> Command {
        let mut c = custos_testkit::ssh_cmd(self.port, Some(key));
        c.arg(format!("{login}@127.0.0.1"));
        c
    }

    /// Sessions as JSON.
    pub fn sessions(&self) -> Result<Vec<serde_json::Value>> {
        let out = self.cli(&["sessions", "list", "--json"])?;
        Ok(serde_json::from_str(&out)?)
    }

    /// Waits until no session is live, so its recording is sealed.
    pub fn wait_idle(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let live = self.cli(&["sessions", "list", "--live", "--json"])?;
            let v: Vec<serde_json::Value> = serde_json::from_str(&live)?;
            if v.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "sessions still live after {timeout:?}: {live}\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The newest session id.
    pub fn last_session(&self) -> Result<String> {
        let s = self.sessions()?;
        Ok(s.first()
            .and_then(|s| s["id"].as_str())
            .context("no session")?
            .to_string())
    }

    /// Every file under the data directory, recursively.
    pub fn data_files(&self) -> Vec<PathBuf> {
        fn walk(p: &Path, out: &mut Vec<PathBuf>) {
            if let Ok(rd) = std::fs::read_dir(p) {
                for e in rd.flatten() {
                    let p = e.path();
                    if p.is_dir() {
                        walk(&p, out)
                    } else if p.is_file() {
                        // Regular files only: the admin socket cannot be read.
                        out.push(p)
                    }
                }
            }
        }
        let mut v = Vec::new();
        walk(&self.data, &mut v);
        v
    }
}

fn unsafe_free_sigterm(pid: u32) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A gateway in front of a real sshd target `srv`, and user `alice` (key) granted it.
pub struct Setup {
    pub sshd: Sshd,
    pub gw: Gateway,
    pub alice: Keypair,
    pub keys_dir: tempfile::TempDir,
}

impl Setup {
    pub fn new() -> Result<Setup> {
        Setup::with_target_args(&[])
    }

    pub fn with_target_args(extra: &[&str]) -> Result<Setup> {
        let sshd = Sshd::start()?;
        let mut gw = Gateway::init()?;
        let keys_dir = tempfile::tempdir()?;
        let alice = gw.add_key_user("alice")?;
        let port = sshd.port().to_string();
        let key = sshd.client_key_path().display().to_string();
        let hk = sshd.host_key_line();
        let mut args = vec![
            "target",
            "add",
            "srv",
            "--host",
            "127.0.0.1",
            "--port",
            &port,
            "--login",
            "root",
            "--key",
            &key,
            "--host-key",
            &hk,
            "--label",
            "env=test",
        ];
        args.extend_from_slice(extra);
        let login = sshd.login();
        let pos = args.iter().position(|a| *a == "root").unwrap_or(0);
        args[pos] = &login;
        gw.cli(&args)?;
        gw.cli(&["grant", "alice", "srv"])?;
        gw.start()?;
        Ok(Setup {
            sshd,
            gw,
            alice,
            keys_dir,
        })
    }

    /// ssh to `alice:srv` through the gateway.
    pub fn ssh(&self) -> Command {
        self.gw.ssh(&self.alice.private, "alice:srv")
    }
}

pub fn run_with_stdin(mut cmd: Command, input: &[u8]) -> Result<Output> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output()?;
    let _ = writer.join();
    Ok(out)
}
