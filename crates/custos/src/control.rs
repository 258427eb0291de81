//! The admin socket: a Unix socket in the data directory (owner-only) through which the
//! command line reaches the running gateway to end sessions. One JSON request per connection,
//! one JSON reply.

use anyhow::{Context, Result, bail};
use custos_core::{Id, Name};
use custos_ssh::LiveRegistry;
use serde::{Deserialize, Serialize};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tracing::{info, warn};

/// The socket's file name inside the data directory.
pub const SOCKET: &str = "custos.sock";

/// Largest request accepted.
const MAX_REQUEST: u64 = 64 * 1024;

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// End one live session.
    Kill { session: Id, reason: String },
    /// End every live session of a user.
    KillUser { user: Name, reason: String },
    /// The ids of the live sessions.
    Live,
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
pub async fn serve(listener: UnixListener, live: LiveRegistry) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let live = live.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, &live).await {
                warn!(error = %e, "admin socket request failed");
            }
        });
    }
}

async fn answer(stream: UnixStream, live: &LiveRegistry) -> Result<()> {
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    BufReader::new(r.take(MAX_REQUEST))
        .read_line(&mut line)
        .await?;
    let reply = match serde_json::from_str::<Request>(&line) {
        Err(e) => Reply {
            ok: false,
            error: Some(format!("bad request: {e}")),
            ..Default::default()
        },
        Ok(Request::Kill { session, reason }) => {
            if live.kill(&session, &reason) {
                info!(session = %session, reason = %reason, "session killed by an administrator");
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
        Ok(Request::KillUser { user, reason }) => {
            let n = live.kill_user(&user, &reason);
            if n > 0 {
                info!(user = %user, sessions = n, reason = %reason, "live sessions of the user ended");
            }
            Reply {
                ok: true,
                ended: n,
                ..Default::default()
            }
        }
        Ok(Request::Live) => Reply {
            ok: true,
            live: live.list().into_iter().map(|s| s.id).collect(),
            ..Default::default()
        },
    };
    let mut out = serde_json::to_vec(&reply)?;
    out.push(b'\n');
    w.write_all(&out).await?;
    Ok(())
}

/// Sends a request to the running gateway. `Ok(None)` when no gateway is running.
pub async fn request(data: &Path, req: &Request) -> Result<Option<Reply>> {
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
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        BufReader::new(r.take(MAX_REQUEST)).read_line(&mut line),
    )
    .await
    .context("the gateway did not answer on its admin socket")??;
    let reply: Reply = serde_json::from_str(&line).context("unreadable reply from the gateway")?;
    Ok(Some(reply))
}
