//! The command log of a session: commands (exec requests, file transfers, interactive shells)
//! and rule alerts go to the store through one writer task per session, so the pump never
//! waits on the database.

use custos_core::{AlertRecord, CommandRecord, Id, Name};
use custos_store::Store;
use std::collections::HashMap;
use tokio::sync::mpsc;
use tracing::error;

enum Msg {
    Command {
        channel: u32,
        offset_us: u64,
        kind: &'static str,
        text: String,
        cwd: Option<String>,
    },
    Finished {
        channel: u32,
        exit_status: i32,
    },
    Alert(Box<AlertRecord>),
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// Where a session's pumps report commands. Cheap to clone; never blocks.
#[derive(Clone)]
pub struct CommandLog {
    tx: mpsc::UnboundedSender<Msg>,
}

impl CommandLog {
    /// Starts the writer task of session `session`.
    pub fn start(store: Store, session: Id, user: Name, target: Name) -> CommandLog {
        let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
        tokio::spawn(async move {
            // The last command of each channel, to attach its exit status.
            let mut last: HashMap<u32, i64> = HashMap::new();
            while let Some(msg) = rx.recv().await {
                match msg {
                    Msg::Command {
                        channel,
                        offset_us,
                        kind,
                        text,
                        cwd,
                    } => {
                        let rec = CommandRecord {
                            session,
                            channel,
                            offset_us,
                            at: time::OffsetDateTime::now_utc(),
                            kind: kind.to_string(),
                            text,
                            cwd,
                            exit_status: None,
                            user: user.clone(),
                            target: target.clone(),
                        };
                        match store.record_command(&rec).await {
                            Ok(id) => {
                                last.insert(channel, id);
                            }
                            Err(e) => {
                                error!(session = %session, error = %e, "cannot store a command")
                            }
                        }
                    }
                    Msg::Alert(a) => {
                        if let Err(e) = store.record_alert(&a).await {
                            error!(session = %session, rule = %a.rule, error = %e, "cannot store an alert");
                        }
                    }
                    Msg::Flush(done) => {
                        let _ = done.send(());
                    }
                    Msg::Finished {
                        channel,
                        exit_status,
                    } => {
                        if let Some(id) = last.remove(&channel)
                            && let Err(e) = store.set_command_exit(id, exit_status).await
                        {
                            error!(session = %session, error = %e, "cannot store a command's exit status");
                        }
                    }
                }
            }
        });
        CommandLog { tx }
    }

    /// A command started on `channel` at `offset_us` into the recording.
    pub fn command(
        &self,
        channel: u32,
        offset_us: u64,
        kind: &'static str,
        text: String,
        cwd: Option<String>,
    ) {
        let _ = self.tx.send(Msg::Command {
            channel,
            offset_us,
            kind,
            text,
            cwd,
        });
    }

    /// Stores an alert.
    pub fn alert(&self, alert: AlertRecord) {
        let _ = self.tx.send(Msg::Alert(Box::new(alert)));
    }

    /// Waits until every command reported so far is stored.
    pub async fn flush(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// The last command of `channel` ended with `exit_status`.
    pub fn finished(&self, channel: u32, exit_status: i32) {
        let _ = self.tx.send(Msg::Finished {
            channel,
            exit_status,
        });
    }
}
