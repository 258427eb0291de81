//! Drives the real OpenSSH `sftp-server` over pipes and audits both directions, checking that the
//! decoder agrees with what the server actually did on disk. Skipped when the binary is missing.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use custos_transfer::{FileOp, SftpAudit};

const SERVER: &str = "/usr/lib/openssh/sftp-server";

const FXP_INIT: u8 = 1;
const FXP_OPEN: u8 = 3;
const FXP_CLOSE: u8 = 4;
const FXP_READ: u8 = 5;
const FXP_WRITE: u8 = 6;
const FXP_OPENDIR: u8 = 11;
const FXP_READDIR: u8 = 12;
const FXP_REMOVE: u8 = 13;
const FXP_MKDIR: u8 = 14;
const FXP_RMDIR: u8 = 15;
const FXP_REALPATH: u8 = 16;
const FXP_STAT: u8 = 17;
const FXP_RENAME: u8 = 18;
const FXP_SYMLINK: u8 = 20;
const FXP_STATUS: u8 = 101;
const FXP_HANDLE: u8 = 102;
const FXP_DATA: u8 = 103;

const READ: u32 = 0x01;
const WRITE: u32 = 0x02;
const CREAT: u32 = 0x08;
const TRUNC: u32 = 0x10;

/// An encoded request body under construction.
struct Body(Vec<u8>);

impl Body {
    fn id(id: u32) -> Self {
        Body(id.to_be_bytes().to_vec())
    }
    fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn string(mut self, s: &[u8]) -> Self {
        self = self.u32(s.len() as u32);
        self.0.extend_from_slice(s);
        self
    }
    fn path(self, p: &Path) -> Self {
        self.string(p.to_str().expect("utf-8 temp path").as_bytes())
    }
    fn packet(self, kind: u8) -> Vec<u8> {
        let mut out = ((self.0.len() + 1) as u32).to_be_bytes().to_vec();
        out.push(kind);
        out.extend_from_slice(&self.0);
        out
    }
}

/// A reply as read from the server: its raw bytes (fed to the audit) and decoded basics.
struct Reply {
    raw: Vec<u8>,
    kind: u8,
    body: Vec<u8>,
}

impl Reply {
    fn status(&self) -> Option<u32> {
        (self.kind == FXP_STATUS)
            .then(|| u32::from_be_bytes([self.body[4], self.body[5], self.body[6], self.body[7]]))
    }
    fn handle(&self) -> Vec<u8> {
        assert_eq!(self.kind, FXP_HANDLE, "expected a HANDLE reply");
        let len = u32::from_be_bytes([self.body[4], self.body[5], self.body[6], self.body[7]]);
        self.body[8..8 + len as usize].to_vec()
    }
}

struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: ChildStdout,
    audit: SftpAudit,
    ops: Vec<FileOp>,
    next_id: u32,
}

impl Session {
    fn start() -> Option<Session> {
        if !Path::new(SERVER).exists() {
            return None;
        }
        let mut child = Command::new(SERVER)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let stdin = child.stdin.take()?;
        let stdout = child.stdout.take()?;
        Some(Session {
            child,
            stdin: Some(stdin),
            stdout,
            audit: SftpAudit::new(),
            ops: Vec::new(),
            next_id: 1,
        })
    }

    fn id(&mut self) -> u32 {
        self.next_id += 1;
        self.next_id
    }

    fn send(&mut self, packet: &[u8]) {
        self.ops.extend(self.audit.client_bytes(packet));
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(packet).expect("write to sftp-server");
        stdin.flush().expect("flush");
    }

    fn recv(&mut self) -> Reply {
        let mut len = [0u8; 4];
        self.stdout.read_exact(&mut len).expect("reply length");
        let n = u32::from_be_bytes(len) as usize;
        let mut rest = vec![0u8; n];
        self.stdout.read_exact(&mut rest).expect("reply body");
        let mut raw = len.to_vec();
        raw.extend_from_slice(&rest);
        // Feed the reply in two uneven pieces to exercise reassembly on real bytes.
        let cut = raw.len() / 3;
        self.ops.extend(self.audit.server_bytes(&raw[..cut]));
        self.ops.extend(self.audit.server_bytes(&raw[cut..]));
        Reply {
            kind: rest[0],
            body: rest[1..].to_vec(),
            raw,
        }
    }

    fn call(&mut self, packet: Vec<u8>) -> Reply {
        self.send(&packet);
        self.recv()
    }
}

fn scratch_dir() -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "custos-transfer-sftp-{}-{nanos}",
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
fn audits_a_real_sftp_server_session() {
    let Some(mut s) = Session::start() else {
        eprintln!("skipping: {SERVER} not available");
        return;
    };
    let dir = scratch_dir();
    let up = dir.join("up.txt");
    let moved = dir.join("moved.txt");
    let sub = dir.join("sub");
    let link = dir.join("link");
    let missing = dir.join("missing");
    let left = dir.join("left-open");

    let version = s.call(Body(3u32.to_be_bytes().to_vec()).packet(FXP_INIT));
    assert_eq!(version.kind, 2, "VERSION");
    let id = s.id();
    s.call(Body::id(id).string(b".").packet(FXP_REALPATH));

    // Upload 3 x 4000 bytes with pipelined WRITEs.
    let id = s.id();
    let h = s
        .call(
            Body::id(id)
                .path(&up)
                .u32(WRITE | CREAT | TRUNC)
                .u32(0)
                .packet(FXP_OPEN),
        )
        .handle();
    for i in 0..3u64 {
        let id = s.id();
        let payload = vec![b'a' + i as u8; 4000];
        s.send(
            &Body::id(id)
                .string(&h)
                .u64(i * 4000)
                .string(&payload)
                .packet(FXP_WRITE),
        );
    }
    for _ in 0..3 {
        assert_eq!(s.recv().status(), Some(0));
    }
    let id = s.id();
    assert_eq!(
        s.call(Body::id(id).string(&h).packet(FXP_CLOSE)).status(),
        Some(0)
    );
    assert_eq!(std::fs::metadata(&up).expect("uploaded").len(), 12000);

    // Download it back in 5000-byte reads until end of file.
    let id = s.id();
    let h = s
        .call(Body::id(id).path(&up).u32(READ).u32(0).packet(FXP_OPEN))
        .handle();
    let mut offset = 0u64;
    loop {
        let id = s.id();
        let reply = s.call(
            Body::id(id)
                .string(&h)
                .u64(offset)
                .u32(5000)
                .packet(FXP_READ),
        );
        if reply.kind != FXP_DATA {
            assert_eq!(reply.status(), Some(1), "EOF");
            break;
        }
        offset += u64::from(u32::from_be_bytes([
            reply.body[4],
            reply.body[5],
            reply.body[6],
            reply.body[7],
        ]));
        assert!(reply.raw.len() > 13);
    }
    assert_eq!(offset, 12000);
    let id = s.id();
    s.call(Body::id(id).string(&h).packet(FXP_CLOSE));

    let id = s.id();
    s.call(Body::id(id).path(&up).path(&moved).packet(FXP_RENAME));
    let id = s.id();
    s.call(Body::id(id).path(&sub).u32(0).packet(FXP_MKDIR));
    let id = s.id();
    s.call(Body::id(id).path(&sub).u32(0).packet(FXP_MKDIR));

    // List the directory.
    let id = s.id();
    let h = s.call(Body::id(id).path(&dir).packet(FXP_OPENDIR)).handle();
    loop {
        let id = s.id();
        if s.call(Body::id(id).string(&h).packet(FXP_READDIR)).kind != 104 {
            break;
        }
    }
    let id = s.id();
    s.call(Body::id(id).string(&h).packet(FXP_CLOSE));

    // OpenSSH's order: what the link points to, then the link.
    let id = s.id();
    s.call(Body::id(id).path(&moved).path(&link).packet(FXP_SYMLINK));
    assert!(
        std::fs::symlink_metadata(&link)
            .expect("link created")
            .file_type()
            .is_symlink()
    );
    let id = s.id();
    s.call(Body::id(id).path(&moved).packet(FXP_STAT));
    for p in [&link, &moved, &missing] {
        let id = s.id();
        s.call(Body::id(id).path(p).packet(FXP_REMOVE));
    }
    let id = s.id();
    s.call(Body::id(id).path(&sub).packet(FXP_RMDIR));
    let id = s.id();
    s.call(
        Body::id(id)
            .path(&missing)
            .u32(READ)
            .u32(0)
            .packet(FXP_OPEN),
    );

    // Leave one upload open and end the session.
    let id = s.id();
    let h = s
        .call(
            Body::id(id)
                .path(&left)
                .u32(WRITE | CREAT)
                .u32(0)
                .packet(FXP_OPEN),
        )
        .handle();
    let id = s.id();
    s.call(
        Body::id(id)
            .string(&h)
            .u64(0)
            .string(b"0123456789")
            .packet(FXP_WRITE),
    );
    drop(s.stdin.take());
    let _ = s.child.wait();
    let finish = s.audit.finish();

    let listing = s.ops.iter().position(|o| o.op == "list").expect("list op");
    let list = s.ops.remove(listing);
    assert_eq!(list.path, dir.to_str().expect("utf-8"));
    assert_eq!(list.status, "ok");
    // ".", "..", moved.txt and sub at least.
    assert!(list.bytes >= 4, "{list:?}");

    let expected = vec![
        op("write", &up, 12000, "ok"),
        op("read", &up, 12000, "ok"),
        FileOp {
            target_path: Some(moved.to_str().expect("utf-8").to_owned()),
            ..op("rename", &up, 0, "ok")
        },
        op("mkdir", &sub, 0, "ok"),
        op("mkdir", &sub, 0, "failure"),
        FileOp {
            target_path: Some(moved.to_str().expect("utf-8").to_owned()),
            ..op("symlink", &link, 0, "ok")
        },
        op("remove", &link, 0, "ok"),
        op("remove", &moved, 0, "ok"),
        op("remove", &missing, 0, "no such file"),
        op("rmdir", &sub, 0, "ok"),
        op("open", &missing, 0, "no such file"),
    ];
    assert_eq!(s.ops, expected);
    assert_eq!(finish, vec![op("write", &left, 10, "pending")]);

    let _ = std::fs::remove_dir_all(&dir);
}
