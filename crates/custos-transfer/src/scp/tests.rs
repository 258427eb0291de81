use super::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    C,
    S,
}

/// Wire events in order, each from one side.
type Events = Vec<(Dir, Vec<u8>)>;
/// Expected (mode, base, requested path) of a parsed command line.
type Parsed<'a> = Option<(Mode, &'a str, &'a str)>;

fn op(op: &'static str, path: &str, bytes: u64, status: &str) -> FileOp {
    FileOp::new(op, path.to_owned(), bytes, status)
}

fn ok() -> Vec<u8> {
    vec![0]
}

fn err(msg: &str) -> Vec<u8> {
    let mut v = vec![1];
    v.extend_from_slice(msg.as_bytes());
    v.push(b'\n');
    v
}

/// A `C` line followed by the contents and the sender's end-of-file byte.
fn file(mode: &str, name: &str, contents: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let header = format!("C{mode} {} {name}\n", contents.len()).into_bytes();
    let mut body = contents.to_vec();
    body.push(0);
    (header, body)
}

/// Feeds events; `split` cuts every event into pieces of at most that many bytes.
fn run(audit: &mut ScpAudit, events: &[(Dir, Vec<u8>)], split: usize) -> Vec<FileOp> {
    let mut out = Vec::new();
    for (d, b) in events {
        for piece in b.chunks(split.max(1)) {
            out.extend(match d {
                Dir::C => audit.client_bytes(piece),
                Dir::S => audit.server_bytes(piece),
            });
        }
    }
    out
}

#[test]
fn from_exec_recognises_scp_commands() {
    // (command, Some((mode, base, requested)) or None)
    let cases: Vec<(&[u8], Parsed)> = vec![
        (b"scp -t /tmp/x", Some((Mode::Sink, "/tmp/x", "/tmp/x"))),
        (b"scp -f /tmp/x", Some((Mode::Source, "/tmp", "/tmp/x"))),
        (
            b"scp -v -r -p -d -t -- /srv/in",
            Some((Mode::Sink, "/srv/in", "/srv/in")),
        ),
        (b"scp -pt .", Some((Mode::Sink, ".", "."))),
        (b"scp -r -f data", Some((Mode::Source, "", "data"))),
        (b"scp -f /etc", Some((Mode::Source, "/", "/etc"))),
        (
            b"/usr/bin/scp -f '/tmp/a b/c'",
            Some((Mode::Source, "/tmp/a b", "/tmp/a b/c")),
        ),
        (
            b"scp -t \"/tmp/q\\\"d\"",
            Some((Mode::Sink, "/tmp/q\"d", "/tmp/q\"d")),
        ),
        (b"scp -t -- -odd", Some((Mode::Sink, "-odd", "-odd"))),
        (b"  scp   -t   /x  ", Some((Mode::Sink, "/x", "/x"))),
        (b"scp -t", None),
        (b"scp /tmp/x", None),
        (b"scp -t -f /tmp/x", None),
        (b"ls -t /tmp", None),
        (b"scpx -t /tmp", None),
        (b"", None),
        (b"scp -t '/unterminated", None),
        (b"sftp-server", None),
    ];
    for (command, want) in cases {
        let got =
            ScpAudit::from_exec(command).map(|a| (a.mode, a.base.clone(), a.requested.clone()));
        let want = want.map(|(m, b, r)| (m, b.to_owned(), r.to_owned()));
        assert_eq!(got, want, "{}", String::from_utf8_lossy(command));
    }
}

fn upload_session() -> (Vec<(Dir, Vec<u8>)>, Vec<FileOp>) {
    use Dir::{C, S};
    let (a_h, a_b) = file("0644", "a.txt", b"hello");
    let (b_h, b_b) = file("0600", "b.bin", b"C0644 1 x\n\0\x01\x02E\n");
    let (c_h, c_b) = file("0644", "c", b"hi");
    let (e_h, e_b) = file("0644", "empty", b"");
    let events = vec![
        (S, ok()),
        (C, b"T1700000000 0 1700000000 0\n".to_vec()),
        (S, ok()),
        (C, a_h),
        (S, ok()),
        (C, a_b),
        (S, ok()),
        (C, b_h),
        (S, ok()),
        (C, b_b),
        (S, ok()),
        (C, b"D0755 0 sub\n".to_vec()),
        (S, ok()),
        (C, c_h),
        (S, ok()),
        (C, c_b),
        (S, ok()),
        (C, b"D0700 0 deeper\n".to_vec()),
        (S, ok()),
        (C, e_h),
        (S, ok()),
        (C, e_b),
        (S, ok()),
        (C, b"E\n".to_vec()),
        (S, ok()),
        (C, b"E\n".to_vec()),
        (S, ok()),
        (C, file("0644", "last", b"zz").0),
        (S, ok()),
        (C, b"zz\0".to_vec()),
        (S, ok()),
    ];
    let expected = vec![
        op("write", "/dest/a.txt", 5, "ok"),
        op("write", "/dest/b.bin", 15, "ok"),
        op("mkdir", "/dest/sub", 0, "ok"),
        op("write", "/dest/sub/c", 2, "ok"),
        op("mkdir", "/dest/sub/deeper", 0, "ok"),
        op("write", "/dest/sub/deeper/empty", 0, "ok"),
        op("write", "/dest/last", 2, "ok"),
    ];
    (events, expected)
}

#[test]
fn upload_of_files_and_nested_directories_in_any_chunking() {
    let (events, expected) = upload_session();
    for split in [1, 2, 3, 7, 64, usize::MAX] {
        let mut audit = ScpAudit::from_exec(b"scp -r -p -d -t /dest").expect("scp");
        assert_eq!(run(&mut audit, &events, split), expected, "split {split}");
        assert_eq!(audit.finish(), vec![], "split {split}");
    }
}

#[test]
fn download_with_directories() {
    use Dir::{C, S};
    let (h, b) = file("0644", "report.csv", b"a,b\n1,2\n");
    let events = vec![
        (C, ok()),
        (S, b"D0755 0 logs\n".to_vec()),
        (C, ok()),
        (S, h),
        (C, ok()),
        (S, b),
        (C, ok()),
        (S, b"E\n".to_vec()),
        (C, ok()),
    ];
    for split in [1, 5, usize::MAX] {
        let mut audit = ScpAudit::from_exec(b"scp -r -f /srv/logs").expect("scp");
        assert_eq!(
            run(&mut audit, &events, split),
            vec![
                op("opendir", "/srv/logs", 0, "ok"),
                op("read", "/srv/logs/report.csv", 8, "ok"),
            ]
        );
    }
}

#[test]
fn single_file_download() {
    use Dir::{C, S};
    let (h, b) = file("0640", "motd", b"welcome\n");
    let mut audit = ScpAudit::from_exec(b"scp -f /etc/motd").expect("scp");
    let events = vec![(C, ok()), (S, h), (C, ok()), (S, b), (C, ok())];
    assert_eq!(
        run(&mut audit, &events, usize::MAX),
        vec![op("read", "/etc/motd", 8, "ok")]
    );
}

#[test]
fn error_replies() {
    use Dir::{C, S};
    let (h, b) = file("0644", "ok.txt", b"fine");
    // (label, command, events, expected)
    let cases: Vec<(&str, &[u8], Events, Vec<FileOp>)> = vec![
        (
            "upload refused at the header; the next file still goes through",
            b"scp -t /etc",
            vec![
                (S, ok()),
                (C, b"C0644 5 shadow\n".to_vec()),
                (S, err("scp: /etc/shadow: Permission denied")),
                (C, h.clone()),
                (S, ok()),
                (C, b.clone()),
                (S, ok()),
            ],
            vec![
                op(
                    "write",
                    "/etc/shadow",
                    0,
                    "scp: /etc/shadow: Permission denied",
                ),
                op("write", "/etc/ok.txt", 4, "ok"),
            ],
        ),
        (
            "upload fails after the contents",
            b"scp -t /full",
            vec![
                (S, ok()),
                (C, h.clone()),
                (S, ok()),
                (C, b.clone()),
                (S, err("scp: /full/ok.txt: No space left on device")),
            ],
            vec![op(
                "write",
                "/full/ok.txt",
                4,
                "scp: /full/ok.txt: No space left on device",
            )],
        ),
        (
            "download of a missing file",
            b"scp -f /nope",
            vec![(C, ok()), (S, err("scp: /nope: No such file or directory"))],
            vec![op(
                "read",
                "/nope",
                0,
                "scp: /nope: No such file or directory",
            )],
        ),
        (
            "sender fails while reading the file",
            b"scp -f /var/x",
            vec![
                (C, ok()),
                (S, b"C0644 3 x\n".to_vec()),
                (C, ok()),
                (S, b"abc\x01scp: /var/x: Input/output error\n".to_vec()),
                (C, ok()),
            ],
            vec![op("read", "/var/x", 3, "scp: /var/x: Input/output error")],
        ),
        (
            "sink refuses the target up front",
            b"scp -d -t /not-a-dir",
            vec![
                (S, vec![2]),
                (S, b"scp: /not-a-dir: Not a directory\n".to_vec()),
            ],
            vec![op(
                "write",
                "/not-a-dir",
                0,
                "scp: /not-a-dir: Not a directory",
            )],
        ),
        (
            "refused directory is skipped",
            b"scp -r -t /ro",
            vec![
                (S, ok()),
                (C, b"D0755 0 d\n".to_vec()),
                (S, err("scp: /ro/d: Read-only file system")),
                (C, h.clone()),
                (S, ok()),
                (C, b.clone()),
                (S, ok()),
            ],
            vec![
                op("mkdir", "/ro/d", 0, "scp: /ro/d: Read-only file system"),
                op("write", "/ro/ok.txt", 4, "ok"),
            ],
        ),
    ];
    for (label, command, events, expected) in cases {
        for split in [1, usize::MAX] {
            let mut audit = ScpAudit::from_exec(command).expect("scp");
            assert_eq!(run(&mut audit, &events, split), expected, "{label}");
        }
    }
}

#[test]
fn finish_reports_interrupted_transfers() {
    use Dir::{C, S};
    // (label, events, expected at finish)
    let cases: Vec<(&str, Events, Vec<FileOp>)> = vec![
        (
            "cut off mid-contents",
            vec![
                (S, ok()),
                (C, b"C0644 100 f\n".to_vec()),
                (S, ok()),
                (C, vec![b'x'; 40]),
            ],
            vec![op("write", "/d/f", 40, "pending")],
        ),
        (
            "header never acknowledged",
            vec![(S, ok()), (C, b"C0644 100 f\n".to_vec())],
            vec![op("write", "/d/f", 0, "no reply")],
        ),
        (
            "contents sent, final acknowledgement missing",
            vec![
                (S, ok()),
                (C, b"C0644 2 f\n".to_vec()),
                (S, ok()),
                (C, b"ab\0".to_vec()),
            ],
            vec![op("write", "/d/f", 2, "no reply")],
        ),
        (
            "directory never acknowledged",
            vec![(S, ok()), (C, b"D0755 0 sub\n".to_vec())],
            vec![op("mkdir", "/d/sub", 0, "no reply")],
        ),
        ("nothing in flight", vec![(S, ok())], vec![]),
    ];
    for (label, events, expected) in cases {
        let mut audit = ScpAudit::from_exec(b"scp -r -t /d").expect("scp");
        assert_eq!(run(&mut audit, &events, usize::MAX), vec![], "{label}");
        assert_eq!(audit.finish(), expected, "{label}");
        assert!(audit.finish().is_empty());
        assert!(audit.client_bytes(b"C0644 1 late\n").is_empty());
    }
}

#[test]
fn protocol_errors_stop_decoding() {
    let long_line = vec![b'C'; MAX_SCP_LINE + 10];
    // (label, client bytes after the server's ready)
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("control line too long", long_line),
        (
            "size overflows",
            b"C0644 99999999999999999999999 x\n".to_vec(),
        ),
        ("negative size", b"C0644 -1 x\n".to_vec()),
        ("bad mode", b"C06z4 1 x\n".to_vec()),
        ("missing name", b"C0644 1\n".to_vec()),
        ("empty name", b"C0644 1 \n".to_vec()),
        ("unknown line", b"Xwhat\n".to_vec()),
        ("empty line", b"\n".to_vec()),
        ("bad end-of-file byte", b"C0644 1 x\nz\x07".to_vec()),
    ];
    for (label, bad) in cases {
        for split in [1, usize::MAX] {
            let mut audit = ScpAudit::from_exec(b"scp -t /d").expect("scp");
            audit.server_bytes(&[0]);
            let mut got = Vec::new();
            for piece in bad.chunks(split) {
                got.extend(audit.client_bytes(piece));
            }
            assert_eq!(got.len(), 1, "{label}: {got:?}");
            assert_eq!(got[0].op, "protocol-error", "{label}");
            assert!(audit.client_bytes(b"C0644 1 y\n").is_empty(), "{label}");
            assert!(audit.server_bytes(&[0, 0]).is_empty(), "{label}");
            assert!(audit.sender_line.buf.capacity() <= 2 * MAX_SCP_LINE);
        }
    }
}

#[test]
fn bad_acknowledgements() {
    let mut audit = ScpAudit::from_exec(b"scp -t /d").expect("scp");
    let got = audit.server_bytes(b"\x07");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].op, "protocol-error");

    let mut audit = ScpAudit::from_exec(b"scp -t /d").expect("scp");
    let mut long = vec![1];
    long.extend(vec![b'e'; MAX_SCP_LINE * 2]);
    let got = audit.server_bytes(&long);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].op, "protocol-error");
    assert!(audit.ack_line.buf.capacity() <= 2 * MAX_SCP_LINE);
}

#[test]
fn deep_nesting_is_bounded() {
    let mut audit = ScpAudit::from_exec(b"scp -r -t /d").expect("scp");
    audit.server_bytes(&[0]);
    let mut errors = 0;
    for _ in 0..(MAX_DEPTH + 5) {
        let got = audit.client_bytes(b"D0755 0 n\n");
        errors += got.iter().filter(|o| o.op == "protocol-error").count();
        audit.server_bytes(&[0]);
    }
    assert_eq!(errors, 1);
    assert!(audit.dirs.len() <= MAX_DEPTH);
}

#[test]
fn random_garbage_never_panics() {
    let mut state = 0x1234_5678_9abc_def1u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..300 {
        let mut audit = ScpAudit::from_exec(b"scp -r -t /d").expect("scp");
        for _ in 0..30 {
            let len = (next() % 300) as usize;
            let alphabet = b"CDET0123456789 \n\0\x01\x02abc";
            let chunk: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            if next() % 2 == 0 {
                audit.client_bytes(&chunk);
            } else {
                audit.server_bytes(&chunk);
            }
            assert!(audit.expect.len() <= MAX_EXPECTED);
            assert!(audit.dirs.len() <= MAX_DEPTH);
        }
        audit.finish();
    }
}

#[test]
fn hundred_megabyte_upload_is_skipped_by_counting() {
    let size: u64 = 100 * 1024 * 1024;
    let mut audit = ScpAudit::from_exec(b"scp -t /big").expect("scp");
    audit.server_bytes(&[0]);
    audit.client_bytes(format!("C0644 {size} blob\n").as_bytes());
    audit.server_bytes(&[0]);
    let chunk = vec![b'\n'; 64 * 1024];
    for _ in 0..size / chunk.len() as u64 {
        assert!(audit.client_bytes(&chunk).is_empty());
    }
    audit.client_bytes(&[0]);
    assert_eq!(
        audit.server_bytes(&[0]),
        vec![op("write", "/big/blob", size, "ok")]
    );
    assert!(audit.sender_line.buf.capacity() <= 2 * MAX_SCP_LINE);
}
