//! The command log: commands (exec requests, file transfers, interactive shells) and rule
//! alerts of every session go to the store through one writer task per gateway, so the pumps
//! never wait on the database, and commands reported together by many sessions are stored in
//! one transaction (one disk flush for a thousand sessions typing, not one each).

use custos_core::{AlertRecord, CommandRecord, Id, Name};
use custos_store::Store;
use std::collections::HashMap;
use std::sync::Arc;
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tracing::error;

enum Msg {
    Command {
        from: Arc<Source>,
        channel: u32,
        offset_us: u64,
        at: OffsetDateTime,
        kind: &'static str,
        text: String,
        cwd: Option<String>,
    },
    Finished {
        session: Id,
        channel: u32,
        exit_status: i32,
    },
    Alert(Box<AlertRecord>),
    Flush(tokio::sync::oneshot::Sender<()>),
    /// The session's last handle is gone: forget its channels.
    Ended(Id),
}

/// The most queued messages handled in one round.
const MAX_BATCH: usize = 2048;
/// How long the writer gathers messages before storing them: commands appear in searches this
/// much later, and the pumps never wait for it.
const GATHER: std::time::Duration = std::time::Duration::from_millis(20);

/// The last command of each channel of each session, to attach its exit status.
type LastCommands = HashMap<Id, HashMap<u32, i64>>;

/// The gateway's command writer. Cheap to clone; never blocks.
#[derive(Clone)]
pub struct CommandWriter {
    tx: mpsc::UnboundedSender<Msg>,
}

impl CommandWriter {
    /// Starts the writer task; it ends when the writer and every session's log are dropped.
    pub fn start(store: Store) -> CommandWriter {
        let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
        tokio::spawn(async move {
            let mut last = LastCommands::new();
            let mut pending: Vec<CommandRecord> = Vec::new();
            let mut msgs = Vec::new();
            while rx.recv_many(&mut msgs, MAX_BATCH).await > 0 {
                // Group commit: what arrives within GATHER of the first message goes with it,
                // so that sessions typing at once share one transaction (and one disk flush)
                // instead of each taking its own; consecutive commands, from any session, are
                // stored in one transaction, everything in the order it was sent.
                let until = tokio::time::Instant::now() + GATHER;
                while msgs.len() < MAX_BATCH {
                    let room = MAX_BATCH - msgs.len();
                    match tokio::time::timeout_at(until, rx.recv_many(&mut msgs, room)).await {
                        Ok(n) if n > 0 => {}
                        _ => break,
                    }
                }
                for msg in msgs.drain(..) {
                    let msg = match msg {
                        Msg::Command {
                            from,
                            channel,
                            offset_us,
                            at,
                            kind,
                            text,
                            cwd,
                        } => {
                            pending.push(CommandRecord {
                                session: from.session,
                                channel,
                                offset_us,
                                at,
                                kind: kind.to_string(),
                                text,
                                cwd,
                                exit_status: None,
                                user: from.user.clone(),
                                target: from.target.clone(),
                            });
                            continue;
                        }
                        other => other,
                    };
                    store_commands(&store, &mut pending, &mut last).await;
                    match msg {
                        Msg::Command { .. } => {}
                        Msg::Alert(a) => {
                            if let Err(e) = store.record_alert(&a).await {
                                error!(session = %a.session, rule = %a.rule, error = %e, "cannot store an alert");
                            }
                        }
                        Msg::Flush(done) => {
                            let _ = done.send(());
                        }
                        Msg::Finished {
                            session,
                            channel,
                            exit_status,
                        } => {
                            let id = last.get_mut(&session).and_then(|m| m.remove(&channel));
                            if let Some(id) = id
                                && let Err(e) = store.set_command_exit(id, exit_status).await
                            {
                                error!(session = %session, error = %e, "cannot store a command's exit status");
                            }
                        }
                        Msg::Ended(session) => {
                            last.remove(&session);
                        }
                    }
                }
                store_commands(&store, &mut pending, &mut last).await;
            }
        });
        CommandWriter { tx }
    }

    /// The log of session `session`.
    pub fn session(&self, session: Id, user: Name, target: Name) -> CommandLog {
        CommandLog {
            source: Arc::new(Source {
                tx: self.tx.clone(),
                session,
                user,
                target,
            }),
        }
    }
}

/// Stores the pending commands in one transaction and notes each channel's last command. If
/// the batch fails, each command is tried on its own so that one bad row loses nothing else.
async fn store_commands(store: &Store, pending: &mut Vec<CommandRecord>, last: &mut LastCommands) {
    if pending.is_empty() {
        return;
    }
    let mut note = |c: &CommandRecord, id: i64| {
        last.entry(c.session).or_default().insert(c.channel, id);
    };
    match store.record_commands(pending).await {
        Ok(ids) => {
            for (c, id) in pending.iter().zip(ids) {
                note(c, id);
            }
        }
        Err(_) => {
            for c in pending.iter() {
                match store.record_command(c).await {
                    Ok(id) => note(c, id),
                    Err(e) => error!(session = %c.session, error = %e, "cannot store a command"),
                }
            }
        }
    }
    pending.clear();
}

/// Who a session's commands belong to; when the last reference goes, the writer forgets the
/// session.
struct Source {
    tx: mpsc::UnboundedSender<Msg>,
    session: Id,
    user: Name,
    target: Name,
}

impl Drop for Source {
    fn drop(&mut self) {
        let _ = self.tx.send(Msg::Ended(self.session));
    }
}

/// Where a session's pumps report commands. Cheap to clone; never blocks.
#[derive(Clone)]
pub struct CommandLog {
    source: Arc<Source>,
}

impl CommandLog {
    fn send(&self, msg: Msg) {
        let _ = self.source.tx.send(msg);
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
        self.send(Msg::Command {
            from: self.source.clone(),
            channel,
            offset_us,
            at: OffsetDateTime::now_utc(),
            kind,
            text,
            cwd,
        });
    }

    /// Stores an alert.
    pub fn alert(&self, alert: AlertRecord) {
        self.send(Msg::Alert(Box::new(alert)));
    }

    /// Waits until every command and alert reported so far is stored.
    pub async fn flush(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(Msg::Flush(tx));
        let _ = rx.await;
    }

    /// The last command of `channel` ended with `exit_status`.
    pub fn finished(&self, channel: u32, exit_status: i32) {
        self.send(Msg::Finished {
            session: self.source.session,
            channel,
            exit_status,
        });
    }
}
