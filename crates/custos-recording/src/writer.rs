//! Synchronous segment writer: compresses, encrypts, chains and appends segments; seals.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use custos_core::Id;

use crate::crypto::{self, KEY_LEN};
use crate::error::RecordingError;
use crate::event::{Event, encode_event};
use crate::format::{
    FLAG_KEYFRAME, FileHeader, Manifest, Metadata, SIGNATURE_NAMESPACE, SegmentHeader,
    WRITER_RECORDER,
};
use crate::keys::RecordingKeys;

/// zstd level of large segments (a bulk transfer fills one every megabyte): fast, still a
/// large gain on terminal output.
const ZSTD_LEVEL: i32 = 3;
/// zstd level of small segments. Interactive work writes a small segment about once a second
/// (the flush age), so a stronger level costs little in total and is where most sessions'
/// bytes are: about a fifth smaller than at the fast level on interactive output.
const ZSTD_LEVEL_SMALL: i32 = 12;
/// Segments up to this many bytes of events use [`ZSTD_LEVEL_SMALL`].
const SMALL_SEGMENT: usize = 64 * 1024;

/// Totals returned when a recording is sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Recording id.
    pub recording_id: Id,
    /// Segments written.
    pub segments: u64,
    /// Events written.
    pub events: u64,
    /// Uncompressed bytes of serialized events.
    pub raw_bytes: u64,
    /// Size of the sealed file.
    pub file_bytes: u64,
    /// Time of the last event (µs since start).
    pub end_time_us: u64,
    /// Number of keyframe segments.
    pub keyframes: u64,
    /// Input chunks replaced by `InputRedacted`.
    pub redacted_inputs: u64,
    /// Final chain hash.
    pub final_hash: [u8; 32],
}

/// An encoded, not yet written, batch of events.
#[derive(Debug, Default)]
pub(crate) struct SegmentBuf {
    pub data: Vec<u8>,
    pub first_time_us: u64,
    pub last_time_us: u64,
    pub count: u32,
    pub flags: u32,
}

impl SegmentBuf {
    /// Appends an event. Times must not go backwards (the recorder clamps them); an earlier
    /// time would be stored as the previous event's time.
    pub fn push(&mut self, ev: &Event) {
        if self.count == 0 {
            self.first_time_us = ev.time_us;
            self.last_time_us = ev.time_us;
        }
        encode_event(&mut self.data, self.last_time_us, ev);
        self.last_time_us = self.last_time_us.max(ev.time_us);
        self.count += 1;
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// Appends segments to one recording file.
pub(crate) struct FileWriter {
    path: PathBuf,
    file: File,
    recording_id: Id,
    header_hash: [u8; 32],
    dek: [u8; KEY_LEN],
    writer_id: u32,
    chain: [u8; 32],
    next_seq: u64,
    offset: u64,
    events: u64,
    raw_bytes: u64,
    end_time_us: u64,
    keyframes: Vec<(u64, u64)>,
}

impl FileWriter {
    /// Creates the file (and parent directories) and writes the header.
    pub fn create(
        path: &Path,
        keys: &RecordingKeys,
        metadata: &Metadata,
        recording_id: Id,
        created_unix_us: u64,
    ) -> Result<Self, RecordingError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| RecordingError::io(parent, e))?;
        }
        let dek = crypto::random::<KEY_LEN>()?;
        let header = FileHeader::build(recording_id, created_unix_us, keys.kek(), &dek, metadata)?;
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| RecordingError::io(path, e))?;
        file.write_all(&header.raw)
            .map_err(|e| RecordingError::io(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            recording_id,
            header_hash: header.hash(),
            dek,
            writer_id: WRITER_RECORDER,
            chain: header.hash(),
            next_seq: 0,
            offset: header.len(),
            events: 0,
            raw_bytes: 0,
            end_time_us: 0,
            keyframes: Vec::new(),
        })
    }

    /// Continues an existing file at `offset` (used by recovery; the file must already be
    /// truncated to `offset`).
    #[allow(clippy::too_many_arguments)]
    pub fn resume(
        path: &Path,
        header: &FileHeader,
        dek: [u8; KEY_LEN],
        writer_id: u32,
        chain: [u8; 32],
        next_seq: u64,
        offset: u64,
        totals: (u64, u64, u64),
        keyframes: Vec<(u64, u64)>,
    ) -> Result<Self, RecordingError> {
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| RecordingError::io(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            recording_id: header.recording_id,
            header_hash: header.hash(),
            dek,
            writer_id,
            chain,
            next_seq,
            offset,
            events: totals.0,
            raw_bytes: totals.1,
            end_time_us: totals.2,
            keyframes,
        })
    }

    /// Compresses, encrypts and appends one segment.
    pub fn write_segment(&mut self, seg: &SegmentBuf) -> Result<(), RecordingError> {
        let raw_len = u32::try_from(seg.data.len())
            .map_err(|_| RecordingError::Failed("segment too large".into()))?;
        let level = if seg.data.len() <= SMALL_SEGMENT {
            ZSTD_LEVEL_SMALL
        } else {
            ZSTD_LEVEL
        };
        let mut ct = zstd::bulk::compress(&seg.data, level)
            .map_err(|e| RecordingError::Failed(format!("compression failed: {e}")))?;
        let header = SegmentHeader {
            seq: self.next_seq,
            writer: self.writer_id,
            first_time_us: seg.first_time_us,
            last_time_us: seg.last_time_us,
            event_count: seg.count,
            raw_len,
            flags: seg.flags,
            prev_hash: self.chain,
        };
        let hbytes = header.encode(ct.len() + crypto::TAG_LEN);
        let aad = SegmentHeader::aad(self.recording_id, &hbytes);
        crypto::seal(
            &self.dek,
            crypto::segment_nonce(self.writer_id, self.next_seq),
            &aad,
            &mut ct,
        )?;
        let mut record = Vec::with_capacity(hbytes.len() + ct.len());
        record.extend_from_slice(&hbytes);
        record.extend_from_slice(&ct);
        self.file
            .write_all(&record)
            .map_err(|e| RecordingError::io(&self.path, e))?;
        self.chain = crypto::sha256(&[&self.chain, &record]);
        if seg.flags & FLAG_KEYFRAME != 0 {
            self.keyframes.push((seg.first_time_us, self.next_seq));
        }
        self.next_seq += 1;
        self.offset += record.len() as u64;
        self.events += u64::from(seg.count);
        self.raw_bytes += u64::from(raw_len);
        self.end_time_us = self.end_time_us.max(seg.last_time_us);
        Ok(())
    }

    /// Appends the signed manifest and syncs the file to stable storage.
    pub fn seal(
        mut self,
        keys: &RecordingKeys,
        end_reason: &str,
        interrupted: bool,
        redacted_inputs: u64,
    ) -> Result<Summary, RecordingError> {
        let manifest = Manifest {
            recording_id: self.recording_id,
            header_hash: self.header_hash,
            segment_count: self.next_seq,
            final_hash: self.chain,
            event_count: self.events,
            raw_bytes: self.raw_bytes,
            end_time_us: self.end_time_us,
            end_unix_us: unix_now_us(),
            interrupted,
            end_reason: end_reason.to_string(),
            keyframes: std::mem::take(&mut self.keyframes),
        };
        let signed = manifest.signed_bytes();
        let sig = keys
            .signing_key()
            .sign(SIGNATURE_NAMESPACE, ssh_key::HashAlg::Sha512, &signed)
            .map_err(|e| RecordingError::Crypto(format!("signing failed: {e}")))?;
        let pem = sig
            .to_pem(ssh_key::LineEnding::LF)
            .map_err(|e| RecordingError::Crypto(format!("signature encoding failed: {e}")))?;
        let record = Manifest::encode_record(&signed, &pem);
        self.file
            .write_all(&record)
            .and_then(|_| self.file.sync_all())
            .map_err(|e| RecordingError::io(&self.path, e))?;
        self.offset += record.len() as u64;
        Ok(Summary {
            recording_id: self.recording_id,
            segments: self.next_seq,
            events: self.events,
            raw_bytes: self.raw_bytes,
            file_bytes: self.offset,
            end_time_us: self.end_time_us,
            keyframes: manifest.keyframes.len() as u64,
            redacted_inputs,
            final_hash: self.chain,
        })
    }
}

/// Current wall-clock time in µs since the Unix epoch (0 if the clock is before 1970).
pub(crate) fn unix_now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}
