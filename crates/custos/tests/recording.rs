//! Recordings end to end: an interactive terminal session with resize, replay and export,
//! redaction of no-echo input, encryption at rest, tamper detection and crash recovery.

mod support;

use custos_testkit::Pty;
use std::time::Duration;
use support::Setup;

const T: Duration = Duration::from_secs(15);

fn interactive(s: &Setup) -> Pty {
    let mut c = s.ssh();
    c.arg("-tt");
    Pty::spawn(c, 100, 30).unwrap()
}

#[test]
fn interactive_session_with_resize_is_recorded_and_exported() {
    let s = Setup::new().unwrap();
    let mut p = interactive(&s);
    p.send_line("export PS1='pro''mpt$ '").unwrap();
    p.expect("prompt$ ", T).unwrap();
    p.send_line("echo marker-$((6*7))").unwrap();
    p.expect("marker-42", T).unwrap();
    p.resize(120, 40).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    p.send_line("stty size").unwrap();
    p.expect("40 120", T).unwrap();
    p.send_line("exit").unwrap();
    p.wait(T).unwrap();
    s.gw.wait_idle(T).unwrap();

    let id = s.gw.last_session().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cast = dir.path().join("s.cast");
    s.gw.cli(&[
        "export",
        &id,
        "--format",
        "asciicast-v2",
        "-o",
        &cast.display().to_string(),
    ])
    .unwrap();
    let text = std::fs::read_to_string(&cast).unwrap();
    let header: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(header["version"], 2);
    assert_eq!(header["width"], 100);
    assert!(text.contains("marker-42"));
    assert!(
        text.contains("\"r\", \"120x40\"") || text.contains("\"r\",\"120x40\""),
        "{text}"
    );
    // The stock asciinema player reads it.
    // The stock asciinema reads it (it wants a terminal, so it gets one).
    if std::path::Path::new("/usr/bin/asciinema").exists() {
        let mut c = std::process::Command::new("asciinema");
        c.arg("cat").arg(&cast);
        let mut a = Pty::spawn(c, 100, 30).unwrap();
        a.expect("marker-42", T).unwrap();
        let status = a.wait(T).unwrap();
        assert!(status.success(), "{}", a.output());
    }
    let v3 =
        s.gw.cli(&["export", &id, "--format", "asciicast-v3"])
            .unwrap();
    assert!(
        v3.lines().next().unwrap().contains("\"version\":3")
            || v3.lines().next().unwrap().contains("\"version\": 3")
    );
    let transcript = s.gw.cli(&["export", &id, "--format", "text"]).unwrap();
    assert!(transcript.contains("marker-42"), "{transcript}");
    // Replay at high speed writes the same screen output.
    let played = s.gw.cli(&["play", &id, "--speed", "1000"]).unwrap();
    assert!(played.contains("marker-42"));
    let at =
        s.gw.cli(&["play", &id, "--speed", "1000", "--at", "0.5"])
            .unwrap();
    assert!(!at.is_empty());
    let v = s.gw.cli(&["recordings", "verify", &id]).unwrap();
    assert!(v.starts_with("ok"), "{v}");
}

#[test]
fn no_echo_input_is_redacted_and_nothing_is_plaintext_at_rest() {
    let s = Setup::new().unwrap();
    let mut p = interactive(&s);
    p.send_line("export PS1='pro''mpt$ '").unwrap();
    p.expect("prompt$ ", T).unwrap();
    p.send_line("read -s -p 'Pass''word: ' pw; echo; echo got-${#pw}-chars")
        .unwrap();
    p.expect("Password: ", T).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    p.send_line("Sup3rSecretPw").unwrap();
    p.expect("got-13-chars", T).unwrap();
    // A secret typed where no prompt says so, with echo off.
    p.send_line("stty -echo; echo ready-$((5+5)); read x; stty echo; echo len-${#x}")
        .unwrap();
    p.expect("ready-10", T).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    p.send_line("HiddenTokenZ9").unwrap();
    p.expect("len-13", T).unwrap();
    p.send_line("echo visible-$((1+1))-output").unwrap();
    p.expect("visible-2-output", T).unwrap();
    p.send_line("exit").unwrap();
    p.wait(T).unwrap();
    s.gw.wait_idle(T).unwrap();
    let id = s.gw.last_session().unwrap();
    let mut exports = String::new();
    for f in ["asciicast-v2", "asciicast-v3", "text", "jsonl"] {
        let e = s.gw.cli(&["export", &id, "--format", f]).unwrap();
        for secret in ["Sup3rSecretPw", "HiddenTokenZ9"] {
            assert!(
                !e.contains(secret),
                "{secret} leaked into the {f} export:\n{e}"
            );
        }
        exports.push_str(&e);
    }
    assert!(exports.contains("visible-2-output"));
    for secret in ["Sup3rSecretPw", "HiddenTokenZ9"] {
        assert!(!exports.contains(secret), "{secret} leaked into an export");
        for f in s.gw.data_files() {
            let bytes = std::fs::read(&f).unwrap();
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{secret} found in {}",
                f.display()
            );
        }
        assert!(!s.gw.log().contains(secret));
    }
    // Session output is encrypted at rest: not in any file of the data directory.
    for f in s.gw.data_files() {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !bytes.windows(16).any(|w| w == b"visible-2-output"),
            "plaintext output in {}",
            f.display()
        );
    }
}

#[test]
fn verify_catches_flipped_truncated_and_swapped_segments() {
    let s = Setup::new().unwrap();
    // Several seconds of output make several segments.
    let out = s
        .ssh()
        .arg("for i in 1 2 3; do seq 1 300000; sleep 1.1; done")
        .output()
        .unwrap();
    assert!(out.status.success());
    s.gw.wait_idle(T).unwrap();
    let id = s.gw.last_session().unwrap();
    assert!(
        s.gw.cli(&["recordings", "verify", &id])
            .unwrap()
            .starts_with("ok")
    );
    let show = s.gw.cli(&["sessions", "show", &id]).unwrap();
    let rel = show
        .lines()
        .find_map(|l| l.strip_prefix("recording:"))
        .unwrap()
        .trim()
        .to_string();
    let path = s.gw.data.join("recordings").join(rel);
    let original = std::fs::read(&path).unwrap();

    let check = |bytes: &[u8], what: &str| {
        std::fs::write(&path, bytes).unwrap();
        let out = s.gw.cli_raw(&["recordings", "verify", &id]).unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{what} not detected: {text}");
        assert!(
            text.contains("segment"),
            "{what}: the report does not name the segment: {text}"
        );
    };
    let mut flipped = original.clone();
    let mid = original.len() / 2;
    flipped[mid] ^= 0x01;
    check(&flipped, "flipped byte");
    check(&original[..original.len() * 2 / 3], "truncation");
    let keys = custos_recording::RecordingKeys::load(&s.gw.data.join("keys")).unwrap();
    let reader = custos_recording::Reader::open(&path, &keys).unwrap();
    // A record is a 5-byte prefix (type, body length) and its body.
    let spans: Vec<std::ops::Range<usize>> = reader
        .segments()
        .iter()
        .map(|g| g.offset as usize..(g.offset as usize + 5 + g.body_len as usize))
        .collect();
    drop(reader);
    assert!(
        spans.len() >= 3,
        "need several segments, got {}",
        spans.len()
    );
    let (a, b) = (spans[1].clone(), spans[2].clone());
    let mut swapped = original[..a.start].to_vec();
    swapped.extend_from_slice(&original[b.clone()]);
    swapped.extend_from_slice(&original[a.clone()]);
    swapped.extend_from_slice(&original[b.end..]);
    check(&swapped, "swapped segments");
    let mut missing = original[..a.start].to_vec();
    missing.extend_from_slice(&original[a.end..]);
    check(&missing, "missing segment");
    std::fs::write(&path, &original).unwrap();
    assert!(
        s.gw.cli(&["recordings", "verify", &id])
            .unwrap()
            .starts_with("ok")
    );
}

#[test]
fn sigkilled_gateway_recovers_the_session() {
    let mut s = Setup::new().unwrap();
    let mut p = interactive(&s);
    p.send_line("export PS1='pro''mpt$ '").unwrap();
    p.expect("prompt$ ", T).unwrap();
    p.send_line("echo before-the-$((3*3))-crash").unwrap();
    p.expect("before-the-9-crash", T).unwrap();
    // More than the flush interval, so the output is on disk.
    std::thread::sleep(Duration::from_millis(2500));
    s.gw.kill9();
    let _ = p.wait(T);
    let sessions = s.gw.sessions().unwrap();
    assert_eq!(sessions[0]["state"], "live");
    s.gw.start().unwrap();
    s.gw.wait_log("recording was recovered", T).unwrap();
    let sessions = s.gw.sessions().unwrap();
    assert_eq!(sessions[0]["state"], "interrupted", "{sessions:?}");
    let id = sessions[0]["id"].as_str().unwrap().to_string();
    let v = s.gw.cli(&["recordings", "verify", &id]).unwrap();
    assert!(v.starts_with("ok") && v.contains("interrupted"), "{v}");
    let text = s.gw.cli(&["export", &id, "--format", "text"]).unwrap();
    assert!(text.contains("before-the-9-crash"), "{text}");
}
