//! Delivery to real receivers: a real rsyslogd over TCP and TLS (JSON and CEF bodies), local
//! HTTP receivers for the webhook and Splunk HEC (signatures and tokens checked), a rotated
//! JSON-lines file — and receivers that die or fail and come back: nothing is lost.

use custos_audit::{
    AuditConfig, AuditEvent, AuditKey, AuditLog, Document, EventKind, Position, Target,
};
use custos_core::Id;
use custos_sinks::{SinkConfig, Sinks, webhook_signature};
use custos_store::AuditStore;
use custos_testkit::{Rsyslog, TestPki};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const T: Duration = Duration::from_secs(30);

fn command(i: u64) -> AuditEvent {
    AuditEvent::new(EventKind::Command {
        position: Position {
            channel: 0,
            offset_us: i * 1000,
        },
        command_line: format!("echo 'n={i}' | tee a|b=c\\d"),
        working_directory: Some("/root".into()),
    })
    .user("alice")
    .session(Id::from_parts(1, [7; 10]))
    .target(Target::named("db1"))
}

struct Fixture {
    dir: tempfile::TempDir,
    store: AuditStore,
    log: AuditLog,
    next: u64,
}

impl Fixture {
    async fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = AuditStore::open(&dir.path().join("custos.db"))
            .await
            .unwrap();
        let log = AuditLog::start(
            store.clone(),
            AuditKey::from_seed([3; 32]),
            AuditConfig {
                checkpoint_every: 50,
                checkpoint_interval: Duration::from_secs(60),
                max_batch: 64,
            },
        );
        Fixture {
            dir,
            store,
            log,
            next: 0,
        }
    }

    /// Appends `n` events and waits until they are stored.
    async fn emit(&mut self, n: u64) {
        for _ in 0..n {
            self.next += 1;
            self.log.emit(command(self.next)).unwrap();
        }
        self.log.flush().await.unwrap();
    }

    fn sinks(&self, toml_text: &str) -> Sinks {
        #[derive(serde::Deserialize)]
        struct Doc {
            sinks: Vec<SinkConfig>,
        }
        let d: Doc = toml::from_str(toml_text).unwrap();
        Sinks::start(self.store.clone(), &d.sinks, self.dir.path()).unwrap()
    }
}

/// `<PRI>1 TIMESTAMP HOST APP PROCID MSGID [SD] MSG` → (MSGID, MSG).
fn parse_5424(line: &str) -> (String, String) {
    let rest = line.strip_prefix('<').expect("PRI");
    let (pri, rest) = rest.split_once('>').expect("PRI end");
    let pri: u32 = pri.parse().expect("numeric PRI");
    assert!(pri < 192, "{line}");
    let rest = rest.strip_prefix("1 ").expect("version 1");
    let mut f = rest.splitn(5, ' ');
    let ts = f.next().unwrap();
    assert!(custos_audit::parse_time(ts).is_some(), "timestamp {ts}");
    let _host = f.next().unwrap();
    assert_eq!(f.next().unwrap(), "custos");
    let _procid = f.next().unwrap();
    let rest = f.next().unwrap();
    let (msgid, rest) = rest.split_once(' ').unwrap();
    assert!(rest.starts_with('['), "{line}");
    let end = rest.find("] ").expect("SD end");
    (msgid.to_string(), rest[end + 2..].to_string())
}

fn event_ids_json(lines: &[String]) -> BTreeSet<String> {
    lines
        .iter()
        .map(|l| {
            let (_, msg) = parse_5424(l);
            let d = Document::parse(&msg).expect("JSON body");
            d.str("event.id").unwrap().to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syslog_over_tcp_and_tls_reaches_rsyslog_as_rfc5424_with_json_and_cef() {
    let mut f = Fixture::new().await;
    let pki = TestPki::create(&f.dir.path().join("pki")).unwrap();
    let rs = Rsyslog::start(Some(&pki)).unwrap();
    let _sinks = f.sinks(&format!(
        r#"
[[sinks]]
name = "plain"
type = "syslog"
transport = "tcp"
address = "127.0.0.1:{tcp}"
format = "json"

[[sinks]]
name = "secure"
type = "syslog"
transport = "tls"
address = "127.0.0.1:{tls}"
server_name = "localhost"
format = "cef"
ca_file = "{ca}"
"#,
        tcp = rs.tcp_port,
        tls = rs.tls_port.unwrap(),
        ca = pki.ca_cert.display()
    ));
    f.emit(20).await;
    let lines = tokio::task::spawn_blocking(move || {
        let l = rs.wait_for(40, T).unwrap();
        (rs, l)
    })
    .await
    .unwrap()
    .1;
    let (json, cef): (Vec<_>, Vec<_>) = lines.iter().partition(|l| l.contains("] {"));
    assert_eq!(json.len(), 20, "{lines:#?}");
    assert_eq!(cef.len(), 20, "{lines:#?}");
    let ids = event_ids_json(&json.into_iter().cloned().collect::<Vec<_>>());
    assert_eq!(ids.len(), 20);
    for l in cef {
        let (msgid, msg) = parse_5424(l);
        assert_eq!(msgid, "session.command");
        assert!(msg.starts_with("CEF:0|Custos|Custos|"), "{msg}");
        // Extension values escape '=' and '\'; the pipe needs no escape there.
        assert!(msg.contains(r"a|b\=c\\d"), "{msg}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_killed_mid_stream_gets_every_event_after_it_restarts() {
    let mut f = Fixture::new().await;
    let rs = Rsyslog::start(None).unwrap();
    let _sinks = f.sinks(&format!(
        "[[sinks]]\nname = \"siem\"\ntype = \"syslog\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:{}\"\nretry_max_secs = 1\n",
        rs.tcp_port
    ));
    f.emit(30).await;
    let mut rs = tokio::task::spawn_blocking(move || {
        rs.wait_for(30, T).unwrap();
        rs
    })
    .await
    .unwrap();
    rs.kill();
    // Events while the receiver is down, some straight after the crash.
    f.emit(40).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    f.emit(30).await;
    rs.restart().unwrap();
    let want: BTreeSet<String> = f
        .store
        .after(0, 1000)
        .await
        .unwrap()
        .iter()
        .map(|r| r.id.clone())
        .collect();
    assert_eq!(want.len(), 100);
    let deadline = Instant::now() + T;
    loop {
        let got = event_ids_json(&rs.messages());
        if got == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "missing {} events: {:?}",
            want.difference(&got).count(),
            want.difference(&got).take(5).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Requests a receiver accepted: head and body.
type Requests = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A local HTTP receiver: records each request, answers with the statuses given in turn
/// (then 200).
struct Receiver {
    port: u16,
    requests: Requests,
}

impl Receiver {
    async fn start(mut statuses: Vec<u16>) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests: Requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        statuses.reverse();
        tokio::spawn(async move {
            loop {
                let (mut c, _) = listener.accept().await.unwrap();
                let mut buf = Vec::new();
                let mut b = [0u8; 8192];
                let (head, body) = loop {
                    let n = c.read(&mut b).await.unwrap();
                    buf.extend_from_slice(&b[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8(buf[..i].to_vec()).unwrap();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("Content-Length: "))
                            .unwrap()
                            .parse()
                            .unwrap();
                        while buf.len() < i + 4 + len {
                            let n = c.read(&mut b).await.unwrap();
                            buf.extend_from_slice(&b[..n]);
                        }
                        break (head, buf[i + 4..i + 4 + len].to_vec());
                    }
                };
                let status = statuses.pop().unwrap_or(200);
                if status == 200 {
                    seen.lock().unwrap().push((head, body));
                }
                let reply = format!("HTTP/1.1 {status} X\r\nContent-Length: 2\r\n\r\nok");
                let _ = c.write_all(reply.as_bytes()).await;
            }
        });
        Receiver { port, requests }
    }

    fn header(head: &str, name: &str) -> Option<String> {
        head.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .map(str::to_string)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_and_hec_batches_arrive_signed_in_order_despite_failures() {
    let mut f = Fixture::new().await;
    std::fs::write(f.dir.path().join("hook.secret"), "s3cret-hook-key\n").unwrap();
    std::fs::write(
        f.dir.path().join("hec.token"),
        "11111111-2222-3333-4444-555555555555",
    )
    .unwrap();
    // The webhook fails twice (a SIEM having a bad minute) before it takes events.
    let hook = Receiver::start(vec![500, 503]).await;
    let hec = Receiver::start(vec![]).await;
    let _sinks = f.sinks(&format!(
        r#"
[[sinks]]
name = "hook"
type = "webhook"
url = "http://127.0.0.1:{hp}/custos"
secret_file = "hook.secret"
headers = {{ X-Team = "soc" }}
batch_size = 7
retry_max_secs = 1

[[sinks]]
name = "splunk"
type = "splunk_hec"
url = "http://127.0.0.1:{sp}/services/collector/event"
token_file = "hec.token"
index = "custos"
"#,
        hp = hook.port,
        sp = hec.port
    ));
    f.emit(25).await;
    let want: Vec<String> = f
        .store
        .after(0, 1000)
        .await
        .unwrap()
        .iter()
        .map(|r| r.id.clone())
        .collect();
    let deadline = Instant::now() + T;
    let (hook_ids, hec_ids) = loop {
        let mut hook_ids = Vec::new();
        for (head, body) in hook.requests.lock().unwrap().iter() {
            let ts = Receiver::header(head, "X-Custos-Timestamp").unwrap();
            let sig = Receiver::header(head, "X-Custos-Signature").unwrap();
            assert_eq!(
                sig,
                format!(
                    "sha256={}",
                    webhook_signature(b"s3cret-hook-key", &ts, body)
                ),
                "bad signature"
            );
            assert_eq!(Receiver::header(head, "X-Team").as_deref(), Some("soc"));
            let docs: Vec<serde_json::Value> = serde_json::from_slice(body).unwrap();
            assert!(docs.len() <= 7);
            hook_ids.extend(
                docs.iter()
                    .map(|d| d["event"]["id"].as_str().unwrap().to_string()),
            );
        }
        let mut hec_ids = Vec::new();
        for (head, body) in hec.requests.lock().unwrap().iter() {
            assert_eq!(
                Receiver::header(head, "Authorization").as_deref(),
                Some("Splunk 11111111-2222-3333-4444-555555555555")
            );
            for line in body.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                let v: serde_json::Value = serde_json::from_slice(line).unwrap();
                assert_eq!(v["index"], "custos");
                assert_eq!(v["sourcetype"], "custos:audit");
                assert!(v["time"].as_f64().unwrap() > 1.7e9);
                hec_ids.push(v["event"]["event"]["id"].as_str().unwrap().to_string());
            }
        }
        if hook_ids.len() >= want.len() && hec_ids.len() >= want.len() {
            break (hook_ids, hec_ids);
        }
        assert!(
            Instant::now() < deadline,
            "hook {} hec {}",
            hook_ids.len(),
            hec_ids.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // In order, each once (the failed attempts were answered with errors, so nothing counted).
    assert_eq!(hook_ids, want);
    assert_eq!(hec_ids, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jsonl_file_rotates_by_size_and_keeps_everything_in_order() {
    let mut f = Fixture::new().await;
    let _sinks = f.sinks(
        "[[sinks]]\nname = \"archive\"\ntype = \"file\"\npath = \"audit/audit.jsonl\"\nmax_bytes = 6000\nkeep = 50\nbatch_size = 5\n",
    );
    f.emit(60).await;
    let want: Vec<String> = f
        .store
        .after(0, 1000)
        .await
        .unwrap()
        .iter()
        .map(|r| r.id.clone())
        .collect();
    let dir = f.dir.path().join("audit");
    let deadline = Instant::now() + T;
    loop {
        let got = read_rotated(&dir);
        if got.len() >= want.len() {
            assert_eq!(got, want);
            break;
        }
        assert!(Instant::now() < deadline, "{} of {}", got.len(), want.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(dir.join("audit.jsonl.1").exists(), "no rotation happened");
    for e in std::fs::read_dir(&dir).unwrap() {
        let len = e.unwrap().metadata().unwrap().len();
        assert!(len <= 6000, "a file grew past max_bytes: {len}");
    }
}

/// Event ids from `audit.jsonl.N` … `audit.jsonl.1`, `audit.jsonl`: oldest first.
fn read_rotated(dir: &Path) -> Vec<String> {
    let mut n = 1;
    while dir.join(format!("audit.jsonl.{n}")).exists() {
        n += 1;
    }
    let mut files: Vec<_> = (1..n)
        .rev()
        .map(|i| dir.join(format!("audit.jsonl.{i}")))
        .collect();
    files.push(dir.join("audit.jsonl"));
    let mut ids = Vec::new();
    for p in files {
        for line in std::fs::read_to_string(p).unwrap_or_default().lines() {
            let d = Document::parse(line).unwrap();
            ids.push(d.str("event.id").unwrap().to_string());
        }
    }
    ids
}

#[tokio::test]
async fn misconfigured_sinks_refuse_to_start_with_the_reason() {
    let f = Fixture::new().await;
    #[derive(serde::Deserialize)]
    struct Doc {
        sinks: Vec<SinkConfig>,
    }
    let d: Doc = toml::from_str(
        "[[sinks]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/\"\nsecret_file = \"missing.secret\"\n",
    )
    .unwrap();
    let e = Sinks::start(f.store.clone(), &d.sinks, f.dir.path())
        .err()
        .unwrap();
    assert!(
        e.contains("sink 'hook'") && e.contains("missing.secret"),
        "{e}"
    );
    let d: Doc = toml::from_str(
        "[[sinks]]\nname = \"a\"\ntype = \"file\"\npath = \"x\"\n[[sinks]]\nname = \"a\"\ntype = \"file\"\npath = \"y\"\n",
    )
    .unwrap();
    let e = Sinks::start(f.store.clone(), &d.sinks, f.dir.path())
        .err()
        .unwrap();
    assert!(e.contains("configured twice"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_receiver_with_an_untrusted_certificate_gets_nothing_and_the_failure_shows() {
    let mut f = Fixture::new().await;
    let pki = TestPki::create(&f.dir.path().join("pki")).unwrap();
    let other = TestPki::create(&f.dir.path().join("other-ca")).unwrap();
    let rs = Rsyslog::start(Some(&pki)).unwrap();
    let _sinks = f.sinks(&format!(
        "[[sinks]]\nname = \"soc\"\ntype = \"syslog\"\ntransport = \"tls\"\naddress = \"127.0.0.1:{}\"\nserver_name = \"localhost\"\nca_file = \"{}\"\n",
        rs.tls_port.unwrap(),
        other.ca_cert.display()
    ));
    f.emit(3).await;
    let deadline = Instant::now() + T;
    let status = loop {
        let c = f.store.sink_cursors().await.unwrap();
        if let Some(s) = c.iter().find(|c| c.sink == "soc" && c.failures > 0) {
            break s.clone();
        }
        assert!(Instant::now() < deadline, "no failure recorded: {c:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status.seq, 0, "nothing may count as delivered");
    let err = status.last_error.unwrap();
    assert!(
        err.contains("TLS handshake") && err.to_lowercase().contains("certificate"),
        "{err}"
    );
    assert!(rs.messages().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_requires_a_client_certificate_gets_events_only_with_one() {
    let mut f = Fixture::new().await;
    let pki = TestPki::create(&f.dir.path().join("pki")).unwrap();
    let rs = Rsyslog::start_with(Some(&pki), true).unwrap();
    let tls = rs.tls_port.unwrap();
    let _sinks = f.sinks(&format!(
        r#"
[[sinks]]
name = "with-cert"
type = "syslog"
transport = "tls"
address = "127.0.0.1:{tls}"
server_name = "localhost"
format = "leef"
ca_file = "{ca}"
client_cert = "{cert}"
client_key = "{key}"

[[sinks]]
name = "without-cert"
type = "syslog"
transport = "tls"
address = "127.0.0.1:{tls}"
server_name = "localhost"
ca_file = "{ca}"
retry_max_secs = 1
"#,
        ca = pki.ca_cert.display(),
        cert = pki.client_cert.display(),
        key = pki.client_key.display(),
    ));
    f.emit(5).await;
    let lines = tokio::task::spawn_blocking(move || {
        let l = rs.wait_for(5, T).unwrap();
        std::thread::sleep(Duration::from_secs(2));
        (rs.messages(), l)
    })
    .await
    .unwrap()
    .0;
    // Only the sink with a certificate got through, with LEEF bodies.
    assert_eq!(lines.len(), 5, "{lines:#?}");
    for l in &lines {
        let (_, msg) = parse_5424(l);
        assert!(msg.starts_with("LEEF:2.0|Custos|Custos|"), "{msg}");
    }
    let c = f.store.sink_cursors().await.unwrap();
    let with = c.iter().find(|c| c.sink == "with-cert").unwrap();
    assert_eq!(with.seq, 5);
    let without = c.iter().find(|c| c.sink == "without-cert").unwrap();
    assert_eq!(
        without.seq, 0,
        "a refused client must not count as delivered"
    );
}
