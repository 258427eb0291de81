//! Target connectors: the vaulted-credential SSH client (russh) and the local shell, behind
//! one channel shape ([`TargetChannel`]) so the pump drives both the same way.

use bytes::Bytes;
use custos_core::{HostKeyPolicy, Secret, TargetKind, TargetRecord};
use russh::client;
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKey};
use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf, Pty};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

use crate::local::{self, LocalInput, OsAccount, PtyParams};

/// How a channel starts on the target.
#[derive(Clone, Debug)]
pub enum StartRequest {
    Shell,
    Exec(Bytes),
    Subsystem(String),
}

/// Something the target sent on a channel.
#[derive(Debug)]
pub enum TargetEvent {
    Data(Bytes),
    Stderr(Bytes),
    Eof,
    ExitStatus(u32),
    ExitSignal {
        signal: String,
        core_dumped: bool,
        message: String,
    },
    Closed,
}

/// Why the gateway could not reach or use a target. Messages are shown to the user, so they
/// name the target and the cause but never a credential.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("target {target} ({addr}) is unreachable: {cause}")]
    Unreachable {
        target: String,
        addr: String,
        cause: String,
    },
    #[error("target {target} ({addr}) did not answer within {secs} s")]
    Timeout {
        target: String,
        addr: String,
        secs: u64,
    },
    #[error(
        "target {target} presented host key {presented}, which does not match the pinned key {pinned}; refusing to connect (if the target was rebuilt, an administrator must re-pin its key)"
    )]
    HostKeyMismatch {
        target: String,
        presented: String,
        pinned: String,
    },
    #[error("target {target} refused the gateway's credential for login '{login}'")]
    CredentialRefused { target: String, login: String },
    #[error("target {target}: {cause}")]
    Other { target: String, cause: String },
}

/// A live connection to a target, shared by every channel of one user session.
pub enum TargetConn {
    Ssh {
        handle: client::Handle<TargetClient>,
        name: String,
    },
    Local {
        account: OsAccount,
    },
}

/// What the host-key check saw, for error messages and trust-on-first-use pinning.
#[derive(Default)]
struct SeenKey {
    presented: Option<String>,
    mismatch: Option<String>,
}

/// The russh client handler for target connections: checks the host key against policy.
pub struct TargetClient {
    pinned: Option<String>,
    seen: Arc<Mutex<SeenKey>>,
}

impl client::Handler for TargetClient {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let key = match key {
            russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } => key.clone(),
            russh::keys::PublicKeyOrCertificate::Certificate(c) => {
                PublicKey::from(c.public_key().clone())
            }
        };
        let line = key_line(&key);
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.presented = Some(line.clone());
        match &self.pinned {
            None => Ok(true),
            Some(p) if same_key(p, &line) => Ok(true),
            Some(p) => {
                seen.mismatch = Some(p.clone());
                Ok(false)
            }
        }
    }
}

/// `ALGO BASE64` without a comment.
pub fn key_line(key: &PublicKey) -> String {
    let mut k = key.clone();
    k.set_comment("");
    k.to_openssh().unwrap_or_default().trim().to_string()
}

fn same_key(a: &str, b: &str) -> bool {
    a.split_whitespace()
        .take(2)
        .eq(b.split_whitespace().take(2))
}

/// The SHA-256 fingerprint of an `ALGO BASE64` key line, as OpenSSH prints it.
pub fn fingerprint(line: &str) -> String {
    match PublicKey::from_openssh(line) {
        Ok(k) => k.fingerprint(HashAlg::Sha256).to_string(),
        Err(_) => "(unparseable key)".to_string(),
    }
}

/// Outcome of connecting: the connection plus, for trust-on-first-use, the key to pin.
pub struct Connected {
    pub conn: TargetConn,
    pub key_to_pin: Option<String>,
}

/// Connects to a target and authenticates with its vaulted credential, all within `timeout`.
pub async fn connect(
    target: &TargetRecord,
    credential: Option<Secret>,
    timeout: Duration,
) -> Result<Connected, TargetError> {
    let name = target.name.to_string();
    match &target.kind {
        TargetKind::Local { os_user } => {
            let account =
                OsAccount::lookup(os_user.as_deref()).map_err(|e| TargetError::Other {
                    target: name.clone(),
                    cause: e.to_string(),
                })?;
            Ok(Connected {
                conn: TargetConn::Local { account },
                key_to_pin: None,
            })
        }
        TargetKind::Ssh {
            host,
            port,
            login,
            host_key,
            ..
        } => {
            let addr = format!("{host}:{port}");
            let fut = connect_ssh(&name, &addr, login, host_key, credential);
            match tokio::time::timeout(timeout, fut).await {
                Ok(r) => r,
                Err(_) => Err(TargetError::Timeout {
                    target: name,
                    addr,
                    secs: timeout.as_secs().max(1),
                }),
            }
        }
    }
}

async fn connect_ssh(
    name: &str,
    addr: &str,
    login: &str,
    policy: &HostKeyPolicy,
    credential: Option<Secret>,
) -> Result<Connected, TargetError> {
    let unreachable = |cause: String| TargetError::Unreachable {
        target: name.to_string(),
        addr: addr.to_string(),
        cause,
    };
    let socket = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let _ = socket.set_nodelay(true);
    let seen = Arc::new(Mutex::new(SeenKey::default()));
    let handler = TargetClient {
        pinned: policy.pinned_key().map(str::to_string),
        seen: seen.clone(),
    };
    let config = Arc::new(client::Config {
        inactivity_timeout: None,
        window_size: 4 * 1024 * 1024,
        maximum_packet_size: 32 * 1024,
        channel_buffer_size: 64,
        nodelay: true,
        preferred: russh::Preferred {
            cipher: std::borrow::Cow::Borrowed(target_ciphers()),
            ..Default::default()
        },
        ..Default::default()
    });
    let result = client::connect_stream(config, socket, handler).await;
    let mut handle = match result {
        Ok(h) => h,
        Err(e) => {
            let seen = seen.lock().unwrap_or_else(|p| p.into_inner());
            if let (Some(pinned), Some(presented)) = (&seen.mismatch, &seen.presented) {
                return Err(TargetError::HostKeyMismatch {
                    target: name.to_string(),
                    presented: fingerprint(presented),
                    pinned: fingerprint(pinned),
                });
            }
            return Err(unreachable(format!("SSH handshake failed: {e}")));
        }
    };
    let refused = || TargetError::CredentialRefused {
        target: name.to_string(),
        login: login.to_string(),
    };
    let credential = credential.ok_or_else(|| TargetError::Other {
        target: name.to_string(),
        cause: "no credential is stored for this target".into(),
    })?;
    let text = credential.expose_str().unwrap_or("");
    let ok = if text.contains("PRIVATE KEY-----") {
        let key = russh::keys::decode_secret_key(text, None).map_err(|_| TargetError::Other {
            target: name.to_string(),
            cause: "the stored private key cannot be read (is it passphrase-protected?)".into(),
        })?;
        let hash = handle
            .best_supported_rsa_hash()
            .await
            .ok()
            .flatten()
            .flatten();
        let key = PrivateKeyWithHashAlg::new(Arc::new(key), hash);
        handle
            .authenticate_publickey(login, key)
            .await
            .map_err(|e| unreachable(e.to_string()))?
    } else {
        handle
            .authenticate_password(login, text)
            .await
            .map_err(|e| unreachable(e.to_string()))?
    };
    if !ok.success() {
        return Err(refused());
    }
    let key_to_pin = match policy {
        HostKeyPolicy::TrustOnFirstUse { key: None } => seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .presented
            .clone(),
        _ => None,
    };
    Ok(Connected {
        conn: TargetConn::Ssh {
            handle,
            name: name.to_string(),
        },
        key_to_pin,
    })
}

/// The gateway's side of one channel on the target.
pub struct TargetChannel {
    pub input: TargetInput,
    pub events: TargetEvents,
}

/// The writing half of a target channel. Cheap to share between tasks.
#[derive(Clone)]
pub enum TargetInput {
    Ssh(Arc<ChannelWriteHalf<client::Msg>>),
    Local(mpsc::Sender<LocalInput>),
}

/// The reading half of a target channel.
pub enum TargetEvents {
    Ssh(ChannelReadHalf),
    Local(mpsc::Receiver<TargetEvent>),
}

impl TargetEvents {
    /// The next event; `None` once the channel is gone.
    pub async fn next(&mut self) -> Option<TargetEvent> {
        match self {
            TargetEvents::Local(rx) => rx.recv().await,
            TargetEvents::Ssh(read) => loop {
                let msg = read.wait().await?;
                return Some(match msg {
                    ChannelMsg::Data { data } => TargetEvent::Data(data),
                    ChannelMsg::ExtendedData { data, .. } => TargetEvent::Stderr(data),
                    ChannelMsg::Eof => TargetEvent::Eof,
                    ChannelMsg::Close => TargetEvent::Closed,
                    ChannelMsg::ExitStatus { exit_status } => TargetEvent::ExitStatus(exit_status),
                    ChannelMsg::ExitSignal {
                        signal_name,
                        core_dumped,
                        error_message,
                        ..
                    } => TargetEvent::ExitSignal {
                        signal: sig_name(&signal_name),
                        core_dumped,
                        message: error_message,
                    },
                    _ => continue,
                });
            },
        }
    }
}

/// The SSH name of a russh signal.
pub fn sig_name(sig: &russh::Sig) -> String {
    use russh::Sig::*;
    match sig {
        ABRT => "ABRT",
        ALRM => "ALRM",
        FPE => "FPE",
        HUP => "HUP",
        ILL => "ILL",
        INT => "INT",
        KILL => "KILL",
        PIPE => "PIPE",
        QUIT => "QUIT",
        SEGV => "SEGV",
        TERM => "TERM",
        USR1 => "USR1",
        Custom(s) => return s.clone(),
    }
    .to_string()
}

/// The russh signal for an SSH signal name.
pub fn sig_from_name(name: &str) -> russh::Sig {
    use russh::Sig::*;
    match name {
        "ABRT" => ABRT,
        "ALRM" => ALRM,
        "FPE" => FPE,
        "HUP" => HUP,
        "ILL" => ILL,
        "INT" => INT,
        "KILL" => KILL,
        "PIPE" => PIPE,
        "QUIT" => QUIT,
        "SEGV" => SEGV,
        "TERM" => TERM,
        "USR1" => USR1,
        other => Custom(other.to_string()),
    }
}

impl TargetInput {
    pub async fn data(&self, data: Bytes) -> Result<(), ()> {
        match self {
            TargetInput::Ssh(w) => w.data_bytes(data).await.map_err(|_| ()),
            TargetInput::Local(tx) => tx.send(LocalInput::Data(data)).await.map_err(|_| ()),
        }
    }

    pub async fn eof(&self) {
        match self {
            TargetInput::Ssh(w) => {
                let _ = w.eof().await;
            }
            TargetInput::Local(tx) => {
                let _ = tx.send(LocalInput::Eof).await;
            }
        }
    }

    pub async fn resize(&self, cols: u32, rows: u32) {
        match self {
            TargetInput::Ssh(w) => {
                let _ = w.window_change(cols, rows, 0, 0).await;
            }
            TargetInput::Local(tx) => {
                let _ = tx.send(LocalInput::Resize(cols, rows)).await;
            }
        }
    }

    pub async fn signal(&self, name: &str) {
        match self {
            TargetInput::Ssh(w) => {
                let _ = w.signal(sig_from_name(name)).await;
            }
            TargetInput::Local(tx) => {
                if let Some(n) = local::signal_number(name) {
                    let _ = tx.send(LocalInput::Signal(n)).await;
                }
            }
        }
    }

    pub async fn close(&self) {
        if let TargetInput::Ssh(w) = self {
            let _ = w.close().await;
        }
    }
}

impl TargetConn {
    /// Opens a session channel, replays the user's terminal and environment requests, and
    /// starts the shell, command or subsystem.
    pub async fn open_session(
        &self,
        pty: Option<&PtyParams>,
        modes: &[(Pty, u32)],
        env: &[(String, String)],
        start: &StartRequest,
    ) -> Result<TargetChannel, TargetError> {
        match self {
            TargetConn::Local { account } => {
                let (tx, rx) = mpsc::channel(64);
                let input =
                    local::spawn(account, pty, env, start, tx).map_err(|e| TargetError::Other {
                        target: "local".into(),
                        cause: format!("cannot start the process: {e}"),
                    })?;
                Ok(TargetChannel {
                    input: TargetInput::Local(input),
                    events: TargetEvents::Local(rx),
                })
            }
            TargetConn::Ssh { handle, name } => {
                let other = |cause: String| TargetError::Other {
                    target: name.clone(),
                    cause,
                };
                let channel = handle
                    .channel_open_session()
                    .await
                    .map_err(|e| other(format!("cannot open a session channel: {e}")))?;
                let (mut read, write) = channel.split();
                if let Some(p) = pty {
                    write
                        .request_pty(false, &p.term, p.cols, p.rows, 0, 0, modes)
                        .await
                        .map_err(|e| other(e.to_string()))?;
                }
                for (k, v) in env {
                    let _ = write.set_env(false, k.clone(), v.clone()).await;
                }
                let what = match start {
                    StartRequest::Shell => {
                        write
                            .request_shell(true)
                            .await
                            .map_err(|e| other(e.to_string()))?;
                        "shell".to_string()
                    }
                    StartRequest::Exec(cmd) => {
                        write
                            .exec(true, cmd.to_vec())
                            .await
                            .map_err(|e| other(e.to_string()))?;
                        "command".to_string()
                    }
                    StartRequest::Subsystem(s) => {
                        write
                            .request_subsystem(true, s.clone())
                            .await
                            .map_err(|e| other(e.to_string()))?;
                        format!("subsystem '{s}'")
                    }
                };
                // The reply to the start request comes before any data on this channel.
                loop {
                    match read.wait().await {
                        Some(ChannelMsg::Success) => break,
                        Some(ChannelMsg::Failure) => {
                            return Err(other(format!("the target refused to start the {what}")));
                        }
                        Some(ChannelMsg::WindowAdjusted { .. }) => continue,
                        Some(_) => continue,
                        None => {
                            return Err(other(format!(
                                "the target closed the channel before starting the {what}"
                            )));
                        }
                    }
                }
                Ok(TargetChannel {
                    input: TargetInput::Ssh(Arc::new(write)),
                    events: TargetEvents::Ssh(read),
                })
            }
        }
    }

    /// Opens a forwarded TCP connection from the target to `host:port`.
    pub async fn open_direct_tcpip(
        &self,
        host: &str,
        port: u32,
        originator: &str,
        originator_port: u32,
    ) -> Result<TargetChannel, TargetError> {
        match self {
            TargetConn::Ssh { handle, name } => {
                let ch = handle
                    .channel_open_direct_tcpip(host, port, originator, originator_port)
                    .await
                    .map_err(|e| TargetError::Other {
                        target: name.clone(),
                        cause: format!("forward to {host}:{port} refused: {e}"),
                    })?;
                let (read, write) = ch.split();
                Ok(TargetChannel {
                    input: TargetInput::Ssh(Arc::new(write)),
                    events: TargetEvents::Ssh(read),
                })
            }
            TargetConn::Local { .. } => {
                let stream = tokio::net::TcpStream::connect((host, port as u16))
                    .await
                    .map_err(|e| TargetError::Other {
                        target: "local".into(),
                        cause: format!("forward to {host}:{port}: {e}"),
                    })?;
                let (ev_tx, ev_rx) = mpsc::channel(64);
                let (in_tx, in_rx) = mpsc::channel(64);
                local::pump_tcp(stream, in_rx, ev_tx);
                Ok(TargetChannel {
                    input: TargetInput::Local(in_tx),
                    events: TargetEvents::Local(ev_rx),
                })
            }
        }
    }

    /// Closes the connection to the target.
    pub async fn disconnect(&self) {
        if let TargetConn::Ssh { handle, .. } = self {
            let _ = handle
                .disconnect(russh::Disconnect::ByApplication, "session ended", "en")
                .await;
        }
    }
}

/// The ciphers offered to targets, best first. Every byte of a session is decrypted from the
/// target and encrypted again for the user, so this hop's cipher is a large part of the
/// gateway's CPU per byte; AES-256-GCM with the CPU's AES instructions costs a fraction of
/// ChaCha20-Poly1305, which stays first where those instructions are missing. (On the user's
/// hop the user's client chooses.)
fn target_ciphers() -> &'static [russh::cipher::Name] {
    use russh::cipher::{AES_128_CTR, AES_192_CTR, AES_256_CTR, AES_256_GCM, CHACHA20_POLY1305};
    // The CTR modes (with an encrypt-then-MAC) stay for older targets and network devices.
    const AES_FIRST: &[russh::cipher::Name] = &[
        AES_256_GCM,
        CHACHA20_POLY1305,
        AES_256_CTR,
        AES_192_CTR,
        AES_128_CTR,
    ];
    const CHACHA_FIRST: &[russh::cipher::Name] = &[
        CHACHA20_POLY1305,
        AES_256_GCM,
        AES_256_CTR,
        AES_192_CTR,
        AES_128_CTR,
    ];
    if aes_in_hardware() {
        AES_FIRST
    } else {
        CHACHA_FIRST
    }
}

fn aes_in_hardware() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
            && std::arch::is_aarch64_feature_detected!("pmull")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_get_aes_gcm_first_only_with_aes_instructions() {
        let ciphers = target_ciphers();
        assert_eq!(
            ciphers[0] == russh::cipher::AES_256_GCM,
            aes_in_hardware(),
            "{ciphers:?}"
        );
        for c in [
            russh::cipher::AES_256_GCM,
            russh::cipher::CHACHA20_POLY1305,
            russh::cipher::AES_128_CTR,
        ] {
            assert!(ciphers.contains(&c), "{c:?} missing from {ciphers:?}");
        }
    }
}
