//! Message formats for SIEM sinks: RFC 5424 syslog, ArcSight CEF, QRadar LEEF 2.0 and plain
//! JSON. Each formatter turns one stored [`Document`] into one message (no framing or
//! transport here, except [`octet_counted`] for syslog over TCP/TLS).
//!
//! Formatters read documents, not typed events, so they format events of any schema version
//! straight from the store. Only JSON and syslog (whose message is the JSON document) carry
//! every field; CEF and LEEF carry the fields listed in docs/audit-events.md, with the event
//! id and sequence number so that the full document can always be found.

use crate::document::{Document, parse_time};
use crate::event::Severity;
use std::fmt::Write as _;
use std::net::IpAddr;

/// RFC 5424 settings.
#[derive(Clone, Debug)]
pub struct SyslogOptions {
    /// Facility code, 0–23. Default 13, "log audit".
    pub facility: u8,
    /// HOSTNAME field; `-` when `None`.
    pub hostname: Option<String>,
    /// APP-NAME field.
    pub app_name: String,
    /// PROCID field; `-` when `None`.
    pub procid: Option<String>,
    /// SD-ID of the structured-data element holding the event id, sequence number and
    /// outcome. The default uses the documentation enterprise number 32473 (RFC 5612); set
    /// your organisation's number if it has one.
    pub sd_id: String,
    /// Start MSG with a UTF-8 byte order mark, as RFC 5424 recommends. Off by default: many
    /// receivers pass the mark through into the JSON they hand on.
    pub bom: bool,
}

impl Default for SyslogOptions {
    fn default() -> SyslogOptions {
        SyslogOptions {
            facility: 13,
            hostname: None,
            app_name: "custos".into(),
            procid: None,
            sd_id: "custos@32473".into(),
            bom: false,
        }
    }
}

/// Product identification written in CEF and LEEF headers.
#[derive(Clone, Debug)]
pub struct Product {
    /// Device vendor.
    pub vendor: String,
    /// Device product.
    pub product: String,
    /// Device version.
    pub version: String,
}

impl Default for Product {
    fn default() -> Product {
        Product {
            vendor: "Custos".into(),
            product: "Custos".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }
}

/// The plain JSON message: the canonical document on one line.
pub fn json(doc: &Document) -> String {
    doc.canonical()
}

/// One RFC 5424 syslog message:
/// `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD-ID id=".." seq=".." outcome=".."] MSG`,
/// with MSGID = `event.action` and MSG = the canonical JSON document.
pub fn syslog_5424(doc: &Document, o: &SyslogOptions) -> String {
    syslog_5424_with(doc, o, &doc.canonical())
}

/// The same syslog header and structured data as [`syslog_5424`], carrying `message` (for
/// example a [`cef`] or [`leef`] line) as MSG instead of the JSON document.
pub fn syslog_5424_with(doc: &Document, o: &SyslogOptions, message: &str) -> String {
    let pri = u16::from(o.facility.min(23)) * 8 + u16::from(syslog_severity(doc));
    let timestamp = doc
        .str("@timestamp")
        .filter(|t| parse_time(t).is_some())
        .unwrap_or("-");
    let mut out = format!(
        "<{pri}>1 {timestamp} {} {} {} {} ",
        header_field(o.hostname.as_deref(), 255),
        header_field(Some(&o.app_name), 48),
        header_field(o.procid.as_deref(), 128),
        header_field(doc.str("event.action"), 32),
    );
    let sd_id = sd_name(&o.sd_id);
    out.push('[');
    out.push_str(&sd_id);
    for (name, value) in [
        ("id", doc.str("event.id").map(str::to_string)),
        ("seq", doc.u64("custos.seq").map(|s| s.to_string())),
        ("outcome", doc.str("event.outcome").map(str::to_string)),
    ] {
        if let Some(v) = value {
            let _ = write!(out, " {name}=\"{}\"", sd_escape(&v));
        }
    }
    out.push_str("] ");
    if o.bom {
        out.push('\u{FEFF}');
    }
    out.push_str(message);
    out
}

/// Octet-counting framing for syslog over TCP or TLS (RFC 6587 section 3.4.1, RFC 5425):
/// the message length in bytes, a space, the message.
pub fn octet_counted(message: &str) -> String {
    format!("{} {message}", message.len())
}

/// Syslog severity (0 emergency … 7 debug) of a document: info 6, low 5, medium 4, high 3,
/// critical 2.
pub fn syslog_severity(doc: &Document) -> u8 {
    match severity(doc) {
        Severity::Info => 6,
        Severity::Low => 5,
        Severity::Medium => 4,
        Severity::High => 3,
        Severity::Critical => 2,
    }
}

fn severity(doc: &Document) -> Severity {
    doc.str("custos.severity")
        .and_then(Severity::parse)
        .or_else(|| doc.u64("event.severity").map(Severity::from_score))
        .unwrap_or(Severity::Info)
}

/// A syslog header field: printable US-ASCII (33–126) only, at most `max` characters, `-`
/// when empty.
fn header_field(v: Option<&str>, max: usize) -> String {
    let s: String = v
        .unwrap_or("")
        .chars()
        .map(|c| if ('!'..='~').contains(&c) { c } else { '_' })
        .take(max)
        .collect();
    if s.is_empty() { "-".into() } else { s }
}

/// An SD-NAME: printable US-ASCII without `=`, space, `]` and `"`, at most 32 characters.
fn sd_name(v: &str) -> String {
    let s: String = v
        .chars()
        .map(|c| {
            if ('!'..='~').contains(&c) && !matches!(c, '=' | ']' | '"') {
                c
            } else {
                '_'
            }
        })
        .take(32)
        .collect();
    if s.is_empty() { "custos".into() } else { s }
}

/// A PARAM-VALUE: `"`, `\` and `]` escaped with a backslash (RFC 5424 section 6.3.3).
fn sd_escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// One CEF message:
/// `CEF:0|Vendor|Product|Version|action|title|severity|key=value key=value ...`.
///
/// Escaping follows the CEF specification: in header fields `\` and `|` are escaped with a
/// backslash (line breaks, which headers cannot carry, become spaces); in extension values
/// `\` and `=` are escaped with a backslash and line breaks are written `\n` and `\r`; pipes
/// in the extension are left alone.
pub fn cef(doc: &Document, product: &Product) -> String {
    let action = doc.str("event.action").unwrap_or("unknown");
    let mut out = String::with_capacity(512);
    out.push_str("CEF:0");
    for field in [
        product.vendor.as_str(),
        product.product.as_str(),
        product.version.as_str(),
        action,
        &title(action),
    ] {
        out.push('|');
        out.push_str(&cef_header(field));
    }
    let _ = write!(out, "|{}|", severity(doc).score());
    let mut ext = Extension::new(' ', cef_value);
    ext.add("rt", millis(doc).map(|m| m.to_string()));
    ext.add("externalId", doc.str("event.id"));
    ext.add("act", Some(action));
    ext.add("outcome", doc.str("event.outcome"));
    ext.add("cat", first_category(doc));
    ext.add("suser", doc.str("user.name"));
    ext.add(
        "duser",
        doc.str("destination.user.name")
            .or_else(|| doc.str("user.target.name")),
    );
    ext.add("src", doc.str("source.ip"));
    ext.add("spt", doc.u64("source.port").map(|p| p.to_string()));
    ext.add("dhost", doc.str("destination.address"));
    ext.add("dpt", doc.u64("destination.port").map(|p| p.to_string()));
    ext.add("filePath", doc.str("file.path"));
    ext.add("reason", doc.str("event.reason"));
    ext.labelled("cs1", "sessionId", doc.str("custos.session.id"));
    ext.labelled("cs2", "ruleId", doc.str("rule.id"));
    ext.labelled("cs3", "commandLine", doc.str("process.command_line"));
    ext.labelled("cs4", "target", doc.str("custos.target.name"));
    ext.labelled("cn1", "seq", doc.u64("custos.seq").map(|s| s.to_string()));
    ext.labelled(
        "cn2",
        "recordingOffsetUs",
        doc.u64("custos.recording.offset_us").map(|s| s.to_string()),
    );
    out.push_str(&ext.text);
    out
}

fn cef_header(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '|' => out.push_str("\\|"),
            '\r' | '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

fn cef_value(v: &str, _delimiter: char) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '=' => out.push_str("\\="),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

/// LEEF 2.0 settings.
#[derive(Clone, Debug)]
pub struct LeefOptions {
    /// Vendor, product and version in the header.
    pub product: Product,
    /// The attribute delimiter; a tab by default.
    pub delimiter: char,
}

impl Default for LeefOptions {
    fn default() -> LeefOptions {
        LeefOptions {
            product: Product::default(),
            delimiter: '\t',
        }
    }
}

/// One LEEF 2.0 message:
/// `LEEF:2.0|Vendor|Product|Version|action|delimiter|key=value<delimiter>key=value...`.
///
/// LEEF defines no escape sequences: header fields have `|` and control characters replaced
/// by `_`, attribute values have the delimiter and line breaks replaced by a space. The
/// delimiter is written as itself when it is printable punctuation, otherwise in the hex form
/// `xHH` (a tab is `x09`).
pub fn leef(doc: &Document, o: &LeefOptions) -> String {
    let action = doc.str("event.action").unwrap_or("unknown");
    let d = o.delimiter;
    let mut out = String::with_capacity(512);
    out.push_str("LEEF:2.0");
    for field in [
        o.product.vendor.as_str(),
        o.product.product.as_str(),
        o.product.version.as_str(),
        action,
    ] {
        out.push('|');
        out.push_str(&leef_header(field));
    }
    out.push('|');
    if d.is_ascii_punctuation() && d != '|' && d != '=' {
        out.push(d);
    } else {
        let _ = write!(out, "x{:02X}", u32::from(d));
    }
    out.push('|');
    let mut ext = Extension::new(d, leef_value);
    if let Some(ms) = millis(doc) {
        ext.add("devTime", time_millis_text(ms));
        ext.add("devTimeFormat", Some("yyyy-MM-dd'T'HH:mm:ss.SSSX"));
    }
    ext.add("cat", first_category(doc));
    ext.add("sev", Some(severity(doc).score().to_string()));
    ext.add("usrName", doc.str("user.name"));
    ext.add("src", doc.str("source.ip"));
    ext.add("srcPort", doc.u64("source.port").map(|p| p.to_string()));
    let dest = doc.str("destination.address");
    if dest.is_some_and(|a| a.parse::<IpAddr>().is_ok()) {
        ext.add("dst", dest);
    } else {
        ext.add("dstHost", dest);
    }
    ext.add(
        "dstPort",
        doc.u64("destination.port").map(|p| p.to_string()),
    );
    ext.add("dstUser", doc.str("destination.user.name"));
    ext.add("eventId", doc.str("event.id"));
    ext.add("seq", doc.u64("custos.seq").map(|s| s.to_string()));
    ext.add("outcome", doc.str("event.outcome"));
    ext.add("sessionId", doc.str("custos.session.id"));
    ext.add("target", doc.str("custos.target.name"));
    ext.add("ruleId", doc.str("rule.id"));
    ext.add("command", doc.str("process.command_line"));
    ext.add("filePath", doc.str("file.path"));
    ext.add("accountName", doc.str("user.target.name"));
    ext.add("reason", doc.str("event.reason"));
    out.push_str(&ext.text);
    out
}

fn leef_header(v: &str) -> String {
    v.chars()
        .map(|c| if c == '|' || c.is_control() { '_' } else { c })
        .collect()
}

fn leef_value(v: &str, delimiter: char) -> String {
    v.chars()
        .map(|c| {
            if c == delimiter || c == '\n' || c == '\r' {
                ' '
            } else {
                c
            }
        })
        .collect()
}

/// Builds `key=value` pairs joined by a delimiter, skipping absent values.
struct Extension {
    text: String,
    delimiter: char,
    escape: fn(&str, char) -> String,
}

impl Extension {
    fn new(delimiter: char, escape: fn(&str, char) -> String) -> Extension {
        Extension {
            text: String::with_capacity(256),
            delimiter,
            escape,
        }
    }

    fn add<V: AsRef<str>>(&mut self, key: &str, value: Option<V>) {
        let Some(v) = value else { return };
        if !self.text.is_empty() {
            self.text.push(self.delimiter);
        }
        self.text.push_str(key);
        self.text.push('=');
        self.text
            .push_str(&(self.escape)(v.as_ref(), self.delimiter));
    }

    /// A CEF custom field: the label first, then the value.
    fn labelled<V: AsRef<str>>(&mut self, key: &str, label: &str, value: Option<V>) {
        if value.is_some() {
            self.add(&format!("{key}Label"), Some(label));
            self.add(key, value);
        }
    }
}

fn first_category(doc: &Document) -> Option<&str> {
    doc.get("event.category")?.as_array()?.first()?.as_str()
}

/// `@timestamp` as milliseconds since the Unix epoch.
fn millis(doc: &Document) -> Option<i64> {
    let t = parse_time(doc.str("@timestamp")?)?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

fn time_millis_text(ms: i64) -> Option<String> {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()?;
    Some(format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    ))
}

/// A short human title of an action, for the CEF Name field.
pub fn title(action: &str) -> String {
    let fixed = match action {
        "auth.success" => "Authentication succeeded",
        "auth.failure" => "Authentication failed",
        "session.start" => "Session started",
        "session.end" => "Session ended",
        "session.interrupted" => "Session interrupted",
        "session.command" => "Command",
        "session.exec" => "Exec request",
        "session.file_transfer" => "File transfer",
        "session.port_forward" => "Port forward",
        "session.terminate" => "Session terminated",
        "rule.alert" => "Rule alert",
        "rule.block" => "Blocked by rule",
        "hold.requested" => "Command held for review",
        "hold.approved" => "Held command approved",
        "hold.denied" => "Held command denied",
        "hold.timed_out" => "Held command timed out",
        "hold.withdrawn" => "Held command withdrawn",
        "user.lock" => "Account locked",
        "user.unlock" => "Account unlocked",
        "server.start" => "Gateway started",
        "server.stop" => "Gateway stopped",
        _ => "",
    };
    if !fixed.is_empty() {
        return fixed.into();
    }
    let mut parts = action.split('.');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("admin"), Some(object), Some(op)) => {
            format!("Administrative change: {} {op}", object.replace('_', " "))
        }
        (Some("recording"), Some(access), None) => format!("Recording {access}"),
        (Some("key"), Some(op), None) => format!("Key {op}"),
        _ => action.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::schema_examples;

    fn doc(json: &str) -> Document {
        Document::parse(json).expect("doc")
    }

    fn sample() -> Document {
        doc(r#"{
            "@timestamp": "2026-11-03T10:00:00.123456Z",
            "event": {"id": "01KC0Z8GXE0000000000000000", "action": "rule.block",
                      "category": ["intrusion_detection"], "outcome": "failure", "severity": 8},
            "custos": {"seq": 42, "severity": "high", "session": {"id": "S1"},
                       "target": {"name": "db1"}, "recording": {"offset_us": 5}},
            "user": {"name": "alice"},
            "source": {"ip": "192.0.2.10", "port": 52144},
            "destination": {"address": "db1.example.com", "port": 22, "user": {"name": "postgres"}},
            "rule": {"id": "sql-drop"},
            "process": {"command_line": "psql -c 'DROP TABLE a' | tee x=1 \\ end\nnext\r"}
        }"#)
    }

    #[test]
    fn cef_escapes_header_and_extension_per_spec() {
        assert_eq!(cef_header(r"a|b\c"), r"a\|b\\c");
        assert_eq!(cef_header("line\nbreak\r"), "line break ");
        assert_eq!(cef_header("x=y"), "x=y");
        assert_eq!(cef_value(r"a=b\c|d", ' '), r"a\=b\\c|d");
        assert_eq!(cef_value("one\ntwo\r\nthree", ' '), r"one\ntwo\r\nthree");
        assert_eq!(cef_value(r"C:\", ' '), r"C:\\");
        assert_eq!(cef_value(r"\=", ' '), r"\\\=");
        assert_eq!(cef_value("", ' '), "");
    }

    #[test]
    fn cef_message() {
        let p = Product {
            vendor: "Acme|Corp".into(),
            product: r"Cust\os".into(),
            version: "1.0".into(),
        };
        let m = cef(&sample(), &p);
        assert!(
            m.starts_with(r"CEF:0|Acme\|Corp|Cust\\os|1.0|rule.block|Blocked by rule|8|rt=1793700000123 externalId=01KC0Z8GXE0000000000000000 act=rule.block outcome=failure cat=intrusion_detection suser=alice duser=postgres src=192.0.2.10 spt=52144 dhost=db1.example.com dpt=22 "),
            "{m}"
        );
        assert!(
            m.contains(r"cs1Label=sessionId cs1=S1 cs2Label=ruleId cs2=sql-drop "),
            "{m}"
        );
        assert!(
            m.contains(r"cs3Label=commandLine cs3=psql -c 'DROP TABLE a' | tee x\=1 \\ end\nnext\r cs4Label=target"),
            "{m}"
        );
        assert!(
            m.ends_with("cn1Label=seq cn1=42 cn2Label=recordingOffsetUs cn2=5"),
            "{m}"
        );
        assert!(!m.contains('\n'));
    }

    #[test]
    fn syslog_message() {
        let o = SyslogOptions {
            hostname: Some("gw 1".into()),
            procid: Some("4242".into()),
            sd_id: "custos@32473".into(),
            ..SyslogOptions::default()
        };
        let d = sample();
        let m = syslog_5424(&d, &o);
        // facility 13 * 8 + severity 3 (high)
        let want = format!(
            "<107>1 2026-11-03T10:00:00.123456Z gw_1 custos 4242 rule.block \
             [custos@32473 id=\"01KC0Z8GXE0000000000000000\" seq=\"42\" outcome=\"failure\"] {}",
            d.canonical()
        );
        assert_eq!(m, want);
        let framed = octet_counted(&m);
        assert_eq!(framed, format!("{} {m}", m.len()));
        let cef_line = cef(&d, &Product::default());
        let wrapped = syslog_5424_with(&d, &o, &cef_line);
        assert_eq!(wrapped, want.replace(&d.canonical(), &cef_line));
        let bom = syslog_5424(&d, &SyslogOptions { bom: true, ..o });
        assert!(bom.contains("] \u{FEFF}{"));
    }

    #[test]
    fn syslog_escapes_and_sanitizes() {
        assert_eq!(sd_escape(r#"a"b\c]d"#), r#"a\"b\\c\]d"#);
        assert_eq!(header_field(None, 10), "-");
        assert_eq!(header_field(Some("héllo world"), 10), "h_llo_worl");
        assert_eq!(sd_name("bad id=\"x\"]"), "bad_id__x__");
        let d = doc(
            r#"{"event": {"action": "a very long action name that is longer than 32", "severity": 10}}"#,
        );
        let m = syslog_5424(&d, &SyslogOptions::default());
        assert!(
            m.starts_with("<106>1 - - custos - a_very_long_action_name_that_is_ [custos@32473] {"),
            "{m}"
        );
    }

    #[test]
    fn leef_message() {
        let m = leef(&sample(), &LeefOptions::default());
        let (header, attrs) = m.split_at(m.find("x09|").expect("delimiter") + 4);
        assert_eq!(
            header,
            format!(
                "LEEF:2.0|Custos|Custos|{}|rule.block|x09|",
                env!("CARGO_PKG_VERSION")
            )
        );
        let pairs: Vec<&str> = attrs.split('\t').collect();
        assert_eq!(pairs[0], "devTime=2026-11-03T10:00:00.123Z");
        assert!(pairs.contains(&"sev=8"));
        assert!(pairs.contains(&"usrName=alice"));
        assert!(pairs.contains(&"dstHost=db1.example.com"));
        assert!(pairs.contains(&"seq=42"));
        assert!(pairs.contains(&r"command=psql -c 'DROP TABLE a' | tee x=1 \ end next "));
        assert!(!m.contains('\n'));
        let caret = leef(
            &doc(
                r#"{"event": {"action": "x|y"}, "user": {"name": "a^b\tc"}, "destination": {"address": "10.0.0.1"}}"#,
            ),
            &LeefOptions {
                delimiter: '^',
                ..LeefOptions::default()
            },
        );
        assert!(caret.contains("|x_y|^|"), "{caret}");
        assert!(caret.contains("usrName=a b\tc"), "{caret}");
        assert!(caret.contains("^dst=10.0.0.1"), "{caret}");
    }

    #[test]
    fn every_example_formats_in_every_format() {
        for (seq, e) in schema_examples() {
            let d = e.to_document(seq);
            let action = e.action();
            assert_eq!(json(&d), d.canonical());
            assert!(syslog_5424(&d, &SyslogOptions::default()).contains(&action));
            let c = cef(&d, &Product::default());
            assert!(c.contains(&format!("|{action}|")), "{c}");
            assert!(!title(&action).is_empty());
            assert!(!c.contains('\n') && !c.contains('\r'));
            let l = leef(&d, &LeefOptions::default());
            assert!(!l.contains('\n') && !l.contains('\r'));
        }
        assert_eq!(
            title("admin.user_key.create"),
            "Administrative change: user key create"
        );
        assert_eq!(title("recording.watch"), "Recording watch");
    }
}
