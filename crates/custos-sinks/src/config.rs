//! Sink settings as written in `custos.toml` (`[[sinks]]` tables). Paths are relative to the
//! data directory; secrets (HMAC keys, HEC tokens) are read from files, never written inline.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// One configured sink. Unknown keys are errors (checked per sink type), so a typo never
/// silently changes where or how events go.
#[derive(Clone, Debug, Deserialize)]
#[serde(try_from = "serde_json::Map<String, serde_json::Value>")]
pub struct SinkConfig {
    /// Unique name: it keys the delivery cursor, so renaming a sink starts it over.
    pub name: String,
    /// Where and how events go.
    pub kind: SinkKind,
    /// Events per delivery (a webhook or HEC request, a syslog write, a file append).
    pub batch_size: u32,
    /// Longest wait between retries after failures (they back off from one second).
    pub retry_max_secs: u64,
    /// Where a new sink starts: `beginning` (every stored event) or `end` (events from now).
    pub start: Start,
}

/// The same fields without the unknown-key check, which `flatten` rules out in serde.
#[derive(Deserialize)]
struct Raw {
    name: String,
    #[serde(flatten)]
    kind: SinkKind,
    #[serde(default = "default_batch")]
    batch_size: u32,
    #[serde(default = "default_retry_max")]
    retry_max_secs: u64,
    #[serde(default)]
    start: Start,
}

const COMMON: &[&str] = &["name", "type", "batch_size", "retry_max_secs", "start"];
const TLS: &[&str] = &["ca_file", "server_name", "client_cert", "client_key"];

impl TryFrom<serde_json::Map<String, serde_json::Value>> for SinkConfig {
    type Error = String;

    fn try_from(map: serde_json::Map<String, serde_json::Value>) -> Result<Self, String> {
        let name = map
            .get("name")
            .and_then(|v| v.as_str())
            .unwrap_or("(unnamed)")
            .to_string();
        let kind = map.get("type").and_then(|v| v.as_str()).unwrap_or("");
        let own: &[&str] = match kind {
            "syslog" => &["transport", "address", "format", "hostname", "facility"],
            "webhook" => &["url", "secret_file", "headers"],
            "splunk_hec" => &["url", "token_file", "index", "sourcetype"],
            "file" => &["path", "max_bytes", "keep"],
            other => {
                return Err(format!(
                    "sink '{name}': unknown type '{other}' (use syslog, webhook, splunk_hec or file)"
                ));
            }
        };
        let tls = matches!(kind, "syslog" | "webhook" | "splunk_hec");
        for key in map.keys() {
            let known = COMMON.contains(&key.as_str())
                || own.contains(&key.as_str())
                || (tls && TLS.contains(&key.as_str()));
            if !known {
                return Err(format!(
                    "sink '{name}': unknown key '{key}' for type {kind}"
                ));
            }
        }
        let raw: Raw = serde_json::from_value(serde_json::Value::Object(map))
            .map_err(|e| format!("sink '{name}': {e}"))?;
        Ok(SinkConfig {
            name: raw.name,
            kind: raw.kind,
            batch_size: raw.batch_size,
            retry_max_secs: raw.retry_max_secs,
            start: raw.start,
        })
    }
}

fn default_batch() -> u32 {
    200
}

fn default_retry_max() -> u64 {
    60
}

/// Where a sink without a cursor starts.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Start {
    /// Deliver every event in the log.
    #[default]
    Beginning,
    /// Deliver only events appended after the sink first runs.
    End,
}

/// The kinds of sink.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SinkKind {
    /// RFC 5424 syslog.
    Syslog(SyslogSink),
    /// JSON batches POSTed with an HMAC-SHA256 signature.
    Webhook(WebhookSink),
    /// Splunk HTTP Event Collector.
    SplunkHec(HecSink),
    /// A JSON-lines file with size-based rotation.
    File(FileSink),
}

/// Syslog over UDP, TCP or TLS.
#[derive(Clone, Debug, Deserialize)]
pub struct SyslogSink {
    /// `udp`, `tcp` (octet-counting framing) or `tls` (RFC 5425).
    pub transport: Transport,
    /// `HOST:PORT` of the receiver.
    pub address: String,
    /// The message body: `json`, `cef` or `leef`.
    #[serde(default)]
    pub format: Format,
    /// The HOSTNAME header field (default: this machine's host name).
    pub hostname: Option<String>,
    /// Syslog facility, 0–23 (default 13, log audit).
    pub facility: Option<u8>,
    /// TLS settings (transport `tls`).
    #[serde(flatten)]
    pub tls: TlsSettings,
}

/// Syslog transports.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// One datagram per event; delivery cannot be confirmed.
    Udp,
    /// Octet-counted frames on a TCP connection.
    Tcp,
    /// Octet-counted frames over TLS, the server certificate verified.
    Tls,
}

/// Syslog message bodies.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// The canonical JSON document.
    #[default]
    Json,
    /// ArcSight Common Event Format.
    Cef,
    /// IBM QRadar Log Event Extended Format 2.0.
    Leef,
}

/// How to check a TLS server and, optionally, present a client certificate.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct TlsSettings {
    /// PEM certificates of the authorities that may sign the server's certificate (default:
    /// the system bundle).
    pub ca_file: Option<PathBuf>,
    /// The name to verify the certificate against (default: the host of the address).
    pub server_name: Option<String>,
    /// A PEM client certificate chain, for receivers that require one.
    pub client_cert: Option<PathBuf>,
    /// The PEM private key of `client_cert`.
    pub client_key: Option<PathBuf>,
}

/// An HTTP webhook.
#[derive(Clone, Debug, Deserialize)]
pub struct WebhookSink {
    /// `http://` or `https://` address.
    pub url: String,
    /// A file holding the HMAC-SHA256 key; the signature goes in `X-Custos-Signature`.
    pub secret_file: PathBuf,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// TLS settings for `https://`.
    #[serde(flatten)]
    pub tls: TlsSettings,
}

/// A Splunk HTTP Event Collector.
#[derive(Clone, Debug, Deserialize)]
pub struct HecSink {
    /// The collector's event endpoint, e.g. `https://splunk:8088/services/collector/event`.
    pub url: String,
    /// A file holding the HEC token.
    pub token_file: PathBuf,
    /// Splunk index (default: the token's).
    pub index: Option<String>,
    /// Splunk sourcetype (default `custos:audit`).
    pub sourcetype: Option<String>,
    /// TLS settings for `https://`.
    #[serde(flatten)]
    pub tls: TlsSettings,
}

/// A JSON-lines file.
#[derive(Clone, Debug, Deserialize)]
pub struct FileSink {
    /// The file events are appended to.
    pub path: PathBuf,
    /// Rotate before the file would grow past this many bytes (default 100 MiB).
    pub max_bytes: Option<u64>,
    /// Rotated files kept as `PATH.1` … `PATH.N` (default 10).
    pub keep: Option<u32>,
}

impl SinkConfig {
    /// Checks what deserialisation cannot: names, sizes, addresses. Errors name the sink.
    pub fn validate(&self) -> Result<(), String> {
        let bad = |why: String| Err(format!("sink '{}': {why}", self.name));
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return bad("the name must be letters, digits, '-', '_' or '.'".into());
        }
        if self.batch_size == 0 || self.batch_size > 10_000 {
            return bad(format!(
                "batch_size {} is outside 1..=10000",
                self.batch_size
            ));
        }
        match &self.kind {
            SinkKind::Syslog(s) => {
                if crate::net::split_host_port(&s.address).is_none() {
                    return bad(format!("address '{}' is not HOST:PORT", s.address));
                }
                if s.facility.is_some_and(|f| f > 23) {
                    return bad("facility must be 0..=23".into());
                }
                if s.transport != Transport::Tls
                    && (s.tls.ca_file.is_some() || s.tls.client_cert.is_some())
                {
                    return bad("TLS settings need transport = \"tls\"".into());
                }
            }
            SinkKind::Webhook(w) => {
                if let Err(e) = crate::http::Url::parse(&w.url) {
                    return bad(e);
                }
            }
            SinkKind::SplunkHec(h) => {
                if let Err(e) = crate::http::Url::parse(&h.url) {
                    return bad(e);
                }
            }
            SinkKind::File(f) => {
                if f.max_bytes == Some(0) {
                    return bad("max_bytes must be more than zero".into());
                }
            }
        }
        Ok(())
    }

    /// A short description for logs and `custos sinks status` (never a secret).
    pub fn describe(&self) -> String {
        match &self.kind {
            SinkKind::Syslog(s) => format!(
                "syslog {} {} ({:?})",
                match s.transport {
                    Transport::Udp => "udp",
                    Transport::Tcp => "tcp",
                    Transport::Tls => "tls",
                },
                s.address,
                s.format
            )
            .to_lowercase(),
            SinkKind::Webhook(w) => format!("webhook {}", w.url),
            SinkKind::SplunkHec(h) => format!("splunk_hec {}", h.url),
            SinkKind::File(f) => format!("file {}", f.path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Doc {
        sinks: Vec<SinkConfig>,
    }

    #[test]
    fn every_kind_parses_and_validates() {
        let d: Doc = toml_like(
            r#"
[[sinks]]
name = "soc"
type = "syslog"
transport = "tls"
address = "siem.example:6514"
format = "cef"
ca_file = "keys/ca.pem"

[[sinks]]
name = "hooks"
type = "webhook"
url = "https://hooks.example/custos"
secret_file = "keys/hook.secret"
headers = { X-Team = "soc" }
batch_size = 50

[[sinks]]
name = "splunk"
type = "splunk_hec"
url = "http://127.0.0.1:8088/services/collector/event"
token_file = "keys/hec.token"

[[sinks]]
name = "archive"
type = "file"
path = "audit/audit.jsonl"
max_bytes = 1000
start = "end"
"#,
        );
        assert_eq!(d.sinks.len(), 4);
        for s in &d.sinks {
            s.validate().unwrap();
        }
        assert!(matches!(d.sinks[0].kind, SinkKind::Syslog(ref s) if s.format == Format::Cef));
        assert_eq!(d.sinks[1].batch_size, 50);
        assert_eq!(d.sinks[3].start, Start::End);
        assert_eq!(d.sinks[0].describe(), "syslog tls siem.example:6514 (cef)");
    }

    #[test]
    fn mistakes_are_named() {
        let d: Doc = toml_like("[[sinks]]\nname = \"x y\"\ntype = \"file\"\npath = \"a\"\n");
        assert!(d.sinks[0].validate().unwrap_err().contains("sink 'x y'"));
        let d: Doc = toml_like(
            "[[sinks]]\nname = \"s\"\ntype = \"syslog\"\ntransport = \"tcp\"\naddress = \"nohost\"\n",
        );
        assert!(d.sinks[0].validate().unwrap_err().contains("HOST:PORT"));
        let d: Doc = toml_like(
            "[[sinks]]\nname = \"w\"\ntype = \"webhook\"\nurl = \"ftp://x\"\nsecret_file = \"k\"\n",
        );
        assert!(d.sinks[0].validate().unwrap_err().contains("http"));
        let r: Result<Doc, _> =
            toml::from_str("[[sinks]]\nname = \"s\"\ntype = \"carrier-pigeon\"\n");
        assert!(r.err().unwrap().to_string().contains("unknown type"));
        let r: Result<Doc, _> = toml::from_str(
            "[[sinks]]\nname = \"f\"\ntype = \"file\"\npath = \"a\"\nmax_byte = 5\n",
        );
        let e = r.err().unwrap().to_string();
        assert!(
            e.contains("unknown key 'max_byte'") && e.contains("sink 'f'"),
            "{e}"
        );
        let r: Result<Doc, _> = toml::from_str(
            "[[sinks]]\nname = \"f\"\ntype = \"file\"\npath = \"a\"\nca_file = \"x\"\n",
        );
        assert!(r.is_err(), "TLS keys do not belong to a file sink");
    }

    fn toml_like(text: &str) -> Doc {
        toml::from_str(text).unwrap()
    }
}
