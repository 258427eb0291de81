//! Turning a batch of stored audit events into what each kind of sink receives, and sending
//! it. A batch counts as delivered only when the receiver has it: an HTTP 2xx, a file synced
//! to disk, or — for syslog over TCP and TLS, which has no application-level acknowledgement —
//! every byte acknowledged by the receiver's TCP. UDP cannot be confirmed at all.

use crate::config::{FileSink, Format, HecSink, SinkKind, SyslogSink, Transport, WebhookSink};
use crate::{http, net};
use custos_audit::Document;
use custos_audit::siem::{self, LeefOptions, Product, SyslogOptions};
use custos_store::AuditRow;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

/// How long a TCP receiver may take to acknowledge a batch before the connection is dropped
/// and the batch sent again.
const ACK_TIMEOUT: Duration = Duration::from_secs(15);
/// The largest UDP payload.
const MAX_DATAGRAM: usize = 65_507;

/// A sink ready to send.
pub(crate) enum Deliverer {
    Syslog(Syslog),
    Webhook(Box<Webhook>),
    Hec(Hec),
    File(JsonLines),
}

impl Deliverer {
    /// Prepares a sink: reads its secrets and TLS material. Errors name what is wrong.
    pub fn new(kind: &SinkKind, base: &Path) -> Result<Deliverer, String> {
        Ok(match kind {
            SinkKind::Syslog(s) => Deliverer::Syslog(Syslog::new(s, base)?),
            SinkKind::Webhook(w) => Deliverer::Webhook(Box::new(Webhook::new(w, base)?)),
            SinkKind::SplunkHec(h) => Deliverer::Hec(Hec::new(h, base)?),
            SinkKind::File(f) => Deliverer::File(JsonLines::new(f, base)),
        })
    }

    /// Sends `rows` (in order). `Ok` means the receiver has every one of them.
    pub async fn send(&mut self, rows: &[AuditRow]) -> Result<(), String> {
        let docs = rows
            .iter()
            .map(|r| {
                Document::parse(&r.doc)
                    .map_err(|e| format!("stored event {} is not a document: {e}", r.seq))
            })
            .collect::<Result<Vec<_>, _>>()?;
        match self {
            Deliverer::Syslog(s) => s.send(&docs).await,
            Deliverer::Webhook(w) => w.send(&docs).await,
            Deliverer::Hec(h) => h.send(rows, &docs).await,
            Deliverer::File(f) => f.send(&docs),
        }
    }
}

fn read_secret(base: &Path, file: &Path, what: &str) -> Result<String, String> {
    let path = base.join(file);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read the {what} file {}: {e}", path.display()))?;
    let t = text.trim_end_matches(['\r', '\n']).to_string();
    if t.is_empty() {
        return Err(format!("the {what} file {} is empty", path.display()));
    }
    Ok(t)
}

fn server_name(tls: &crate::config::TlsSettings, host: &str) -> String {
    tls.server_name.clone().unwrap_or_else(|| host.to_string())
}

fn this_host() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into the valid buffer.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if r != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8(buf[..end].to_vec())
        .ok()
        .filter(|h| !h.is_empty())
}

// ----- syslog ----------------------------------------------------------------------------

pub(crate) struct Syslog {
    transport: Transport,
    host: String,
    port: u16,
    format: Format,
    options: SyslogOptions,
    product: Product,
    leef: LeefOptions,
    tls: Option<(Arc<rustls::ClientConfig>, String)>,
    conn: Option<Box<dyn net::Stream>>,
    udp: Option<tokio::net::UdpSocket>,
}

impl Syslog {
    fn new(s: &SyslogSink, base: &Path) -> Result<Syslog, String> {
        let (host, port) = net::split_host_port(&s.address)
            .ok_or_else(|| format!("address '{}' is not HOST:PORT", s.address))?;
        let tls = if s.transport == Transport::Tls {
            Some((net::tls_config(&s.tls, base)?, server_name(&s.tls, &host)))
        } else {
            None
        };
        let mut options = SyslogOptions {
            hostname: s.hostname.clone().or_else(this_host),
            ..SyslogOptions::default()
        };
        if let Some(f) = s.facility {
            options.facility = f;
        }
        Ok(Syslog {
            transport: s.transport,
            host,
            port,
            format: s.format,
            options,
            product: Product::default(),
            leef: LeefOptions::default(),
            tls,
            conn: None,
            udp: None,
        })
    }

    fn message(&self, doc: &Document) -> String {
        match self.format {
            Format::Json => siem::syslog_5424(doc, &self.options),
            Format::Cef => {
                siem::syslog_5424_with(doc, &self.options, &siem::cef(doc, &self.product))
            }
            Format::Leef => {
                siem::syslog_5424_with(doc, &self.options, &siem::leef(doc, &self.leef))
            }
        }
    }

    async fn send(&mut self, docs: &[Document]) -> Result<(), String> {
        match self.transport {
            Transport::Udp => self.send_udp(docs).await,
            Transport::Tcp | Transport::Tls => {
                let r = self.send_stream(docs).await;
                if r.is_err() {
                    // Start over on a new connection; the batch is sent again.
                    self.conn = None;
                }
                r
            }
        }
    }

    async fn send_udp(&mut self, docs: &[Document]) -> Result<(), String> {
        if self.udp.is_none() {
            let bind = if self.host.contains(':') {
                "[::]:0"
            } else {
                "0.0.0.0:0"
            };
            let sock = tokio::net::UdpSocket::bind(bind)
                .await
                .map_err(|e| format!("cannot open a UDP socket: {e}"))?;
            sock.connect((self.host.as_str(), self.port))
                .await
                .map_err(|e| format!("cannot reach {}:{}: {e}", self.host, self.port))?;
            self.udp = Some(sock);
        }
        for doc in docs {
            let mut m = self.message(doc);
            if m.len() > MAX_DATAGRAM {
                // Too large for one datagram: cut on a character boundary.
                let mut cut = MAX_DATAGRAM;
                while !m.is_char_boundary(cut) {
                    cut -= 1;
                }
                m.truncate(cut);
            }
            let sock = self.udp.as_ref().ok_or("no UDP socket")?;
            if let Err(e) = sock.send(m.as_bytes()).await {
                self.udp = None;
                return Err(format!("cannot send to {}:{}: {e}", self.host, self.port));
            }
        }
        Ok(())
    }

    async fn send_stream(&mut self, docs: &[Document]) -> Result<(), String> {
        if let Some(c) = self.conn.as_mut()
            && net::peer_closed(c.as_mut()).await
        {
            self.conn = None;
        }
        if self.conn.is_none() {
            let c: Box<dyn net::Stream> = match &self.tls {
                Some((config, name)) => {
                    Box::new(net::connect_tls(&self.host, self.port, name, config.clone()).await?)
                }
                None => Box::new(net::connect_tcp(&self.host, self.port).await?),
            };
            self.conn = Some(c);
        }
        let mut out = Vec::with_capacity(docs.len() * 512);
        for doc in docs {
            out.extend_from_slice(siem::octet_counted(&self.message(doc)).as_bytes());
        }
        let (host, port) = (self.host.clone(), self.port);
        let c = self.conn.as_mut().ok_or("no connection")?;
        let io = |e: std::io::Error| format!("sending to {host}:{port} failed: {e}");
        c.write_all(&out).await.map_err(io)?;
        c.flush().await.map_err(io)?;
        // Delivered once the receiver's TCP has acknowledged every byte.
        let started = Instant::now();
        loop {
            if net::unacknowledged(c.tcp())? == 0 {
                break;
            }
            if started.elapsed() > ACK_TIMEOUT {
                return Err(format!(
                    "{}:{} did not acknowledge the batch within {}s",
                    self.host,
                    self.port,
                    ACK_TIMEOUT.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if net::peer_closed(c.as_mut()).await {
            return Err(format!("{}:{} closed the connection", self.host, self.port));
        }
        Ok(())
    }
}

// ----- webhook ---------------------------------------------------------------------------

pub(crate) struct Webhook {
    url: http::Url,
    key: aws_lc_rs::hmac::Key,
    headers: Vec<(String, String)>,
    tls: Option<(Arc<rustls::ClientConfig>, String)>,
}

/// The header carrying the body's HMAC-SHA256, `sha256=HEX`.
pub const SIGNATURE_HEADER: &str = "X-Custos-Signature";
/// The header carrying the signing time (Unix seconds), which the signature covers.
pub const TIMESTAMP_HEADER: &str = "X-Custos-Timestamp";

/// The webhook signature: HMAC-SHA256 over `TIMESTAMP.BODY`, hex.
pub fn webhook_signature(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    sign(&key, timestamp, body)
}

fn sign(key: &aws_lc_rs::hmac::Key, timestamp: &str, body: &[u8]) -> String {
    let mut ctx = aws_lc_rs::hmac::Context::with_key(key);
    ctx.update(timestamp.as_bytes());
    ctx.update(b".");
    ctx.update(body);
    hex::encode(ctx.sign().as_ref())
}

impl Webhook {
    fn new(w: &WebhookSink, base: &Path) -> Result<Webhook, String> {
        let url = http::Url::parse(&w.url)?;
        let secret = read_secret(base, &w.secret_file, "webhook secret")?;
        let tls = if url.tls {
            Some((
                net::tls_config(&w.tls, base)?,
                server_name(&w.tls, &url.host),
            ))
        } else {
            None
        };
        Ok(Webhook {
            url,
            key: aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes()),
            headers: w
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            tls,
        })
    }

    async fn send(&mut self, docs: &[Document]) -> Result<(), String> {
        let mut body = Vec::with_capacity(docs.len() * 512 + 2);
        body.push(b'[');
        for (i, d) in docs.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(d.canonical().as_bytes());
        }
        body.push(b']');
        let ts = time::OffsetDateTime::now_utc().unix_timestamp().to_string();
        let mut headers = vec![
            ("Content-Type".to_string(), "application/json".to_string()),
            (TIMESTAMP_HEADER.to_string(), ts.clone()),
            (
                SIGNATURE_HEADER.to_string(),
                format!("sha256={}", sign(&self.key, &ts, &body)),
            ),
        ];
        headers.extend(self.headers.iter().cloned());
        let tls = self.tls.as_ref().map(|(c, n)| (c.clone(), n.as_str()));
        let r = http::post(&self.url, tls, &headers, &body).await?;
        if (200..300).contains(&r.status) {
            Ok(())
        } else {
            Err(format!("the webhook answered {} {}", r.status, r.body))
        }
    }
}

// ----- Splunk HEC ------------------------------------------------------------------------

pub(crate) struct Hec {
    url: http::Url,
    token: String,
    index: Option<String>,
    sourcetype: String,
    host: Option<String>,
    tls: Option<(Arc<rustls::ClientConfig>, String)>,
}

impl Hec {
    fn new(h: &HecSink, base: &Path) -> Result<Hec, String> {
        let url = http::Url::parse(&h.url)?;
        let token = read_secret(base, &h.token_file, "HEC token")?;
        if token.chars().any(|c| c.is_control() || c == ' ') {
            return Err("the HEC token holds spaces or control characters".into());
        }
        let tls = if url.tls {
            Some((
                net::tls_config(&h.tls, base)?,
                server_name(&h.tls, &url.host),
            ))
        } else {
            None
        };
        Ok(Hec {
            url,
            token,
            index: h.index.clone(),
            sourcetype: h
                .sourcetype
                .clone()
                .unwrap_or_else(|| "custos:audit".into()),
            host: this_host(),
            tls,
        })
    }

    async fn send(&mut self, rows: &[AuditRow], docs: &[Document]) -> Result<(), String> {
        let mut body = Vec::with_capacity(docs.len() * 600);
        for (row, doc) in rows.iter().zip(docs) {
            let mut ev = serde_json::Map::new();
            ev.insert(
                "time".into(),
                serde_json::json!(row.at_us as f64 / 1_000_000.0),
            );
            if let Some(h) = &self.host {
                ev.insert("host".into(), h.clone().into());
            }
            ev.insert("source".into(), "custos".into());
            ev.insert("sourcetype".into(), self.sourcetype.clone().into());
            if let Some(i) = &self.index {
                ev.insert("index".into(), i.clone().into());
            }
            ev.insert(
                "event".into(),
                serde_json::Value::Object(doc.as_map().clone()),
            );
            serde_json::to_writer(&mut body, &ev).map_err(|e| e.to_string())?;
            body.push(b'\n');
        }
        let headers = vec![
            (
                "Authorization".to_string(),
                format!("Splunk {}", self.token),
            ),
            ("Content-Type".to_string(), "application/json".to_string()),
        ];
        let tls = self.tls.as_ref().map(|(c, n)| (c.clone(), n.as_str()));
        let r = http::post(&self.url, tls, &headers, &body).await?;
        if (200..300).contains(&r.status) {
            Ok(())
        } else {
            Err(format!("the collector answered {} {}", r.status, r.body))
        }
    }
}

// ----- JSON lines ------------------------------------------------------------------------

pub(crate) struct JsonLines {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
}

impl JsonLines {
    fn new(f: &FileSink, base: &Path) -> JsonLines {
        JsonLines {
            path: base.join(&f.path),
            max_bytes: f.max_bytes.unwrap_or(100 * 1024 * 1024),
            keep: f.keep.unwrap_or(10),
        }
    }

    fn send(&mut self, docs: &[Document]) -> Result<(), String> {
        let mut out = Vec::with_capacity(docs.len() * 512);
        for d in docs {
            out.extend_from_slice(d.canonical().as_bytes());
            out.push(b'\n');
        }
        let shown = self.path.display().to_string();
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let size = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        if size > 0 && size + out.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| format!("cannot open {shown}: {e}"))?;
        f.write_all(&out)
            .and_then(|_| f.sync_data())
            .map_err(|e| format!("cannot write {shown}: {e}"))
    }

    /// `PATH` becomes `PATH.1`, `PATH.1` becomes `PATH.2`, …; the oldest beyond `keep` goes.
    fn rotate(&self) -> Result<(), String> {
        let numbered = |n: u32| PathBuf::from(format!("{}.{n}", self.path.display()));
        if self.keep == 0 {
            return std::fs::remove_file(&self.path)
                .map_err(|e| format!("cannot rotate {}: {e}", self.path.display()));
        }
        let _ = std::fs::remove_file(numbered(self.keep));
        for n in (1..self.keep).rev() {
            let from = numbered(n);
            if from.exists() {
                std::fs::rename(&from, numbered(n + 1))
                    .map_err(|e| format!("cannot rotate {}: {e}", from.display()))?;
            }
        }
        std::fs::rename(&self.path, numbered(1))
            .map_err(|e| format!("cannot rotate {}: {e}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_match_a_known_value() {
        // HMAC-SHA256("key", "1700000000.[]"), computed independently with openssl.
        let sig = webhook_signature(b"key", "1700000000", b"[]");
        assert_eq!(
            sig,
            "2afce10b4f37880815b715635811bcfa4d5334e7213eea5bc2e130e1008055c3"
        );
        assert_ne!(sig, webhook_signature(b"key", "1700000001", b"[]"));
        assert_ne!(sig, webhook_signature(b"kez", "1700000000", b"[]"));
    }
}
