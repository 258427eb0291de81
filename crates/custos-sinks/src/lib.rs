//! SIEM delivery: every configured sink reads the audit log from its own durable cursor (an
//! outbox), formats each event for its receiver — RFC 5424 syslog over UDP, TCP or TLS with a
//! JSON, CEF or LEEF body; JSON batches to an HMAC-signed webhook; Splunk HEC; a rotated
//! JSON-lines file — and moves the cursor only once the receiver has the batch.
//!
//! Delivery is at-least-once and in order per sink; each event carries its stable id
//! (`event.id`) for de-duplication. A receiver that is down is retried with back-off (from one
//! second up to `retry_max_secs`) and receives everything once it is back. Sinks run in
//! their own tasks and read the database, never the session path: a slow or dead sink cannot
//! slow a session. Their progress and failures are stored beside the cursor
//! (`custos sinks status`).

#![warn(missing_docs)]

mod config;
mod deliver;
mod http;
mod net;

pub use config::{
    FileSink, Format, HecSink, SinkConfig, SinkKind, Start, SyslogSink, TlsSettings, Transport,
    WebhookSink,
};
pub use deliver::{SIGNATURE_HEADER, TIMESTAMP_HEADER, webhook_signature};

use custos_store::AuditStore;
use deliver::Deliverer;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tracing::{info, warn};

/// How often an idle sink looks for new events when nobody wakes it.
const POLL: Duration = Duration::from_millis(500);

/// The running sinks.
pub struct Sinks {
    wake: Arc<Notify>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Sinks {
    /// Checks every sink's settings, secrets and TLS material, then starts one delivery task
    /// per sink. `base` is the directory relative paths are read from. Any error stops
    /// everything (a sink that cannot run must not be silently skipped).
    pub fn start(store: AuditStore, configs: &[SinkConfig], base: &Path) -> Result<Sinks, String> {
        let mut seen = std::collections::BTreeSet::new();
        let mut ready = Vec::new();
        for c in configs {
            c.validate()?;
            if !seen.insert(c.name.clone()) {
                return Err(format!("sink '{}' is configured twice", c.name));
            }
            let d = Deliverer::new(&c.kind, base).map_err(|e| format!("sink '{}': {e}", c.name))?;
            ready.push((c.clone(), d));
        }
        let wake = Arc::new(Notify::new());
        let tasks = ready
            .into_iter()
            .map(|(c, d)| tokio::spawn(run(store.clone(), c, d, wake.clone())))
            .collect();
        Ok(Sinks { wake, tasks })
    }

    /// Tells the sinks new events were appended (they also poll).
    pub fn wake(&self) {
        self.wake.notify_waiters();
    }

    /// A handle that wakes the sinks, for the audit writer.
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Stops delivery (cursors are durable; the next start resumes).
    pub fn stop(&self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Drop for Sinks {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn run(store: AuditStore, c: SinkConfig, mut d: Deliverer, wake: Arc<Notify>) {
    let name = c.name.as_str();
    let max_backoff = Duration::from_secs(c.retry_max_secs.max(1));
    let mut backoff = Duration::from_secs(1);
    let mut cursor = loop {
        match start_cursor(&store, &c).await {
            Ok(s) => break s,
            Err(e) => {
                warn!(sink = name, error = %e, "cannot read the sink's cursor; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(max_backoff);
            }
        }
    };
    info!(sink = name, to = %c.describe(), from_seq = cursor, "sink started");
    let mut failing = false;
    loop {
        let rows = match store.after(cursor, c.batch_size).await {
            Ok(r) => r,
            Err(e) => {
                warn!(sink = name, error = %e, "cannot read the audit log");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(max_backoff);
                continue;
            }
        };
        let Some(last) = rows.last().map(|r| r.seq) else {
            let notified = wake.notified();
            let _ = tokio::time::timeout(POLL, notified).await;
            continue;
        };
        match d.send(&rows).await {
            Ok(()) => {
                if let Err(e) = store.set_sink_cursor(name, last).await {
                    // Not moved: the batch is sent again (at-least-once).
                    warn!(sink = name, error = %e, "cannot store the sink's cursor");
                    tokio::time::sleep(backoff).await;
                    continue;
                }
                let _ = store.record_sink_success(name).await;
                if failing {
                    info!(sink = name, seq = last, "sink delivering again");
                    failing = false;
                }
                cursor = last;
                backoff = Duration::from_secs(1);
            }
            Err(e) => {
                warn!(sink = name, error = %e, retry_in_secs = backoff.as_secs(), "sink delivery failed");
                let _ = store.record_sink_failure(name, &e).await;
                failing = true;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(max_backoff);
            }
        }
    }
}

/// The sink's stored cursor, or where a new sink starts (stored at once, so `end` means the
/// end at the time the sink was first configured).
async fn start_cursor(store: &AuditStore, c: &SinkConfig) -> Result<u64, String> {
    if let Some(seq) = store
        .sink_cursor(&c.name)
        .await
        .map_err(|e| e.to_string())?
    {
        return Ok(seq);
    }
    let seq = match c.start {
        Start::Beginning => 0,
        Start::End => store.head().await.map_err(|e| e.to_string())?.seq,
    };
    store
        .set_sink_cursor(&c.name, seq)
        .await
        .map_err(|e| e.to_string())?;
    Ok(seq)
}
