//! The audit log handle and its single writer task.
//!
//! [`AuditLog::emit`] only queues the event (an unbounded channel of small messages, so the
//! session hot path never waits on the disk); one writer task per process drains the queue,
//! chains the events and appends them in batches, one transaction per batch, signing a
//! checkpoint whenever [`AuditConfig::checkpoint_every`] events have gone unsigned and, when
//! there are unsigned events, every [`AuditConfig::checkpoint_interval`]. [`AuditLog::flush`]
//! returns once everything emitted before it is committed: events are durable once flushed.
//!
//! If the database fails, the writer keeps the events in memory, answers flushes with the
//! error and retries with a growing delay (up to 5 s); memory use then grows with the backlog
//! ([`AuditLog::backlog`] reports it). Several processes may write the same log: each batch
//! reads the chain head under the database write lock.

use crate::AuditError;
use crate::chain::{Checkpoint, GENESIS_HASH, chain_row};
use crate::event::AuditEvent;
use crate::keys::AuditKey;
use custos_store::AuditStore;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, MissedTickBehavior};

const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(5);
/// How long [`AuditLog::close`] keeps retrying a failing database before giving up.
const CLOSE_PATIENCE: Duration = Duration::from_secs(10);
/// How long the writer gathers events after the first before writing them; `flush` returns
/// this much later at most.
const GATHER: Duration = Duration::from_millis(20);

/// When checkpoints are made and how large batches grow.
#[derive(Clone, Debug)]
pub struct AuditConfig {
    /// Sign a checkpoint once this many events are unsigned (N). At least 1.
    pub checkpoint_every: u64,
    /// Sign a checkpoint this often when there are unsigned events (T), and once at start-up
    /// to cover a tail left by a process that stopped without one.
    pub checkpoint_interval: Duration,
    /// The most events appended in one transaction.
    pub max_batch: usize,
}

impl Default for AuditConfig {
    fn default() -> AuditConfig {
        AuditConfig {
            checkpoint_every: 1000,
            checkpoint_interval: Duration::from_secs(60),
            max_batch: 4096,
        }
    }
}

enum Msg {
    // Boxed so that flushes and closes do not each carry an event's worth of bytes.
    Event(Box<AuditEvent>),
    Flush(oneshot::Sender<Result<u64, AuditError>>),
    Close(oneshot::Sender<Result<u64, AuditError>>),
}

#[derive(Default)]
struct Shared {
    backlog: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// A handle on the audit log. Cloning is cheap; every clone feeds the same writer task.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::UnboundedSender<Msg>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("backlog", &self.backlog())
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Starts the writer task on the current tokio runtime (call it from inside one). The
    /// writer first signs any unsigned tail left by an earlier process.
    pub fn start(store: AuditStore, key: AuditKey, config: AuditConfig) -> AuditLog {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared::default());
        let writer = Writer {
            store,
            key,
            every: config.checkpoint_every.max(1),
            interval: config.checkpoint_interval.max(Duration::from_millis(10)),
            max_batch: config.max_batch.max(1),
            shared: shared.clone(),
            rx,
            rx_done: false,
            ending: false,
            closer: None,
            pending: VecDeque::new(),
            received: 0,
            committed: 0,
            head_seq: 0,
            waiters: Vec::new(),
        };
        tokio::spawn(writer.run());
        AuditLog { tx, shared }
    }

    /// Queues `event` for the log without waiting. Fails only once the log is closed.
    pub fn emit(&self, event: AuditEvent) -> Result<(), AuditError> {
        self.shared.backlog.fetch_add(1, Ordering::Relaxed);
        self.tx.send(Msg::Event(Box::new(event))).map_err(|_| {
            self.shared.backlog.fetch_sub(1, Ordering::Relaxed);
            AuditError::Closed
        })
    }

    /// Waits until every event emitted before this call is committed. Returns the sequence
    /// number of the last event this log has written (0 if none yet). Fails with
    /// [`AuditError::Write`] if the database failed; the events stay queued and are retried.
    pub async fn flush(&self) -> Result<u64, AuditError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Msg::Flush(tx))
            .map_err(|_| AuditError::Closed)?;
        rx.await.map_err(|_| AuditError::Closed)?
    }

    /// Writes everything queued, signs a final checkpoint and stops the writer. Later emits
    /// and flushes fail with [`AuditError::Closed`].
    pub async fn close(&self) -> Result<u64, AuditError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Msg::Close(tx))
            .map_err(|_| AuditError::Closed)?;
        rx.await.map_err(|_| AuditError::Closed)?
    }

    /// Events emitted but not yet committed.
    pub fn backlog(&self) -> u64 {
        self.shared.backlog.load(Ordering::Relaxed)
    }

    /// The last write error, while the writer is failing; `None` when it is healthy.
    pub fn last_error(&self) -> Option<String> {
        self.shared
            .last_error
            .lock()
            .map(|e| e.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }
}

type Reply = oneshot::Sender<Result<u64, AuditError>>;

struct Writer {
    store: AuditStore,
    key: AuditKey,
    every: u64,
    interval: Duration,
    max_batch: usize,
    shared: Arc<Shared>,
    rx: mpsc::UnboundedReceiver<Msg>,
    /// The channel is closed and empty.
    rx_done: bool,
    /// A close was asked for, or every handle is gone.
    ending: bool,
    closer: Option<Reply>,
    pending: VecDeque<Box<AuditEvent>>,
    /// Events taken from the channel, and how many of them are committed.
    received: u64,
    committed: u64,
    head_seq: u64,
    /// Flushes waiting for `committed` to reach their mark.
    waiters: Vec<(u64, Reply)>,
}

impl Writer {
    async fn run(mut self) {
        let mut tick = tokio::time::interval_at(Instant::now() + self.interval, self.interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // Sign any tail that a previous process left unsigned, before taking new events.
        let mut checkpoint_due = false;
        if let Err(e) = self.write(true).await {
            tracing::error!(error = %e, "signing the audit log head at start-up failed");
            self.set_error(Some(e.to_string()));
            checkpoint_due = true;
        }
        let mut retry_at: Option<Instant> = None;
        let mut backoff = FIRST_RETRY;
        let mut give_up_at: Option<Instant> = None;
        loop {
            let backing_off = retry_at.is_some_and(|t| t > Instant::now());
            let idle = self.pending.is_empty()
                && self.waiters.is_empty()
                && !checkpoint_due
                && !self.ending;
            if idle || backing_off {
                let wake = retry_at.unwrap_or_else(Instant::now);
                tokio::select! {
                    m = self.rx.recv(), if !self.rx_done => match m {
                        Some(m) => self.take(m),
                        None => self.channel_done(),
                    },
                    _ = tick.tick() => checkpoint_due = true,
                    _ = tokio::time::sleep_until(wake), if backing_off => {}
                }
                // Group commit: events that arrive within GATHER of the first go with it, so
                // that many sessions' events share one transaction and one disk flush.
                if idle {
                    self.gather().await;
                }
            }
            self.drain();
            if self.ending && give_up_at.is_none() {
                give_up_at = Some(Instant::now() + CLOSE_PATIENCE);
            }
            if retry_at.is_some_and(|t| t > Instant::now()) {
                let e = self.last_error().unwrap_or_default();
                self.fail_waiters(&e);
                continue;
            }
            retry_at = None;
            let finishing = self.ending && self.rx_done;
            // Time-based and final checkpoints sign the head once the backlog is written.
            let sign_head = (checkpoint_due || finishing) && self.pending.len() <= self.max_batch;
            match self.write(sign_head).await {
                Ok(()) => {
                    backoff = FIRST_RETRY;
                    if self.pending.is_empty() {
                        checkpoint_due = false;
                    }
                    self.set_error(None);
                    self.answer_waiters();
                    if finishing && self.pending.is_empty() {
                        if let Some(c) = self.closer.take() {
                            let _ = c.send(Ok(self.head_seq));
                        }
                        return;
                    }
                }
                Err(e) => {
                    let text = e.to_string();
                    tracing::error!(error = %text, backlog = self.pending.len(), "audit log write failed");
                    self.set_error(Some(text.clone()));
                    self.fail_waiters(&text);
                    if finishing && give_up_at.is_some_and(|t| Instant::now() >= t) {
                        if let Some(c) = self.closer.take() {
                            let _ = c.send(Err(AuditError::Write(format!(
                                "{} audit events were not written before closing: {text}",
                                self.pending.len()
                            ))));
                        }
                        return;
                    }
                    retry_at = Some(Instant::now() + backoff);
                    backoff = (backoff * 2).min(MAX_RETRY);
                }
            }
        }
    }

    fn take(&mut self, m: Msg) {
        match m {
            Msg::Event(e) => {
                self.pending.push_back(e);
                self.received += 1;
            }
            Msg::Flush(reply) => self.waiters.push((self.received, reply)),
            Msg::Close(reply) => {
                // Refuse new messages; those already queued are still written.
                self.rx.close();
                self.ending = true;
                if let Some(earlier) = self.closer.replace(reply) {
                    let _ = earlier.send(Err(AuditError::Closed));
                }
            }
        }
    }

    fn channel_done(&mut self) {
        self.rx_done = true;
        self.ending = true;
    }

    /// Takes what arrives within [`GATHER`], up to one batch.
    async fn gather(&mut self) {
        let until = Instant::now() + GATHER;
        while !self.rx_done && !self.ending && self.pending.len() < self.max_batch {
            match tokio::time::timeout_at(until, self.rx.recv()).await {
                Ok(Some(m)) => self.take(m),
                Ok(None) => self.channel_done(),
                Err(_) => break,
            }
        }
    }

    /// Takes what is queued without waiting, at most one batch worth, so that a steady stream
    /// of events cannot starve the writes.
    fn drain(&mut self) {
        let mut taken = 0;
        while !self.rx_done && taken < self.max_batch {
            match self.rx.try_recv() {
                Ok(m) => {
                    self.take(m);
                    taken += 1;
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => self.channel_done(),
            }
        }
    }

    /// Appends up to one batch in one transaction, with the checkpoints that fall due;
    /// `checkpoint_now` also signs the resulting head if any event is unsigned.
    async fn write(&mut self, checkpoint_now: bool) -> Result<(), AuditError> {
        let n = self.pending.len().min(self.max_batch);
        if n == 0 && !checkpoint_now {
            return Ok(());
        }
        let mut append = self.store.begin_append().await?;
        let head = append.head().clone();
        let mut prev = match &head.hash {
            None => GENESIS_HASH,
            Some(h) => <[u8; 32]>::try_from(h.as_slice()).map_err(|_| {
                AuditError::Invalid(format!(
                    "the last audit event ({}) has a malformed hash; run `custos audit verify`",
                    head.seq
                ))
            })?,
        };
        let mut seq = head.seq;
        let mut signed = head.checkpoint_seq;
        let mut rows = Vec::with_capacity(n);
        let mut checkpoints = Vec::new();
        for event in self.pending.iter().take(n) {
            seq += 1;
            let row = chain_row(event, seq, &prev);
            prev.copy_from_slice(&row.hash);
            rows.push(row);
            if seq - signed >= self.every {
                checkpoints.push(Checkpoint::now(seq, prev).sign(&self.key)?);
                signed = seq;
            }
        }
        if checkpoint_now && seq > signed {
            checkpoints.push(Checkpoint::now(seq, prev).sign(&self.key)?);
        }
        if rows.is_empty() && checkpoints.is_empty() {
            return Ok(());
        }
        append.insert_events(&rows).await?;
        for cp in &checkpoints {
            append.insert_checkpoint(cp).await?;
        }
        append.commit().await?;
        self.pending.drain(..n);
        self.committed += n as u64;
        self.shared.backlog.fetch_sub(n as u64, Ordering::Relaxed);
        if n > 0 {
            self.head_seq = seq;
        }
        Ok(())
    }

    fn answer_waiters(&mut self) {
        let committed = self.committed;
        let (done, waiting): (Vec<_>, Vec<_>) = self
            .waiters
            .drain(..)
            .partition(|(mark, _)| *mark <= committed);
        self.waiters = waiting;
        for (_, w) in done {
            let _ = w.send(Ok(self.head_seq));
        }
    }

    fn fail_waiters(&mut self, error: &str) {
        for (_, w) in self.waiters.drain(..) {
            let _ = w.send(Err(AuditError::Write(error.to_string())));
        }
    }

    fn last_error(&self) -> Option<String> {
        self.shared
            .last_error
            .lock()
            .map(|e| e.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    fn set_error(&self, e: Option<String>) {
        match self.shared.last_error.lock() {
            Ok(mut g) => *g = e,
            Err(p) => *p.into_inner() = e,
        }
    }
}
