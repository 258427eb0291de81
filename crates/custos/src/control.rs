//! The admin socket: a Unix socket in the data directory (owner-only) through which the
//! command line reaches the running gateway to end and watch sessions. One JSON request per
//! connection, one JSON reply line.
//!
//! An accepted `watch` request (`"ok": true`) keeps the connection open: after the reply line
//! the gateway sends frames until the watch is over, then closes. A frame is one tag byte, the
//! payload length (u32, big-endian) and the payload:
//!
//! - `S` screen: cols and rows (u16, big-endian, each), then bytes that reset a terminal and
//!   draw the screen. The first frame when the session has a terminal, and again whenever a
//!   terminal opens later.
//! - `O` output: terminal bytes exactly as the session's user received them.
//! - `R` resize: cols and rows (u16, big-endian, each).
//! - `N` notice: UTF-8 text for the watcher, not for the terminal.
//! - `E` end: the session ended; UTF-8 end reason. The last frame.
//! - `X` stopped: the watch stopped while the session goes on (the watcher fell behind); UTF-8
//!   explanation. The last frame.
//!
//! The watcher sends nothing after its request; closing its end stops the watch. A stream
//! follows one terminal: the first PTY channel open when the watch began (or the first opened
//! later), and after that one closes, the next one opened. The gateway logs who watched which
//! session, from when to when.

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use custos_core::{Id, Name};
use custos_recording::{WatchEnd, WatchEvent};
use custos_ssh::LiveRegistry;
use serde::{Deserialize, Serialize};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader,
    BufWriter,
};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tracing::{info, warn};

/// The socket's file name inside the data directory.
pub const SOCKET: &str = "custos.sock";

/// Largest request accepted.
const MAX_REQUEST: u64 = 64 * 1024;

/// Largest watch frame a watcher accepts: a screen of the largest terminal with a change of
/// colour at every cell fits.
const MAX_FRAME: u32 = 64 * 1024 * 1024;

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// End one live session.
    Kill {
        session: Id,
        reason: String,
        /// Who asks (recorded in the audit trail).
        #[serde(default)]
        by: Option<String>,
    },
    /// End every live session of a user.
    KillUser {
        user: Name,
        reason: String,
        #[serde(default)]
        by: Option<String>,
    },
    /// The ids of the live sessions.
    Live,
    /// Approve or deny a request a `hold` rule parked (by its alert id).
    Decide {
        alert: i64,
        approve: bool,
        by: String,
        #[serde(default)]
        note: Option<String>,
    },
    /// Mirror a live session read-only: an accepted reply is followed by watch frames.
    Watch {
        session: Id,
        #[serde(default)]
        by: Option<String>,
    },
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub ended: usize,
    #[serde(default)]
    pub live: Vec<Id>,
}

pub fn socket_path(data: &Path) -> PathBuf {
    data.join(SOCKET)
}

/// Binds the admin socket. A socket file left by a stopped gateway is replaced; one that
/// still answers means another gateway serves this data directory.
pub async fn bind(data: &Path) -> Result<UnixListener> {
    let path = socket_path(data);
    if path.exists() {
        if UnixStream::connect(&path).await.is_ok() {
            bail!(
                "another gateway is already serving {} (its admin socket {} answers)",
                data.display(),
                path.display()
            );
        }
        std::fs::remove_file(&path)
            .with_context(|| format!("cannot remove the stale socket {}", path.display()))?;
    }
    let listener = UnixListener::bind(&path)
        .with_context(|| format!("cannot create the admin socket {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict permissions of {}", path.display()))?;
    Ok(listener)
}

/// Answers admin requests until the listener is dropped.
pub async fn serve(listener: UnixListener, live: LiveRegistry, audit: custos_audit::AuditLog) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let live = live.clone();
        let audit = audit.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, &live, &audit).await {
                warn!(error = %e, "admin socket request failed");
            }
        });
    }
}

/// Who is on the other end of the socket: the name the command line sent, else the uid.
fn requester(by: &Option<String>, admin: Option<tokio::net::unix::UCred>) -> String {
    by.clone().unwrap_or_else(|| match admin {
        Some(c) => format!("uid {}", c.uid()),
        None => "unknown".into(),
    })
}

fn emit(audit: &custos_audit::AuditLog, ev: custos_audit::AuditEvent) {
    if let Err(e) = audit.emit(ev) {
        warn!(error = %e, "an audit event could not be queued");
    }
}

async fn answer(
    stream: UnixStream,
    live: &LiveRegistry,
    audit: &custos_audit::AuditLog,
) -> Result<()> {
    let admin = stream.peer_cred().ok();
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    let mut r = BufReader::new(r.take(MAX_REQUEST));
    r.read_line(&mut line).await?;
    let reply = match serde_json::from_str::<Request>(&line) {
        Err(e) => Reply {
            ok: false,
            error: Some(format!("bad request: {e}")),
            ..Default::default()
        },
        Ok(Request::Kill {
            session,
            reason,
            by,
        }) => {
            let who = requester(&by, admin);
            if let Some(info) = live.kill_info(&session, &reason) {
                info!(session = %session, reason = %reason, by = %who, "session killed by an administrator");
                emit(
                    audit,
                    custos_audit::AuditEvent::new(custos_audit::EventKind::Terminate {
                        reason: reason.clone(),
                        by: custos_audit::Initiator::Admin(who),
                    })
                    .user(info.user.as_str())
                    .session(session)
                    .target(custos_audit::Target::named(info.target.as_str())),
                );
                Reply {
                    ok: true,
                    ended: 1,
                    ..Default::default()
                }
            } else {
                Reply {
                    ok: false,
                    error: Some(format!("session {session} is not live on this gateway")),
                    ..Default::default()
                }
            }
        }
        Ok(Request::KillUser { user, reason, by }) => {
            let n = live.kill_user(&user, &reason);
            if n > 0 {
                let who = requester(&by, admin);
                info!(user = %user, sessions = n, reason = %reason, by = %who, "live sessions of the user ended");
                emit(
                    audit,
                    custos_audit::AuditEvent::new(custos_audit::EventKind::Terminate {
                        reason: format!("{reason} ({n} sessions)"),
                        by: custos_audit::Initiator::Admin(who),
                    })
                    .user(user.as_str()),
                );
            }
            Reply {
                ok: true,
                ended: n,
                ..Default::default()
            }
        }
        Ok(Request::Decide {
            alert,
            approve,
            by,
            note,
        }) => {
            let answer = custos_ssh::HoldAnswer {
                approve,
                by: by.clone(),
                note,
            };
            match live.decide(alert, answer) {
                Ok(session) => {
                    info!(alert, session = %session, by = %by, approve, "hold decided by a moderator");
                    Reply {
                        ok: true,
                        ..Default::default()
                    }
                }
                Err(e) => Reply {
                    ok: false,
                    error: Some(e),
                    ..Default::default()
                },
            }
        }
        Ok(Request::Live) => Reply {
            ok: true,
            live: live.list().into_iter().map(|s| s.id).collect(),
            ..Default::default()
        },
        Ok(Request::Watch { session, by }) => {
            let who = requester(&by, admin);
            return stream_watch(session, live, r, w, admin, (audit, who)).await;
        }
    };
    let mut out = serde_json::to_vec(&reply)?;
    out.push(b'\n');
    w.write_all(&out).await?;
    Ok(())
}

/// Sends a request to the running gateway. `Ok(None)` when no gateway is running.
pub async fn request(data: &Path, req: &Request) -> Result<Option<Reply>> {
    let Some((r, w)) = send(data, req).await? else {
        return Ok(None);
    };
    let mut r = BufReader::new(r);
    let reply = read_reply(&mut r).await?;
    drop(w);
    Ok(Some(reply))
}

/// Connects and sends one request; `Ok(None)` when no gateway is running.
async fn send(data: &Path, req: &Request) -> Result<Option<(OwnedReadHalf, OwnedWriteHalf)>> {
    let path = socket_path(data);
    let stream = match UnixStream::connect(&path).await {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot reach the gateway through {}", path.display()));
        }
    };
    let (r, mut w) = stream.into_split();
    let mut out = serde_json::to_vec(req)?;
    out.push(b'\n');
    w.write_all(&out).await?;
    Ok(Some((r, w)))
}

async fn read_reply(r: &mut (impl AsyncBufRead + Unpin)) -> Result<Reply> {
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        r.take(MAX_REQUEST).read_line(&mut line),
    )
    .await
    .context("the gateway did not answer on its admin socket")??;
    serde_json::from_str(&line).context("unreadable reply from the gateway")
}

/// One frame of a watch stream (see the module documentation for the bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Reset the terminal and draw this screen.
    Screen { cols: u16, rows: u16, paint: Bytes },
    /// Terminal output.
    Output(Bytes),
    /// The watched terminal changed size.
    Resize { cols: u16, rows: u16 },
    /// Text for the watcher.
    Notice(String),
    /// The session ended, with this reason. The last frame.
    End(String),
    /// The watch stopped while the session goes on, for this reason. The last frame.
    Stopped(String),
}

impl Frame {
    async fn write(&self, w: &mut (impl AsyncWrite + Unpin)) -> std::io::Result<()> {
        let size = |cols: u16, rows: u16| {
            let mut b = [0u8; 4];
            b[..2].copy_from_slice(&cols.to_be_bytes());
            b[2..].copy_from_slice(&rows.to_be_bytes());
            b
        };
        let (tag, head, body): (u8, &[u8], &[u8]) = match self {
            Frame::Screen { cols, rows, paint } => (b'S', &size(*cols, *rows), paint),
            Frame::Output(b) => (b'O', &[], b),
            Frame::Resize { cols, rows } => (b'R', &size(*cols, *rows), &[]),
            Frame::Notice(t) => (b'N', &[], t.as_bytes()),
            Frame::End(t) => (b'E', &[], t.as_bytes()),
            Frame::Stopped(t) => (b'X', &[], t.as_bytes()),
        };
        let len = u32::try_from(head.len() + body.len())
            .ok()
            .filter(|l| *l <= MAX_FRAME)
            .ok_or_else(|| std::io::Error::other("watch frame too large"))?;
        w.write_u8(tag).await?;
        w.write_u32(len).await?;
        w.write_all(head).await?;
        w.write_all(body).await?;
        w.flush().await
    }

    /// Reads the next frame; `Ok(None)` at the end of the stream.
    async fn read(r: &mut (impl AsyncRead + Unpin)) -> Result<Option<Frame>> {
        let tag = match r.read_u8().await {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let len = r.read_u32().await.context("truncated watch frame")?;
        if len > MAX_FRAME {
            bail!("watch frame of {len} bytes is larger than the {MAX_FRAME} accepted");
        }
        let mut payload = vec![0u8; len as usize];
        r.read_exact(&mut payload)
            .await
            .context("truncated watch frame")?;
        let size = |p: &[u8]| match p {
            [c0, c1, r0, r1, ..] => Ok((
                u16::from_be_bytes([*c0, *c1]),
                u16::from_be_bytes([*r0, *r1]),
            )),
            _ => bail!("watch frame {:?} is too short for a size", tag as char),
        };
        let text = |p: Vec<u8>| String::from_utf8_lossy(&p).into_owned();
        Ok(Some(match tag {
            b'S' => {
                let (cols, rows) = size(&payload)?;
                let mut paint = Bytes::from(payload);
                Frame::Screen {
                    cols,
                    rows,
                    paint: paint.split_off(4),
                }
            }
            b'O' => Frame::Output(Bytes::from(payload)),
            b'R' => {
                let (cols, rows) = size(&payload)?;
                Frame::Resize { cols, rows }
            }
            b'N' => Frame::Notice(text(payload)),
            b'E' => Frame::End(text(payload)),
            b'X' => Frame::Stopped(text(payload)),
            other => bail!("unknown watch frame {other:#04x}"),
        }))
    }
}

/// The watcher's side of a watch.
pub struct WatchStream {
    r: BufReader<OwnedReadHalf>,
    // Held so the gateway does not see the watcher leave.
    _w: OwnedWriteHalf,
}

impl WatchStream {
    /// The next frame; `Ok(None)` when the gateway closed the stream.
    pub async fn next(&mut self) -> Result<Option<Frame>> {
        Frame::read(&mut self.r).await
    }
}

/// Asks the running gateway to watch a live session. `Ok(None)` when no gateway is running;
/// `Ok(Some(Err(reason)))` when it refuses.
pub async fn watch_session(
    data: &Path,
    session: Id,
) -> Result<Option<Result<WatchStream, String>>> {
    let Some((r, w)) = send(
        data,
        &Request::Watch {
            session,
            by: Some(crate::audit::operator()),
        },
    )
    .await?
    else {
        return Ok(None);
    };
    let mut r = BufReader::new(r);
    let reply = read_reply(&mut r).await?;
    if !reply.ok {
        return Ok(Some(Err(reply
            .error
            .unwrap_or_else(|| "the gateway refused".into()))));
    }
    Ok(Some(Ok(WatchStream { r, _w: w })))
}

/// Serves an accepted watch: frames of the session's terminal until the session ends, the
/// watcher falls behind or leaves. Logged, with the watcher's process, as an access to the
/// session.
async fn stream_watch(
    session: Id,
    live: &LiveRegistry,
    mut r: impl AsyncRead + Unpin,
    w: OwnedWriteHalf,
    admin: Option<tokio::net::unix::UCred>,
    (audit, who): (&custos_audit::AuditLog, String),
) -> Result<()> {
    let mut w = BufWriter::new(w);
    let (uid, pid) = (admin.map(|a| a.uid()), admin.and_then(|a| a.pid()));
    let (info, mut watch) = match live.watch(&session).await {
        Ok(v) => v,
        Err(e) => {
            let reply = Reply {
                ok: false,
                error: Some(e.to_string()),
                ..Default::default()
            };
            return write_reply(&mut w, &reply).await;
        }
    };
    info!(session = %session, user = %info.user, target = %info.target, admin_uid = uid, admin_pid = pid, by = %who, "an administrator started watching a live session");
    emit(
        audit,
        custos_audit::AuditEvent::new(custos_audit::EventKind::RecordingAccess {
            access: custos_audit::RecordingAccess::Watch,
            format: None,
        })
        .user(who.as_str())
        .session(session)
        .target(custos_audit::Target::named(info.target.as_str())),
    );
    write_reply(
        &mut w,
        &Reply {
            ok: true,
            ..Default::default()
        },
    )
    .await?;
    let mut follow = None;
    let first = match watch.screens.first() {
        Some(s) => {
            follow = Some(s.channel);
            Frame::Screen {
                cols: s.cols,
                rows: s.rows,
                paint: s.paint.clone(),
            }
        }
        None => Frame::Notice("the session has no terminal yet; waiting for one".into()),
    };
    let mut next = Some(first);
    let mut scratch = [0u8; 256];
    let why = loop {
        if let Some(frame) = next.take() {
            let last = match &frame {
                Frame::End(reason) => Some(format!("the session ended: {reason}")),
                Frame::Stopped(why) => Some(why.clone()),
                _ => None,
            };
            if let Err(e) = frame.write(&mut w).await {
                break format!("the watcher went away ({e})");
            }
            if let Some(why) = last {
                break why;
            }
        }
        tokio::select! {
            ev = watch.next() => next = match ev {
                Ok(WatchEvent::Opened(s)) if follow.is_none() || follow == Some(s.channel) => {
                    follow = Some(s.channel);
                    Some(Frame::Screen { cols: s.cols, rows: s.rows, paint: s.paint })
                }
                Ok(WatchEvent::Output { channel, data }) if follow == Some(channel) => {
                    Some(Frame::Output(data))
                }
                Ok(WatchEvent::Resize { channel, cols, rows }) if follow == Some(channel) => {
                    Some(Frame::Resize { cols, rows })
                }
                Ok(WatchEvent::Closed { channel }) if follow == Some(channel) => {
                    follow = None;
                    None
                }
                Ok(_) => None,
                Err(WatchEnd::Finished(reason)) => Some(Frame::End(reason)),
                Err(WatchEnd::Failed(e)) => Some(Frame::End(format!("recording failed: {e}"))),
                Err(end @ WatchEnd::Lagged) => Some(Frame::Stopped(end.to_string())),
            },
            // The watcher sends nothing after its request: any end of its side means it left.
            n = r.read(&mut scratch) => if !matches!(n, Ok(1..)) {
                break "the watcher left".to_string();
            },
        }
    };
    info!(session = %session, admin_uid = uid, admin_pid = pid, why = %why, "an administrator stopped watching a session");
    Ok(())
}

async fn write_reply(w: &mut (impl AsyncWrite + Unpin), reply: &Reply) -> Result<()> {
    let mut out = serde_json::to_vec(reply)?;
    out.push(b'\n');
    w.write_all(&out).await?;
    w.flush().await?;
    Ok(())
}
