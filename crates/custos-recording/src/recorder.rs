//! The asynchronous recorder used by the gateway.
//!
//! The gateway's byte pump calls [`RecorderHandle::record`], which only enqueues into a bounded
//! channel; when the queue is full the caller waits (back-pressure), nothing is dropped. One
//! background task per recording redacts no-echo input, inserts keyframes, batches events into
//! segments and hands each segment to a blocking thread for compression, encryption and the
//! write. Only one write is in flight per recording, so segments land in order.
//!
//! The same task serves live watchers ([`RecorderHandle::watch`]): it answers with the current
//! screen of every PTY channel, then copies each later terminal event to the watcher in the
//! order it reaches the recording. A watcher never slows the session: its queue is bounded,
//! filled with `try_send`, and a watcher that falls behind is dropped and told so
//! ([`WatchEnd::Lagged`]). Watchers see what the terminal model sees — output, resizes,
//! channels opening and closing — never input; output held behind an undecided keystroke
//! (no-echo redaction) reaches them when it is released, at most ~1.5 s later.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use custos_core::Id;
use custos_term::{ChunkId, EchoTracker, Terminal, Verdict};
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::RecordingError;
use crate::event::{Event, EventKind};
use crate::format::{FLAG_KEYFRAME, Metadata};
use crate::keys::RecordingKeys;
use crate::play::repaint;
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
    /// Events a live watcher may have queued before it is dropped as too slow.
    pub watch_queue_len: usize,
}

impl Default for RecorderConfig {
    fn default() -> Self {
        Self {
            queue_len: 256,
            keyframe_bytes: 1024 * 1024,
            keyframe_interval_us: 300_000_000,
            flush_bytes: 1024 * 1024,
            flush_age: Duration::from_secs(1),
            echo_timeout_us: custos_term::DEFAULT_ECHO_TIMEOUT_US,
            watch_queue_len: 1024,
        }
    }
}

/// Returned by [`RecorderHandle::record`] once the recording can no longer be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("recording failed: {0}")]
pub struct RecordingFailed(pub String);

/// Most watchers one recording serves at once: each costs a copy of every terminal event.
pub const MAX_WATCHERS: usize = 16;

/// Returned by [`RecorderHandle::watch`] when the recording cannot be watched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct WatchRefused(pub String);

/// The screen of one PTY channel.
#[derive(Debug, Clone)]
pub struct Screen {
    /// Channel number inside the recording.
    pub channel: u32,
    /// Columns.
    pub cols: u16,
    /// Rows.
    pub rows: u16,
    /// Bytes that reset a terminal and draw this screen ([`crate::play::repaint`]).
    pub paint: Bytes,
}

/// A terminal event of a watched recording.
#[derive(Debug, Clone)]
pub enum WatchEvent {
    /// A PTY channel opened (or was given a new PTY): its blank screen.
    Opened(Screen),
    /// Output of a PTY channel (stdout or stderr), the bytes the user's terminal received.
    Output {
        /// Channel number.
        channel: u32,
        /// The bytes.
        data: Bytes,
    },
    /// The user's terminal changed size.
    Resize {
        /// Channel number.
        channel: u32,
        /// Columns.
        cols: u16,
        /// Rows.
        rows: u16,
    },
    /// A PTY channel closed.
    Closed {
        /// Channel number.
        channel: u32,
    },
}

/// Why a watch ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEnd {
    /// The recording was finished; the end reason given to [`RecorderHandle::finish`].
    Finished(String),
    /// The recording failed (the gateway then ends the session).
    Failed(String),
    /// The watcher did not keep up with the session's output and was dropped.
    Lagged,
}

impl std::fmt::Display for WatchEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WatchEnd::Finished(r) => write!(f, "the session ended: {r}"),
            WatchEnd::Failed(e) => write!(f, "the recording failed: {e}"),
            WatchEnd::Lagged => f.write_str(
                "the watcher fell behind the session's output and was disconnected \
                 (a session is never slowed down for a watcher)",
            ),
        }
    }
}

/// A live view of a recording: the screens when it began, then every later terminal event.
#[derive(Debug)]
pub struct Watch {
    /// The screen of every PTY channel open when the watch began, by channel number.
    pub screens: Vec<Screen>,
    events: mpsc::Receiver<WatchEvent>,
    end: oneshot::Receiver<WatchEnd>,
    ended: Option<WatchEnd>,
}

impl Watch {
    /// The next event, or why the watch is over. Cancel-safe: usable in `select!`.
    pub async fn next(&mut self) -> Result<WatchEvent, WatchEnd> {
        if let Some(ev) = self.events.recv().await {
            return Ok(ev);
        }
        if let Some(end) = &self.ended {
            return Err(end.clone());
        }
        // The task sends the reason before it drops the event queue; no reason means the
        // task itself is gone.
        let end = (&mut self.end)
            .await
            .unwrap_or_else(|_| WatchEnd::Failed("the recorder stopped".into()));
        self.ended = Some(end.clone());
        Err(end)
    }
}

/// The recorder task's side of one watch.
struct Watcher {
    events: mpsc::Sender<WatchEvent>,
    end: oneshot::Sender<WatchEnd>,
}

enum Msg {
    Event(Event),
    Finish {
        reason: String,
        reply: oneshot::Sender<Result<Summary, RecordingError>>,
    },
    Watch {
        reply: oneshot::Sender<Result<Watch, WatchRefused>>,
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
            watchers: Vec::new(),
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

    /// Starts watching the recording live: the current screen of every PTY channel, then
    /// every later terminal event. Fails once the recording is finished or failed, or when
    /// [`MAX_WATCHERS`] already watch it.
    pub async fn watch(&self) -> Result<Watch, WatchRefused> {
        let gone = || {
            WatchRefused(match self.failure() {
                Some(e) => format!("the recording failed: {e}"),
                None => "the recording is finished".into(),
            })
        };
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Watch { reply })
            .await
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
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
    watchers: Vec<Watcher>,
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
                Some(Msg::Watch { reply }) => {
                    let _ = reply.send(self.watch());
                    continue;
                }
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
                let term = Terminal::new(*cols, *rows);
                if !self.watchers.is_empty() {
                    self.tell_watchers(WatchEvent::Opened(screen(ch, &term)));
                }
                self.channels.insert(
                    ch,
                    Chan {
                        term,
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
                if self.channels.remove(&ch).is_some() && !self.watchers.is_empty() {
                    self.tell_watchers(WatchEvent::Closed { channel: ch });
                }
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
        // A segment also ends when its events span the flush age in session time, not only
        // when it has been open that long by the clock: the two agree while a session runs
        // (events are stamped as they happen), and a recording built from past events, as in
        // an import or a benchmark, is then cut as the live one would have been.
        if !self.seg.is_empty()
            && ev.time_us.saturating_sub(self.seg.first_time_us)
                >= self.cfg.flush_age.as_micros() as u64
        {
            self.flush().await;
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
        // Watchers get exactly what the terminal models get, so that the screen they started
        // from plus these events is the screen the recording shows.
        let mut seen = None;
        match &ev.kind {
            EventKind::Output(b) | EventKind::Stderr(b) => {
                if let Some(c) = self.channels.get_mut(&ev.channel) {
                    c.term.feed(b);
                    self.output_since_kf += b.len() as u64;
                    seen = Some(WatchEvent::Output {
                        channel: ev.channel,
                        data: b.clone(),
                    });
                }
            }
            EventKind::Resize { cols, rows } => {
                if let Some(c) = self.channels.get_mut(&ev.channel) {
                    c.term.resize(*cols, *rows);
                    let (cols, rows) = c.term.size();
                    seen = Some(WatchEvent::Resize {
                        channel: ev.channel,
                        cols,
                        rows,
                    });
                }
            }
            _ => {}
        }
        if let Some(seen) = seen
            && !self.watchers.is_empty()
        {
            self.tell_watchers(seen);
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
        self.end_watchers(WatchEnd::Failed(msg.clone()));
        self.shared.failed.send_replace(Some(msg));
    }

    /// Registers a watcher and answers with the screens as they are now.
    fn watch(&mut self) -> Result<Watch, WatchRefused> {
        if self.failed {
            return Err(WatchRefused(format!(
                "the recording failed: {}",
                self.shared.failed.borrow().clone().unwrap_or_default()
            )));
        }
        self.watchers.retain(|w| !w.events.is_closed());
        if self.watchers.len() >= MAX_WATCHERS {
            return Err(WatchRefused(format!(
                "already {MAX_WATCHERS} watchers on this session"
            )));
        }
        let (tx, events) = mpsc::channel(self.cfg.watch_queue_len.max(1));
        let (end_tx, end) = oneshot::channel();
        self.watchers.push(Watcher {
            events: tx,
            end: end_tx,
        });
        Ok(Watch {
            screens: self
                .channels
                .iter()
                .map(|(ch, c)| screen(*ch, &c.term))
                .collect(),
            events,
            end,
            ended: None,
        })
    }

    /// Copies an event to every watcher without waiting: one whose queue is full is dropped
    /// and told why, one that went away is forgotten.
    fn tell_watchers(&mut self, ev: WatchEvent) {
        let mut i = 0;
        while i < self.watchers.len() {
            match self.watchers[i].events.try_send(ev.clone()) {
                Ok(()) => i += 1,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    let w = self.watchers.swap_remove(i);
                    let _ = w.end.send(WatchEnd::Lagged);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.watchers.swap_remove(i);
                }
            }
        }
    }

    fn end_watchers(&mut self, end: WatchEnd) {
        for w in self.watchers.drain(..) {
            let _ = w.end.send(end.clone());
        }
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
        // Watchers have seen every event now; the file is not their concern.
        self.end_watchers(WatchEnd::Finished(reason.to_string()));
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

fn screen(channel: u32, term: &Terminal) -> Screen {
    let (cols, rows) = term.size();
    Screen {
        channel,
        cols,
        rows,
        paint: Bytes::from(repaint(term)),
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
