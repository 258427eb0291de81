//! Recovery of recordings interrupted by a crash.

mod common;

use std::time::Duration;

use common::*;
use custos_recording::{
    Event, EventKind, Reader, Recorder, RecorderConfig, RecordingError, VerifyError, recover,
    verify,
};

/// Records with the background flush, then copies the file while the recorder is still
/// running: the copy is what a crash (SIGKILL) would leave behind.
async fn crashed_copy(dir: &std::path::Path) -> (std::path::PathBuf, usize) {
    let path = dir.join("live");
    let cfg = RecorderConfig {
        flush_bytes: 1024,
        flush_age: Duration::from_millis(20),
        ..small_segments()
    };
    let h = Recorder::start_with(&path, keys(), metadata(), cfg)
        .await
        .expect("start");
    for e in long_session(200) {
        h.record(e).await.expect("record");
    }
    // Wait until the background flush has put every event on disk, then "crash".
    for _ in 0..250 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        // Every output event, not a count of events: keyframes are events too.
        let r = Reader::open(&path, &keys()).expect("open");
        let outputs = r
            .events()
            .filter(|e| {
                matches!(
                    e,
                    Ok(Event {
                        kind: EventKind::Output(_),
                        ..
                    })
                )
            })
            .count();
        if outputs >= 200 {
            break;
        }
    }
    let copy = dir.join("crashed");
    std::fs::copy(&path, &copy).expect("copy");
    h.finish("done").await.expect("finish");
    let r = Reader::open(&copy, &keys()).expect("open");
    (copy, r.segments().len())
}

#[tokio::test]
async fn unsealed_file_is_readable_and_recoverable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (copy, n) = crashed_copy(dir.path()).await;
    assert!(n >= 3, "several segments on disk: {n}");
    assert!(matches!(
        verify(&copy, keys().verifying_key()),
        Err(VerifyError::Unsealed { .. })
    ));
    let all_before: Vec<Event> = Reader::open(&copy, &keys())
        .expect("open")
        .events()
        .collect::<Result<_, _>>()
        .expect("events");
    // Everything flushed ~1 s (here 20 ms) before the "crash" is on disk.
    assert_eq!(
        all_before
            .iter()
            .filter(|e| matches!(e.kind, EventKind::Output(_)))
            .count(),
        200
    );

    // Cut the file in the middle of the last segment.
    let r = Reader::open(&copy, &keys()).expect("open");
    let last = *r.segments().last().expect("segment");
    let cut = last.offset + 40;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&copy)
        .expect("open");
    f.set_len(cut).expect("truncate");
    drop(f);

    // The reader stops cleanly at the partial tail.
    let r = Reader::open(&copy, &keys()).expect("open truncated");
    assert_eq!(r.segments().len(), n - 1);
    assert!(!r.clean_end());
    let events: Vec<Event> = r.events().collect::<Result<_, _>>().expect("events");
    assert!(!events.is_empty());
    let seek = r.seek(1_000_000).expect("seek");
    assert!(seek.screens.contains_key(&0));

    let rep = recover(&copy, &keys()).expect("recover");
    assert_eq!(rep.kept_segments as usize, n - 1);
    assert!(rep.cut_bytes > 0);
    let v = verify(&copy, keys().verifying_key()).expect("verifies after recovery");
    assert!(v.interrupted);
    assert_eq!(v.segments as usize, n);
    let after: Vec<Event> = Reader::open(&copy, &keys())
        .expect("open")
        .events()
        .collect::<Result<_, _>>()
        .expect("events");
    assert_eq!(&after[..events.len()], &events[..]);
    assert!(matches!(
        &after.last().expect("note").kind,
        EventKind::Note(n) if n == "recording interrupted"
    ));
    custos_recording::verify_with_keys(&copy, &keys()).expect("decrypts");

    // A sealed recording is left alone.
    assert!(matches!(
        recover(&copy, &keys()),
        Err(RecordingError::AlreadySealed)
    ));
}

#[tokio::test]
async fn recovery_handles_a_zero_filled_tail_and_refuses_mid_file_damage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (copy, n) = crashed_copy(dir.path()).await;
    let mut bytes = std::fs::read(&copy).expect("read");

    let zero_tail = dir.path().join("zeros");
    let mut z = bytes.clone();
    z.extend_from_slice(&[0u8; 4096]);
    std::fs::write(&zero_tail, &z).expect("w");
    let rep = recover(&zero_tail, &keys()).expect("recover zero tail");
    assert_eq!(rep.kept_segments as usize, n);
    verify(&zero_tail, keys().verifying_key()).expect("verify");

    let r = Reader::open(&copy, &keys()).expect("open");
    let second = r.segments()[1];
    let pos = (second.offset + 5 + 80) as usize;
    bytes[pos] ^= 0xff;
    let damaged = dir.path().join("damaged");
    std::fs::write(&damaged, &bytes).expect("w");
    let err = recover(&damaged, &keys()).expect_err("must refuse");
    assert!(err.to_string().contains("refusing"), "{err}");
    // The file is untouched.
    assert_eq!(std::fs::read(&damaged).expect("r"), bytes);
}

#[tokio::test]
async fn recover_needs_the_right_kek() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (copy, _) = crashed_copy(dir.path()).await;
    let other = custos_recording::RecordingKeys::generate().expect("gen");
    assert!(matches!(
        recover(&copy, &other),
        Err(RecordingError::WrongKey { .. })
    ));
    assert!(matches!(
        Reader::open(&copy, &other),
        Err(RecordingError::WrongKey { .. })
    ));
}
