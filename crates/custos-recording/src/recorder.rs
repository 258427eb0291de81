//! The asynchronous recorder used by the gateway.
//!
//! The gateway's byte pump calls [`RecorderHandle::record`], which only enqueues into a bounded
//! channel; when the queue is full the caller waits (back-pressure), nothing is dropped. One
//! background task per recording redacts no-echo input, inserts keyframes, batches events into
//! segments and hands each segment to a blocking thread for compression, encryption and the
//! write. Only one write is in flight per recording, so segments land in order.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use custos_core::Id;
use custos_term::{ChunkId, EchoTracker, Terminal, Verdict};
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::RecordingError;
use crate::event::{Event, EventKind};
use crate::format::{FLAG_KEYFRAME, Metadata};
use crate::keys::RecordingKeys;
use crate::writer::{FileWriter, SegmentBuf, Summary, unix_now_us};

/// Tunables of a recorder. The defaults suit interactive sessions.
#[derive(Debug, Clone)]
pub struct RecorderConfig {
    /// Events the queue holds before `record` waits.
    pub queue_len: usize,
    /// Start a keyframe segment after this much PTY output since the last keyframe.
    pub keyframe_bytes: u64,
    /// ... or after this much time (µs) since the last keyframe, if there was output.
    pub keyframe_interval_us: u64,
    /// Flush a segment when its serialized events reach this size.
    pub flush_bytes: usize,
    /// Flush a segment when its oldest event is this old.
    pub flush_age: Duration,
    /// Echo timeout for no-echo detection (µs).
    pub echo_timeout_us: u64,
}

impl Default for RecorderConfig {
    fn default() -> Self {
        Self {
            queue_len: 256,
            keyframe_bytes: 256 * 1024,
            keyframe_interval_us: 30_000_000,
            flush_bytes: 1024 * 1024,
            flush_age: Duration::from_secs(1),
            echo_timeout_us: custos_term::DEFAULT_ECHO_TIMEOUT_US,
        }
    }
}

/// Returned by [`RecorderHandle::record`] once the recording can no longer be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("recording failed: {0}")]
pub struct RecordingFailed(pub String);

enum Msg {
    Event(Event),
    Finish {
        reason: String,
        reply: oneshot::Sender<Result<Summary, RecordingError>>,
    },
}

struct Shared {
    recording_id: Id,
    start: Instant,
    failed: watch::Sender<Option<String>>,
}

/// Entry point for writing a recording.
#[derive(Debug)]
pub struct Recorder;

impl Recorder {
    /// Creates the recording file (and parent directories) and starts its background task.
    /// Fails cleanly if the file cannot be created; the gateway should then refuse the session.
    pub async fn start(
        path: impl AsRef<Path>,
        keys: Arc<RecordingKeys>,
        metadata: Metadata,
    ) -> Result<RecorderHandle, RecordingError> {
        Self::start_with(path, keys, metadata, RecorderConfig::default()).await
    }

    /// Like [`Recorder::start`] with explicit tunables.
    pub async fn start_with(
        path: impl AsRef<Path>,
        keys: Arc<RecordingKeys>,
        metadata: Metadata,
        config: RecorderConfig,
    ) -> Result<RecorderHandle, RecordingError> {
        let now = unix_now_us();
        let random = crate::crypto::random::<10>()?;
        let recording_id = Id::from_parts(now / 1000, random);
        let path = path.as_ref().to_path_buf();
        let k = keys.clone();
        let writer = tokio::task::spawn_blocking(move || {
            FileWriter::create(&path, &k, &metadata, recording_id, now)
        })
        .await
        .map_err(|e| RecordingError::Failed(format!("writer thread: {e}")))??;
        let (tx, rx) = mpsc::channel(config.queue_len.max(1));
        let (failed, _) = watch::channel(None);
        let shared = Arc::new(Shared {
            recording_id,
            start: Instant::now(),
            failed,
        });
        let task = Task {
            writer: Some(writer),
            keys,
            shared: shared.clone(),
            cfg: config,
            channels: BTreeMap::new(),
            held: VecDeque::new(),
            seg: SegmentBuf::default(),
            seg_opened: None,
            last_time: 0,
            output_since_kf: 0,
            last_kf_time: 0,
            redacted: 0,
            failed: false,
        };
        tokio::spawn(task.run(rx));
        Ok(RecorderHandle { tx, shared })
    }
}

/// Cheap, cloneable handle to a running recording.
#[derive(Clone)]
pub struct RecorderHandle {
    tx: mpsc::Sender<Msg>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RecorderHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecorderHandle")
            .field("recording_id", &self.shared.recording_id)
            .finish_non_exhaustive()
    }
}

impl RecorderHandle {
    /// Id of the recording.
    pub fn recording_id(&self) -> Id {
        self.shared.recording_id
    }

    /// Microseconds since the recording started, on the monotonic clock events should use.
    pub fn now_us(&self) -> u64 {
        self.shared.start.elapsed().as_micros() as u64
    }

    /// Queues an event. Waits when the queue is full; never drops. Fails once writing failed.
    pub async fn record(&self, event: Event) -> Result<(), RecordingFailed> {
        if let Some(msg) = self.failure() {
            return Err(RecordingFailed(msg));
        }
        self.tx.send(Msg::Event(event)).await.map_err(|_| {
            RecordingFailed(
                self.failure()
                    .unwrap_or_else(|| "the recording is finished".into()),
            )
        })
    }

    /// The failure message, if writing has failed.
    pub fn failure(&self) -> Option<String> {
        self.shared.failed.borrow().clone()
    }

    /// Resolves with the error text when writing fails; never resolves otherwise.
    pub async fn failed(&self) -> String {
        let mut rx = self.shared.failed.subscribe();
        // Clone out of the guard first so the returned future stays Send.
        let seen = rx
            .wait_for(|v| v.is_some())
            .await
            .map(|v| v.clone().unwrap_or_default());
        match seen {
            Ok(v) => v,
            // The sender lives in `shared`, which this handle keeps alive.
            Err(_) => std::future::pending().await,
        }
    }

    /// Flushes everything, seals the recording with a signed manifest and returns totals.
    pub async fn finish(&self, end_reason: &str) -> Result<Summary, RecordingError> {
        let (reply, rx) = oneshot::channel();
        let failed = || {
            RecordingError::Failed(
                self.failure()
                    .unwrap_or_else(|| "the recording is already finished".into()),
            )
        };
        self.tx
            .send(Msg::Finish {
                reason: end_reason.to_string(),
                reply,
            })
            .await
            .map_err(|_| failed())?;
        rx.await.map_err(|_| failed())?
    }
}

struct Chan {
    term: Terminal,
    tracker: EchoTracker,
}

enum Held {
    Ready(Event),
    Waiting {
        channel: u32,
        id: ChunkId,
        event: Event,
    },
}

struct Task {
    writer: Option<FileWriter>,
    keys: Arc<RecordingKeys>,
    shared: Arc<Shared>,
    cfg: RecorderConfig,
    channels: BTreeMap<u32, Chan>,
    held: VecDeque<Held>,
    seg: SegmentBuf,
    seg_opened: Option<Instant>,
    last_time: u64,
    output_since_kf: u64,
    last_kf_time: u64,
    redacted: u64,
    failed: bool,
}

impl Task {
    async fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        loop {
            let deadline = self.next_deadline();
            let msg = tokio::select! {
                m = rx.recv() => m,
                _ = sleep_until(deadline) => {
                    self.tick().await;
                    if self.failed {
                        return;
                    }
                    continue;
                }
            };
            match msg {
                Some(Msg::Event(ev)) => self.ingest(ev).await,
                Some(Msg::Finish { reason, reply }) => {
                    let r = self.finish(&reason).await;
                    let _ = reply.send(r);
                    return;
                }
                None => {
                    // Every handle was dropped without finish(): seal what we have.
                    if let Err(e) = self.finish("recorder dropped without finish").await {
                        tracing::error!(error = %e, "sealing an abandoned recording failed");
                    }
                    return;
                }
            }
            if self.failed {
                return;
            }
        }
    }

    fn now_us(&self) -> u64 {
        self.shared.start.elapsed().as_micros() as u64
    }

    fn next_deadline(&self) -> Option<tokio::time::Instant> {
        let mut d: Option<Instant> = self.seg_opened.map(|t| t + self.cfg.flush_age);
        for c in self.channels.values() {
            if let Some(us) = c.tracker.deadline_us() {
                let t = self.shared.start + Duration::from_micros(us);
                d = Some(d.map_or(t, |d| d.min(t)));
            }
        }
        d.map(tokio::time::Instant::from_std)
    }

    async fn tick(&mut self) {
        let now = self.now_us();
        let ids: Vec<u32> = self.channels.keys().copied().collect();
        for ch in ids {
            if let Some(c) = self.channels.get_mut(&ch) {
                c.tracker.poll(now);
            }
            self.collect_decisions(ch);
        }
        self.release().await;
        if self
            .seg_opened
            .is_some_and(|t| t.elapsed() >= self.cfg.flush_age)
        {
            self.flush().await;
        }
    }

    async fn ingest(&mut self, mut ev: Event) {
        ev.time_us = ev.time_us.max(self.last_time);
        self.last_time = ev.time_us;
        let ch = ev.channel;
        match &ev.kind {
            EventKind::PtyRequest { cols, rows, .. } => {
                self.channels.insert(
                    ch,
                    Chan {
                        term: Terminal::new(*cols, *rows),
                        tracker: EchoTracker::with_timeout_us(self.cfg.echo_timeout_us),
                    },
                );
                self.held.push_back(Held::Ready(ev));
            }
            EventKind::Output(b) if self.channels.contains_key(&ch) => {
                if let Some(c) = self.channels.get_mut(&ch) {
                    c.tracker.on_output(ev.time_us, b);
                }
                self.held.push_back(Held::Ready(ev));
                self.collect_decisions(ch);
            }
            EventKind::Input(b) if !b.is_empty() && self.channels.contains_key(&ch) => {
                let b = b.clone();
                if let Some(c) = self.channels.get_mut(&ch) {
                    for p in c.tracker.on_input(ev.time_us, &b) {
                        self.held.push_back(Held::Waiting {
                            channel: ch,
                            id: p.id,
                            event: Event {
                                time_us: ev.time_us,
                                channel: ch,
                                kind: EventKind::Input(b.slice(p.range)),
                            },
                        });
                    }
                }
                self.collect_decisions(ch);
            }
            EventKind::ChannelClose => {
                if let Some(c) = self.channels.get_mut(&ch) {
                    // Undecided input on a closing channel is treated as secret.
                    c.tracker.poll(u64::MAX);
                }
                self.collect_decisions(ch);
                self.channels.remove(&ch);
                self.held.push_back(Held::Ready(ev));
            }
            _ => self.held.push_back(Held::Ready(ev)),
        }
        self.release().await;
    }

    fn collect_decisions(&mut self, ch: u32) {
        let Some(c) = self.channels.get_mut(&ch) else {
            return;
        };
        while let Some(d) = c.tracker.pop_decision() {
            for h in self.held.iter_mut() {
                if let Held::Waiting { channel, id, event } = h
                    && *channel == ch
                    && *id == d.id
                {
                    let mut ev = Event {
                        time_us: event.time_us,
                        channel: ch,
                        kind: EventKind::InputRedacted,
                    };
                    if d.verdict == Verdict::Keep {
                        std::mem::swap(&mut ev.kind, &mut event.kind);
                    } else {
                        self.redacted += 1;
                    }
                    *h = Held::Ready(ev);
                    break;
                }
            }
        }
    }

    async fn release(&mut self) {
        while let Some(Held::Ready(_)) = self.held.front() {
            if let Some(Held::Ready(ev)) = self.held.pop_front() {
                self.emit(ev).await;
            }
        }
    }

    async fn emit(&mut self, ev: Event) {
        if self.failed {
            return;
        }
        let pty_output = matches!(ev.kind, EventKind::Output(_) | EventKind::Stderr(_))
            && self.channels.contains_key(&ev.channel);
        if pty_output {
            let due = self.output_since_kf >= self.cfg.keyframe_bytes
                || (self.output_since_kf > 0
                    && ev.time_us.saturating_sub(self.last_kf_time)
                        >= self.cfg.keyframe_interval_us);
            if due {
                self.flush().await;
                for (ch, c) in &self.channels {
                    let (cols, rows) = c.term.size();
                    self.seg.push(&Event {
                        time_us: ev.time_us,
                        channel: *ch,
                        kind: EventKind::Keyframe {
                            cols,
                            rows,
                            screen: c.term.keyframe(),
                        },
                    });
                }
                self.seg.flags |= FLAG_KEYFRAME;
                self.seg_opened.get_or_insert_with(Instant::now);
                self.output_since_kf = 0;
                self.last_kf_time = ev.time_us;
            }
        }
        match &ev.kind {
            EventKind::Output(b) | EventKind::Stderr(b) => {
                if let Some(c) = self.channels.get_mut(&ev.channel) {
                    c.term.feed(b);
                    self.output_since_kf += b.len() as u64;
                }
            }
            EventKind::Resize { cols, rows } => {
                if let Some(c) = self.channels.get_mut(&ev.channel) {
                    c.term.resize(*cols, *rows);
                }
            }
            _ => {}
        }
        self.seg.push(&ev);
        self.seg_opened.get_or_insert_with(Instant::now);
        if self.seg.data.len() >= self.cfg.flush_bytes {
            self.flush().await;
        }
    }

    async fn flush(&mut self) {
        if self.seg.is_empty() || self.failed {
            return;
        }
        let seg = std::mem::take(&mut self.seg);
        self.seg_opened = None;
        let Some(mut w) = self.writer.take() else {
            self.fail("the writer is gone".into());
            return;
        };
        let r = tokio::task::spawn_blocking(move || {
            let r = w.write_segment(&seg);
            (w, r)
        })
        .await;
        match r {
            Ok((w, Ok(()))) => self.writer = Some(w),
            Ok((_, Err(e))) => self.fail(e.to_string()),
            Err(e) => self.fail(format!("writer thread: {e}")),
        }
    }

    fn fail(&mut self, msg: String) {
        tracing::error!(recording = %self.shared.recording_id, error = %msg, "recording failed");
        self.failed = true;
        self.shared.failed.send_replace(Some(msg));
    }

    async fn finish(&mut self, reason: &str) -> Result<Summary, RecordingError> {
        let ids: Vec<u32> = self.channels.keys().copied().collect();
        for ch in ids {
            if let Some(c) = self.channels.get_mut(&ch) {
                c.tracker.poll(u64::MAX);
            }
            self.collect_decisions(ch);
        }
        // Anything still waiting has no tracker left: redact it.
        for h in self.held.iter_mut() {
            if let Held::Waiting { event, .. } = h {
                self.redacted += 1;
                *h = Held::Ready(Event {
                    time_us: event.time_us,
                    channel: event.channel,
                    kind: EventKind::InputRedacted,
                });
            }
        }
        self.release().await;
        self.flush().await;
        if self.failed {
            return Err(RecordingError::Failed(
                self.shared.failed.borrow().clone().unwrap_or_default(),
            ));
        }
        let Some(w) = self.writer.take() else {
            return Err(RecordingError::Failed("the writer is gone".into()));
        };
        let keys = self.keys.clone();
        let reason = reason.to_string();
        let redacted = self.redacted;
        let r = tokio::task::spawn_blocking(move || w.seal(&keys, &reason, false, redacted))
            .await
            .map_err(|e| RecordingError::Failed(format!("writer thread: {e}")))?;
        if let Err(e) = &r {
            self.fail(e.to_string());
        }
        r
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
