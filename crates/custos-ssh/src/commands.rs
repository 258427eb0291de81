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
/// The most queued messages handled in one round.
const MAX_BATCH: usize = 512;

/// Stores the pending commands in one transaction and notes each channel's last command. If
/// the batch fails, each command is tried on its own so that one bad row loses nothing else.
async fn store_commands(
    store: &Store,
    session: Id,
    pending: &mut Vec<CommandRecord>,
    last: &mut HashMap<u32, i64>,
) {
    if pending.is_empty() {
        return;
    }
    match store.record_commands(pending).await {
        Ok(ids) => {
            for (c, id) in pending.iter().zip(ids) {
                last.insert(c.channel, id);
            }
        }
        Err(_) => {
            for c in pending.iter() {
                match store.record_command(c).await {
                    Ok(id) => {
                        last.insert(c.channel, id);
                    }
                    Err(e) => error!(session = %session, error = %e, "cannot store a command"),
                }
            }
        }
    }
    pending.clear();
}

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
            let mut pending: Vec<CommandRecord> = Vec::new();
            while let Some(first) = rx.recv().await {
                // Whatever else is already queued goes with it: consecutive commands are
                // stored in one transaction, everything in the order it was sent.
                let mut msgs = vec![first];
                while msgs.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(m) => msgs.push(m),
                        Err(_) => break,
                    }
                }
                for msg in msgs {
                    let msg = match msg {
                        Msg::Command {
                            channel,
                            offset_us,
                            kind,
                            text,
                            cwd,
                        } => {
                            pending.push(CommandRecord {
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
                            });
                            continue;
                        }
                        other => other,
                    };
                    store_commands(&store, session, &mut pending, &mut last).await;
                    match msg {
                        Msg::Command { .. } => {}
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
                store_commands(&store, session, &mut pending, &mut last).await;
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
