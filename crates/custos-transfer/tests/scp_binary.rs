//! Drives the real OpenSSH `scp` in its remote modes (`scp -t` sink, `scp -f` source) over
//! pipes and audits both directions. Skipped when the binary is missing.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use custos_transfer::{FileOp, ScpAudit};

const SCP: &str = "/usr/bin/scp";

struct Peer {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    audit: ScpAudit,
    ops: Vec<FileOp>,
}

impl Peer {
    fn start(args: &[&str]) -> Option<Peer> {
        if !Path::new(SCP).exists() {
            return None;
        }
        let command = format!("scp {}", args.join(" "));
        let audit = ScpAudit::from_exec(command.as_bytes()).expect("recognised as scp");
        let mut child = Command::new(SCP)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let stdin = child.stdin.take()?;
        let stdout = BufReader::new(child.stdout.take()?);
        Some(Peer {
            child,
            stdin: Some(stdin),
            stdout,
            audit,
            ops: Vec::new(),
        })
    }

    /// Client → server bytes.
    fn send(&mut self, bytes: &[u8]) {
        self.ops.extend(self.audit.client_bytes(bytes));
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(bytes).expect("write to scp");
        stdin.flush().expect("flush");
    }

    fn got_from_server(&mut self, bytes: &[u8]) {
        // Byte by byte, the harshest chunking.
        for b in bytes {
            self.ops
                .extend(self.audit.server_bytes(std::slice::from_ref(b)));
        }
    }

    /// Reads one acknowledgement (a byte, plus an error line after \x01/\x02).
    fn ack(&mut self) -> Vec<u8> {
        let mut first = [0u8; 1];
        self.stdout.read_exact(&mut first).expect("ack byte");
        let mut all = first.to_vec();
        if first[0] != 0 {
            self.stdout.read_until(b'\n', &mut all).expect("error line");
        }
        self.got_from_server(&all);
        all
    }

    fn line(&mut self) -> Vec<u8> {
        let mut line = Vec::new();
        self.stdout.read_until(b'\n', &mut line).expect("line");
        self.got_from_server(&line);
        line
    }

    fn exact(&mut self, n: usize) -> Vec<u8> {
        let mut buf = vec![0u8; n];
        self.stdout.read_exact(&mut buf).expect("contents");
        self.got_from_server(&buf);
        buf
    }

    fn end(mut self) -> Vec<FileOp> {
        drop(self.stdin.take());
        let _ = self.child.wait();
        let mut ops = self.ops;
        ops.extend(self.audit.finish());
        ops
    }
}

fn scratch_dir(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "custos-transfer-scp-{tag}-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

fn op(op: &'static str, path: &Path, bytes: u64, status: &str) -> FileOp {
    FileOp {
        op,
        path: path.to_str().expect("utf-8").to_owned(),
        target_path: None,
        bytes,
        status: status.to_owned(),
    }
}

#[test]
fn audits_an_upload_to_a_real_scp_sink() {
    let dir = scratch_dir("sink");
    let target = dir.to_str().expect("utf-8").to_owned();
    let Some(mut p) = Peer::start(&["-r", "-t", &target]) else {
        eprintln!("skipping: {SCP} not available");
        return;
    };
    assert_eq!(p.ack(), [0]);
    p.send(b"C0644 5 a.txt\n");
    assert_eq!(p.ack(), [0]);
    p.send(b"hello\0");
    assert_eq!(p.ack(), [0]);
    p.send(b"D0755 0 sub\n");
    assert_eq!(p.ack(), [0]);
    p.send(b"C0600 3 c\n");
    assert_eq!(p.ack(), [0]);
    p.send(b"x\ny\0");
    assert_eq!(p.ack(), [0]);
    p.send(b"E\n");
    assert_eq!(p.ack(), [0]);
    // A name with a slash is refused by the sink, which then gives up.
    p.send(b"C0644 1 ../evil\n");
    let refusal = p.ack();
    assert_ne!(refusal[0], 0);
    let ops = p.end();

    assert_eq!(std::fs::read(dir.join("a.txt")).expect("a.txt"), b"hello");
    assert_eq!(std::fs::read(dir.join("sub/c")).expect("sub/c"), b"x\ny");
    let refusal_text = String::from_utf8_lossy(&refusal[1..]).trim().to_owned();
    assert_eq!(
        ops,
        vec![
            op("write", &dir.join("a.txt"), 5, "ok"),
            op("mkdir", &dir.join("sub"), 0, "ok"),
            op("write", &dir.join("sub/c"), 3, "ok"),
            op("write", &dir.join("../evil"), 0, &refusal_text),
        ]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn audits_a_download_from_a_real_scp_source() {
    let dir = scratch_dir("source");
    std::fs::create_dir_all(dir.join("tree/inner")).expect("mkdir");
    std::fs::write(dir.join("tree/inner/data.bin"), vec![7u8; 70_000]).expect("write");
    let tree = dir.join("tree");
    let Some(mut p) = Peer::start(&["-r", "-f", tree.to_str().expect("utf-8")]) else {
        eprintln!("skipping: {SCP} not available");
        return;
    };
    p.send(&[0]);
    assert!(p.line().starts_with(b"D"));
    p.send(&[0]);
    assert!(p.line().starts_with(b"D"));
    p.send(&[0]);
    let header = p.line();
    assert!(header.starts_with(b"C"), "{header:?}");
    p.send(&[0]);
    let body = p.exact(70_000 + 1);
    assert_eq!(body.last(), Some(&0));
    p.send(&[0]);
    assert_eq!(p.line(), b"E\n");
    p.send(&[0]);
    assert_eq!(p.line(), b"E\n");
    p.send(&[0]);
    let ops = p.end();
    assert_eq!(
        ops,
        vec![
            op("opendir", &tree, 0, "ok"),
            op("opendir", &dir.join("tree/inner"), 0, "ok"),
            op("read", &dir.join("tree/inner/data.bin"), 70_000, "ok"),
        ]
    );

    // A missing source is reported by the sender in place of a file.
    let missing = dir.join("missing");
    let Some(mut p) = Peer::start(&["-f", missing.to_str().expect("utf-8")]) else {
        return;
    };
    p.send(&[0]);
    let line = p.line();
    assert_eq!(line.first(), Some(&1));
    let text = String::from_utf8_lossy(&line[1..]).trim().to_owned();
    assert!(text.contains("No such file"), "{text}");
    assert_eq!(p.end(), vec![op("read", &missing, 0, &text)]);
    let _ = std::fs::remove_dir_all(&dir);
}
