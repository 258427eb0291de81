//! Figure 9: many interactive sessions at once through the gateway, and the memory each one
//! costs.
//!
//! The sessions are opened inside this process with the russh client, each its own connection
//! to `custos serve` with a PTY and a shell on the private OpenSSH target, a few dozen logins in
//! flight at a time. Once every session is open and has been idle for a few seconds, the
//! gateway's memory is read from /proc and compared with its memory before the first session;
//! the OpenSSH processes that serve the same sessions on the target (the `sshd` children of its
//! listener, not the shells) are read the same way, for comparison. Then every session types a
//! short command once a second, the sessions spread evenly over the second, and checks that the
//! answer comes back. A session that fails to open, closes, errs or waits longer than
//! [`ANSWER_WAIT`] for an answer counts as dropped.
//!
//! Limits: the clients, the gateway, the target sshd and its shells all share the machine, so
//! the round trips under load include all of them. Memory is resident memory as the kernel
//! counts it, including what the allocator keeps after freeing; a run after the first starts
//! from a gateway that has already held sessions, and its per-session figure is still taken
//! against the memory before the first run.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use russh::ChannelMsg;
use russh::client;
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use tokio::sync::{Semaphore, mpsc, watch};

use crate::network::{Fixture, process_cpu_seconds};
use crate::stats::Samples;

/// Logins in flight at once while the sessions are opened.
pub const OPEN_IN_FLIGHT: usize = 24;
/// Longest wait for one session to be ready (login, PTY, shell, first answer).
const OPEN_WAIT: Duration = Duration::from_secs(60);
/// Longest wait for the answer to a typed command before the session counts as dropped.
pub const ANSWER_WAIT: Duration = Duration::from_secs(10);
/// Time between two commands of one session.
const TICK: Duration = Duration::from_secs(1);
/// Longest wait, after a run, for the gateway to let go of its sessions.
const SETTLE_WAIT: Duration = Duration::from_secs(60);
const MIB: f64 = 1024.0 * 1024.0;

/// Memory of one process or the sum over several, in bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mem {
    /// Resident set (`VmRSS`).
    pub rss: f64,
    /// Proportional set: shared pages divided among the processes that map them.
    pub pss: f64,
    /// Pages mapped by this process only (`Private_Clean + Private_Dirty`).
    pub private: f64,
}

impl Mem {
    fn add(&mut self, other: Mem) {
        self.rss += other.rss;
        self.pss += other.pss;
        self.private += other.private;
    }
}

/// What figure 9 reports; samples are per run.
pub struct ConcurrencyResult {
    /// Sessions asked for per run.
    pub sessions: usize,
    /// Seconds every session keeps typing.
    pub typing_secs: u64,
    /// Quiet time between the last session opened and the memory reading.
    pub idle: Duration,
    /// Sessions open at the memory reading.
    pub opened: Samples,
    /// Sessions dropped: not opened, closed, failed or missing an answer.
    pub dropped: Samples,
    /// Sessions opened per second, logins in flight limited to [`OPEN_IN_FLIGHT`].
    pub open_per_s: Samples,
    /// Commands answered.
    pub answered: Samples,
    /// Commands typed.
    pub typed: Samples,
    /// Gateway memory per idle session, MiB: RSS, PSS and private growth over the baseline.
    pub gateway_rss_mib: Samples,
    pub gateway_pss_mib: Samples,
    pub gateway_private_mib: Samples,
    /// Gateway RSS growth per session at the end of the typing, MiB.
    pub gateway_busy_rss_mib: Samples,
    /// PSS of the target's sshd processes per idle session, MiB.
    pub sshd_pss_mib: Samples,
    /// RSS of the target's sshd processes per idle session, MiB (shared pages counted in each).
    pub sshd_rss_mib: Samples,
    /// sshd processes per session on the target.
    pub sshd_procs_per_session: f64,
    /// Round trip of a typed command to its answer, ms, over all commands of a run.
    pub rtt_p50_ms: Samples,
    pub rtt_p99_ms: Samples,
    /// CPU while typing, in cores (CPU seconds per second): the gateway, the clients (this
    /// process), the target's sshd processes and shells, and the whole machine.
    pub gateway_cores: Samples,
    pub client_cores: Samples,
    pub target_cores: Samples,
    pub machine_cores: Samples,
    /// Gateway CPU while every session sits idle, in cores.
    pub gateway_idle_cores: Samples,
    /// The gateway before the first session.
    pub baseline: Mem,
    /// Open file descriptors of the gateway per open session.
    pub fds_per_session: f64,
    /// The gateway's soft limit on open files.
    pub fd_limit: Option<u64>,
    /// Why sessions were dropped, over all runs, with counts.
    pub drop_reasons: Vec<(String, usize)>,
}

impl ConcurrencyResult {
    /// Per run: commands typed per session per second of typing (1 when every session kept
    /// the pace; less when answers came later than the next command was due).
    pub fn pace(&self) -> Samples {
        let mut s = Samples::new();
        for (typed, opened) in self.typed.values().iter().zip(self.opened.values()) {
            if *opened > 0.0 {
                s.push(typed / opened / self.typing_secs as f64);
            }
        }
        s
    }
}

/// `runs` runs of `sessions` sessions that each type for `secs` seconds.
pub fn run(
    fixture: &Fixture,
    runs: usize,
    sessions: usize,
    secs: u64,
    idle: Duration,
) -> Result<ConcurrencyResult> {
    let pid = fixture
        .gateway_pid()
        .context("the gateway is not running")?;
    let target_pid = fixture
        .target_pid()
        .context("the target sshd is not running")?;
    let key = russh::keys::load_secret_key(fixture.user_key_path(), None)
        .context("reading the gateway user's key")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let plan = Arc::new(Plan {
        port: fixture.gateway_port(),
        key: Arc::new(key),
        config: Arc::new(client::Config {
            inactivity_timeout: None,
            nodelay: true,
            ..Default::default()
        }),
        sessions,
        typing: Duration::from_secs(secs),
        idle,
    });

    std::thread::sleep(Duration::from_secs(1));
    let baseline = process_mem(pid).context("reading the gateway's memory")?;
    let files_before = open_files(pid).unwrap_or_default();
    let mut result = ConcurrencyResult {
        sessions,
        typing_secs: secs,
        idle,
        opened: Samples::new(),
        dropped: Samples::new(),
        open_per_s: Samples::new(),
        answered: Samples::new(),
        typed: Samples::new(),
        gateway_rss_mib: Samples::new(),
        gateway_pss_mib: Samples::new(),
        gateway_private_mib: Samples::new(),
        gateway_busy_rss_mib: Samples::new(),
        sshd_pss_mib: Samples::new(),
        sshd_rss_mib: Samples::new(),
        sshd_procs_per_session: f64::NAN,
        rtt_p50_ms: Samples::new(),
        rtt_p99_ms: Samples::new(),
        gateway_cores: Samples::new(),
        client_cores: Samples::new(),
        target_cores: Samples::new(),
        machine_cores: Samples::new(),
        gateway_idle_cores: Samples::new(),
        baseline,
        fds_per_session: f64::NAN,
        fd_limit: fd_limit(pid),
        drop_reasons: Vec::new(),
    };
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for r in 0..runs {
        eprintln!(
            "concurrency: run {} of {runs}: opening {sessions} sessions",
            r + 1
        );
        let m = rt.block_on(one_run(plan.clone(), pid, target_pid))?;
        let n = m.opened as f64;
        result.opened.push(n);
        result
            .dropped
            .push(m.outcomes.iter().filter(|o| o.dropped.is_some()).count() as f64);
        result.open_per_s.push(n / m.open_secs);
        if n > 0.0 {
            result
                .gateway_rss_mib
                .push((m.idle.rss - baseline.rss) / n / MIB);
            result
                .gateway_pss_mib
                .push((m.idle.pss - baseline.pss) / n / MIB);
            result
                .gateway_private_mib
                .push((m.idle.private - baseline.private) / n / MIB);
            result.sshd_pss_mib.push(m.sshd.pss / n / MIB);
            result.sshd_rss_mib.push(m.sshd.rss / n / MIB);
            result.sshd_procs_per_session = m.sshd_procs as f64 / n;
            result.fds_per_session = m.fds.saturating_sub(files_before.all) as f64 / n;
            if let Some(busy) = m.busy {
                result
                    .gateway_busy_rss_mib
                    .push((busy.rss - baseline.rss) / n / MIB);
            }
        }
        for (samples, cores) in [
            (&mut result.gateway_cores, m.cores.gateway),
            (&mut result.client_cores, m.cores.clients),
            (&mut result.target_cores, m.cores.target),
            (&mut result.machine_cores, m.cores.machine),
            (&mut result.gateway_idle_cores, m.idle_cores),
        ] {
            if cores.is_finite() {
                samples.push(cores);
            }
        }
        let mut rtts = Samples::new();
        let (mut typed, mut answered) = (0, 0);
        for o in &m.outcomes {
            typed += o.typed;
            answered += o.rtts_ms.len();
            for &t in &o.rtts_ms {
                rtts.push(t);
            }
            if let Some(why) = &o.dropped {
                *reasons.entry(why.clone()).or_default() += 1;
            }
        }
        result.typed.push(typed as f64);
        result.answered.push(answered as f64);
        if !rtts.is_empty() {
            result.rtt_p50_ms.push(rtts.median());
            result.rtt_p99_ms.push(rtts.quantile(0.99));
        }
        eprintln!(
            "concurrency: run {}: {} opened, {} dropped, {answered} of {typed} commands \
             answered, gateway {:.3} MiB RSS per idle session",
            r + 1,
            m.opened,
            m.outcomes.iter().filter(|o| o.dropped.is_some()).count(),
            (m.idle.rss - baseline.rss) / n.max(1.0) / MIB
        );
        if m.outcomes.iter().any(|o| o.dropped.is_some()) {
            let log = fixture.gateway_log();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "concurrency: the gateway's log ends with:\n{}",
                lines[lines.len().saturating_sub(20)..].join("\n")
            );
        }
        if !settle(pid, files_before.sockets) {
            eprintln!("concurrency: the gateway still holds descriptors of ended sessions");
        }
    }
    let mut reasons: Vec<(String, usize)> = reasons.into_iter().collect();
    reasons.sort_by_key(|r| std::cmp::Reverse(r.1));
    result.drop_reasons = reasons;
    if result.opened.max() == 0.0 {
        bail!(
            "no session could be opened through the gateway: {}",
            result
                .drop_reasons
                .first()
                .map_or("no reason recorded", |r| r.0.as_str())
        );
    }
    Ok(result)
}

/// What every session of a run shares.
struct Plan {
    port: u16,
    key: Arc<PrivateKey>,
    config: Arc<client::Config>,
    sessions: usize,
    typing: Duration,
    idle: Duration,
}

/// What one run measured.
struct RunFigures {
    opened: usize,
    open_secs: f64,
    idle: Mem,
    busy: Option<Mem>,
    cores: Cpu,
    idle_cores: f64,
    sshd: Mem,
    sshd_procs: usize,
    fds: usize,
    outcomes: Vec<Outcome>,
}

/// How one session went.
#[derive(Default)]
struct Outcome {
    typed: usize,
    rtts_ms: Vec<f64>,
    /// Why the session was lost, if it was.
    dropped: Option<String>,
}

async fn one_run(plan: Arc<Plan>, pid: u32, target_pid: u32) -> Result<RunFigures> {
    let gate = Arc::new(Semaphore::new(OPEN_IN_FLIGHT));
    let (opened_tx, mut opened_rx) = mpsc::unbounded_channel();
    let (start_tx, start_rx) = watch::channel(None);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(plan.sessions);
    for i in 0..plan.sessions {
        tasks.push(tokio::spawn(session(
            i,
            plan.clone(),
            gate.clone(),
            opened_tx.clone(),
            start_rx.clone(),
        )));
    }
    drop(opened_tx);
    let mut opened = 0;
    let mut settled = 0;
    while let Some(ok) = opened_rx.recv().await {
        settled += 1;
        if ok {
            opened += 1;
            if opened % 100 == 0 {
                eprintln!(
                    "concurrency: {opened} sessions open after {:.1} s",
                    started.elapsed().as_secs_f64()
                );
            }
        }
        if settled == plan.sessions {
            break;
        }
    }
    let open_secs = started.elapsed().as_secs_f64();
    eprintln!(
        "concurrency: {opened} of {} sessions open in {open_secs:.1} s; idle for {} s",
        plan.sessions,
        plan.idle.as_secs()
    );
    let idle_from = (Instant::now(), process_cpu_seconds(pid));
    tokio::time::sleep(plan.idle).await;
    let idle_cores = match (idle_from.1, process_cpu_seconds(pid)) {
        (Some(a), Some(b)) => (b - a) / idle_from.0.elapsed().as_secs_f64(),
        _ => f64::NAN,
    };
    let idle = process_mem(pid).context("reading the gateway's memory")?;
    let fds = open_files(pid).map_or(0, |f| f.all);
    let (sshd, sshd_procs) = sshd_children_mem(target_pid);

    eprintln!(
        "concurrency: every session types a command a second for {} s",
        plan.typing.as_secs()
    );
    let t0 = Instant::now() + Duration::from_millis(100);
    let cpu0 = Cpu::now(pid, target_pid);
    let _ = start_tx.send(Some(t0));
    // Read the gateway as the typing ends, before the sessions close.
    let reading = tokio::spawn({
        let end = t0 + plan.typing;
        async move {
            tokio::time::sleep_until(end.into()).await;
            (process_mem(pid), Cpu::now(pid, target_pid), Instant::now())
        }
    });
    let mut outcomes = Vec::with_capacity(tasks.len());
    for t in tasks {
        outcomes.push(t.await.unwrap_or_else(|e| Outcome {
            dropped: Some(format!("session task failed: {e}")),
            ..Outcome::default()
        }));
    }
    let (busy, cpu1, at) = reading.await.context("the memory reading task failed")?;
    let cores = cpu1.per_second_since(&cpu0, at.duration_since(t0));
    Ok(RunFigures {
        opened,
        open_secs,
        idle,
        busy,
        cores,
        idle_cores,
        sshd,
        sshd_procs,
        fds,
        outcomes,
    })
}

/// The client side: accepts any host key (the gateway runs on this machine for the benchmark).
struct BenchClient;

impl client::Handler for BenchClient {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        _key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

/// An open session: the connection and its shell channel.
struct Open {
    handle: client::Handle<BenchClient>,
    channel: russh::Channel<client::Msg>,
    /// Output read but not yet matched.
    seen: Vec<u8>,
}

/// One session: open it (holding a login slot), report, wait for the start, type, close.
async fn session(
    i: usize,
    plan: Arc<Plan>,
    gate: Arc<Semaphore>,
    opened: mpsc::UnboundedSender<bool>,
    mut start: watch::Receiver<Option<Instant>>,
) -> Outcome {
    let mut out = Outcome::default();
    let permit = gate.acquire().await;
    let open = match tokio::time::timeout(OPEN_WAIT, open(i, &plan)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(format!("could not open: {e:#}")),
        Err(_) => Err(format!("could not open within {} s", OPEN_WAIT.as_secs())),
    };
    drop(permit);
    let _ = opened.send(open.is_ok());
    let mut s = match open {
        Ok(s) => s,
        Err(why) => {
            out.dropped = Some(why);
            return out;
        }
    };

    // Idle until the start, noticing a session the gateway ends meanwhile.
    let t0 = loop {
        tokio::select! {
            changed = start.changed() => {
                if changed.is_err() {
                    out.dropped = Some("the run stopped before the start".into());
                    return out;
                }
                if let Some(t0) = *start.borrow() {
                    break t0;
                }
            }
            msg = s.channel.wait() => {
                if let Err(why) = absorb(&mut s.seen, msg) {
                    out.dropped = Some(format!("{why} while idle"));
                    return out;
                }
            }
        }
    };

    // Sessions spread evenly over the second.
    let mut next = t0 + TICK.mul_f64(i as f64 / plan.sessions as f64);
    let end = t0 + plan.typing;
    let mut pending: Option<(String, Instant)> = None;
    let mut n = 0usize;
    loop {
        let waiting_for = pending.as_ref().map(|(_, at)| *at + ANSWER_WAIT);
        let sleep_to = waiting_for.unwrap_or(next.min(end));
        tokio::select! {
            _ = tokio::time::sleep_until(sleep_to.into()) => {
                if waiting_for.is_some() {
                    out.dropped = Some(format!("no answer within {} s", ANSWER_WAIT.as_secs()));
                    break;
                }
                if next >= end {
                    break;
                }
                let line = format!("echo 'tick-'{i}-{n}\r");
                let token = format!("tick-{i}-{n}\r\n");
                n += 1;
                let at = Instant::now();
                if let Err(e) = s.channel.data(line.as_bytes()).await {
                    out.dropped = Some(format!("typing failed: {e}"));
                    break;
                }
                out.typed += 1;
                pending = Some((token, at));
                next += TICK;
            }
            msg = s.channel.wait() => {
                if let Err(why) = absorb(&mut s.seen, msg) {
                    out.dropped = Some(why);
                    break;
                }
                if let Some((token, at)) = &pending
                    && take(&mut s.seen, token.as_bytes())
                {
                    out.rtts_ms.push(at.elapsed().as_secs_f64() * 1e3);
                    pending = None;
                    // A late answer moves the next command on rather than sending a burst.
                    let now = Instant::now();
                    if next < now {
                        next = now;
                    }
                }
            }
        }
    }
    close(s).await;
    out
}

/// Connects, logs in as `alice:srv`, opens a PTY and a shell, and waits for its first answer.
async fn open(i: usize, plan: &Plan) -> Result<Open> {
    let mut handle = client::connect(plan.config.clone(), ("127.0.0.1", plan.port), BenchClient)
        .await
        .context("connecting to the gateway")?;
    let auth = handle
        .authenticate_publickey(
            "alice:srv",
            PrivateKeyWithHashAlg::new(plan.key.clone(), None),
        )
        .await
        .context("logging in")?;
    if !auth.success() {
        bail!("the gateway refused the login");
    }
    let channel = handle
        .channel_open_session()
        .await
        .context("opening the session channel")?;
    channel
        .request_pty(true, "xterm", 80, 24, 0, 0, &[])
        .await
        .context("asking for a PTY")?;
    channel
        .request_shell(true)
        .await
        .context("asking for a shell")?;
    let mut s = Open {
        handle,
        channel,
        seen: Vec::new(),
    };
    // History off so that the shells leave nothing behind, and no prompt command: a login's
    // dotfiles may run programs at every prompt (a version manager's hook, say), which would
    // measure them rather than the gateway. The quotes keep the echo of the line from looking
    // like its answer.
    let line = format!(" unset HISTFILE PROMPT_COMMAND; echo 'rea''dy-'{i}\r");
    s.channel
        .data(line.as_bytes())
        .await
        .context("typing the first line")?;
    let token = format!("ready-{i}\r\n");
    loop {
        if take(&mut s.seen, token.as_bytes()) {
            return Ok(s);
        }
        let msg = s.channel.wait().await;
        absorb(&mut s.seen, msg).map_err(anyhow::Error::msg)?;
    }
}

/// Ends the shell and the connection, without waiting long.
async fn close(mut s: Open) {
    let _ = s.channel.data(&b"exit\r"[..]).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(msg) = s.channel.wait().await {
            if matches!(msg, ChannelMsg::Close) {
                break;
            }
        }
    })
    .await;
    let _ = s
        .handle
        .disconnect(russh::Disconnect::ByApplication, "", "en")
        .await;
}

/// Adds a channel message's output to `seen`; an error when the channel ended.
fn absorb(seen: &mut Vec<u8>, msg: Option<ChannelMsg>) -> Result<(), String> {
    match msg {
        Some(ChannelMsg::Data { data }) | Some(ChannelMsg::ExtendedData { data, .. }) => {
            // Only recent output can hold the answer awaited.
            if seen.len() > 64 * 1024 {
                seen.drain(..seen.len() - 4096);
            }
            seen.extend_from_slice(&data);
            Ok(())
        }
        Some(ChannelMsg::Eof) => Err("the gateway ended the output".into()),
        Some(ChannelMsg::Close) | None => Err("the gateway closed the session".into()),
        Some(ChannelMsg::ExitStatus { exit_status }) => {
            Err(format!("the shell exited with status {exit_status}"))
        }
        Some(ChannelMsg::ExitSignal { signal_name, .. }) => {
            Err(format!("the shell was killed by {signal_name:?}"))
        }
        Some(ChannelMsg::Failure) => Err("the gateway refused a request".into()),
        Some(_) => Ok(()),
    }
}

/// Removes everything up to and including `token` from `seen`, if it is there.
fn take(seen: &mut Vec<u8>, token: &[u8]) -> bool {
    match seen.windows(token.len()).position(|w| w == token) {
        Some(at) => {
            seen.drain(..at + token.len());
            true
        }
        None => false,
    }
}

/// Waits until the gateway holds no recording open and no more sockets than before the run
/// (its sessions have ended and their recordings are sealed); false if it still does after
/// [`SETTLE_WAIT`].
fn settle(pid: u32, sockets_before: usize) -> bool {
    let deadline = Instant::now() + SETTLE_WAIT;
    while Instant::now() < deadline {
        if open_files(pid).is_some_and(|f| f.recordings == 0 && f.sockets <= sockets_before) {
            std::thread::sleep(Duration::from_secs(1));
            return true;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    false
}

/// A process's memory from `/proc/PID/status` and `/proc/PID/smaps_rollup`.
pub fn process_mem(pid: u32) -> Option<Mem> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let rss = kb_field(&status, "VmRSS:")?;
    let pss = kb_field(&rollup, "Pss:")?;
    let private =
        kb_field(&rollup, "Private_Clean:").unwrap_or(0.0) + kb_field(&rollup, "Private_Dirty:")?;
    Some(Mem { rss, pss, private })
}

/// A `Name:   123 kB` line, in bytes.
fn kb_field(text: &str, name: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    let kb: f64 = line[name.len()..].split_whitespace().next()?.parse().ok()?;
    Some(kb * 1024.0)
}

/// CPU seconds used so far, or per second between two readings.
#[derive(Debug, Clone, Copy)]
struct Cpu {
    gateway: f64,
    /// This process: the clients.
    clients: f64,
    /// Every process below the target's listener: sshd processes and shells.
    target: f64,
    /// Every core of the machine, busy time.
    machine: f64,
}

impl Cpu {
    fn now(gateway: u32, target: u32) -> Cpu {
        let table = ProcessTable::read();
        Cpu {
            gateway: process_cpu_seconds(gateway).unwrap_or(f64::NAN),
            clients: process_cpu_seconds(std::process::id()).unwrap_or(f64::NAN),
            target: table
                .descendants(target)
                .into_iter()
                .filter_map(process_cpu_seconds)
                .sum(),
            machine: machine_busy_seconds().unwrap_or(f64::NAN),
        }
    }

    fn per_second_since(&self, earlier: &Cpu, elapsed: Duration) -> Cpu {
        let secs = elapsed.as_secs_f64().max(1e-3);
        Cpu {
            gateway: (self.gateway - earlier.gateway) / secs,
            clients: (self.clients - earlier.clients) / secs,
            target: (self.target - earlier.target) / secs,
            machine: (self.machine - earlier.machine) / secs,
        }
    }
}

/// Busy time of all cores since boot, from the first line of `/proc/stat`, in seconds.
fn machine_busy_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    // user nice system idle iowait irq softirq steal: all but idle and iowait are busy.
    let busy: u64 = line
        .split_whitespace()
        .filter_map(|t| t.parse::<u64>().ok())
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, t)| t)
        .sum();
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| busy as f64 / hz as f64)
}

/// Parent and name of every process, from `/proc/*/stat`.
struct ProcessTable {
    children: HashMap<u32, Vec<u32>>,
    names: HashMap<u32, String>,
}

impl ProcessTable {
    fn read() -> ProcessTable {
        let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
        let mut names: HashMap<u32, String> = HashMap::new();
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for entry in dir.flatten() {
                let Some(pid) = entry
                    .file_name()
                    .to_str()
                    .and_then(|s| s.parse::<u32>().ok())
                else {
                    continue;
                };
                let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                    continue;
                };
                // `pid (comm) state ppid ...`; the name may hold spaces and parentheses.
                let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                    continue;
                };
                let name = stat[open + 1..close].to_string();
                let Some(ppid) = stat[close + 1..]
                    .split_whitespace()
                    .nth(1)
                    .and_then(|p| p.parse::<u32>().ok())
                else {
                    continue;
                };
                children.entry(ppid).or_default().push(pid);
                names.insert(pid, name);
            }
        }
        ProcessTable { children, names }
    }

    /// Every process below `pid` whose name passes `keep`; the search does not go below a
    /// process that does not.
    fn below(&self, pid: u32, keep: impl Fn(&str) -> bool) -> Vec<u32> {
        let mut found = Vec::new();
        let mut stack = self.children.get(&pid).cloned().unwrap_or_default();
        while let Some(p) = stack.pop() {
            if self.names.get(&p).is_some_and(|n| keep(n)) {
                found.push(p);
                stack.extend(self.children.get(&p).cloned().unwrap_or_default());
            }
        }
        found
    }

    fn descendants(&self, pid: u32) -> Vec<u32> {
        self.below(pid, |_| true)
    }
}

/// The memory of every `sshd` process below the listener `listener` (the per-connection
/// processes, not the shells), and how many there are.
fn sshd_children_mem(listener: u32) -> (Mem, usize) {
    let table = ProcessTable::read();
    let mut total = Mem::default();
    let mut count = 0;
    for pid in table.below(listener, |n| n == "sshd" || n == "sshd-session") {
        if let Some(m) = process_mem(pid) {
            total.add(m);
            count += 1;
        }
    }
    (total, count)
}

/// A process's open file descriptors, and how many are sockets and recordings.
#[derive(Debug, Clone, Copy, Default)]
struct OpenFiles {
    all: usize,
    sockets: usize,
    recordings: usize,
}

fn open_files(pid: u32) -> Option<OpenFiles> {
    let mut f = OpenFiles::default();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.flatten() {
        f.all += 1;
        let Ok(link) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let link = link.to_string_lossy();
        if link.starts_with("socket:") {
            f.sockets += 1;
        } else if link.ends_with(".custos") {
            f.recordings += 1;
        }
    }
    Some(f)
}

/// A process's soft limit on open files, from `/proc/PID/limits`.
fn fd_limit(pid: u32) -> Option<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_finds_and_drops_through_the_token() {
        let mut seen = b"echo 'tick-'1-2\r\ntick-1-2\r\n$ ".to_vec();
        assert!(take(&mut seen, b"tick-1-2\r\n"));
        assert_eq!(seen, b"$ ");
        assert!(!take(&mut seen, b"tick-1-2\r\n"));
    }

    #[test]
    fn kb_fields_read_in_bytes() {
        let text = "Name:\tx\nVmRSS:\t  2048 kB\n";
        assert_eq!(kb_field(text, "VmRSS:"), Some(2048.0 * 1024.0));
        assert_eq!(kb_field(text, "Pss:"), None);
    }
}
