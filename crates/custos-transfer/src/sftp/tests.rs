use super::*;
use crate::MAX_PATH_LEN;

// ---- packet encoding helpers -------------------------------------------------------------

fn s(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn pkt(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = ((body.len() + 1) as u32).to_be_bytes().to_vec();
    out.push(kind);
    out.extend_from_slice(body);
    out
}

fn init(version: u32) -> Vec<u8> {
    pkt(FXP_INIT, &version.to_be_bytes())
}

fn version(v: u32) -> Vec<u8> {
    let mut b = v.to_be_bytes().to_vec();
    s(&mut b, b"posix-rename@openssh.com");
    s(&mut b, b"1");
    pkt(FXP_VERSION, &b)
}

fn with_id(id: u32) -> Vec<u8> {
    id.to_be_bytes().to_vec()
}

fn path_req(kind: u8, id: u32, path: &str) -> Vec<u8> {
    let mut b = with_id(id);
    s(&mut b, path.as_bytes());
    if matches!(kind, FXP_MKDIR | FXP_SETSTAT) {
        b.extend_from_slice(&0u32.to_be_bytes()); // empty attrs
    }
    pkt(kind, &b)
}

fn two_path_req(kind: u8, id: u32, a: &str, b2: &str) -> Vec<u8> {
    let mut b = with_id(id);
    s(&mut b, a.as_bytes());
    s(&mut b, b2.as_bytes());
    pkt(kind, &b)
}

fn open(id: u32, path: &str, flags: u32) -> Vec<u8> {
    let mut b = with_id(id);
    s(&mut b, path.as_bytes());
    b.extend_from_slice(&flags.to_be_bytes());
    b.extend_from_slice(&0u32.to_be_bytes());
    pkt(FXP_OPEN, &b)
}

fn handle_req(kind: u8, id: u32, handle: &[u8]) -> Vec<u8> {
    let mut b = with_id(id);
    s(&mut b, handle);
    pkt(kind, &b)
}

fn read(id: u32, handle: &[u8], offset: u64, len: u32) -> Vec<u8> {
    let mut b = with_id(id);
    s(&mut b, handle);
    b.extend_from_slice(&offset.to_be_bytes());
    b.extend_from_slice(&len.to_be_bytes());
    pkt(FXP_READ, &b)
}

fn write(id: u32, handle: &[u8], offset: u64, len: usize) -> Vec<u8> {
    let mut b = with_id(id);
    s(&mut b, handle);
    b.extend_from_slice(&offset.to_be_bytes());
    s(&mut b, &vec![0xA5; len]);
    pkt(FXP_WRITE, &b)
}

fn extended(id: u32, name: &str, args: &[&str]) -> Vec<u8> {
    let mut b = with_id(id);
    s(&mut b, name.as_bytes());
    for a in args {
        s(&mut b, a.as_bytes());
    }
    pkt(FXP_EXTENDED, &b)
}

fn status(id: u32, code: u32) -> Vec<u8> {
    let mut b = with_id(id);
    b.extend_from_slice(&code.to_be_bytes());
    s(&mut b, b"message");
    s(&mut b, b"");
    pkt(FXP_STATUS, &b)
}

fn handle_reply(id: u32, handle: &[u8]) -> Vec<u8> {
    let mut b = with_id(id);
    s(&mut b, handle);
    pkt(FXP_HANDLE, &b)
}

fn data(id: u32, len: usize) -> Vec<u8> {
    let mut b = with_id(id);
    s(&mut b, &vec![b'x'; len]);
    pkt(FXP_DATA, &b)
}

fn name(id: u32, names: &[&str]) -> Vec<u8> {
    let mut b = with_id(id);
    b.extend_from_slice(&(names.len() as u32).to_be_bytes());
    for n in names {
        s(&mut b, n.as_bytes());
        s(&mut b, n.as_bytes());
        b.extend_from_slice(&0u32.to_be_bytes());
    }
    pkt(FXP_NAME, &b)
}

fn attrs(id: u32) -> Vec<u8> {
    let mut b = with_id(id);
    b.extend_from_slice(&0u32.to_be_bytes());
    pkt(FXP_ATTRS, &b)
}

const READ: u32 = 0x01;
const WRITE: u32 = 0x02;
const CREAT: u32 = 0x08;
const TRUNC: u32 = 0x10;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    C,
    S,
}

fn op(op: &'static str, path: &str, bytes: u64, status: &str) -> FileOp {
    FileOp::new(op, path.to_owned(), bytes, status)
}

fn op2(o: &'static str, path: &str, target: &str, status: &str) -> FileOp {
    FileOp {
        target_path: Some(target.to_owned()),
        ..op(o, path, 0, status)
    }
}

/// A realistic session, in wire order, and what it must produce.
fn session() -> (Vec<(Dir, Vec<u8>)>, Vec<FileOp>) {
    use Dir::{C, S};
    let h1: &[u8] = b"\0\0\0\x01";
    let h2: &[u8] = b"\0\0\0\x02";
    let h3: &[u8] = b"\0\0\0\x03";
    let events = vec![
        (C, init(3)),
        (S, version(3)),
        (C, path_req(FXP_REALPATH, 1, ".")),
        (S, name(1, &["/home/alice"])),
        // Upload: OPEN write + WRITE x3 (pipelined) + CLOSE.
        (C, open(2, "/tmp/up.bin", WRITE | CREAT | TRUNC)),
        (S, handle_reply(2, h1)),
        (
            C,
            [
                write(3, h1, 0, 1000),
                write(4, h1, 1000, 1000),
                write(5, h1, 2000, 500),
            ]
            .concat(),
        ),
        (S, [status(3, 0), status(4, 0), status(5, 0)].concat()),
        (C, handle_req(FXP_CLOSE, 6, h1)),
        (S, status(6, 0)),
        // Download: OPEN read + READ/DATA + EOF + CLOSE.
        (C, open(7, "/etc/motd", READ)),
        (S, handle_reply(7, h2)),
        (
            C,
            [read(8, h2, 0, 32768), read(9, h2, 32768, 32768)].concat(),
        ),
        (S, [data(8, 300), status(9, 1)].concat()),
        (C, handle_req(FXP_CLOSE, 10, h2)),
        (S, status(10, 0)),
        (
            C,
            two_path_req(FXP_RENAME, 11, "/tmp/up.bin", "/tmp/final.bin"),
        ),
        (S, status(11, 0)),
        (C, path_req(FXP_REMOVE, 12, "/tmp/final.bin")),
        (S, status(12, 0)),
        (C, path_req(FXP_MKDIR, 13, "/tmp/d")),
        (S, status(13, 0)),
        (C, path_req(FXP_RMDIR, 14, "/tmp/d")),
        (S, status(14, 0)),
        (C, open(15, "/nope", READ)),
        (S, status(15, 2)),
        (C, path_req(FXP_REMOVE, 16, "/root/x")),
        (S, status(16, 3)),
        // Directory listing.
        (C, path_req(FXP_OPENDIR, 17, "/tmp")),
        (S, handle_reply(17, h3)),
        (C, handle_req(FXP_READDIR, 18, h3)),
        (S, name(18, &["a", "b"])),
        (C, handle_req(FXP_READDIR, 19, h3)),
        (S, status(19, 1)),
        (C, handle_req(FXP_CLOSE, 20, h3)),
        (S, status(20, 0)),
        // Metadata noise, not reported by default.
        (C, path_req(FXP_STAT, 21, "/etc/passwd")),
        (S, attrs(21)),
        (C, two_path_req(FXP_SYMLINK, 22, "/etc/hosts", "/tmp/link")),
        (S, status(22, 0)),
        (C, path_req(FXP_SETSTAT, 23, "/tmp/link")),
        (S, status(23, 4)),
        (
            C,
            extended(24, "posix-rename@openssh.com", &["/tmp/a", "/tmp/b"]),
        ),
        (S, status(24, 0)),
        (C, extended(25, "statvfs@openssh.com", &["/"])),
        (S, pkt(FXP_EXTENDED_REPLY, &[0, 0, 0, 25, 1, 2, 3, 4])),
    ];
    let expected = vec![
        op("write", "/tmp/up.bin", 2500, "ok"),
        op("read", "/etc/motd", 300, "ok"),
        op2("rename", "/tmp/up.bin", "/tmp/final.bin", "ok"),
        op("remove", "/tmp/final.bin", 0, "ok"),
        op("mkdir", "/tmp/d", 0, "ok"),
        op("rmdir", "/tmp/d", 0, "ok"),
        op("open", "/nope", 0, "no such file"),
        op("remove", "/root/x", 0, "permission denied"),
        op("list", "/tmp", 2, "ok"),
        op2("symlink", "/tmp/link", "/etc/hosts", "ok"),
        op("setstat", "/tmp/link", 0, "failure"),
        op2("rename", "/tmp/a", "/tmp/b", "ok"),
    ];
    (events, expected)
}

/// Small deterministic PRNG so random splits are reproducible without extra dependencies.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[derive(Clone, Copy, Debug)]
enum Chunking {
    /// Each wire event in one call.
    PerEvent,
    /// Consecutive same-direction events merged into one call.
    Merged,
    /// One byte per call.
    ByteByByte,
    /// Merged runs cut at random points (seeded).
    Random(u64),
}

/// Merges consecutive same-direction events (what a pump reading big buffers sees).
fn runs(events: &[(Dir, Vec<u8>)]) -> Vec<(Dir, Vec<u8>)> {
    let mut out: Vec<(Dir, Vec<u8>)> = Vec::new();
    for (d, b) in events {
        match out.last_mut() {
            Some((ld, lb)) if ld == d => lb.extend_from_slice(b),
            _ => out.push((*d, b.clone())),
        }
    }
    out
}

fn feed(audit: &mut SftpAudit, events: &[(Dir, Vec<u8>)], chunking: Chunking) -> Vec<FileOp> {
    let mut out = Vec::new();
    let mut send = |audit: &mut SftpAudit, d: Dir, chunk: &[u8]| match d {
        Dir::C => out.extend(audit.client_bytes(chunk)),
        Dir::S => out.extend(audit.server_bytes(chunk)),
    };
    match chunking {
        Chunking::PerEvent => {
            for (d, b) in events {
                send(audit, *d, b);
            }
        }
        Chunking::Merged => {
            for (d, b) in runs(events) {
                send(audit, d, &b);
            }
        }
        Chunking::ByteByByte => {
            for (d, b) in events {
                for byte in b {
                    send(audit, *d, std::slice::from_ref(byte));
                }
            }
        }
        Chunking::Random(seed) => {
            let mut rng = Rng(seed | 1);
            for (d, b) in runs(events) {
                let mut rest = b.as_slice();
                while !rest.is_empty() {
                    let n = 1 + rng.below(rest.len().min(700));
                    let (head, tail) = rest.split_at(n);
                    send(audit, d, head);
                    rest = tail;
                }
                // An empty call must be harmless too.
                send(audit, d, &[]);
            }
        }
    }
    out
}

#[test]
fn realistic_session_in_every_chunking() {
    let (events, expected) = session();
    let mut chunkings = vec![Chunking::PerEvent, Chunking::Merged, Chunking::ByteByByte];
    chunkings.extend((1..=40).map(|seed| Chunking::Random(seed * 7919)));
    for chunking in chunkings {
        let mut audit = SftpAudit::new();
        let got = feed(&mut audit, &events, chunking);
        assert_eq!(got, expected, "chunking {chunking:?}");
        assert_eq!(audit.finish(), vec![], "chunking {chunking:?}");
        assert!(audit.state.pending.is_empty() && audit.state.handles.is_empty());
    }
}

#[test]
fn metadata_reporting_is_opt_in() {
    let (events, _) = session();
    let mut audit = SftpAudit::new().with_metadata(true);
    let got = feed(&mut audit, &events, Chunking::PerEvent);
    assert!(got.contains(&op("realpath", ".", 0, "ok")));
    assert!(got.contains(&op("stat", "/etc/passwd", 0, "ok")));
    let mut quiet = SftpAudit::new();
    let got = feed(&mut quiet, &events, Chunking::PerEvent);
    assert!(!got.iter().any(|o| o.op == "stat" || o.op == "realpath"));
}

#[test]
fn close_summary_scheme() {
    let h: &[u8] = b"H";
    // (open flags, writes, data replies, expected ops)
    type Case = (u32, Vec<usize>, Vec<usize>, Vec<FileOp>);
    let cases: Vec<Case> = vec![
        (READ, vec![], vec![], vec![op("open", "/f", 0, "ok")]),
        (
            WRITE | CREAT | TRUNC,
            vec![],
            vec![],
            vec![op("write", "/f", 0, "ok")],
        ),
        (WRITE, vec![], vec![], vec![op("open", "/f", 0, "ok")]),
        (
            WRITE,
            vec![10, 20],
            vec![],
            vec![op("write", "/f", 30, "ok")],
        ),
        (READ, vec![], vec![5, 7], vec![op("read", "/f", 12, "ok")]),
        (
            READ | WRITE,
            vec![4],
            vec![9],
            vec![op("write", "/f", 4, "ok"), op("read", "/f", 9, "ok")],
        ),
    ];
    for (flags, writes, reads, expected) in cases {
        let mut a = SftpAudit::new();
        let mut got = Vec::new();
        got.extend(a.client_bytes(&open(1, "/f", flags)));
        got.extend(a.server_bytes(&handle_reply(1, h)));
        let mut id = 10;
        for w in &writes {
            got.extend(a.client_bytes(&write(id, h, 0, *w)));
            got.extend(a.server_bytes(&status(id, 0)));
            id += 1;
        }
        for r in &reads {
            got.extend(a.client_bytes(&read(id, h, 0, 4096)));
            got.extend(a.server_bytes(&data(id, *r)));
            id += 1;
        }
        got.extend(a.client_bytes(&handle_req(FXP_CLOSE, 99, h)));
        got.extend(a.server_bytes(&status(99, 0)));
        assert_eq!(
            got, expected,
            "flags {flags:#x} writes {writes:?} reads {reads:?}"
        );
    }
}

#[test]
fn write_error_is_reported_on_close() {
    let h: &[u8] = b"H";
    let mut a = SftpAudit::new();
    let mut got = a.client_bytes(&open(1, "/full", WRITE | CREAT));
    got.extend(a.server_bytes(&handle_reply(1, h)));
    got.extend(a.client_bytes(&[write(2, h, 0, 10), write(3, h, 10, 10)].concat()));
    got.extend(a.server_bytes(&[status(2, 0), status(3, 14)].concat()));
    got.extend(a.client_bytes(&handle_req(FXP_CLOSE, 4, h)));
    got.extend(a.server_bytes(&status(4, 0)));
    assert_eq!(
        got,
        vec![op("write", "/full", 20, "no space on filesystem")]
    );
}

#[test]
fn failed_close_status_wins() {
    let h: &[u8] = b"H";
    let mut a = SftpAudit::new();
    a.client_bytes(&open(1, "/f", WRITE | CREAT));
    a.server_bytes(&handle_reply(1, h));
    a.client_bytes(&write(2, h, 0, 3));
    a.client_bytes(&handle_req(FXP_CLOSE, 3, h));
    let got = a.server_bytes(&[status(2, 0), status(3, 4)].concat());
    assert_eq!(got, vec![op("write", "/f", 3, "failure")]);
}

#[test]
fn fsetstat_uses_the_handle_path() {
    let h: &[u8] = b"H";
    let mut a = SftpAudit::new();
    a.client_bytes(&open(1, "/f", WRITE | CREAT));
    a.server_bytes(&handle_reply(1, h));
    let mut req = with_id(2);
    s(&mut req, h);
    req.extend_from_slice(&0u32.to_be_bytes());
    a.client_bytes(&pkt(FXP_FSETSTAT, &req));
    let got = a.server_bytes(&status(2, 0));
    assert_eq!(got, vec![op("setstat", "/f", 0, "ok")]);
}

#[test]
fn finish_reports_open_files_and_unanswered_requests() {
    let h1: &[u8] = b"one";
    let h2: &[u8] = b"two";
    let mut a = SftpAudit::new();
    a.client_bytes(&open(1, "/open-forever", WRITE | CREAT));
    a.server_bytes(&handle_reply(1, h1));
    a.client_bytes(&write(2, h1, 0, 4096));
    a.client_bytes(&open(3, "/closing", READ));
    a.server_bytes(&handle_reply(3, h2));
    a.client_bytes(&read(4, h2, 0, 100));
    a.server_bytes(&data(4, 100));
    a.client_bytes(&handle_req(FXP_CLOSE, 5, h2));
    a.client_bytes(&path_req(FXP_REMOVE, 6, "/gone"));
    a.client_bytes(&open(7, "/never-answered", READ));
    let got = a.finish();
    assert_eq!(
        got,
        vec![
            op("remove", "/gone", 0, "no reply"),
            op("open", "/never-answered", 0, "no reply"),
            op("write", "/open-forever", 4096, "pending"),
            op("read", "/closing", 100, "no reply"),
        ]
    );
    // Finished: later bytes and a second finish are ignored.
    assert!(a.server_bytes(&status(6, 0)).is_empty());
    assert!(a.finish().is_empty());
}

#[test]
fn status_names() {
    let cases = [
        (0, "ok"),
        (1, "end of file"),
        (2, "no such file"),
        (3, "permission denied"),
        (4, "failure"),
        (5, "bad message"),
        (8, "operation unsupported"),
        (11, "file already exists"),
        (18, "directory not empty"),
        (31, "no matching byte range lock"),
        (32, "status 32"),
        (u32::MAX, "status 4294967295"),
    ];
    for (code, want) in cases {
        assert_eq!(status_name(code), want);
    }
}

#[test]
fn version_5_open_uses_desired_access() {
    let mut a = SftpAudit::new();
    a.client_bytes(&init(6));
    a.server_bytes(&pkt(FXP_VERSION, &5u32.to_be_bytes()));
    // v5 OPEN: filename, desired-access, flags, attrs.
    let mut b = with_id(1);
    s(&mut b, b"/v5");
    b.extend_from_slice(&ACE_WRITE_DATA.to_be_bytes());
    b.extend_from_slice(&1u32.to_be_bytes()); // CREATE_TRUNCATE
    b.extend_from_slice(&0u32.to_be_bytes());
    a.client_bytes(&pkt(FXP_OPEN, &b));
    a.server_bytes(&handle_reply(1, b"h"));
    a.client_bytes(&handle_req(FXP_CLOSE, 2, b"h"));
    assert_eq!(
        a.server_bytes(&status(2, 0)),
        vec![op("write", "/v5", 0, "ok")]
    );
}

// ---- malformed input and bounds ---------------------------------------------------------

fn is_protocol_error(ops: &[FileOp]) -> bool {
    ops.len() == 1 && ops[0].op == "protocol-error"
}

#[test]
fn framing_errors_stop_decoding_once() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("zero length", vec![0, 0, 0, 0]),
        ("max u32 length", vec![0xff, 0xff, 0xff, 0xff]),
        (
            "just over the limit",
            (MAX_SFTP_PACKET + 1).to_be_bytes().to_vec(),
        ),
    ];
    for (label, bad) in cases {
        for server in [false, true] {
            let mut a = SftpAudit::new();
            let feed = |a: &mut SftpAudit, d: &[u8]| {
                if server {
                    a.server_bytes(d)
                } else {
                    a.client_bytes(d)
                }
            };
            // Detected as soon as the length is known, without waiting for more bytes.
            let got = feed(&mut a, &bad);
            assert!(is_protocol_error(&got), "{label}: {got:?}");
            assert!(got[0].status.contains("decoding stopped"), "{label}");
            // The rest of the stream is ignored, in both directions.
            assert!(feed(&mut a, &vec![7u8; 100_000]).is_empty(), "{label}");
            assert!(a.client_bytes(&open(1, "/x", READ)).is_empty());
            assert!(a.server_bytes(&status(1, 0)).is_empty());
            assert!(a.finish().is_empty(), "{label}");
        }
    }
}

#[test]
fn largest_allowed_packet_is_accepted() {
    let h: &[u8] = b"H";
    let mut a = SftpAudit::new();
    a.client_bytes(&open(1, "/big", WRITE | CREAT));
    a.server_bytes(&handle_reply(1, h));
    // WRITE header is 1 + 4 + (4 + 1) + 8 + 4 = 22 bytes; fill to exactly the limit.
    let payload = MAX_SFTP_PACKET as usize - 22;
    let w = write(2, h, 0, payload);
    assert_eq!(w.len() - 4, MAX_SFTP_PACKET as usize);
    assert!(a.client_bytes(&w).is_empty());
    a.client_bytes(&handle_req(FXP_CLOSE, 3, h));
    let got = a.server_bytes(&[status(2, 0), status(3, 0)].concat());
    assert_eq!(got, vec![op("write", "/big", payload as u64, "ok")]);
    // Payload bytes were never buffered.
    assert!(
        a.client.kept.capacity() <= 4096,
        "{}",
        a.client.kept.capacity()
    );
}

#[test]
fn malformed_packets_are_skipped_and_decoding_continues() {
    let cases: Vec<(&str, Dir, Vec<u8>)> = vec![
        ("empty OPEN", Dir::C, pkt(FXP_OPEN, &[])),
        (
            "OPEN path overruns",
            Dir::C,
            pkt(FXP_OPEN, &[0, 0, 0, 1, 0, 0, 1, 0, b'a']),
        ),
        ("RENAME one path", Dir::C, path_req(FXP_RENAME, 1, "/a")),
        ("WRITE data longer than packet", Dir::C, {
            let mut b = with_id(1);
            s(&mut b, b"H");
            b.extend_from_slice(&0u64.to_be_bytes());
            b.extend_from_slice(&1000u32.to_be_bytes());
            b.extend_from_slice(&[0; 10]);
            pkt(FXP_WRITE, &b)
        }),
        ("handle too long", Dir::S, handle_reply(1, &[1; 300])),
        ("short STATUS", Dir::S, pkt(FXP_STATUS, &[0, 0, 0, 1, 0])),
        ("INIT without version", Dir::C, pkt(FXP_INIT, &[1])),
    ];
    for (label, dir, bad) in cases {
        let mut a = SftpAudit::new();
        let got = match dir {
            Dir::C => a.client_bytes(&bad),
            Dir::S => a.server_bytes(&bad),
        };
        assert!(is_protocol_error(&got), "{label}: {got:?}");
        assert!(got[0].status.contains("skipped"), "{label}");
        // Framing is intact, so the next operation is still audited.
        let mut later = a.client_bytes(&path_req(FXP_REMOVE, 50, "/after"));
        later.extend(a.server_bytes(&status(50, 0)));
        assert_eq!(later, vec![op("remove", "/after", 0, "ok")], "{label}");
    }
}

#[test]
fn unknown_types_and_stray_replies_pass_through() {
    let mut a = SftpAudit::new();
    assert!(a.client_bytes(&pkt(77, b"whatever")).is_empty());
    assert!(a.client_bytes(&pkt(99, &[])).is_empty());
    assert!(a.server_bytes(&pkt(150, &[1, 2, 3])).is_empty());
    assert!(a.server_bytes(&status(12345, 0)).is_empty());
    assert!(a.server_bytes(&data(4, 10)).is_empty());
    assert!(
        a.server_bytes(&pkt(FXP_EXTENDED_REPLY, &[0, 0, 0, 1]))
            .is_empty()
    );
    let mut got = a.client_bytes(&path_req(FXP_MKDIR, 1, "/ok"));
    got.extend(a.server_bytes(&status(1, 0)));
    assert_eq!(got, vec![op("mkdir", "/ok", 0, "ok")]);
}

#[test]
fn truncated_stream_is_reported_at_finish() {
    let (events, _) = session();
    let mut all = Vec::new();
    let mut boundaries = vec![0];
    for (_, b) in events.iter().filter(|(d, _)| *d == Dir::C) {
        // Events may hold several packets: walk them by their length prefixes.
        let mut at = 0;
        while at < b.len() {
            let len = u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as usize;
            at += 4 + len;
            boundaries.push(all.len() + at);
        }
        all.extend_from_slice(b);
    }
    let mut checked = 0;
    for cut in (1..all.len()).step_by(13) {
        let mut a = SftpAudit::new();
        a.client_bytes(&all[..cut]);
        let got = a.finish();
        let reported = got.iter().any(|o| {
            o.op == "protocol-error" && o.status == "client stream ended inside an SFTP packet"
        });
        assert_eq!(reported, !boundaries.contains(&cut), "cut {cut}: {got:?}");
        checked += 1;
    }
    assert!(checked > 50);
}

#[test]
fn random_garbage_never_panics_and_stays_bounded() {
    for seed in 1..200u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut a = SftpAudit::new();
        for _ in 0..50 {
            let len = rng.below(2000);
            let mut chunk: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            // Bias towards plausible lengths so decoding goes deeper than the length check.
            if chunk.len() >= 5 && rng.below(2) == 0 {
                let l = (rng.below(600) as u32).to_be_bytes();
                chunk[..4].copy_from_slice(&l);
                chunk[4] = [3, 4, 5, 6, 13, 18, 101, 102, 103, 104, 200][rng.below(11)];
            }
            if rng.below(2) == 0 {
                a.client_bytes(&chunk);
            } else {
                a.server_bytes(&chunk);
            }
            assert!(a.state.pending.len() <= MAX_PENDING_REQUESTS);
            assert!(a.state.handles.len() <= MAX_OPEN_HANDLES);
            assert!(a.client.kept.capacity() <= 2 * MAX_SFTP_PACKET as usize);
            assert!(a.server.kept.capacity() <= 4096);
        }
        a.finish();
    }
}

#[test]
fn pending_requests_are_capped() {
    let mut a = SftpAudit::new();
    let mut untracked = Vec::new();
    for id in 0..(MAX_PENDING_REQUESTS as u32 + 10) {
        untracked.extend(a.client_bytes(&path_req(FXP_REMOVE, id, "/r")));
    }
    assert_eq!(a.state.pending.len(), MAX_PENDING_REQUESTS);
    assert_eq!(untracked.len(), 10);
    assert!(
        untracked
            .iter()
            .all(|o| o.status == "untracked" && o.op == "remove")
    );
}

#[test]
fn open_handles_are_capped() {
    let mut a = SftpAudit::new();
    let mut untracked = Vec::new();
    for id in 0..(MAX_OPEN_HANDLES as u32 + 5) {
        a.client_bytes(&open(id, "/many", READ));
        untracked.extend(a.server_bytes(&handle_reply(id, &id.to_be_bytes())));
    }
    assert_eq!(a.state.handles.len(), MAX_OPEN_HANDLES);
    assert_eq!(untracked.len(), 5);
    assert!(
        untracked
            .iter()
            .all(|o| o.status == "untracked" && o.op == "open")
    );
}

#[test]
fn long_paths_are_cut() {
    let long = "p".repeat(MAX_PATH_LEN * 3);
    let mut a = SftpAudit::new();
    a.client_bytes(&path_req(FXP_REMOVE, 1, &long));
    let got = a.server_bytes(&status(1, 0));
    assert_eq!(got[0].path.len(), MAX_PATH_LEN);
}

#[test]
fn hundred_megabyte_upload_is_cheap() {
    let h: &[u8] = b"HH";
    let mut a = SftpAudit::new();
    a.client_bytes(&open(1, "/huge", WRITE | CREAT | TRUNC));
    a.server_bytes(&handle_reply(1, h));
    let chunk = 32 * 1024;
    let packets = 100 * 1024 * 1024 / chunk;
    let one = write(2, h, 0, chunk);
    // Feed in pump-sized slices that straddle packet boundaries.
    let mut stream = Vec::new();
    for _ in 0..8 {
        stream.extend_from_slice(&one);
    }
    let start = std::time::Instant::now();
    for _ in 0..packets / 8 {
        for slice in stream.chunks(16 * 1024 + 7) {
            assert!(a.client_bytes(slice).is_empty());
        }
        a.server_bytes(&status(2, 0));
    }
    let elapsed = start.elapsed();
    a.client_bytes(&handle_req(FXP_CLOSE, 3, h));
    let got = a.server_bytes(&status(3, 0));
    assert_eq!(got, vec![op("write", "/huge", 100 * 1024 * 1024, "ok")]);
    // Generous even for an unoptimised build on a slow machine.
    assert!(elapsed.as_secs() < 5, "took {elapsed:?}");
}
