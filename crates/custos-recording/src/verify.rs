//! Integrity verification (public key only) and recovery of interrupted recordings.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use custos_core::Id;
use ssh_key::{PublicKey, SshSig};

use crate::crypto::{self, KEY_LEN};
use crate::error::RecordingError;
use crate::event::{Event, EventKind};
use crate::format::{
    FLAG_KEYFRAME, FileHeader, MAX_RAW_LEN, Manifest, Next, REC_MANIFEST, REC_SEGMENT,
    RECORD_PREFIX_LEN, RawRecord, SEGMENT_FIELDS_LEN, SEGMENT_HEADER_LEN, SIGNATURE_NAMESPACE,
    SegmentHeader, next_record,
};
use crate::keys::RecordingKeys;
use crate::writer::{FileWriter, SegmentBuf, Summary};

/// What a successful verification established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Recording id.
    pub recording_id: Id,
    /// Creation time, µs since the Unix epoch.
    pub created_unix_us: u64,
    /// Number of segments.
    pub segments: u64,
    /// Number of events (from the signed manifest).
    pub events: u64,
    /// Time of the last event, µs since start.
    pub end_time_us: u64,
    /// Why the recording ended.
    pub end_reason: String,
    /// Whether it was sealed by recovery after an interruption.
    pub interrupted: bool,
    /// Keyframe index entries.
    pub keyframes: u64,
    /// File size.
    pub file_bytes: u64,
    /// Final chain hash (hex in reports).
    pub final_hash: [u8; 32],
    /// Whether every segment was also decrypted and decoded (only with keys).
    pub decrypted: bool,
}

/// Why a recording failed verification. Segment numbers are 0-based positions in the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The file could not be read.
    #[error("cannot read recording: {0}")]
    Io(String),
    /// The file is not a recording.
    #[error("not a Custos recording: {0}")]
    NotARecording(String),
    /// Unknown format major version.
    #[error("unsupported recording format version {major}.{minor}")]
    UnsupportedVersion {
        /// Major version.
        major: u16,
        /// Minor version.
        minor: u16,
    },
    /// The file header was altered.
    #[error("file header modified: {reason}")]
    HeaderModified {
        /// Details.
        reason: String,
    },
    /// A segment's bytes do not match the chain.
    #[error("segment {segment} at byte {offset} modified: {reason}")]
    Modified {
        /// Segment position.
        segment: u64,
        /// Byte offset of the segment.
        offset: u64,
        /// Details.
        reason: String,
    },
    /// The file ends inside a record.
    #[error("truncated: the file ends inside segment {segment} at byte {offset}")]
    Truncated {
        /// Position of the incomplete record.
        segment: u64,
        /// Its byte offset.
        offset: u64,
    },
    /// Segments are out of order.
    #[error(
        "segments reordered: segment {segment} at byte {offset} has sequence number {found_seq}"
    )]
    Reordered {
        /// Position where the wrong segment was found.
        segment: u64,
        /// Its byte offset.
        offset: u64,
        /// The sequence number found there.
        found_seq: u64,
    },
    /// A segment is missing.
    #[error("segment {segment} missing (at byte {offset}){}", found_seq.map(|s| format!(": found sequence number {s} instead")).unwrap_or_default())]
    Missing {
        /// Sequence number that is missing.
        segment: u64,
        /// Byte offset where it should be.
        offset: u64,
        /// What was found instead, if anything.
        found_seq: Option<u64>,
    },
    /// No manifest: the recording was never sealed (see `recover`).
    #[error("unsealed: no manifest after {segments} segments (byte {offset})")]
    Unsealed {
        /// Complete segments present.
        segments: u64,
        /// End of the last complete record.
        offset: u64,
    },
    /// The manifest is not validly signed by the given key, or does not match the file.
    #[error("manifest at byte {offset} invalid: {reason}")]
    ManifestForged {
        /// Byte offset of the manifest.
        offset: u64,
        /// Details.
        reason: String,
    },
    /// Bytes follow the manifest.
    #[error("unexpected data after the manifest at byte {offset}")]
    TrailingData {
        /// Offset of the extra data.
        offset: u64,
    },
}

struct SegEntry {
    offset: u64,
    header: SegmentHeader,
    hash_before: [u8; 32],
    hash_after: [u8; 32],
}

/// Verifies the integrity and seal of a recording with only the public signing key:
/// structure, sequence numbers, the hash chain over the ciphertexts and the manifest signature.
pub fn verify(path: &Path, key: &PublicKey) -> Result<VerifyReport, VerifyError> {
    verify_inner(path, key, None)
}

/// Like [`verify`], and also decrypts and decodes every segment (checks each AEAD tag).
pub fn verify_with_keys(path: &Path, keys: &RecordingKeys) -> Result<VerifyReport, VerifyError> {
    verify_inner(path, keys.verifying_key(), Some(keys))
}

fn verify_inner(
    path: &Path,
    key: &PublicKey,
    keys: Option<&RecordingKeys>,
) -> Result<VerifyReport, VerifyError> {
    let file = File::open(path).map_err(|e| VerifyError::Io(format!("{}: {e}", path.display())))?;
    let file_bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut r = BufReader::new(file);
    let header = FileHeader::read(&mut r).map_err(|e| match e {
        RecordingError::NotARecording(m) => VerifyError::NotARecording(m),
        RecordingError::UnsupportedVersion { major, minor } => {
            VerifyError::UnsupportedVersion { major, minor }
        }
        other => VerifyError::HeaderModified {
            reason: other.to_string(),
        },
    })?;
    let dek = match keys {
        Some(k) => Some(
            header
                .unwrap_dek(k.kek())
                .map_err(|e| VerifyError::HeaderModified {
                    reason: e.to_string(),
                })?,
        ),
        None => None,
    };
    if let Some(dek) = &dek {
        header
            .metadata(dek)
            .map_err(|e| VerifyError::HeaderModified {
                reason: e.to_string(),
            })?;
    }
    let h0 = header.hash();
    let mut chain = h0;
    let mut offset = header.len();
    let mut segs: Vec<SegEntry> = Vec::new();
    let mut manifest: Option<RawRecord> = None;
    let mut partial: Option<u64> = None;
    loop {
        let next = next_record(&mut r, offset).map_err(|e| VerifyError::Io(e.to_string()))?;
        match next {
            Next::End => break,
            Next::Partial { offset } => {
                partial = Some(offset);
                break;
            }
            Next::Record(rec) => {
                let rec_len = (RECORD_PREFIX_LEN + rec.body.len()) as u64;
                if manifest.is_some() {
                    return Err(VerifyError::TrailingData { offset: rec.offset });
                }
                match rec.rtype {
                    REC_SEGMENT => {
                        let Some(sh) = SegmentHeader::decode(&rec.body) else {
                            return Err(VerifyError::Modified {
                                segment: segs.len() as u64,
                                offset: rec.offset,
                                reason: "segment shorter than its header".into(),
                            });
                        };
                        let before = chain;
                        chain = record_hash(&chain, &rec);
                        if let Some(dek) = &dek {
                            decrypt_segment(&header, dek, &rec).map_err(|reason| {
                                VerifyError::Modified {
                                    segment: segs.len() as u64,
                                    offset: rec.offset,
                                    reason,
                                }
                            })?;
                        }
                        segs.push(SegEntry {
                            offset: rec.offset,
                            header: sh,
                            hash_before: before,
                            hash_after: chain,
                        });
                    }
                    REC_MANIFEST => manifest = Some(rec),
                    t => {
                        return Err(VerifyError::Modified {
                            segment: segs.len() as u64,
                            offset: rec.offset,
                            reason: format!("unknown record type {t}"),
                        });
                    }
                }
                offset += rec_len;
            }
        }
    }

    // Sequence numbers first: they tell reordering and removal apart from modification.
    for (i, s) in segs.iter().enumerate() {
        let i = i as u64;
        if s.header.seq != i {
            if segs.iter().skip(i as usize + 1).any(|l| l.header.seq == i) {
                return Err(VerifyError::Reordered {
                    segment: i,
                    offset: s.offset,
                    found_seq: s.header.seq,
                });
            }
            return Err(VerifyError::Missing {
                segment: i,
                offset: s.offset,
                found_seq: Some(s.header.seq),
            });
        }
    }
    for (i, s) in segs.iter().enumerate() {
        if s.header.prev_hash != s.hash_before {
            if i == 0 {
                return Err(VerifyError::HeaderModified {
                    reason: "the first segment does not chain to the file header".into(),
                });
            }
            let p = &segs[i - 1];
            return Err(VerifyError::Modified {
                segment: i as u64 - 1,
                offset: p.offset,
                reason: format!(
                    "its hash does not match the chain hash stored in segment {i} (either segment altered)"
                ),
            });
        }
    }
    if let Some(offset) = partial {
        return Err(VerifyError::Truncated {
            segment: segs.len() as u64,
            offset,
        });
    }
    let Some(mrec) = manifest else {
        return Err(VerifyError::Unsealed {
            segments: segs.len() as u64,
            offset,
        });
    };
    let forged = |reason: &str| VerifyError::ManifestForged {
        offset: mrec.offset,
        reason: reason.to_string(),
    };
    let (signed, sig) =
        Manifest::split_record(&mrec.body).ok_or_else(|| forged("malformed manifest record"))?;
    let sig = SshSig::from_pem(sig).map_err(|_| forged("malformed signature"))?;
    key.verify(SIGNATURE_NAMESPACE, signed, &sig)
        .map_err(|_| forged("signature does not verify with the given public key"))?;
    let m = Manifest::parse(signed).ok_or_else(|| forged("malformed manifest"))?;
    if m.recording_id != header.recording_id || m.header_hash != h0 {
        return Err(VerifyError::HeaderModified {
            reason: "the signed manifest belongs to another header".into(),
        });
    }
    let n = segs.len() as u64;
    if m.segment_count > n {
        return Err(VerifyError::Missing {
            segment: n,
            offset: mrec.offset,
            found_seq: None,
        });
    }
    if m.segment_count < n {
        return Err(forged("more segments than the manifest lists"));
    }
    let last_hash = segs.last().map(|s| s.hash_after).unwrap_or(h0);
    if m.final_hash != last_hash {
        let (segment, offset) = segs
            .last()
            .map(|s| (n - 1, s.offset))
            .unwrap_or((0, mrec.offset));
        return Err(VerifyError::Modified {
            segment,
            offset,
            reason: "its hash does not match the final hash in the manifest".into(),
        });
    }
    for (t, seq) in &m.keyframes {
        let ok = segs
            .get(*seq as usize)
            .is_some_and(|s| s.header.flags & FLAG_KEYFRAME != 0 && s.header.first_time_us == *t);
        if !ok {
            return Err(forged("keyframe index does not match the segments"));
        }
    }
    Ok(VerifyReport {
        recording_id: header.recording_id,
        created_unix_us: header.created_unix_us,
        segments: n,
        events: m.event_count,
        end_time_us: m.end_time_us,
        end_reason: m.end_reason,
        interrupted: m.interrupted,
        keyframes: m.keyframes.len() as u64,
        file_bytes,
        final_hash: m.final_hash,
        decrypted: dek.is_some(),
    })
}

fn record_hash(prev: &[u8; 32], rec: &RawRecord) -> [u8; 32] {
    let len = (rec.body.len() as u32).to_be_bytes();
    crypto::sha256(&[prev, &[rec.rtype], &len, &rec.body])
}

/// Decrypts and decompresses a segment record, returning its header and plaintext.
pub(crate) fn decrypt_segment(
    header: &FileHeader,
    dek: &[u8; KEY_LEN],
    rec: &RawRecord,
) -> Result<(SegmentHeader, Vec<Event>), String> {
    let sh = SegmentHeader::decode(&rec.body).ok_or("segment shorter than its header")?;
    let hbytes: [u8; SEGMENT_HEADER_LEN] = {
        let mut h = [0u8; SEGMENT_HEADER_LEN];
        h[0] = rec.rtype;
        h[1..5].copy_from_slice(&(rec.body.len() as u32).to_be_bytes());
        h[5..].copy_from_slice(&rec.body[..SEGMENT_FIELDS_LEN]);
        h
    };
    let aad = SegmentHeader::aad(header.recording_id, &hbytes);
    let mut ct = rec.body[SEGMENT_FIELDS_LEN..].to_vec();
    if !crypto::open(dek, crypto::segment_nonce(sh.writer, sh.seq), &aad, &mut ct) {
        return Err("AEAD tag does not verify (modified ciphertext or header)".into());
    }
    if sh.raw_len > MAX_RAW_LEN {
        return Err("raw length out of range".into());
    }
    let plain = zstd::bulk::decompress(&ct, sh.raw_len as usize)
        .map_err(|e| format!("decompression failed: {e}"))?;
    if plain.len() != sh.raw_len as usize {
        return Err("decompressed length differs from the header".into());
    }
    let events = crate::event::decode_events(bytes::Bytes::from(plain), sh.first_time_us)
        .map_err(|e| e.to_string())?;
    if events.len() > sh.event_count as usize {
        return Err("more events than the header announces".into());
    }
    Ok((sh, events))
}

/// What [`recover`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoverReport {
    /// Complete, valid segments kept.
    pub kept_segments: u64,
    /// Bytes cut from the end of the file.
    pub cut_bytes: u64,
    /// Totals of the sealed result.
    pub summary: Summary,
}

/// Seals a recording left unsealed by a crash: keeps every complete valid segment, cuts a
/// damaged or partial tail, appends a "recording interrupted" note and signs a manifest with
/// `interrupted = true`. Refuses to cut anything followed by further data (that is tampering,
/// not an interruption) and refuses sealed recordings.
pub fn recover(path: &Path, keys: &RecordingKeys) -> Result<RecoverReport, RecordingError> {
    let io = |e| RecordingError::io(path, e);
    let mut file = File::open(path).map_err(io)?;
    let file_len = file.metadata().map_err(io)?.len();
    let mut r = BufReader::new(&mut file);
    let header = FileHeader::read(&mut r)?;
    let dek = header.unwrap_dek(keys.kek())?;
    header.metadata(&dek)?;
    let mut chain = header.hash();
    let mut offset = header.len();
    let mut seq = 0u64;
    let (mut events, mut raw, mut end) = (0u64, 0u64, 0u64);
    let mut keyframes = Vec::new();
    loop {
        let rec = match next_record(&mut r, offset).map_err(io)? {
            Next::End => break,
            Next::Partial { .. } => break,
            Next::Record(rec) => rec,
        };
        let rec_end = offset + (RECORD_PREFIX_LEN + rec.body.len()) as u64;
        let valid = match rec.rtype {
            REC_SEGMENT => match decrypt_segment(&header, &dek, &rec) {
                Ok((sh, _)) if sh.seq == seq && sh.prev_hash == chain => {
                    chain = record_hash(&chain, &rec);
                    events += u64::from(sh.event_count);
                    raw += u64::from(sh.raw_len);
                    end = end.max(sh.last_time_us);
                    if sh.flags & FLAG_KEYFRAME != 0 {
                        keyframes.push((sh.first_time_us, sh.seq));
                    }
                    seq += 1;
                    true
                }
                _ => false,
            },
            REC_MANIFEST => {
                if verify(path, keys.verifying_key()).is_ok() {
                    return Err(RecordingError::AlreadySealed);
                }
                false
            }
            _ => false,
        };
        if !valid {
            // Only a damaged tail may be cut: the bad record must end the file, or everything
            // after its start must be zeros (a crash on some file systems).
            if rec_end < file_len && !zeros_from(path, offset)? {
                return Err(RecordingError::corrupt(
                    offset,
                    "damaged record followed by more data; refusing to cut (run verify)",
                ));
            }
            break;
        }
        offset = rec_end;
    }
    drop(r);
    drop(file);
    let f = OpenOptions::new().write(true).open(path).map_err(io)?;
    f.set_len(offset).map_err(io)?;
    f.sync_all().map_err(io)?;
    drop(f);
    // A fresh writer id keeps nonces unique even if the cut tail reused this sequence number.
    let writer_id = loop {
        let w = u32::from_be_bytes(crypto::random::<4>()?);
        if (2..u32::MAX).contains(&w) {
            break w;
        }
    };
    let mut w = FileWriter::resume(
        path,
        &header,
        dek,
        writer_id,
        chain,
        seq,
        offset,
        (events, raw, end),
        keyframes,
    )?;
    let mut note = SegmentBuf::default();
    note.push(&Event {
        time_us: end,
        channel: 0,
        kind: EventKind::Note("recording interrupted".into()),
    });
    w.write_segment(&note)?;
    let summary = w.seal(keys, "interrupted", true, 0)?;
    Ok(RecoverReport {
        kept_segments: seq,
        cut_bytes: file_len - offset,
        summary,
    })
}

fn zeros_from(path: &Path, offset: u64) -> Result<bool, RecordingError> {
    let io = |e| RecordingError::io(path, e);
    let mut f = File::open(path).map_err(io)?;
    f.seek(SeekFrom::Start(offset)).map_err(io)?;
    let mut buf = [0u8; 8192];
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            return Ok(true);
        }
        if buf[..n].iter().any(|b| *b != 0) {
            return Ok(false);
        }
    }
}

/// Extracts the manifest's signed bytes and SSHSIG armor so that stock OpenSSH can check
/// them: `ssh-keygen -Y verify -f allowed_signers -I <identity> -n custos-recording@v1 -s
/// sig.pem < manifest.bin`. Returns `None` if the file has no manifest.
pub fn manifest_signature(path: &Path) -> Result<Option<(Vec<u8>, String)>, RecordingError> {
    let io = |e| RecordingError::io(path, e);
    let mut r = BufReader::new(File::open(path).map_err(io)?);
    let header = FileHeader::read(&mut r)?;
    let mut offset = header.len();
    loop {
        match next_record(&mut r, offset).map_err(io)? {
            Next::Record(rec) => {
                offset += (RECORD_PREFIX_LEN + rec.body.len()) as u64;
                if rec.rtype == REC_MANIFEST {
                    let Some((signed, sig)) = Manifest::split_record(&rec.body) else {
                        return Err(RecordingError::corrupt(rec.offset, "malformed manifest"));
                    };
                    return Ok(Some((
                        signed.to_vec(),
                        String::from_utf8_lossy(sig).into_owned(),
                    )));
                }
            }
            _ => return Ok(None),
        }
    }
}
