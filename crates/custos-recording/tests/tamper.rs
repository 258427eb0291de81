//! Every kind of tampering is detected by `verify` with only the public key.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use custos_recording::{Reader, RecordingKeys, VerifyError, recover, verify};

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    bytes: Vec<u8>,
    /// (offset, length) of every segment record, then the manifest.
    segments: Vec<(usize, usize)>,
    manifest: (usize, usize),
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("rec");
    record(&path, small_segments(), long_session(300)).await;
    let bytes = std::fs::read(&path).expect("read");
    let r = Reader::open(&path, &keys()).expect("open");
    let segments: Vec<(usize, usize)> = r
        .segments()
        .iter()
        .map(|s| (s.offset as usize, 5 + s.body_len as usize))
        .collect();
    let end = segments.last().map(|(o, l)| o + l).expect("segments");
    assert!(segments.len() >= 4, "need several segments");
    Fixture {
        _dir: dir,
        path,
        manifest: (end, bytes.len() - end),
        bytes,
        segments,
    }
}

fn check(dir: &Path, bytes: &[u8]) -> Result<(), VerifyError> {
    let p = dir.join("tampered");
    std::fs::write(&p, bytes).expect("write");
    verify(&p, keys().verifying_key()).map(|_| ())
}

#[tokio::test]
async fn pristine_file_verifies() {
    let f = fixture().await;
    let rep = verify(&f.path, keys().verifying_key()).expect("verify");
    assert_eq!(rep.segments as usize, f.segments.len());
}

#[tokio::test]
async fn flipped_byte_in_any_segment_names_that_segment() {
    let f = fixture().await;
    let dir = f.path.parent().expect("dir");
    for (i, (off, len)) in f.segments.iter().enumerate() {
        // Inside the ciphertext.
        let mut b = f.bytes.clone();
        b[off + len - 20] ^= 0x01;
        match check(dir, &b) {
            Err(VerifyError::Modified {
                segment, offset, ..
            }) => {
                assert_eq!(segment as usize, i);
                assert_eq!(offset as usize, *off);
            }
            other => panic!("segment {i}: {other:?}"),
        }
        // Inside the plaintext header fields (event count).
        let mut b = f.bytes.clone();
        b[off + 5 + 30] ^= 0x80;
        assert!(check(dir, &b).is_err(), "header flip in segment {i}");
    }
}

#[tokio::test]
async fn every_single_byte_flip_is_detected() {
    let f = fixture().await;
    let dir = f.path.parent().expect("dir");
    // All header and manifest bytes, and a stride through the segments.
    let mut positions: Vec<usize> = (0..f.segments[0].0).collect();
    positions.extend((f.manifest.0..f.bytes.len()).step_by(1));
    positions.extend((f.segments[0].0..f.manifest.0).step_by(97));
    for pos in positions {
        let mut b = f.bytes.clone();
        b[pos] ^= 0x04;
        assert!(check(dir, &b).is_err(), "flip at byte {pos} not detected");
    }
}

#[tokio::test]
async fn truncation_is_detected() {
    let f = fixture().await;
    let dir = f.path.parent().expect("dir");
    let (off, len) = f.segments[2];
    match check(dir, &f.bytes[..off + len / 2]) {
        Err(VerifyError::Truncated { segment, offset }) => {
            assert_eq!(segment, 2);
            assert_eq!(offset as usize, off);
        }
        other => panic!("{other:?}"),
    }
    // Cut exactly at a record boundary: the seal is missing.
    match check(dir, &f.bytes[..off]) {
        Err(VerifyError::Unsealed { segments, .. }) => assert_eq!(segments, 2),
        other => panic!("{other:?}"),
    }
    // Cut inside the manifest.
    assert!(matches!(
        check(dir, &f.bytes[..f.bytes.len() - 3]),
        Err(VerifyError::Truncated { .. })
    ));
    // Cut inside the header.
    assert!(check(dir, &f.bytes[..50]).is_err());
    assert!(check(dir, &[]).is_err());
}

fn splice(f: &Fixture, order: &[usize]) -> Vec<u8> {
    let mut b = f.bytes[..f.segments[0].0].to_vec();
    for &i in order {
        let (o, l) = f.segments[i];
        b.extend_from_slice(&f.bytes[o..o + l]);
    }
    b.extend_from_slice(&f.bytes[f.manifest.0..]);
    b
}

#[tokio::test]
async fn swapped_segments_are_reported_as_reordered() {
    let f = fixture().await;
    let dir = f.path.parent().expect("dir");
    let mut order: Vec<usize> = (0..f.segments.len()).collect();
    order.swap(1, 2);
    match check(dir, &splice(&f, &order)) {
        Err(VerifyError::Reordered {
            segment, found_seq, ..
        }) => {
            assert_eq!(segment, 1);
            assert_eq!(found_seq, 2);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn removed_segments_are_reported_as_missing() {
    let f = fixture().await;
    let dir = f.path.parent().expect("dir");
    let n = f.segments.len();
    let order: Vec<usize> = (0..n).filter(|i| *i != 1).collect();
    match check(dir, &splice(&f, &order)) {
        Err(VerifyError::Missing {
            segment, found_seq, ..
        }) => {
            assert_eq!(segment, 1);
            assert_eq!(found_seq, Some(2));
        }
        other => panic!("{other:?}"),
    }
    // The last segment removed: only the manifest can tell.
    let order: Vec<usize> = (0..n - 1).collect();
    match check(dir, &splice(&f, &order)) {
        Err(VerifyError::Missing { segment, .. }) => assert_eq!(segment as usize, n - 1),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn manifest_removed_or_forged() {
    let f = fixture().await;
    let dir = f.path.parent().expect("dir");
    assert!(matches!(
        check(dir, &f.bytes[..f.manifest.0]),
        Err(VerifyError::Unsealed { .. })
    ));
    // A manifest signed by another key.
    let copy = dir.join("copy");
    std::fs::write(&copy, &f.bytes[..f.manifest.0]).expect("w");
    let other = RecordingKeys::from_parts(*b"0123456789abcdef0123456789abcdef", [7u8; 32]);
    assert!(
        recover(&copy, &other).is_err(),
        "other KEK cannot even read it"
    );
    // Re-seal with the right KEK but a different signing key.
    let forger_dir = dir.join("forger");
    keys_with_other_signer(&keys(), &forger_dir);
    let forged_keys = RecordingKeys::load(&forger_dir).expect("load forged keys");
    recover(&copy, &forged_keys).expect("recover with forged signer");
    let forged = std::fs::read(&copy).expect("r");
    assert!(matches!(
        check(dir, &forged),
        Err(VerifyError::ManifestForged { .. })
    ));
    // Trailing data after the manifest.
    let mut b = f.bytes.clone();
    b.extend_from_slice(&f.bytes[f.segments[0].0..f.segments[0].0 + f.segments[0].1]);
    assert!(matches!(
        check(dir, &b),
        Err(VerifyError::TrailingData { .. })
    ));
}

/// Writes a key directory holding the same KEK as `k` but a fresh signing key.
fn keys_with_other_signer(k: &RecordingKeys, dir: &Path) {
    let tmp = dir.with_extension("tmp");
    k.save(&tmp).expect("save");
    let fresh = RecordingKeys::generate().expect("gen");
    fresh.save(dir).expect("save");
    std::fs::copy(
        tmp.join(custos_recording::KEK_FILE),
        dir.join(custos_recording::KEK_FILE),
    )
    .expect("copy kek");
}

#[tokio::test]
async fn random_corruption_never_panics() {
    let f = fixture().await;
    let dir = f.path.parent().expect("dir");
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for round in 0..150 {
        let mut b = f.bytes.clone();
        for _ in 0..(1 + rnd() % 8) {
            let pos = (rnd() % b.len() as u64) as usize;
            b[pos] = rnd() as u8;
        }
        if round % 3 == 0 {
            let cut = (rnd() % b.len() as u64) as usize;
            b.truncate(cut);
        }
        let p = dir.join(format!("fuzz{round}"));
        std::fs::write(&p, &b).expect("w");
        let _ = verify(&p, keys().verifying_key());
        let _ = custos_recording::verify_with_keys(&p, &keys());
        if let Ok(r) = Reader::open(&p, &keys()) {
            for e in r.events() {
                if e.is_err() {
                    break;
                }
            }
            let _ = r.seek(1_000_000);
        }
        let _ = recover(&p, &keys());
    }
}
