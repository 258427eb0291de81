//! Figures 5 and 6: the size of a sealed recording against `gzip -6` of the same output, and
//! the time to get the screen at 90% of a long recording.
//!
//! Both drive `custos_recording::Recorder` directly, with the default tunables the gateway
//! uses, on one PTY channel: a channel open, a PTY request, a shell, then the output events.
//! Event times are synthetic (a fixed pace per chunk), so keyframes fall where a session of
//! that pace would put them.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use custos_recording::{
    Event, EventKind, Metadata, Reader, Recorder, RecorderHandle, RecordingKeys,
};
use tokio::runtime::Runtime;

use crate::extraction::{CHUNK, Corpus};
use crate::stats::Samples;

/// Terminal size of the recorded session.
const COLS: u16 = 120;
const ROWS: u16 = 40;

/// Microseconds between two bulk output chunks: 16 KiB per 500 µs is about 33 MB/s, a
/// terminal scrolling as fast as a local client draws it.
const BULK_PACE_US: u64 = 500;

/// Where the screen is sought, as a share of the recording's duration.
pub const SEEK_AT: f64 = 0.9;

fn metadata() -> Metadata {
    Metadata {
        session_id: "bench".into(),
        user: "alice".into(),
        target: "web1".into(),
        login: "root".into(),
        source: "192.0.2.7:50123".into(),
        ..Default::default()
    }
}

fn ev(time_us: u64, kind: EventKind) -> Event {
    Event {
        time_us,
        channel: 0,
        kind,
    }
}

/// Starts a recording of one PTY channel at `path`.
async fn start(path: &Path, keys: Arc<RecordingKeys>) -> Result<RecorderHandle> {
    let h = Recorder::start(path, keys, metadata())
        .await
        .context("starting the recorder")?;
    for e in [
        ev(
            0,
            EventKind::ChannelOpen {
                kind: "session".into(),
            },
        ),
        ev(
            0,
            EventKind::PtyRequest {
                term: "xterm-256color".into(),
                cols: COLS,
                rows: ROWS,
            },
        ),
        ev(0, EventKind::Shell),
    ] {
        h.record(e).await.context("recording")?;
    }
    Ok(h)
}

/// Closes the channel at `end_us` and seals the recording.
async fn finish(h: &RecorderHandle, end_us: u64) -> Result<()> {
    h.record(ev(end_us, EventKind::ChannelClose))
        .await
        .context("recording")?;
    h.finish("client disconnected")
        .await
        .context("sealing the recording")?;
    Ok(())
}

// ----- figure 5: size ---------------------------------------------------------------------

/// A kind of text output whose recording is measured.
#[derive(Debug, Clone, Copy)]
pub enum Stream {
    /// `seq 1 N`.
    Seq,
    /// A build log (the generator of figure 2).
    BuildLog,
    /// An interactive shell: prompts, typed and echoed keys, short outputs, full-screen
    /// redraws.
    Interactive,
}

impl Stream {
    pub const ALL: [Stream; 3] = [Stream::Seq, Stream::BuildLog, Stream::Interactive];

    pub fn label(self) -> &'static str {
        match self {
            Stream::Seq => "`seq 1 N`",
            Stream::BuildLog => "compiler log",
            Stream::Interactive => "interactive session",
        }
    }

    /// Output (and, for the interactive stream, input) events of about `bytes` bytes of
    /// output, with the raw output they carry.
    fn events(self, bytes: usize) -> (Vec<Event>, Vec<u8>) {
        match self {
            Stream::Seq => bulk(Corpus::Seq.generate(bytes)),
            Stream::BuildLog => bulk(Corpus::BuildLog.generate(bytes)),
            Stream::Interactive => interactive(bytes),
        }
    }
}

/// Bulk output in the chunks an SSH channel delivers it.
fn bulk(raw: Vec<u8>) -> (Vec<Event>, Vec<u8>) {
    let all = Bytes::from(raw);
    let events = (0..all.len())
        .step_by(CHUNK)
        .enumerate()
        .map(|(i, start)| {
            let chunk = all.slice(start..(start + CHUNK).min(all.len()));
            ev(1_000 + i as u64 * BULK_PACE_US, EventKind::Output(chunk))
        })
        .collect();
    (events, all.to_vec())
}

/// Commands an administrator types, with the output they print.
const SESSION: &[(&str, &str)] = &[
    ("ls -la", "ls"),
    ("systemctl status nginx", "status"),
    ("tail -n 20 /var/log/syslog", "log"),
    ("cd /etc/nginx", ""),
    ("vim nginx.conf", "screen"),
    ("ps aux | head", "ps"),
    ("df -h", "df"),
    ("top", "screen"),
    ("git log --oneline | head", "git"),
];

/// A small deterministic generator, so that outputs differ like real ones do.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

fn command_output(kind: &str, n: u64, rng: &mut Lcg) -> String {
    let mut s = String::new();
    match kind {
        "ls" => {
            s.push_str(&format!("total {}\r\n", 40 + n % 200));
            for j in 0..(6 + rng.next() % 12) {
                let size = rng.next() % 100_000;
                let dir = j % 3 == 0;
                s.push_str(&format!(
                    "{}rwxr-xr-x  2 root root {size:>6} Nov {:>2} {:02}:{:02} {}{}\x1b[0m\r\n",
                    if dir { 'd' } else { '-' },
                    1 + rng.next() % 28,
                    rng.next() % 24,
                    rng.next() % 60,
                    if dir { "\x1b[01;34m" } else { "" },
                    ["conf.d", "sites", "mime.types", "ssl", "logs", "cache"][(j % 6) as usize],
                ));
            }
        }
        "status" => {
            s.push_str(
                "\x1b[0;1;32m●\x1b[0m nginx.service - A high performance web server\r\n     \
                 Loaded: loaded (/lib/systemd/system/nginx.service; enabled)\r\n",
            );
            s.push_str(&format!(
                "     Active: \x1b[0;1;32mactive (running)\x1b[0m since Tue 2026-11-24 {:02}:{:02}:{:02} UTC\r\n   Main PID: {}\r\n",
                rng.next() % 24,
                rng.next() % 60,
                rng.next() % 60,
                1000 + rng.next() % 30000
            ));
        }
        "log" => {
            for _ in 0..20 {
                s.push_str(&format!(
                    "Nov 25 {:02}:{:02}:{:02} web1 nginx[{}]: 10.0.{}.{} - - \"GET /api/v1/items/{} HTTP/1.1\" 200 {}\r\n",
                    rng.next() % 24,
                    rng.next() % 60,
                    rng.next() % 60,
                    1000 + rng.next() % 9000,
                    rng.next() % 256,
                    rng.next() % 256,
                    rng.next() % 100_000,
                    rng.next() % 50_000
                ));
            }
        }
        "ps" => {
            s.push_str(
                "USER         PID %CPU %MEM    VSZ   RSS TTY      STAT START   TIME COMMAND\r\n",
            );
            for _ in 0..9 {
                s.push_str(&format!(
                    "root     {:>7}  {}.{}  {}.{} {:>6} {:>5} ?        Ss   Nov24   0:{:02} /usr/sbin/daemon-{}\r\n",
                    rng.next() % 99_999,
                    rng.next() % 10,
                    rng.next() % 10,
                    rng.next() % 10,
                    rng.next() % 10,
                    rng.next() % 900_000,
                    rng.next() % 90_000,
                    rng.next() % 60,
                    rng.next() % 40
                ));
            }
        }
        "df" => {
            s.push_str("Filesystem      Size  Used Avail Use% Mounted on\r\n");
            for d in ["/dev/vda1", "tmpfs", "/dev/vdb"] {
                s.push_str(&format!(
                    "{d:<15} {:>3}G {:>4}G {:>4}G {:>3}% /\r\n",
                    rng.next() % 500,
                    rng.next() % 300,
                    rng.next() % 200,
                    rng.next() % 100
                ));
            }
        }
        "git" => {
            for _ in 0..10 {
                s.push_str(&format!(
                    "\x1b[33m{:07x}\x1b[m Fix handling of request {} in worker\r\n",
                    rng.next() & 0xfff_ffff,
                    rng.next() % 10_000
                ));
            }
        }
        "screen" => {
            // A full-screen program: clear, then every row drawn at its position.
            s.push_str("\x1b[?1049h\x1b[H\x1b[2J");
            for row in 1..=ROWS {
                s.push_str(&format!(
                    "\x1b[{row};1H{:>5} root      20   0 {:>7} {:>6} S  {}.{}  0.{} {:>3}:{:02}.{:02} worker-{}\x1b[K",
                    rng.next() % 99_999,
                    rng.next() % 900_000,
                    rng.next() % 90_000,
                    rng.next() % 10,
                    rng.next() % 10,
                    rng.next() % 10,
                    rng.next() % 100,
                    rng.next() % 60,
                    rng.next() % 100,
                    rng.next() % 64
                ));
            }
            s.push_str("\x1b[?1049l");
        }
        _ => {}
    }
    s
}

fn push_out(events: &mut Vec<Event>, raw: &mut Vec<u8>, t: u64, s: &[u8]) {
    raw.extend_from_slice(s);
    events.push(ev(t, EventKind::Output(Bytes::copy_from_slice(s))));
}

/// An interactive session of about `bytes` bytes of output: for each command, a prompt, each
/// key typed (120 ms apart) and echoed 1 ms later, Enter, then the output.
fn interactive(bytes: usize) -> (Vec<Event>, Vec<u8>) {
    let mut events = Vec::new();
    let mut raw = Vec::new();
    let mut rng = Lcg(7);
    let mut now = 1_000u64;
    let mut n = 0u64;
    while raw.len() < bytes {
        let (cmd, kind) = SESSION[(n % SESSION.len() as u64) as usize];
        let prompt = "\x1b]0;root@web1: /etc/nginx\x07\x1b[01;32mroot@web1\x1b[00m:\x1b[01;34m/etc/nginx\x1b[00m# ";
        push_out(&mut events, &mut raw, now, prompt.as_bytes());
        now += 800_000;
        for key in cmd.bytes() {
            events.push(ev(now, EventKind::Input(Bytes::copy_from_slice(&[key]))));
            push_out(&mut events, &mut raw, now + 1_000, &[key]);
            now += 120_000;
        }
        events.push(ev(now, EventKind::Input(Bytes::from_static(b"\r"))));
        push_out(&mut events, &mut raw, now + 1_000, b"\r\n");
        now += 20_000;
        let out = command_output(kind, n, &mut rng);
        for piece in out.as_bytes().chunks(4096) {
            push_out(&mut events, &mut raw, now, piece);
            now += 2_000;
        }
        if kind == "screen" {
            // The program redraws a few times before the user quits it.
            for _ in 0..5 {
                now += 1_000_000;
                let again = command_output("screen", n, &mut rng);
                push_out(&mut events, &mut raw, now, again.as_bytes());
            }
        }
        now += 2_000_000;
        n += 1;
    }
    (events, raw)
}

/// Figures for one kind of stream.
pub struct StreamResult {
    pub stream: Stream,
    pub raw: u64,
    pub gzip: u64,
    /// Sealed recording bytes.
    pub recording: Samples,
    /// Recording size over `gzip -6` size.
    pub to_gzip: Samples,
    /// Recording size over raw output size.
    pub to_raw: Samples,
}

/// What figure 5 reports.
pub struct SizeResult {
    pub bytes_per_stream: usize,
    pub streams: Vec<StreamResult>,
}

/// Size of `gzip -6` of `raw`, from the real gzip.
fn gzip_size(raw: &[u8], dir: &Path) -> Result<u64> {
    let path = dir.join("raw");
    std::fs::write(&path, raw).context("writing the raw output")?;
    let out = Command::new("gzip")
        .args(["-6", "-c"])
        .arg(&path)
        .stderr(Stdio::inherit())
        .output()
        .context("running gzip")?;
    if !out.status.success() {
        bail!("gzip -6 failed: {}", out.status);
    }
    Ok(out.stdout.len() as u64)
}

/// Records about `bytes` of each stream `runs` times and compares the sealed files with gzip.
pub fn size(rt: &Runtime, runs: usize, bytes: usize) -> Result<SizeResult> {
    let keys = Arc::new(RecordingKeys::generate().context("generating recording keys")?);
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let mut streams = Vec::new();
    for stream in Stream::ALL {
        let (events, raw) = stream.events(bytes);
        let gzip = gzip_size(&raw, dir.path())?;
        streams.push((
            events,
            StreamResult {
                stream,
                raw: raw.len() as u64,
                gzip,
                recording: Samples::new(),
                to_gzip: Samples::new(),
                to_raw: Samples::new(),
            },
        ));
    }
    for run in 0..runs {
        for (i, (events, r)) in streams.iter_mut().enumerate() {
            let path = dir.path().join(format!("{run}-{i}.custos"));
            let len = rt.block_on(async {
                let h = start(&path, keys.clone()).await?;
                for e in events.iter() {
                    h.record(e.clone()).await.context("recording")?;
                }
                let end = events.last().map_or(0, |e| e.time_us) + 1_000;
                finish(&h, end).await?;
                let len = std::fs::metadata(&path)
                    .with_context(|| format!("reading the size of {}", path.display()))?
                    .len();
                anyhow::Ok(len)
            })?;
            std::fs::remove_file(&path).ok();
            r.recording.push(len as f64);
            r.to_gzip.push(len as f64 / r.gzip as f64);
            r.to_raw.push(len as f64 / r.raw as f64);
        }
    }
    Ok(SizeResult {
        bytes_per_stream: bytes,
        streams: streams.into_iter().map(|(_, r)| r).collect(),
    })
}

// ----- figure 6: seek ---------------------------------------------------------------------

/// What figure 6 reports.
pub struct SeekFigures {
    pub raw: u64,
    pub file: u64,
    pub segments: usize,
    pub duration_us: u64,
    /// Seconds to write the recording (not a target; for context).
    pub build_s: f64,
    /// Milliseconds from opening the file to the repainted screen at 90%.
    pub total_ms: Samples,
    /// Of which opening the file (header, key unwrap, segment scan).
    pub open_ms: Samples,
}

/// Records `bytes` of build-log output, then opens it and gets the screen at 90% `runs` times.
pub fn seek(rt: &Runtime, runs: usize, bytes: u64) -> Result<SeekFigures> {
    let keys = Arc::new(RecordingKeys::generate().context("generating recording keys")?);
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let path = dir.path().join("long.custos");
    let built = Instant::now();
    rt.block_on(async {
        let h = start(&path, keys.clone()).await?;
        // The output is generated a block at a time so that a gigabyte never sits in memory.
        const BLOCK: usize = 4 << 20;
        let mut written = 0u64;
        let mut t = 1_000u64;
        let mut line = 1u64;
        while written < bytes {
            let (block, next) = Corpus::BuildLog.generate_from(line, BLOCK);
            line = next;
            let block = Bytes::from(block);
            for start in (0..block.len()).step_by(CHUNK) {
                let chunk = block.slice(start..(start + CHUNK).min(block.len()));
                h.record(ev(t, EventKind::Output(chunk)))
                    .await
                    .context("recording")?;
                t += BULK_PACE_US;
            }
            written += block.len() as u64;
        }
        finish(&h, t).await
    })?;
    let build_s = built.elapsed().as_secs_f64();
    let file = std::fs::metadata(&path)
        .context("reading the recording's size")?
        .len();
    let mut figures = SeekFigures {
        raw: bytes,
        file,
        segments: 0,
        duration_us: 0,
        build_s,
        total_ms: Samples::new(),
        open_ms: Samples::new(),
    };
    for _ in 0..runs {
        let t0 = Instant::now();
        let reader = Reader::open(&path, &keys).context("opening the recording")?;
        let opened = t0.elapsed();
        let duration = reader.duration_us();
        let at = (duration as f64 * SEEK_AT) as u64;
        let sought = reader.seek(at).context("seeking")?;
        let screen = sought
            .screens
            .get(&0)
            .context("no screen for the terminal channel at 90%")?;
        let paint = custos_recording::play::repaint(screen);
        let total = t0.elapsed();
        std::hint::black_box(paint);
        figures.total_ms.push(total.as_secs_f64() * 1e3);
        figures.open_ms.push(opened.as_secs_f64() * 1e3);
        figures.segments = reader.segments().len();
        figures.duration_us = duration;
    }
    Ok(figures)
}
