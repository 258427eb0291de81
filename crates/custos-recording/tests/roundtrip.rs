//! Writing with the recorder and reading back, exports and playback.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use common::*;
use custos_recording::export;
use custos_recording::play::play_with_sleep;
use custos_recording::{
    Event, EventKind, Reader, Recorder, RecorderConfig, apply_to_screens, verify, verify_with_keys,
};
use custos_term::Terminal;

fn read_all(path: &std::path::Path) -> Vec<Event> {
    let r = Reader::open(path, &keys()).expect("open");
    r.events().collect::<Result<Vec<_>, _>>().expect("events")
}

#[tokio::test]
async fn roundtrip_with_redaction_and_binary_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("a/b/rec.cast");
    let summary = record(&path, RecorderConfig::default(), sample_session()).await;
    assert_eq!(summary.redacted_inputs, 1);

    let report = verify(&path, keys().verifying_key()).expect("verify");
    assert!(!report.interrupted);
    assert_eq!(report.end_reason, "client disconnected");
    assert_eq!(report.events, summary.events);
    assert!(
        verify_with_keys(&path, &keys())
            .expect("verify keys")
            .decrypted
    );

    let events = read_all(&path);
    let expected: Vec<Event> = sample_session()
        .into_iter()
        .flat_map(|e| match &e.kind {
            EventKind::Input(b) if b.as_ref() == PASSWORD => {
                vec![ev(e.time_us, 0, EventKind::InputRedacted)]
            }
            EventKind::Input(b) if b.as_ref() == b"exit\r" => {
                vec![input(e.time_us, b"exit"), input(e.time_us, b"\r")]
            }
            _ => vec![e],
        })
        .collect();
    assert_eq!(events, expected);

    let r = Reader::open(&path, &keys()).expect("open");
    assert_eq!(r.metadata(), &metadata());
    assert!(r.manifest().is_some());

    // The password never reaches the file, in plaintext or otherwise decodable form.
    let raw = std::fs::read(&path).expect("read");
    assert!(!raw.windows(PASSWORD.len()).any(|w| w == PASSWORD));
    for e in &events {
        if let EventKind::Input(b) = &e.kind {
            assert!(!b.windows(PASSWORD.len()).any(|w| w == PASSWORD));
        }
    }
    // Metadata is encrypted too.
    assert!(!raw.windows(5).any(|w| w == b"alice"));
}

#[tokio::test]
async fn segments_keyframes_and_seek() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("long.rec");
    let events = long_session(1500);
    let summary = record(&path, small_segments(), events.clone()).await;
    assert!(summary.segments > 10, "{summary:?}");
    assert!(summary.keyframes > 3, "{summary:?}");
    verify(&path, keys().verifying_key()).expect("verify");

    let r = Reader::open(&path, &keys()).expect("open");
    let all: Vec<Event> = r.events().collect::<Result<_, _>>().expect("events");
    let non_kf: Vec<Event> = all
        .iter()
        .filter(|e| !matches!(e.kind, EventKind::Keyframe { .. }))
        .cloned()
        .collect();
    assert_eq!(non_kf, events);

    let mut times = vec![0u64, 5_000, 1_234_567, 7_777_777, 14_990_000, 20_000_000];
    // Exactly at keyframe segment starts, and just around them.
    for s in r.segments() {
        if s.header.flags & custos_recording::FLAG_KEYFRAME != 0 {
            let t = s.header.first_time_us;
            times.extend([t - 1, t, t + 1]);
        }
    }
    for t in times {
        let seek = r.seek(t).expect("seek");
        // Reference: replay from the start without keyframes.
        let mut screens: BTreeMap<u32, Terminal> = BTreeMap::new();
        for e in events.iter().filter(|e| e.time_us < t) {
            apply_to_screens(&mut screens, e);
        }
        assert_eq!(
            seek.screens.get(&0).map(|s| s.text()),
            screens.get(&0).map(|s| s.text()),
            "screen at {t}"
        );
        let rest: Vec<Event> = seek
            .remaining
            .collect::<Result<Vec<_>, _>>()
            .expect("remaining")
            .into_iter()
            .filter(|e| !matches!(e.kind, EventKind::Keyframe { .. }))
            .collect();
        let want: Vec<Event> = events.iter().filter(|e| e.time_us >= t).cloned().collect();
        assert_eq!(rest, want, "remaining at {t}");
    }
    // Seeking late starts from a keyframe segment, not the first one.
    let late = r
        .segments()
        .iter()
        .rposition(|s| s.header.flags & custos_recording::FLAG_KEYFRAME != 0)
        .expect("keyframe segment");
    assert!(late > 0);
}

#[tokio::test]
async fn exports_and_asciinema() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("rec");
    record(&path, RecorderConfig::default(), sample_session()).await;
    let r = Reader::open(&path, &keys()).expect("open");

    let mut v2 = Vec::new();
    export::asciicast_v2(&r, &mut v2).expect("v2");
    let v2 = String::from_utf8(v2).expect("utf8");
    let mut lines = v2.lines();
    let header: serde_json::Value =
        serde_json::from_str(lines.next().expect("header")).expect("json");
    assert_eq!(header["version"], 2);
    assert_eq!(header["width"], 80);
    let mut output = String::new();
    for l in lines {
        let v: serde_json::Value = serde_json::from_str(l).expect("event json");
        assert!(v[0].is_number());
        if v[1] == "o" {
            output.push_str(v[2].as_str().expect("str"));
        }
    }
    assert!(output.contains("notes.txt"));
    assert!(
        output.contains("\u{FFFD}"),
        "binary output converted lossily"
    );
    assert!(v2.contains("\"r\",\"100x30\""));
    assert!(v2.contains("input redacted"));

    let mut v3 = Vec::new();
    export::asciicast_v3(&r, &mut v3).expect("v3");
    let v3 = String::from_utf8(v3).expect("utf8");
    let h3: serde_json::Value =
        serde_json::from_str(v3.lines().next().expect("header")).expect("json");
    assert_eq!(h3["version"], 3);
    assert_eq!(h3["term"]["cols"], 80);
    assert!(v3.lines().any(|l| l.contains("\"x\",\"0\"")));
    let total: f64 = v3
        .lines()
        .skip(1)
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("json")[0]
                .as_f64()
                .expect("f64")
        })
        .sum();
    assert!((total - 2.003).abs() < 1e-3, "intervals add up: {total}");

    let mut text = Vec::new();
    export::text(&r, &mut text).expect("text");
    let text = String::from_utf8(text).expect("utf8");
    assert!(text.contains("alice@db1:~$ ls"), "{text}");
    assert!(text.contains("notes.txt  bin"), "{text}");
    assert!(text.contains("exec: uptime"), "{text}");
    assert!(text.contains("exit status 0"), "{text}");
    assert!(
        text.contains("sftp write /etc/motd (42 bytes) ok"),
        "{text}"
    );
    assert!(text.contains("port forward 127.0.0.1:40000 -> 10.0.0.5:5432 denied"));
    assert!(!text.contains("Tr0ub4dor"));

    let mut jl = Vec::new();
    export::jsonl(&r, &mut jl).expect("jsonl");
    let jl = String::from_utf8(jl).expect("utf8");
    let objs: Vec<serde_json::Value> = jl
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(objs[0]["type"], "header");
    assert_eq!(objs[0]["metadata"]["user"], "alice");
    assert_eq!(objs.len() - 1, read_all(&path).len());
    use base64::Engine as _;
    let bin = objs
        .iter()
        .find_map(|o| o["data"]["base64"].as_str())
        .expect("binary payload in base64");
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(bin)
            .expect("b64"),
        BINARY
    );

    // The stock asciinema player accepts the v2 file. `asciinema cat` insists on a
    // controlling terminal, so it runs under `script`, which provides one.
    let cast = dir.path().join("rec.cast");
    std::fs::write(&cast, &v2).expect("write cast");
    let have = |tool: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !have("asciinema") || !have("script") {
        eprintln!("asciinema or script not available, skipping");
        return;
    }
    let cmd = format!("asciinema cat '{}'", cast.display());
    match Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .output()
    {
        Ok(o) => {
            assert!(
                o.status.success(),
                "asciinema cat failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            assert!(String::from_utf8_lossy(&o.stdout).contains("notes.txt"));
        }
        Err(e) => panic!("running asciinema cat: {e}"),
    }
    let cmd = format!("asciinema play -s 100 -i 0.01 '{}'", cast.display());
    match Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .output()
    {
        Ok(o) => {
            assert!(
                o.status.success(),
                "asciinema play failed: {}",
                String::from_utf8_lossy(&o.stdout)
            );
            assert!(String::from_utf8_lossy(&o.stdout).contains("logout"));
        }
        Err(e) => eprintln!("asciinema not available, skipping: {e}"),
    }
}

#[tokio::test]
async fn playback_timing_and_start_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("rec");
    record(&path, RecorderConfig::default(), sample_session()).await;
    let r = Reader::open(&path, &keys()).expect("open");

    let mut out = Vec::new();
    let mut sleeps = Vec::new();
    play_with_sleep(&r, &mut out, 2.0, Some(0.5), None, |d| sleeps.push(d)).expect("play");
    let want: Vec<u8> = sample_session()
        .iter()
        .filter(|e| e.channel == 0)
        .filter_map(|e| match &e.kind {
            EventKind::Output(b) => Some(b.to_vec()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(out, want, "output byte for byte");
    assert!(sleeps.iter().all(|d| *d <= Duration::from_millis(250)));
    // 10 ms at start, at half speed → 5 ms.
    assert_eq!(sleeps[0], Duration::from_micros(5000));

    let mut out = Vec::new();
    play_with_sleep(&r, &mut out, 1e9, None, Some(1.3), |_| {}).expect("play at");
    assert!(out.starts_with(b"\x1bc"));
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.contains("root@db1"),
        "keyframe shows the screen at 1.3 s"
    );
    assert!(text.contains("logout"));
    assert!(!text.contains("binary") || text.contains("root@db1"));
}

#[cfg(unix)]
#[tokio::test]
async fn manifest_verifies_with_ssh_keygen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("rec");
    record(&path, RecorderConfig::default(), sample_session()).await;
    let (signed, sig) = custos_recording::manifest_signature(&path)
        .expect("read")
        .expect("sealed");
    let signed_path = dir.path().join("manifest.bin");
    let sig_path = dir.path().join("manifest.sig");
    let allowed = dir.path().join("allowed_signers");
    std::fs::write(&signed_path, &signed).expect("w");
    std::fs::write(&sig_path, sig).expect("w");
    let pk = keys().verifying_key().to_openssh().expect("pk");
    std::fs::write(
        &allowed,
        format!("auditor@custos namespaces=\"custos-recording@v1\" {pk}\n"),
    )
    .expect("w");
    let run = Command::new("ssh-keygen")
        .args(["-Y", "verify", "-f"])
        .arg(&allowed)
        .args(["-I", "auditor@custos", "-n", "custos-recording@v1", "-s"])
        .arg(&sig_path)
        .stdin(std::fs::File::open(&signed_path).expect("open"))
        .output();
    match run {
        Ok(o) => assert!(
            o.status.success(),
            "ssh-keygen: {} {}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => eprintln!("ssh-keygen not available, skipping: {e}"),
    }
}

#[tokio::test]
async fn start_fails_cleanly_when_the_file_cannot_be_created() {
    let dir = tempfile::tempdir().expect("tempdir");
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, b"x").expect("w");
    let err = Recorder::start(blocker.join("rec"), keys(), metadata())
        .await
        .expect_err("must fail");
    assert!(err.to_string().contains("not-a-dir"), "{err}");
    // An existing file is never overwritten.
    let err = Recorder::start(&blocker, keys(), metadata())
        .await
        .expect_err("must fail");
    assert!(err.to_string().contains("exists"), "{err}");
}

#[tokio::test]
async fn backpressure_never_drops_and_finish_closes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("rec");
    let cfg = RecorderConfig {
        queue_len: 1,
        flush_bytes: 512,
        ..Default::default()
    };
    let h = Recorder::start_with(&path, keys(), metadata(), cfg)
        .await
        .expect("start");
    let h2 = h.clone();
    let writer = tokio::spawn(async move {
        for i in 0..2000u64 {
            h2.record(ev(
                i,
                5,
                EventKind::Stderr(format!("{i}\n").into_bytes().into()),
            ))
            .await
            .expect("record");
        }
    });
    writer.await.expect("join");
    let s = h.finish("done").await.expect("finish");
    assert_eq!(s.events, 2000);
    assert!(h.record(ev(1, 0, EventKind::Shell)).await.is_err());
    assert!(h.finish("again").await.is_err());
    assert_eq!(read_all(&path).len(), 2000);
}

#[tokio::test]
async fn unresolved_input_waits_then_times_out_in_real_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("rec");
    let cfg = RecorderConfig {
        echo_timeout_us: 100_000,
        flush_age: Duration::from_millis(50),
        ..Default::default()
    };
    let h = Recorder::start_with(&path, keys(), metadata(), cfg)
        .await
        .expect("start");
    h.record(ev(
        h.now_us(),
        0,
        EventKind::PtyRequest {
            term: "xterm".into(),
            cols: 80,
            rows: 24,
        },
    ))
    .await
    .expect("record");
    h.record(out(h.now_us(), b"> ")).await.expect("record");
    h.record(input(h.now_us(), b"hidden"))
        .await
        .expect("record");
    // Flushed to disk soon after, with the input redacted by the timeout (polled, so a busy
    // machine does not make the test flaky).
    let mut last = None;
    for _ in 0..250 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let r = Reader::open(&path, &keys()).expect("open unsealed");
        assert!(r.manifest().is_none());
        let evs: Vec<Event> = r.events().collect::<Result<_, _>>().expect("events");
        last = evs.last().map(|e| e.kind.clone());
        if last.is_some() && last != Some(EventKind::Output(bytes::Bytes::from_static(b"> "))) {
            break;
        }
    }
    assert_eq!(last, Some(EventKind::InputRedacted));
    h.finish("done").await.expect("finish");
}

#[tokio::test]
async fn dropped_handles_still_seal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("rec");
    {
        let h = Recorder::start(&path, keys(), metadata())
            .await
            .expect("start");
        h.record(out(1, b"hi")).await.expect("record");
    }
    for _ in 0..100 {
        if verify(&path, keys().verifying_key()).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rep = verify(&path, keys().verifying_key()).expect("sealed");
    assert_eq!(rep.end_reason, "recorder dropped without finish");
}

#[tokio::test]
async fn events_are_held_in_order_behind_undecided_input() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("rec");
    let events = vec![
        ev(
            0,
            0,
            EventKind::PtyRequest {
                term: "xterm".into(),
                cols: 80,
                rows: 24,
            },
        ),
        out(1, b"$ "),
        input(10, b"abc"),
        ev(
            11,
            1,
            EventKind::Output(bytes::Bytes::from_static(b"other channel")),
        ),
        ev(12, 1, EventKind::ExitStatus(0)),
        out(20, b"abc"),
        input(30, b"\x1b[A"),
        input(40, b"hidden"),
        out(41, b"\x1b[2K\r$ "),
        ev(42, 2, EventKind::Note("behind the hidden input".into())),
        input(50, b"\r"),
        out(51, b"\r\n"),
    ];
    record(&path, RecorderConfig::default(), events.clone()).await;
    let got = read_all(&path);
    let mut want = events;
    want[7] = ev(40, 0, EventKind::InputRedacted);
    assert_eq!(got, want);
}

/// Events that span more than the flush age in session time end up in several segments even
/// when they arrive all at once, as the live recorder would have cut them.
#[tokio::test]
async fn segments_are_cut_by_session_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("timed.rec");
    let mut events = long_session(0);
    let start = events.last().map_or(0, |e| e.time_us);
    for i in 0..10u64 {
        events.push(ev(
            start + (i + 1) * 1_500_000,
            0,
            EventKind::Output(bytes::Bytes::from(format!("line {i}\r\n"))),
        ));
    }
    let summary = record(&path, RecorderConfig::default(), events).await;
    assert!(summary.segments >= 10, "{summary:?}");
    verify(&path, keys().verifying_key()).expect("verify");
}
