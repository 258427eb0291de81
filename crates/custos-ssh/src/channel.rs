//! Channel tasks: each user channel gathers its requests, resolves the target (by login name
//! or the menu), opens the matching channel on the target and pumps bytes both ways.
//!
//! The two directions run as two futures joined in one task, so a slow reader on one side
//! never stalls the other direction. Every chunk is handed to the recorder as the same
//! reference-counted buffer that is forwarded: the pump copies nothing.

use bytes::Bytes;
use custos_core::EndReason;
use custos_recording::EventKind;
use custos_term::{CommandEvent, LineModel};
use custos_transfer::{FileOp, ScpAudit, SftpAudit};
use russh::server::Msg;
use russh::{Channel, ChannelMsg, Pty};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, mpsc};
use tracing::{info, warn};

use crate::enforce::{UserWrite, Verdict};
use crate::gateway::ConnShared;
use crate::local::PtyParams;
use crate::session::LiveSession;
use crate::target::{StartRequest, TargetChannel, TargetEvent, TargetInput};

/// Requests the handler routes to a channel task.
pub(crate) enum ChanReq {
    Pty(PtyParams, Vec<(Pty, u32)>),
    Env {
        name: String,
        value: String,
        allowed: bool,
    },
    Start(StartRequest),
    Resize(u32, u32),
    Signal(String),
    Refused(String),
}

/// Writes a gateway message to the user on stderr (or stdout on a terminal, where both show).
async fn tell(w: &UserWrite, text: &str) {
    let line = format!("custos: {text}\r\n");
    let _ = w.extended_data_bytes(1, Bytes::from(line)).await;
}

/// Turns a verdict into a refusal message or `None` (go ahead). A hold tells the user it
/// waits (on their terminal when `on_terminal`) and waits for the moderator.
async fn settle(
    shared: &ConnShared,
    session: &LiveSession,
    ch: u32,
    user: Option<(&UserWrite, bool)>,
    verdict: Verdict,
) -> Option<String> {
    match verdict {
        Verdict::Allow => None,
        Verdict::Refuse(m) => Some(m),
        Verdict::Hold(h) => {
            let msg = h.message(shared.ctx.config.hold_timeout.as_secs());
            session.record(ch, EventKind::Note(msg.clone())).await;
            match user {
                Some((w, true)) => {
                    let _ = w
                        .data_bytes(Bytes::from(format!("\r\ncustos: {msg}\r\n")))
                        .await;
                }
                Some((w, false)) => tell(w, &msg).await,
                None => {}
            }
            let refusal = crate::enforce::await_hold(shared, session, ch, h).await;
            if refusal.is_none()
                && let Some((w, on_terminal)) = user
            {
                let text = "approved by a moderator; going ahead";
                if on_terminal {
                    let _ = w
                        .data_bytes(Bytes::from(format!("custos: {text}\r\n")))
                        .await;
                } else {
                    tell(w, text).await;
                }
            }
            refusal
        }
    }
}

/// Refuses a channel with a message and exit status 1.
async fn refuse(w: &UserWrite, text: &str) {
    tell(w, text).await;
    let _ = w.exit_status(1).await;
    let _ = w.eof().await;
    let _ = w.close().await;
}

pub(crate) async fn run_session_channel(
    shared: Arc<ConnShared>,
    channel: Channel<Msg>,
    mut reqs: mpsc::UnboundedReceiver<ChanReq>,
) {
    let (mut uread, uwrite) = channel.split();
    let mut pty: Option<(PtyParams, Vec<(Pty, u32)>)> = None;
    let mut env: Vec<(String, String)> = Vec::new();
    let mut pending: Vec<ChanReq> = Vec::new();
    let start = loop {
        match reqs.recv().await {
            Some(ChanReq::Pty(p, m)) => pty = Some((p, m)),
            Some(ChanReq::Env {
                name,
                value,
                allowed,
            }) => {
                if allowed {
                    env.push((name, value));
                }
            }
            Some(ChanReq::Start(s)) => break s,
            Some(ChanReq::Resize(c, r)) => {
                if let Some((p, _)) = pty.as_mut() {
                    p.cols = c;
                    p.rows = r;
                }
            }
            Some(other) => pending.push(other),
            None => return,
        }
    };
    let Some(login) = shared.login() else {
        return refuse(&uwrite, "not authenticated").await;
    };
    if let Some(r) = &login.refusal {
        return refuse(&uwrite, r).await;
    }
    if login.must_change_password {
        if pty.is_none() {
            return refuse(
                &uwrite,
                "your password is a one-time password: log in once with a terminal (ssh -t) to choose your own",
            )
            .await;
        }
        let mut p = Prompter {
            read: &mut uread,
            write: &uwrite,
            backlog: &shared.backlog,
        };
        if let Err(e) = change_one_time_password(&shared, &mut p).await {
            return refuse(&uwrite, &e).await;
        }
    }
    let target = match &login.requested_target {
        Some(t) => t.clone(),
        None => {
            if let Some(Ok(s)) = shared.session.get() {
                s.target.name.to_string()
            } else if pty.is_some() && matches!(start, StartRequest::Shell) {
                match crate::channel::menu(&shared, &mut uread, &uwrite).await {
                    Some(t) => t,
                    None => {
                        let _ = uwrite.eof().await;
                        let _ = uwrite.close().await;
                        return;
                    }
                }
            } else {
                let names = granted_names(&shared).await;
                let msg = format!(
                    "no target chosen: connect as {user}:TARGET@gateway (your targets: {names})",
                    user = login.user.name
                );
                return refuse(&uwrite, &msg).await;
            }
        }
    };
    let session = match shared.session(&target, Some(&uwrite)).await {
        Ok(s) => s,
        Err(e) => return refuse(&uwrite, &e).await,
    };
    let ch = session.allocate_channel();
    let (pty_params, modes) = match &pty {
        Some((p, m)) => (Some(p.clone()), m.clone()),
        None => (None, Vec::new()),
    };
    let rec_ok = session
        .record(
            ch,
            EventKind::ChannelOpen {
                kind: "session".into(),
            },
        )
        .await;
    if let Some(p) = &pty_params {
        session
            .record(
                ch,
                EventKind::PtyRequest {
                    term: p.term.clone(),
                    cols: clamp16(p.cols),
                    rows: clamp16(p.rows),
                },
            )
            .await;
    }
    for (k, v) in &env {
        session
            .record(
                ch,
                EventKind::Env {
                    name: k.clone(),
                    value: Bytes::from(v.clone()),
                },
            )
            .await;
    }
    let start_event = match &start {
        StartRequest::Shell => EventKind::Shell,
        StartRequest::Exec(c) => EventKind::Exec { command: c.clone() },
        StartRequest::Subsystem(s) => EventKind::Subsystem { name: s.clone() },
    };
    if !(rec_ok && session.record(ch, start_event).await) {
        return refuse(
            &uwrite,
            "the session cannot be recorded; refusing to continue without a recording",
        )
        .await;
    }
    for r in pending {
        if let ChanReq::Refused(what) = r {
            session
                .record(ch, EventKind::Note(format!("refused {what}")))
                .await;
            warn!(session = %session.id, "{what} refused");
        }
    }
    match &start {
        StartRequest::Exec(c) => {
            let text = String::from_utf8_lossy(c).into_owned();
            info!(session = %session.id, command = %text, "exec");
            session
                .commands
                .command(ch, session.now_us(), "exec", text.clone(), None);
            session.audit(custos_audit::EventKind::Exec {
                position: crate::audit::position(ch, session.now_us()),
                command_line: text.clone(),
            });
            let event = custos_rules::Event::Exec {
                command: text.clone(),
            };
            let verdict = crate::enforce::check(&shared, &session, ch, "exec", &text, event).await;
            if let Some(msg) = settle(&shared, &session, ch, Some((&uwrite, false)), verdict).await
            {
                session.record(ch, EventKind::Note(msg.clone())).await;
                return refuse(&uwrite, &msg).await;
            }
        }
        StartRequest::Subsystem(s) => info!(session = %session.id, subsystem = %s, "subsystem"),
        StartRequest::Shell => info!(session = %session.id, pty = pty_params.is_some(), "shell"),
    }
    let tchan = match session
        .conn
        .open_session(pty_params.as_ref(), &modes, &env, &start)
        .await
    {
        Ok(t) => t,
        Err(e) => {
            session
                .record(
                    ch,
                    EventKind::Note(format!("target refused the channel: {e}")),
                )
                .await;
            return refuse(&uwrite, &e.to_string()).await;
        }
    };
    let audit = match &start {
        StartRequest::Subsystem(s) if s == "sftp" => Some(Audit::Sftp(SftpAudit::new())),
        StartRequest::Exec(c) => ScpAudit::from_exec(c).map(Audit::Scp),
        _ => None,
    }
    .map(Mutex::new);
    // Interactive shells get a terminal model that reads each command off the screen.
    let tracker = match (&pty_params, &start) {
        (Some(p), StartRequest::Shell) => {
            Some(Mutex::new(LineModel::new(clamp16(p.cols), clamp16(p.rows))))
        }
        _ => None,
    };
    let taps = Taps {
        audit: audit.as_ref(),
        tracker: tracker.as_ref(),
        terminal: pty_params.is_some(),
    };
    pump(&shared, &session, ch, (uread, uwrite), tchan, reqs, taps).await;
}

fn clamp16(v: u32) -> u16 {
    v.min(u16::MAX as u32) as u16
}

async fn granted_names(shared: &ConnShared) -> String {
    let Some(login) = shared.login() else {
        return String::new();
    };
    match shared.ctx.store.targets_for_user(&login.user.name).await {
        Ok(t) if !t.is_empty() => t
            .iter()
            .map(|t| t.name.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        _ => "none".into(),
    }
}

/// What watches a channel's bytes besides the recorder: a file-transfer decoder (SFTP, scp)
/// or a terminal's command tracker.
struct Taps<'a> {
    audit: Option<&'a Mutex<Audit>>,
    tracker: Option<&'a Mutex<LineModel>>,
    /// The channel has a terminal: output rules apply, notices are shown, and output alone is
    /// not user activity.
    terminal: bool,
}

/// After a refused line, how long input waits at most for the shell to answer the Ctrl-C…
const REFUSAL_SETTLE_MAX: std::time::Duration = std::time::Duration::from_secs(1);
/// … and how long it waits after the first answer, for the shell to finish redrawing.
const REFUSAL_SETTLE: std::time::Duration = std::time::Duration::from_millis(50);

/// How long an Enter may wait for the echo of the keys typed before it.
const ECHO_WAIT: std::time::Duration = std::time::Duration::from_millis(300);

/// A file-transfer protocol decoder running beside a channel.
enum Audit {
    Sftp(SftpAudit),
    Scp(ScpAudit),
}

impl Audit {
    fn protocol(&self) -> &'static str {
        match self {
            Audit::Sftp(_) => "sftp",
            Audit::Scp(_) => "scp",
        }
    }

    fn client(&mut self, d: &[u8]) -> Vec<FileOp> {
        match self {
            Audit::Sftp(a) => a.client_bytes(d),
            Audit::Scp(a) => a.client_bytes(d),
        }
    }
    fn server(&mut self, d: &[u8]) -> Vec<FileOp> {
        match self {
            Audit::Sftp(a) => a.server_bytes(d),
            Audit::Scp(a) => a.server_bytes(d),
        }
    }
    fn finish(&mut self) -> Vec<FileOp> {
        match self {
            Audit::Sftp(a) => a.finish(),
            Audit::Scp(a) => a.finish(),
        }
    }
}

/// The rules' name for an audited file operation, if rules look at it.
fn rule_file_op(op: &str) -> Option<custos_rules::FileOp> {
    use custos_rules::FileOp as R;
    Some(match op {
        "read" => R::Download,
        "write" => R::Upload,
        "remove" => R::Delete,
        "rename" => R::Rename,
        "mkdir" => R::Mkdir,
        "rmdir" => R::Rmdir,
        "setstat" => R::Setattr,
        "symlink" | "link" => R::Link,
        "list" | "opendir" => R::List,
        _ => return None,
    })
}

/// Records audited file operations and checks them against the rules. Operations are seen
/// when they complete, so a refusing rule cannot undo one: it stops the transfer channel
/// (the returned message says why) and, for terminate and lock, the session.
async fn record_ops(
    shared: &ConnShared,
    session: &LiveSession,
    ch: u32,
    protocol: &str,
    ops: Vec<FileOp>,
) -> Option<String> {
    let mut refusal = None;
    for op in ops {
        if refusal.is_none()
            && let Some(rop) = rule_file_op(op.op)
        {
            let event = custos_rules::Event::FileTransfer {
                op: rop,
                path: op.path.clone(),
            };
            let text = format!("{} {}", op.op, op.path);
            refusal = match crate::enforce::check(shared, session, ch, "file", &text, event).await {
                Verdict::Allow => None,
                Verdict::Refuse(m) => Some(format!("{m}; the transfer is stopped")),
                Verdict::Hold(h) => {
                    // The operation has already happened; there is nothing left to hold.
                    crate::enforce::deny_at_once(
                        shared,
                        session,
                        &h,
                        "file operations are checked after they complete",
                    )
                    .await;
                    Some(format!("{}; the transfer is stopped", h.message(0)))
                }
            };
        }
        let mut text = format!("{} {}", op.op, op.path);
        if let Some(t) = &op.target_path {
            text.push_str(&format!(" -> {t}"));
        }
        if op.bytes > 0 {
            text.push_str(&format!(" ({} bytes)", op.bytes));
        }
        if op.status != "ok" {
            text.push_str(&format!(" [{}]", op.status));
        }
        session
            .commands
            .command(ch, session.now_us(), "file", text, None);
        session.audit(custos_audit::EventKind::FileTransfer {
            position: crate::audit::position(ch, session.now_us()),
            protocol: protocol.to_string(),
            operation: op.op.to_string(),
            path: op.path.clone(),
            new_path: op.target_path.clone(),
            bytes: (op.bytes > 0).then_some(op.bytes),
            outcome: if op.status == "ok" {
                custos_audit::Outcome::Success
            } else {
                custos_audit::Outcome::Failure
            },
        });
        info!(session = %session.id, op = op.op, path = %op.path, to = op.target_path.as_deref().unwrap_or(""), bytes = op.bytes, status = %op.status, "file transfer");
        session
            .record(
                ch,
                EventKind::Sftp {
                    op: op.op.to_string(),
                    path: op.path,
                    target_path: op.target_path,
                    bytes: op.bytes,
                    status: op.status,
                },
            )
            .await;
    }
    refusal
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Terminal output checked against the output rules, chunk by chunk (see
/// [`custos_rules::OutputWindow`] for the seam window and what bulk bursts skip).
#[derive(Default)]
struct OutputScan(custos_rules::OutputWindow);

impl OutputScan {
    /// Returns the refusal when a rule withholds this chunk.
    async fn check(
        &mut self,
        shared: &ConnShared,
        session: &LiveSession,
        ch: u32,
        d: &[u8],
    ) -> Option<String> {
        let rules = shared.ctx.rules.current();
        for text in self.0.next(&rules, d) {
            if let Some(m) = crate::enforce::check_output(shared, session, ch, &text).await {
                return Some(m);
            }
        }
        None
    }
}

/// Moves bytes both ways until both sides are done or the session is stopped.
async fn pump(
    shared: &ConnShared,
    session: &Arc<LiveSession>,
    ch: u32,
    (mut uread, uwrite): (russh::ChannelReadHalf, UserWrite),
    tchan: TargetChannel,
    mut reqs: mpsc::UnboundedReceiver<ChanReq>,
    taps: Taps<'_>,
) {
    let Taps {
        audit,
        tracker,
        terminal,
    } = taps;
    let a_protocol = audit.map(|a| lock(a).protocol()).unwrap_or("");
    let mut notices = session.notices();
    let mut scan = OutputScan::default();
    let handle = shared.handle.get();
    let backlog = &shared.backlog;
    let TargetChannel { input, mut events } = tchan;
    let mut stop_up = session.stop.subscribe();
    let mut stop_down = session.stop.subscribe();
    let uwrite = &uwrite;
    let input = &input;

    // User to target.
    let up = async {
        loop {
            tokio::select! {
                msg = uread.wait() => match msg {
                    Some(ChannelMsg::Data { data }) => {
                        session.bytes_in.fetch_add(data.len() as u64, Ordering::Relaxed);
                        session.touch();
                        if let Some(a) = audit {
                            let ops = lock(a).client(&data);
                            if let Some(msg) = record_ops(shared, session, ch, a_protocol, ops).await {
                                tell(uwrite, &msg).await;
                                break;
                            }
                        }
                        if !session.record(ch, EventKind::Input(data.clone())).await {
                            break;
                        }
                        let n = data.len() as i64;
                        let sent = forward_input(shared, session, ch, input, uwrite, tracker, data).await;
                        backlog.fetch_sub(n, Ordering::Relaxed);
                        if sent.is_err() {
                            break;
                        }
                    }
                    Some(ChannelMsg::Eof) => {
                        session.record(ch, EventKind::Eof { from_user: true }).await;
                        input.eof().await;
                    }
                    Some(ChannelMsg::Close) | None => {
                        input.close().await;
                        break;
                    }
                    Some(_) => {}
                },
                req = reqs.recv() => match req {
                    Some(ChanReq::Resize(c, r)) => {
                        if let Some(tr) = tracker {
                            let events = lock(tr).resize(clamp16(c), clamp16(r));
                            log_commands(session, ch, events);
                        }
                        session.record(ch, EventKind::Resize { cols: clamp16(c), rows: clamp16(r) }).await;
                        input.resize(c, r).await;
                    }
                    Some(ChanReq::Signal(s)) => {
                        session.record(ch, EventKind::Note(format!("signal {s} sent by the user"))).await;
                        input.signal(&s).await;
                    }
                    Some(ChanReq::Refused(what)) => {
                        session.record(ch, EventKind::Note(format!("refused {what}"))).await;
                    }
                    Some(_) => {}
                    None => {
                        // The connection's handler is gone; keep reading the channel until it closes.
                        std::future::pending::<()>().await;
                    }
                },
                _ = async { let _ = stop_up.wait_for(|r| r.is_some()).await; } => break,
            }
        }
    };

    // Target to user.
    let down = async {
        let mut closed_by_target = false;
        loop {
            tokio::select! {
                ev = events.next() => match ev {
                    Some(TargetEvent::Data(d)) => {
                        session.bytes_out.fetch_add(d.len() as u64, Ordering::Relaxed);
                        if !terminal {
                            session.touch();
                        }
                        if let Some(a) = audit {
                            let ops = lock(a).server(&d);
                            if let Some(msg) = record_ops(shared, session, ch, a_protocol, ops).await {
                                tell(uwrite, &msg).await;
                                break;
                            }
                        }
                        if let Some(tr) = tracker {
                            let events = lock(tr).output(session.now_us(), d.clone());
                            log_commands(session, ch, events);
                        }
                        if !session.record(ch, EventKind::Output(d.clone())).await {
                            break;
                        }
                        let withheld = if terminal {
                            scan.check(shared, session, ch, &d).await
                        } else {
                            None
                        };
                        let sent = match withheld {
                            None => uwrite.data_bytes(d).await,
                            Some(msg) => {
                                session.record(ch, EventKind::Note(msg.clone())).await;
                                uwrite.data_bytes(Bytes::from(format!("\r\ncustos: output {msg}\r\n"))).await
                            }
                        };
                        if sent.is_err() {
                            break;
                        }
                    }
                    Some(TargetEvent::Stderr(d)) => {
                        session.bytes_out.fetch_add(d.len() as u64, Ordering::Relaxed);
                        if !session.record(ch, EventKind::Stderr(d.clone())).await {
                            break;
                        }
                        if uwrite.extended_data_bytes(1, d).await.is_err() {
                            break;
                        }
                    }
                    Some(TargetEvent::Eof) => {
                        session.record(ch, EventKind::Eof { from_user: false }).await;
                        let _ = uwrite.eof().await;
                    }
                    Some(TargetEvent::ExitStatus(s)) => {
                        session.set_exit_status(s);
                        session.commands.finished(ch, s as i32);
                        session.record(ch, EventKind::ExitStatus(s)).await;
                        let _ = uwrite.exit_status(s).await;
                    }
                    Some(TargetEvent::ExitSignal { signal, core_dumped, message }) => {
                        session
                            .record(ch, EventKind::ExitSignal { signal: signal.clone(), core_dumped, message: message.clone() })
                            .await;
                        if let Some(h) = handle {
                            let _ = h
                                .exit_signal_request(uwrite.id(), crate::target::sig_from_name(&signal), core_dumped, message, "en".into())
                                .await;
                        }
                    }
                    Some(TargetEvent::Closed) | None => {
                        closed_by_target = true;
                        break;
                    }
                },
                n = notices.recv() => match n {
                    Ok(text) if terminal => {
                        session.record(ch, EventKind::Note(text.to_string())).await;
                        let _ = uwrite.data_bytes(Bytes::from(format!("\r\ncustos: {text}\r\n"))).await;
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
                },
                _ = async { let _ = stop_down.wait_for(|r| r.is_some()).await; } => break,
            }
        }
        closed_by_target
    };

    // The channel is over when the target side is done. If the user closes first, the target
    // gets a moment to answer the close so its exit status is still recorded.
    tokio::pin!(up, down);
    tokio::select! {
        _ = &mut down => {}
        _ = &mut up => {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), &mut down).await;
        }
    }
    if let Some(reason) = session.stop_reason() {
        let text = match &reason {
            EndReason::RecordingFailed(e) => {
                format!("session ended: the recording could not be written ({e})")
            }
            EndReason::Killed(r)
                if r.starts_with("terminated by") || r.starts_with("account locked") =>
            {
                format!("session ended: {r}")
            }
            EndReason::Killed(r) => format!("session ended by an administrator: {r}"),
            EndReason::Limit(r) => format!("session ended: {r}"),
            other => format!("session ended: {other}"),
        };
        tell(uwrite, &text).await;
        input.close().await;
    }
    if let Some(tr) = tracker {
        let events = lock(tr).flush();
        log_commands(session, ch, events);
    }
    if let Some(a) = audit {
        let ops = lock(a).finish();
        record_ops(shared, session, ch, a_protocol, ops).await;
    }
    session.record(ch, EventKind::ChannelClose).await;
    let _ = uwrite.eof().await;
    let _ = uwrite.close().await;
}

/// A direct-tcpip (local port forwarding) channel: allowed only where the target permits it,
/// and recorded with its destination either way.
pub(crate) async fn run_forward_channel(
    shared: Arc<ConnShared>,
    channel: Channel<Msg>,
    reply: russh::server::ChannelOpenHandle,
    host: String,
    port: u32,
    originator: String,
    originator_port: u32,
) {
    let Some(login) = shared.login() else { return };
    if login.refusal.is_some() {
        return reply
            .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
            .await;
    }
    let target = match (&login.requested_target, shared.session.get()) {
        (Some(t), _) => t.clone(),
        (None, Some(Ok(s))) => s.target.name.to_string(),
        _ => {
            warn!(user = %login.user.name, host, port, "port forward refused: no target chosen");
            return reply
                .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
                .await;
        }
    };
    let session = match shared.session(&target, None).await {
        Ok(s) => s,
        Err(_) => return reply.reject(russh::ChannelOpenFailure::ConnectFailed).await,
    };
    let ch = session.allocate_channel();
    let allowed = session.target.allow_port_forwarding;
    let ev = EventKind::PortForward {
        host: host.clone(),
        port,
        originator: originator.clone(),
        originator_port,
        allowed,
    };
    let mut refused_by_rule = None;
    if allowed {
        let text = format!("{host}:{port}");
        let event = custos_rules::Event::PortForward {
            host: host.clone(),
            port: port.min(u16::MAX as u32) as u16,
        };
        let verdict = crate::enforce::check(&shared, &session, ch, "forward", &text, event).await;
        refused_by_rule = settle(&shared, &session, ch, None, verdict).await;
    }
    let recorded = session.record(ch, ev).await;
    session.audit(custos_audit::EventKind::PortForward {
        position: Some(crate::audit::position(ch, session.now_us())),
        direction: custos_audit::ForwardDirection::Local,
        host: host.clone(),
        port,
        originator: Some(format!("{originator}:{originator_port}")),
        allowed: recorded && allowed && refused_by_rule.is_none(),
    });
    if !recorded || !allowed || refused_by_rule.is_some() {
        warn!(session = %session.id, host, port, "port forward refused by policy");
        return reply
            .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
            .await;
    }
    info!(session = %session.id, host, port, "port forward");
    let tchan = match session
        .conn
        .open_direct_tcpip(&host, port, &originator, originator_port)
        .await
    {
        Ok(t) => t,
        Err(e) => {
            session.record(ch, EventKind::Note(e.to_string())).await;
            return reply.reject(russh::ChannelOpenFailure::ConnectFailed).await;
        }
    };
    reply.accept().await;
    let (uread, uwrite) = channel.split();
    let (_tx, rx) = mpsc::unbounded_channel();
    let taps = Taps {
        audit: None,
        tracker: None,
        terminal: false,
    };
    pump(&shared, &session, ch, (uread, uwrite), tchan, rx, taps).await;
}

/// The target menu shown to a user who logged in without naming a target. Returns the chosen
/// target, or `None` if the user left.
pub(crate) async fn menu(
    shared: &Arc<ConnShared>,
    uread: &mut russh::ChannelReadHalf,
    uwrite: &UserWrite,
) -> Option<String> {
    let login = shared.login()?;
    let targets = shared
        .ctx
        .store
        .targets_for_user(&login.user.name)
        .await
        .unwrap_or_default();
    let say = |s: String| async move {
        let _ = uwrite.data_bytes(Bytes::from(s)).await;
    };
    if targets.is_empty() {
        say(format!(
            "custos: user '{}' has no targets granted; ask an administrator\r\n",
            login.user.name
        ))
        .await;
        let _ = uwrite.exit_status(1).await;
        return None;
    }
    let mut text = format!("Custos — targets for {}:\r\n", login.user.name);
    for (i, t) in targets.iter().enumerate() {
        let labels: Vec<String> = t.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        text.push_str(&format!(
            "  {:>2}) {:<24} {}@{}\r\n",
            i + 1,
            t.name,
            t.login(),
            describe(t)
        ));
        if !labels.is_empty() {
            text.push_str(&format!("      {}\r\n", labels.join(" ")));
        }
    }
    say(text).await;
    let mut prompt = Prompter {
        read: uread,
        write: uwrite,
        backlog: &shared.backlog,
    };
    loop {
        let line = prompt
            .line("Choose a target (number or name, q to quit): ", true)
            .await?;
        let choice = line.trim();
        if choice.eq_ignore_ascii_case("q") {
            return None;
        }
        let picked = choice
            .parse::<usize>()
            .ok()
            .and_then(|n| n.checked_sub(1))
            .and_then(|i| targets.get(i))
            .or_else(|| targets.iter().find(|t| t.name.as_str() == choice));
        match picked {
            Some(t) => {
                say(format!("Connecting to {} ...\r\n", t.name)).await;
                return Some(t.name.to_string());
            }
            None if choice.is_empty() => {}
            None => say(format!("No target '{choice}' in your list.\r\n")).await,
        }
    }
}

fn describe(t: &custos_core::TargetRecord) -> String {
    match &t.kind {
        custos_core::TargetKind::Ssh { host, port, .. } => format!("{host}:{port}"),
        custos_core::TargetKind::Local { .. } => "this gateway host".into(),
    }
}

/// Reads lines typed at the gateway itself (the menu, a password change) before any target is
/// involved. Nothing read here is recorded or forwarded.
pub(crate) struct Prompter<'a> {
    pub read: &'a mut russh::ChannelReadHalf,
    pub write: &'a UserWrite,
    pub backlog: &'a std::sync::atomic::AtomicI64,
}

impl Prompter<'_> {
    pub async fn say(&self, text: &str) {
        let _ = self.write.data_bytes(Bytes::from(text.to_string())).await;
    }

    /// Shows `prompt` and reads one line; `echo` false hides what is typed. `None` when the
    /// user closes the channel or presses Ctrl-C or Ctrl-D. Bytes typed after Enter in the
    /// same packet are dropped.
    pub async fn line(&mut self, prompt: &str, echo: bool) -> Option<String> {
        self.say(prompt).await;
        let mut line = String::new();
        loop {
            let data = match self.read.wait().await {
                Some(ChannelMsg::Data { data }) => {
                    self.backlog.fetch_sub(data.len() as i64, Ordering::Relaxed);
                    data
                }
                Some(ChannelMsg::Eof) | Some(ChannelMsg::Close) | None => return None,
                Some(_) => continue,
            };
            for &b in data.iter() {
                match b {
                    b'\r' | b'\n' => {
                        self.say("\r\n").await;
                        return Some(line);
                    }
                    0x7f | 0x08 => {
                        let erased = line.pop().is_some();
                        if erased && echo {
                            self.say("\x08 \x08").await;
                        }
                    }
                    0x03 | 0x04 => {
                        self.say("\r\n").await;
                        return None;
                    }
                    b if (0x20..0x7f).contains(&b) && line.len() < 1024 => {
                        line.push(b as char);
                        if echo {
                            self.say(&(b as char).to_string()).await;
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Minimum length of a password chosen at the gateway.
const MIN_PASSWORD_LEN: usize = 12;

/// Asks a user who logged in with a one-time password for a new one (typed twice, not
/// echoed, never recorded) and stores its hash.
async fn change_one_time_password(shared: &ConnShared, p: &mut Prompter<'_>) -> Result<(), String> {
    let login = shared.login().ok_or("not authenticated")?;
    let name = login.user.name.clone();
    p.say("Custos: you logged in with a one-time password. Choose your own password now.\r\n")
        .await;
    for _ in 0..3 {
        let Some(first) = p.line("New password: ", false).await else {
            return Err("password not changed".into());
        };
        if first.chars().count() < MIN_PASSWORD_LEN {
            p.say(&format!(
                "The password must have at least {MIN_PASSWORD_LEN} characters.\r\n"
            ))
            .await;
            continue;
        }
        let Some(second) = p.line("Retype new password: ", false).await else {
            return Err("password not changed".into());
        };
        if first != second {
            p.say("The passwords do not match.\r\n").await;
            continue;
        }
        let secret = custos_core::Secret::from(first);
        let hash = tokio::task::spawn_blocking(move || custos_store::password::hash(&secret))
            .await
            .map_err(|e| format!("cannot hash the password: {e}"))?
            .map_err(|e| format!("cannot hash the password: {e}"))?;
        shared
            .ctx
            .store
            .set_password(&name, Some(&hash), false)
            .await
            .map_err(|e| format!("cannot store the new password: {e}"))?;
        shared.password_changed();
        info!(user = %name, "one-time password replaced by the user");
        p.say("Password changed.\r\n").await;
        return Ok(());
    }
    Err("password not changed after three attempts".into())
}

/// Stores the commands and exit statuses a terminal's command tracker reported.
fn log_commands(session: &LiveSession, ch: u32, events: Vec<CommandEvent>) {
    for ev in events {
        match ev {
            CommandEvent::Command {
                time_us: _,
                text,
                cwd,
            } => {
                info!(session = %session.id, command = %text, "command");
                session
                    .commands
                    .command(ch, session.now_us(), "shell", text.clone(), cwd.clone());
                session.audit(custos_audit::EventKind::Command {
                    position: crate::audit::position(ch, session.now_us()),
                    command_line: text,
                    working_directory: cwd,
                });
            }
            CommandEvent::Finished {
                exit_status: Some(code),
                ..
            } => session.commands.finished(ch, code),
            CommandEvent::Finished { .. } => {}
        }
    }
}

/// Whether the rules would refuse `event` (block or stronger), without raising alerts.
fn would_refuse(shared: &ConnShared, session: &LiveSession, event: &custos_rules::Event) -> bool {
    let ctx = custos_rules::Context::new(
        session.user.as_str(),
        session.target.name.as_str(),
        time::OffsetDateTime::now_utc(),
    );
    shared.ctx.rules.current().evaluate(event, &ctx).action >= Some(custos_rules::Action::Block)
}

/// Of the screen line and the typed line, the one the rules judge more severely (the screen
/// line on a tie).
fn stricter<'a>(
    shared: &ConnShared,
    session: &LiveSession,
    screen: &'a str,
    typed: &'a str,
) -> &'a str {
    if typed.is_empty() || typed == screen {
        return screen;
    }
    let ctx = custos_rules::Context::new(
        session.user.as_str(),
        session.target.name.as_str(),
        time::OffsetDateTime::now_utc(),
    );
    let judge = |t: &str| {
        shared
            .ctx
            .rules
            .current()
            .evaluate(
                &custos_rules::Event::Command {
                    text: t.to_string(),
                },
                &ctx,
            )
            .action
    };
    if judge(typed) > judge(screen) {
        typed
    } else {
        screen
    }
}

/// Forwards user input to the target. On a terminal with a command tracker every Enter is held
/// until the line it submits has been checked against the rules: an allowed line goes on, a
/// refused one never reaches the target — the gateway interrupts the line there (Ctrl-C) and
/// tells the user which rule refused it.
async fn forward_input(
    shared: &ConnShared,
    session: &LiveSession,
    ch: u32,
    input: &TargetInput,
    uwrite: &UserWrite,
    tracker: Option<&Mutex<LineModel>>,
    data: Bytes,
) -> Result<(), ()> {
    let Some(tr) = tracker else {
        return input.data(data).await;
    };
    let mut rest = data;
    while let Some(pos) = rest.iter().position(|&b| b == b'\r') {
        let head = rest.slice(..pos);
        let after = rest.slice(pos + 1..);
        if !head.is_empty() {
            let events = lock(tr).input(session.now_us(), &head);
            log_commands(session, ch, events);
            input.data(head).await?;
        }
        // Hold the Enter until the keys before it are known to be echoed (normally they are
        // already); keys never echoed mean a no-echo prompt, and that line is no command.
        let deadline = tokio::time::Instant::now() + ECHO_WAIT;
        loop {
            let pending = {
                let mut t = lock(tr);
                t.drain_decisions();
                t.echo.pending() > 0 && !t.secret
            };
            if !pending || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let now = session.now_us();
        let (secret, undecided, line, typed) = {
            let mut t = lock(tr);
            t.drain_decisions();
            // Keys whose echo has not come back in time: a no-echo prompt, or keys typed ahead
            // while the terminal was not echoing (between two commands).
            let undecided = !t.secret && t.echo.pending() > 0;
            let secret = t.secret || undecided;
            let line = if secret {
                None
            } else {
                t.commands.pending_line()
            };
            (secret, undecided, line, t.typed.trim().to_string())
        };
        let text = line.as_deref().map(str::trim).unwrap_or("").to_string();
        const WITHHELD: &str = "(typed input, not echoed: text withheld)";
        let mut stored = text.clone();
        let refusal = if undecided {
            // Possibly a secret, possibly a command typed ahead: the typed text is checked, but
            // only a refusing rule acts on it, and its alert withholds the text.
            let event = custos_rules::Event::Command {
                text: typed.clone(),
            };
            if would_refuse(shared, session, &event) {
                stored = WITHHELD.to_string();
                let v =
                    crate::enforce::check(shared, session, ch, "command", WITHHELD, event).await;
                settle(shared, session, ch, Some((uwrite, true)), v).await
            } else {
                None
            }
        } else if secret {
            None
        } else {
            // The screen is the truth for what the shell receives; the typed keys are checked
            // too, and whichever the rules judge more severely is enforced.
            let checked = stricter(shared, session, &text, &typed);
            stored = checked.to_string();
            if checked.is_empty() {
                None
            } else {
                let event = custos_rules::Event::Command {
                    text: checked.to_string(),
                };
                let v = crate::enforce::check(shared, session, ch, "command", checked, event).await;
                settle(shared, session, ch, Some((uwrite, true)), v).await
            }
        };
        match refusal {
            None => {
                let events = {
                    let mut t = lock(tr);
                    t.commands.set_secret_input(secret);
                    let events = t.input(now, b"\r");
                    t.commands.set_secret_input(false);
                    t.secret = false;
                    events
                };
                log_commands(session, ch, events);
                input.data(Bytes::from_static(b"\r")).await?;
            }
            Some(msg) => {
                {
                    // Ctrl-C resets the models' line the way the cleared line resets the shell's.
                    let mut t = lock(tr);
                    let _ = t.input(now, b"\x03");
                    t.secret = false;
                }
                session
                    .commands
                    .command(ch, now, "shell", stored.clone(), None);
                session.audit(custos_audit::EventKind::Command {
                    position: crate::audit::position(ch, now),
                    command_line: stored,
                    working_directory: None,
                });
                session.record(ch, EventKind::Note(msg.clone())).await;
                // Ctrl-C: the shell drops the line, and the terminal discards input typed ahead
                // while a command was running (which a line-kill would not reach). It also
                // interrupts that command — the price of never running a refused line.
                let seen = lock(tr).outputs();
                input.data(Bytes::from_static(b"\x03")).await?;
                let _ = uwrite
                    .data_bytes(Bytes::from(format!("\r\ncustos: {msg}\r\n")))
                    .await;
                // Nothing more goes to the target until the shell has answered the Ctrl-C:
                // keys sent before it did could still submit the refused line. What was typed
                // after the refused line (the rest of this input, a paste) is dropped, as the
                // terminal drops typed-ahead input on an interrupt.
                if !after.is_empty() {
                    session
                        .record(
                            ch,
                            EventKind::Note(format!(
                                "{} bytes typed after the refused line were discarded",
                                after.len()
                            )),
                        )
                        .await;
                }
                let deadline = tokio::time::Instant::now() + REFUSAL_SETTLE_MAX;
                while lock(tr).outputs() == seen && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
                tokio::time::sleep(REFUSAL_SETTLE).await;
                return Ok(());
            }
        }
        rest = after;
    }
    if !rest.is_empty() {
        let events = lock(tr).input(session.now_us(), &rest);
        log_commands(session, ch, events);
        input.data(rest).await?;
    }
    Ok(())
}
