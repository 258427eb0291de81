//! Figure 3: bulk throughput and connection set-up, measured three ways to reach one OpenSSH
//! target: directly, through an OpenSSH bastion (ProxyJump), and through a Custos gateway.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use custos_testkit::{
    Keypair, Sshd, destination, free_port, ssh_base_args, ssh_cmd, wait_for_port,
};

use crate::stats::Samples;

/// How one reaches the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    /// `ssh target`.
    Direct,
    /// `ssh -J bastion target`, spelled as the `ProxyCommand` that `-J` stands for, so that the
    /// hop gets the same options and key as the rest of the benchmark.
    ProxyJump,
    /// `ssh user:target@gateway`.
    Custos,
}

impl Way {
    /// Every way, in report order.
    pub const ALL: [Way; 3] = [Way::Direct, Way::ProxyJump, Way::Custos];

    /// Name in the report.
    pub fn label(self) -> &'static str {
        match self {
            Way::Direct => "direct ssh",
            Way::ProxyJump => "ssh -J (OpenSSH bastion)",
            Way::Custos => "Custos gateway",
        }
    }
}

/// A Custos gateway run from the release binary, in a data directory of its own.
struct Gateway {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    log: PathBuf,
    child: Option<Child>,
    // Declared last: the directory outlives the process, which is killed on drop.
    dir: tempfile::TempDir,
}

impl Gateway {
    fn cli(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(&self.bin)
            .arg("--data")
            .arg(&self.data)
            .args(args)
            .output()
            .with_context(|| format!("running {}", self.bin.display()))?;
        if !out.status.success() {
            bail!(
                "custos {args:?} failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The target, the bastion and the gateway, running.
pub struct Fixture {
    target: Sshd,
    bastion: Sshd,
    gateway: Gateway,
    user_key: Keypair,
}

/// The one key exchange every hop uses, so that set-up times compare the ways and not the
/// algorithms: OpenSSH 9.x clients prefer a post-quantum hybrid (sntrup761x25519, which costs
/// about 80 ms per connection here, or mlkem768x25519) that a gateway hop may not offer. The
/// target and bastion sshd accept only this one, which also pins the gateway's own hop to the
/// target.
pub const KEX: &str = "curve25519-sha256";
const SSHD_KEX: &str = "KexAlgorithms curve25519-sha256\n";
const CLIENT_KEX: &[&str] = &["-o", "KexAlgorithms=curve25519-sha256"];

impl Fixture {
    /// Starts everything; `custos_bin` is the gateway binary to run.
    pub fn start(custos_bin: &Path) -> Result<Fixture> {
        let target = Sshd::start_with(SSHD_KEX).context("starting the target sshd")?;
        let bastion = Sshd::start_with(SSHD_KEX).context("starting the bastion sshd")?;
        let dir = tempfile::Builder::new()
            .prefix("custos-bench-")
            .tempdir()
            .context("creating the gateway directory")?;
        let data = dir.path().join("data");
        let mut gateway = Gateway {
            bin: custos_bin.to_path_buf(),
            data,
            port: free_port(),
            log: dir.path().join("gateway.log"),
            child: None,
            dir,
        };
        gateway.cli(&["init"])?;
        let user_key = Keypair::generate(gateway.dir.path(), "user-alice")?;
        gateway.cli(&[
            "user",
            "add",
            "alice",
            "--ssh-key",
            &user_key.public_path().display().to_string(),
        ])?;
        gateway.cli(&[
            "target",
            "add",
            "srv",
            "--host",
            "127.0.0.1",
            "--port",
            &target.port().to_string(),
            "--login",
            &target.login(),
            "--key",
            &target.client_key_path().display().to_string(),
            "--host-key",
            &target.host_key_line(),
        ])?;
        gateway.cli(&["grant", "alice", "srv"])?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&gateway.log)
            .context("opening the gateway log")?;
        let child = Command::new(&gateway.bin)
            .arg("--data")
            .arg(&gateway.data)
            .args([
                "serve",
                "--ssh-listen",
                &format!("127.0.0.1:{}", gateway.port),
            ])
            .env("CUSTOS_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("duplicating the log handle")?)
            .stderr(log)
            .spawn()
            .context("starting custos serve")?;
        gateway.child = Some(child);
        wait_for_port(gateway.port, Duration::from_secs(20))
            .with_context(|| format!("the gateway did not start: {}", gateway.log()))?;
        Ok(Fixture {
            target,
            bastion,
            gateway,
            user_key,
        })
    }

    /// `ssh` to the target one way, ready for the remote command.
    fn ssh(&self, way: Way) -> Command {
        self.ssh_with(way, &[])
    }

    /// `ssh` to the target one way with `extra` options before the destination.
    pub fn ssh_with(&self, way: Way, extra: &[&str]) -> Command {
        match way {
            Way::Direct => {
                let mut c = ssh_cmd(self.target.port(), Some(self.target.client_key_path()));
                c.args(CLIENT_KEX);
                c.args(extra);
                c.arg(destination(&self.target.login()));
                c
            }
            Way::ProxyJump => {
                let mut hop = vec![custos_testkit::SSH.to_string()];
                hop.extend(ssh_base_args(
                    self.bastion.port(),
                    Some(self.bastion.client_key_path()),
                ));
                hop.extend(CLIENT_KEX.iter().map(|a| a.to_string()));
                hop.extend(["-W".to_string(), "%h:%p".to_string()]);
                hop.push(destination(&self.bastion.login()));
                let mut c = Command::new(custos_testkit::SSH);
                // Before the base arguments: ssh keeps the first value of an option.
                c.arg("-o").arg(format!("ProxyCommand={}", hop.join(" ")));
                c.args(ssh_base_args(
                    self.target.port(),
                    Some(self.target.client_key_path()),
                ));
                c.args(CLIENT_KEX);
                c.args(extra);
                c.arg(destination(&self.target.login()));
                c
            }
            Way::Custos => {
                let mut c = ssh_cmd(self.gateway.port, Some(&self.user_key.private));
                c.args(CLIENT_KEX);
                c.args(extra);
                c.arg("alice:srv@127.0.0.1");
                c
            }
        }
    }

    /// Checks that each way reaches the target before anything is timed.
    pub fn check(&self) -> Result<()> {
        for way in Way::ALL {
            let out = self
                .ssh(way)
                .arg("echo custos-bench-ok")
                .stdin(Stdio::null())
                .output()
                .with_context(|| format!("running ssh ({})", way.label()))?;
            if !String::from_utf8_lossy(&out.stdout).contains("custos-bench-ok") {
                bail!(
                    "{} does not reach the target ({}): {}{}",
                    way.label(),
                    out.status,
                    String::from_utf8_lossy(&out.stderr),
                    if way == Way::Custos {
                        self.gateway.log()
                    } else {
                        String::new()
                    }
                );
            }
        }
        Ok(())
    }

    /// The gateway's process id, while it runs.
    pub fn gateway_pid(&self) -> Option<u32> {
        self.gateway.pid()
    }

    /// The gateway's SSH port on 127.0.0.1.
    pub fn gateway_port(&self) -> u16 {
        self.gateway.port
    }

    /// The private key of `alice`, the gateway user granted the target `srv`.
    pub fn user_key_path(&self) -> &Path {
        &self.user_key.private
    }

    /// The target sshd's listening process id, while it runs.
    pub fn target_pid(&self) -> Option<u32> {
        self.target.pid()
    }

    /// The gateway's log so far.
    pub fn gateway_log(&self) -> String {
        self.gateway.log()
    }

    /// The gateway process's CPU time so far (user + system), in seconds.
    fn gateway_cpu(&self) -> Option<f64> {
        process_cpu_seconds(self.gateway.pid()?)
    }
}

/// `utime + stime` of a process from `/proc/PID/stat`, in seconds.
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses; the fields after its last `)` are
    // plain. utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks <= 0 {
        return None;
    }
    Some((utime + stime) as f64 / ticks as f64)
}

/// Figures for one way.
pub struct WayResult {
    pub way: Way,
    /// Bulk output, MB/s.
    pub output_mbps: Samples,
    /// Bulk input, MB/s.
    pub input_mbps: Samples,
    /// `ssh … true`, seconds.
    pub setup_s: Samples,
}

/// What figure 3 reports.
pub struct NetworkResult {
    pub bytes: u64,
    pub ways: Vec<WayResult>,
    /// Gateway CPU seconds per GB of bulk output.
    pub gateway_cpu_output: Samples,
    /// Gateway CPU seconds per GB of bulk input.
    pub gateway_cpu_input: Samples,
}

impl NetworkResult {
    /// The figures of one way.
    pub fn way(&self, way: Way) -> Option<&WayResult> {
        self.ways.iter().find(|w| w.way == way)
    }
}

/// Which parts of figure 3 to measure.
#[derive(Debug, Clone, Copy)]
pub struct Parts {
    pub transfer: bool,
    pub setup: bool,
}

/// Measures the selected parts `runs` times, interleaving the three ways and rotating which
/// goes first, so that slow drift on a shared machine spreads over all of them.
pub fn run(fixture: &Fixture, runs: usize, bytes: u64, parts: Parts) -> Result<NetworkResult> {
    let mut result = NetworkResult {
        bytes,
        ways: Way::ALL
            .iter()
            .map(|&way| WayResult {
                way,
                output_mbps: Samples::new(),
                input_mbps: Samples::new(),
                setup_s: Samples::new(),
            })
            .collect(),
        gateway_cpu_output: Samples::new(),
        gateway_cpu_input: Samples::new(),
    };
    let gb = bytes as f64 / 1e9;
    for run in 0..runs {
        for k in 0..Way::ALL.len() {
            let i = (run + k) % Way::ALL.len();
            let way = Way::ALL[i];
            if parts.setup {
                let secs = timed_setup(fixture, way)?;
                result.ways[i].setup_s.push(secs);
            }
            if parts.transfer {
                let cpu0 = fixture.gateway_cpu();
                let secs = timed_output(fixture, way, bytes)?;
                let cpu1 = settled_cpu(fixture);
                result.ways[i].output_mbps.push(bytes as f64 / 1e6 / secs);
                if way == Way::Custos
                    && let (Some(a), Some(b)) = (cpu0, cpu1)
                {
                    result.gateway_cpu_output.push((b - a) / gb);
                }
                let cpu0 = fixture.gateway_cpu();
                let secs = timed_input(fixture, way, bytes)?;
                let cpu1 = settled_cpu(fixture);
                result.ways[i].input_mbps.push(bytes as f64 / 1e6 / secs);
                if way == Way::Custos
                    && let (Some(a), Some(b)) = (cpu0, cpu1)
                {
                    result.gateway_cpu_input.push((b - a) / gb);
                }
            }
        }
    }
    Ok(result)
}

/// The gateway's CPU time once it has finished with the session that just ended (closing the
/// recording happens after the client is gone).
fn settled_cpu(fixture: &Fixture) -> Option<f64> {
    std::thread::sleep(Duration::from_millis(150));
    fixture.gateway_cpu()
}

fn timed_setup(fixture: &Fixture, way: Way) -> Result<f64> {
    let start = Instant::now();
    let status = fixture
        .ssh(way)
        .arg("true")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("running ssh")?;
    let secs = start.elapsed().as_secs_f64();
    if !status.success() {
        bail!("`ssh … true` failed {} ({status})", way.label());
    }
    Ok(secs)
}

/// Seconds from the first byte of output to the end of `head -c BYTES /dev/zero`, so that the
/// connection set-up is not counted as transfer time.
fn timed_output(fixture: &Fixture, way: Way, bytes: u64) -> Result<f64> {
    let mut child = fixture
        .ssh(way)
        .arg(format!("head -c {bytes} /dev/zero"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("running ssh")?;
    let mut stdout = child.stdout.take().context("ssh stdout")?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut first = None;
    let mut seen = 0u64;
    loop {
        let n = stdout
            .read(&mut buf)
            .with_context(|| format!("reading from ssh ({})", way.label()))?;
        if n == 0 {
            break;
        }
        first.get_or_insert_with(Instant::now);
        seen += n as u64;
    }
    let status = child.wait().context("waiting for ssh")?;
    let secs = first.map_or(0.0, |t| t.elapsed().as_secs_f64());
    if !status.success() || seen != bytes {
        bail!(
            "bulk output failed {} ({status}, {seen} of {bytes} bytes)",
            way.label()
        );
    }
    Ok(secs)
}

/// Seconds from the target's readiness (a marker line printed before `cat` starts) to the end
/// of the upload, so that the connection set-up is not counted as transfer time.
fn timed_input(fixture: &Fixture, way: Way, bytes: u64) -> Result<f64> {
    let mut child = fixture
        .ssh(way)
        .arg("echo ready; exec cat > /dev/null")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("running ssh")?;
    let mut stdout = child.stdout.take().context("ssh stdout")?;
    let mut marker = [0u8; 6];
    stdout
        .read_exact(&mut marker)
        .with_context(|| format!("waiting for the target ({})", way.label()))?;
    let start = Instant::now();
    let mut stdin = child.stdin.take().context("ssh stdin")?;
    write_zeros(&mut stdin, bytes).map_err(|(at, e)| {
        anyhow::anyhow!("writing to ssh ({}) after {at} bytes: {e}", way.label())
    })?;
    drop(stdin);
    let status = child.wait().context("waiting for ssh")?;
    let secs = start.elapsed().as_secs_f64();
    if !status.success() || &marker != b"ready\n" {
        bail!("bulk input failed {} ({status})", way.label());
    }
    Ok(secs)
}

/// Writes `bytes` zero bytes to `w` in large blocks; on failure, how many were written first.
pub fn write_zeros(w: &mut impl Write, bytes: u64) -> Result<(), (u64, std::io::Error)> {
    let block = vec![0u8; 256 * 1024];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        w.write_all(&block[..n]).map_err(|e| (bytes - left, e))?;
        left -= n as u64;
    }
    Ok(())
}
