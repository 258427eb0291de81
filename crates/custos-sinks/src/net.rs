//! Connections shared by the network sinks: TCP with a timeout, TLS with a verified server
//! certificate (and an optional client certificate), and the check that the receiver's TCP
//! has acknowledged everything written.

use crate::config::TlsSettings;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Time allowed to connect (and finish a TLS handshake).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The CA bundle used when a sink names none.
const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Splits `HOST:PORT` (`[V6]:PORT` for IPv6 literals).
pub fn split_host_port(address: &str) -> Option<(String, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() || port == 0 {
        return None;
    }
    Some((host.to_string(), port))
}

/// A byte stream to a receiver, plain or TLS.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {
    /// The TCP socket underneath.
    fn tcp(&self) -> &TcpStream;
}

impl Stream for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl Stream for tokio_rustls::client::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

/// Connects to `host:port`, within [`CONNECT_TIMEOUT`].
pub async fn connect_tcp(host: &str, port: u16) -> Result<TcpStream, String> {
    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host, port))).await {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
        Ok(Err(e)) => Err(format!("cannot connect to {host}:{port}: {e}")),
        Err(_) => Err(format!(
            "cannot connect to {host}:{port}: no answer within {}s",
            CONNECT_TIMEOUT.as_secs()
        )),
    }
}

/// A TLS client configuration: the server is verified against `ca_file` (or the system
/// bundle); a client certificate is presented when one is configured.
pub fn tls_config(tls: &TlsSettings, base: &Path) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    let ca = tls
        .ca_file
        .as_ref()
        .map(|p| base.join(p))
        .unwrap_or_else(|| SYSTEM_BUNDLE.into());
    let certs = read_certs(&ca)?;
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!("{} holds no usable CA certificate", ca.display()));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up failed: {e}"))?
        .with_root_certificates(roots);
    let config = match (&tls.client_cert, &tls.client_key) {
        (Some(c), Some(k)) => {
            let chain = read_certs(&base.join(c))?;
            let key = PrivateKeyDer::from_pem_file(base.join(k)).map_err(|e| {
                format!("cannot read the client key {}: {e}", base.join(k).display())
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("the client certificate and key do not fit: {e}"))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err("client_cert and client_key go together".into()),
    };
    Ok(Arc::new(config))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let iter = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read certificates from {}: {e}", path.display()))?;
    iter.collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad certificate in {}: {e}", path.display()))
}

/// Connects and completes a TLS handshake, verifying the server as `server_name`.
pub async fn connect_tls(
    host: &str,
    port: u16,
    server_name: &str,
    config: Arc<rustls::ClientConfig>,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let tcp = connect_tcp(host, port).await?;
    let name = ServerName::try_from(server_name.to_string())
        .map_err(|e| format!("'{server_name}' is not a valid TLS server name: {e}"))?;
    let connector = tokio_rustls::TlsConnector::from(config);
    match tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(format!("TLS handshake with {host}:{port} failed: {e}")),
        Err(_) => Err(format!("TLS handshake with {host}:{port} timed out")),
    }
}

/// Bytes written on `tcp` that the peer's TCP has not acknowledged yet.
pub fn unacknowledged(tcp: &TcpStream) -> Result<usize, String> {
    let mut n: libc::c_int = 0;
    // SAFETY: the descriptor is a live socket owned by `tcp`; TIOCOUTQ (SIOCOUTQ) writes one
    // int through the valid pointer we pass.
    let r = unsafe { libc::ioctl(tcp.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
    if r < 0 {
        return Err(format!(
            "cannot read the send queue: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(usize::try_from(n).unwrap_or(0))
}

/// Whether the peer has closed (or reset) the connection. Reads through the stream (TLS
/// included) without waiting; anything a receiver sends unasked is discarded.
pub async fn peer_closed<S: Stream + ?Sized>(s: &mut S) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 512];
    loop {
        match tokio::time::timeout(Duration::from_millis(1), s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_split() {
        assert_eq!(split_host_port("siem:6514"), Some(("siem".into(), 6514)));
        assert_eq!(split_host_port("[::1]:514"), Some(("::1".into(), 514)));
        assert_eq!(split_host_port("siem"), None);
        assert_eq!(split_host_port(":514"), None);
        assert_eq!(split_host_port("siem:0"), None);
        assert_eq!(split_host_port("siem:99999"), None);
    }
}
