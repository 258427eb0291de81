//! Shared helpers for the integration tests.
#![allow(dead_code)]

use std::path::Path;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use custos_recording::{
    Event, EventKind, Metadata, Recorder, RecorderConfig, RecordingKeys, Summary,
};

pub fn keys() -> Arc<RecordingKeys> {
    static KEYS: OnceLock<Arc<RecordingKeys>> = OnceLock::new();
    KEYS.get_or_init(|| Arc::new(RecordingKeys::generate().expect("generate keys")))
        .clone()
}

pub fn metadata() -> Metadata {
    Metadata {
        session_id: "sess-1".into(),
        user: "alice".into(),
        target: "db1".into(),
        login: "postgres".into(),
        source: "192.0.2.7:50123".into(),
        ..Default::default()
    }
}

pub fn ev(time_us: u64, channel: u32, kind: EventKind) -> Event {
    Event {
        time_us,
        channel,
        kind,
    }
}

pub fn out(t: u64, s: &[u8]) -> Event {
    ev(t, 0, EventKind::Output(Bytes::copy_from_slice(s)))
}

pub fn input(t: u64, s: &[u8]) -> Event {
    ev(t, 0, EventKind::Input(Bytes::copy_from_slice(s)))
}

pub const PASSWORD: &[u8] = b"Tr0ub4dor&3";
pub const BINARY: &[u8] = b"\x00\x01\xff\xfe\x80 binary \xc3\x28 tail";

/// An interactive session on channel 0 plus an exec channel 1 and an SFTP channel 2.
pub fn sample_session() -> Vec<Event> {
    let ms = 1000;
    vec![
        ev(
            0,
            0,
            EventKind::ChannelOpen {
                kind: "session".into(),
            },
        ),
        ev(
            ms,
            0,
            EventKind::PtyRequest {
                term: "xterm-256color".into(),
                cols: 80,
                rows: 24,
            },
        ),
        ev(2 * ms, 0, EventKind::Shell),
        out(10 * ms, b"alice@db1:~$ "),
        input(100 * ms, b"l"),
        out(101 * ms, b"l"),
        input(150 * ms, b"s"),
        out(151 * ms, b"s"),
        input(200 * ms, b"\r"),
        out(
            201 * ms,
            b"\r\nnotes.txt  \x1b[34mbin\x1b[0m\r\nalice@db1:~$ ",
        ),
        input(300 * ms, b"sudo -i"),
        out(301 * ms, b"sudo -i"),
        input(350 * ms, b"\r"),
        out(360 * ms, b"\r\n[sudo] password for alice: "),
        input(1000 * ms, PASSWORD),
        input(1100 * ms, b"\r"),
        out(1200 * ms, b"\r\nroot@db1:~# "),
        ev(
            1300 * ms,
            0,
            EventKind::Resize {
                cols: 100,
                rows: 30,
            },
        ),
        out(1400 * ms, BINARY),
        ev(
            1500 * ms,
            1,
            EventKind::ChannelOpen {
                kind: "session".into(),
            },
        ),
        ev(
            1501 * ms,
            1,
            EventKind::Exec {
                command: Bytes::from_static(b"uptime"),
            },
        ),
        ev(
            1600 * ms,
            1,
            EventKind::Output(Bytes::from_static(b" 10:00 up 3 days\n")),
        ),
        ev(1601 * ms, 1, EventKind::ExitStatus(0)),
        ev(1602 * ms, 1, EventKind::ChannelClose),
        ev(
            1700 * ms,
            2,
            EventKind::Subsystem {
                name: "sftp".into(),
            },
        ),
        ev(
            1800 * ms,
            2,
            EventKind::Sftp {
                op: "write".into(),
                path: "/etc/motd".into(),
                target_path: None,
                bytes: 42,
                status: "ok".into(),
            },
        ),
        ev(
            1900 * ms,
            3,
            EventKind::PortForward {
                host: "10.0.0.5".into(),
                port: 5432,
                originator: "127.0.0.1".into(),
                originator_port: 40000,
                allowed: false,
            },
        ),
        input(2000 * ms, b"exit\r"),
        out(2001 * ms, b"exit\r\nlogout\r\n"),
        ev(2002 * ms, 0, EventKind::ExitStatus(0)),
        ev(2003 * ms, 0, EventKind::ChannelClose),
    ]
}

pub async fn record(path: &Path, cfg: RecorderConfig, events: Vec<Event>) -> Summary {
    let h = Recorder::start_with(path, keys(), metadata(), cfg)
        .await
        .expect("start recorder");
    for e in events {
        h.record(e).await.expect("record");
    }
    h.finish("client disconnected").await.expect("finish")
}

/// A long shell session: `n` lines of output, one every 10 ms.
pub fn long_session(n: u64) -> Vec<Event> {
    let mut v = vec![
        ev(
            0,
            0,
            EventKind::ChannelOpen {
                kind: "session".into(),
            },
        ),
        ev(
            0,
            0,
            EventKind::PtyRequest {
                term: "xterm".into(),
                cols: 40,
                rows: 10,
            },
        ),
        ev(0, 0, EventKind::Shell),
    ];
    for i in 0..n {
        v.push(out(
            1000 + i * 10_000,
            format!(
                "line {i} \x1b[1mbold\x1b[0m {}\r\n",
                "x".repeat((i % 20) as usize)
            )
            .as_bytes(),
        ));
    }
    v
}

pub fn small_segments() -> RecorderConfig {
    RecorderConfig {
        flush_bytes: 2048,
        keyframe_bytes: 4096,
        keyframe_interval_us: 2_000_000,
        ..Default::default()
    }
}
