//! On-disk structures: file header, records, segment header and manifest.
//! See `docs/recording-format.md` for the normative description.

use std::io::{self, Read};

use custos_core::Id;
use serde::{Deserialize, Serialize};

use crate::crypto::{self, KEY_LEN, TAG_LEN};
use crate::error::RecordingError;

/// First eight bytes of every recording.
pub const MAGIC: [u8; 8] = *b"\x89CUSTOS\n";
/// Format major version written by this crate. Readers reject other major versions.
pub const VERSION_MAJOR: u16 = 1;
/// Format minor version written by this crate. Minor versions only add things old readers
/// may skip.
pub const VERSION_MINOR: u16 = 0;
/// SSHSIG namespace of manifest signatures.
pub const SIGNATURE_NAMESPACE: &str = "custos-recording@v1";

pub(crate) const ALG_AES_256_GCM: u8 = 1;
pub(crate) const ALG_ZSTD: u8 = 1;
pub(crate) const ALG_SHA_256: u8 = 1;
pub(crate) const ALG_SSHSIG_ED25519: u8 = 1;

/// Writer id of the normal recorder (first 4 bytes of segment nonces).
pub(crate) const WRITER_RECORDER: u32 = 1;
/// Nonce of the encrypted metadata blob.
pub(crate) const METADATA_NONCE: [u8; 12] = [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0];

/// Record type of a segment.
pub(crate) const REC_SEGMENT: u8 = 1;
/// Record type of the manifest (always last).
pub(crate) const REC_MANIFEST: u8 = 2;

/// Segment flag: the segment starts with one keyframe per open PTY channel.
pub const FLAG_KEYFRAME: u32 = 1;

/// Fixed part of the file header before the encrypted metadata.
pub(crate) const HEADER_FIXED_LEN: usize = 140;
/// Bytes of the record prefix (type + body length).
pub(crate) const RECORD_PREFIX_LEN: usize = 5;
/// Bytes of the fixed segment header inside the segment body.
pub(crate) const SEGMENT_FIELDS_LEN: usize = 72;
/// Full segment header (record prefix + fixed fields).
pub(crate) const SEGMENT_HEADER_LEN: usize = RECORD_PREFIX_LEN + SEGMENT_FIELDS_LEN;
/// Largest record body accepted (protects readers from absurd allocations).
pub(crate) const MAX_RECORD_LEN: u32 = 64 << 20;
/// Largest uncompressed segment accepted.
pub(crate) const MAX_RAW_LEN: u32 = 64 << 20;
/// Largest encrypted metadata blob accepted.
pub(crate) const MAX_METADATA_LEN: u32 = 1 << 20;

/// Who and what a recording is about. Stored encrypted in the file header.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    /// Gateway session id.
    #[serde(default)]
    pub session_id: String,
    /// Gateway user.
    #[serde(default)]
    pub user: String,
    /// Target name.
    #[serde(default)]
    pub target: String,
    /// Login used on the target.
    #[serde(default)]
    pub login: String,
    /// Source address of the client.
    #[serde(default)]
    pub source: String,
    /// Fields added by later versions, kept as-is.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// The parsed plaintext file header.
#[derive(Debug, Clone)]
pub struct FileHeader {
    /// Format major version.
    pub major: u16,
    /// Format minor version.
    pub minor: u16,
    /// Recording id.
    pub recording_id: Id,
    /// Wall-clock creation time, microseconds since the Unix epoch.
    pub created_unix_us: u64,
    /// SHA-256 key id of the KEK.
    pub kek_id: [u8; 32],
    pub(crate) wrap_nonce: [u8; 12],
    pub(crate) wrapped_dek: [u8; KEY_LEN + TAG_LEN],
    pub(crate) metadata_ct: Vec<u8>,
    /// The exact header bytes (hashed into the chain and used as AAD).
    pub(crate) raw: Vec<u8>,
}

impl FileHeader {
    /// Builds and serializes a header, wrapping `dek` and encrypting `metadata`.
    pub(crate) fn build(
        recording_id: Id,
        created_unix_us: u64,
        kek: &[u8; KEY_LEN],
        dek: &[u8; KEY_LEN],
        metadata: &Metadata,
    ) -> Result<Self, RecordingError> {
        let kek_id = crate::keys::kek_id(kek);
        let wrap_nonce = crypto::random::<12>()?;
        let mut raw = Vec::with_capacity(256);
        raw.extend_from_slice(&MAGIC);
        raw.extend_from_slice(&VERSION_MAJOR.to_be_bytes());
        raw.extend_from_slice(&VERSION_MINOR.to_be_bytes());
        raw.extend_from_slice(&0u32.to_be_bytes()); // header length, patched below
        raw.extend_from_slice(&recording_id.to_bytes());
        raw.extend_from_slice(&created_unix_us.to_be_bytes());
        raw.extend_from_slice(&[ALG_AES_256_GCM, ALG_ZSTD, ALG_SHA_256, ALG_SSHSIG_ED25519]);
        raw.extend_from_slice(&kek_id);
        raw.extend_from_slice(&wrap_nonce);
        let json = serde_json::to_vec(metadata)
            .map_err(|e| RecordingError::Crypto(format!("metadata: {e}")))?;
        let meta_len = json.len() + TAG_LEN;
        let header_len = HEADER_FIXED_LEN + meta_len;
        raw[12..16].copy_from_slice(&(header_len as u32).to_be_bytes());
        // The DEK is wrapped with AAD = header bytes 0..76 (everything before the wrap nonce).
        let mut wrapped = dek.to_vec();
        crypto::seal(kek, wrap_nonce, &raw[..76], &mut wrapped)?;
        raw.extend_from_slice(&wrapped);
        raw.extend_from_slice(&(meta_len as u32).to_be_bytes());
        debug_assert_eq!(raw.len(), HEADER_FIXED_LEN);
        let mut metadata_ct = json;
        crypto::seal(
            dek,
            METADATA_NONCE,
            &raw[..HEADER_FIXED_LEN],
            &mut metadata_ct,
        )?;
        raw.extend_from_slice(&metadata_ct);
        let mut wrapped_dek = [0u8; KEY_LEN + TAG_LEN];
        wrapped_dek.copy_from_slice(&wrapped);
        Ok(Self {
            major: VERSION_MAJOR,
            minor: VERSION_MINOR,
            recording_id,
            created_unix_us,
            kek_id,
            wrap_nonce,
            wrapped_dek,
            metadata_ct,
            raw,
        })
    }

    /// Reads and parses a header from the start of a file.
    pub(crate) fn read(r: &mut impl Read) -> Result<Self, RecordingError> {
        let mut fixed = [0u8; 16];
        read_exact_or(r, &mut fixed, || {
            RecordingError::NotARecording("file shorter than the header".into())
        })?;
        if fixed[..8] != MAGIC {
            return Err(RecordingError::NotARecording("bad magic".into()));
        }
        let major = u16::from_be_bytes([fixed[8], fixed[9]]);
        let minor = u16::from_be_bytes([fixed[10], fixed[11]]);
        if major != VERSION_MAJOR {
            return Err(RecordingError::UnsupportedVersion { major, minor });
        }
        let header_len = u32::from_be_bytes([fixed[12], fixed[13], fixed[14], fixed[15]]);
        if (header_len as usize) < HEADER_FIXED_LEN + TAG_LEN
            || header_len > MAX_METADATA_LEN + HEADER_FIXED_LEN as u32 + 4096
        {
            return Err(RecordingError::corrupt(12, "implausible header length"));
        }
        let mut raw = vec![0u8; header_len as usize];
        raw[..16].copy_from_slice(&fixed);
        read_exact_or(&mut *r, &mut raw[16..], || {
            RecordingError::corrupt(16, "file ends inside the header")
        })?;
        let recording_id = Id::from_bytes(arr(&raw[16..32]));
        let created_unix_us = u64::from_be_bytes(arr(&raw[32..40]));
        let algs = &raw[40..44];
        if algs != [ALG_AES_256_GCM, ALG_ZSTD, ALG_SHA_256, ALG_SSHSIG_ED25519] {
            return Err(RecordingError::corrupt(
                40,
                format!("unknown algorithm ids {algs:?}"),
            ));
        }
        let kek_id = arr(&raw[44..76]);
        let wrap_nonce = arr(&raw[76..88]);
        let wrapped_dek = arr(&raw[88..136]);
        let meta_len = u32::from_be_bytes(arr(&raw[136..140])) as usize;
        let meta_end = HEADER_FIXED_LEN
            .checked_add(meta_len)
            .filter(|end| *end <= raw.len() && meta_len >= TAG_LEN)
            .ok_or_else(|| RecordingError::corrupt(136, "metadata length out of range"))?;
        let metadata_ct = raw[HEADER_FIXED_LEN..meta_end].to_vec();
        Ok(Self {
            major,
            minor,
            recording_id,
            created_unix_us,
            kek_id,
            wrap_nonce,
            wrapped_dek,
            metadata_ct,
            raw,
        })
    }

    /// Length of the header in bytes (offset of the first record).
    pub(crate) fn len(&self) -> u64 {
        self.raw.len() as u64
    }

    /// h_0 of the hash chain.
    pub(crate) fn hash(&self) -> [u8; 32] {
        crypto::sha256(&[&self.raw])
    }

    /// Unwraps the data key with the KEK.
    pub(crate) fn unwrap_dek(&self, kek: &[u8; KEY_LEN]) -> Result<[u8; KEY_LEN], RecordingError> {
        let actual = crate::keys::kek_id(kek);
        if actual != self.kek_id {
            return Err(RecordingError::WrongKey {
                expected: hex::encode(&self.kek_id[..8]),
                actual: hex::encode(&actual[..8]),
            });
        }
        let mut dek = self.wrapped_dek.to_vec();
        if !crypto::open(kek, self.wrap_nonce, &self.raw[..76], &mut dek) {
            return Err(RecordingError::corrupt(88, "data key does not decrypt"));
        }
        Ok(arr(&dek))
    }

    /// Decrypts the metadata blob.
    pub(crate) fn metadata(&self, dek: &[u8; KEY_LEN]) -> Result<Metadata, RecordingError> {
        let mut m = self.metadata_ct.clone();
        if !crypto::open(dek, METADATA_NONCE, &self.raw[..HEADER_FIXED_LEN], &mut m) {
            return Err(RecordingError::corrupt(
                HEADER_FIXED_LEN as u64,
                "metadata does not decrypt (modified header)",
            ));
        }
        serde_json::from_slice(&m).map_err(|e| {
            RecordingError::corrupt(HEADER_FIXED_LEN as u64, format!("metadata JSON: {e}"))
        })
    }
}

/// The plaintext fixed fields of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Sequence number, from 0.
    pub seq: u64,
    /// Writer id (first 4 bytes of the nonce).
    pub writer: u32,
    /// Time of the first event (µs since recording start).
    pub first_time_us: u64,
    /// Time of the last event.
    pub last_time_us: u64,
    /// Number of events.
    pub event_count: u32,
    /// Uncompressed length of the serialized events.
    pub raw_len: u32,
    /// Flags ([`FLAG_KEYFRAME`]).
    pub flags: u32,
    /// Chain hash before this segment.
    pub prev_hash: [u8; 32],
}

impl SegmentHeader {
    /// Serializes the 77-byte segment header (record prefix included) for a ciphertext of
    /// `ct_len` bytes.
    pub(crate) fn encode(&self, ct_len: usize) -> [u8; SEGMENT_HEADER_LEN] {
        let mut h = [0u8; SEGMENT_HEADER_LEN];
        h[0] = REC_SEGMENT;
        h[1..5].copy_from_slice(&((SEGMENT_FIELDS_LEN + ct_len) as u32).to_be_bytes());
        h[5..13].copy_from_slice(&self.seq.to_be_bytes());
        h[13..17].copy_from_slice(&self.writer.to_be_bytes());
        h[17..25].copy_from_slice(&self.first_time_us.to_be_bytes());
        h[25..33].copy_from_slice(&self.last_time_us.to_be_bytes());
        h[33..37].copy_from_slice(&self.event_count.to_be_bytes());
        h[37..41].copy_from_slice(&self.raw_len.to_be_bytes());
        h[41..45].copy_from_slice(&self.flags.to_be_bytes());
        h[45..77].copy_from_slice(&self.prev_hash);
        h
    }

    /// Parses the fixed fields from a segment body.
    pub(crate) fn decode(body: &[u8]) -> Option<Self> {
        if body.len() < SEGMENT_FIELDS_LEN {
            return None;
        }
        Some(Self {
            seq: u64::from_be_bytes(arr(&body[0..8])),
            writer: u32::from_be_bytes(arr(&body[8..12])),
            first_time_us: u64::from_be_bytes(arr(&body[12..20])),
            last_time_us: u64::from_be_bytes(arr(&body[20..28])),
            event_count: u32::from_be_bytes(arr(&body[28..32])),
            raw_len: u32::from_be_bytes(arr(&body[32..36])),
            flags: u32::from_be_bytes(arr(&body[36..40])),
            prev_hash: arr(&body[40..72]),
        })
    }

    /// AEAD associated data: recording id followed by the segment header.
    pub(crate) fn aad(recording_id: Id, header: &[u8; SEGMENT_HEADER_LEN]) -> Vec<u8> {
        let mut aad = Vec::with_capacity(16 + SEGMENT_HEADER_LEN);
        aad.extend_from_slice(&recording_id.to_bytes());
        aad.extend_from_slice(header);
        aad
    }
}

/// The signed summary that seals a recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Recording id.
    pub recording_id: Id,
    /// SHA-256 of the file header (h_0).
    pub header_hash: [u8; 32],
    /// Number of records (segments) before the manifest.
    pub segment_count: u64,
    /// Chain hash after the last segment.
    pub final_hash: [u8; 32],
    /// Total number of events.
    pub event_count: u64,
    /// Total uncompressed bytes of serialized events.
    pub raw_bytes: u64,
    /// Time of the last event (µs since start).
    pub end_time_us: u64,
    /// Wall-clock sealing time, µs since the Unix epoch.
    pub end_unix_us: u64,
    /// Whether the recording was sealed by recovery after an interruption.
    pub interrupted: bool,
    /// Why the recording ended.
    pub end_reason: String,
    /// Keyframe index: (time µs, segment sequence number) of every keyframe segment.
    pub keyframes: Vec<(u64, u64)>,
}

const MANIFEST_MAGIC: &[u8; 16] = b"custos-manifest1";

impl Manifest {
    /// The exact bytes covered by the SSHSIG signature.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(160 + self.keyframes.len() * 16);
        b.extend_from_slice(MANIFEST_MAGIC);
        b.extend_from_slice(&self.recording_id.to_bytes());
        b.extend_from_slice(&self.header_hash);
        b.extend_from_slice(&self.segment_count.to_be_bytes());
        b.extend_from_slice(&self.final_hash);
        b.extend_from_slice(&self.event_count.to_be_bytes());
        b.extend_from_slice(&self.raw_bytes.to_be_bytes());
        b.extend_from_slice(&self.end_time_us.to_be_bytes());
        b.extend_from_slice(&self.end_unix_us.to_be_bytes());
        b.push(u8::from(self.interrupted));
        let reason = self.end_reason.as_bytes();
        let reason = &reason[..reason.len().min(u16::MAX as usize)];
        b.extend_from_slice(&(reason.len() as u16).to_be_bytes());
        b.extend_from_slice(reason);
        b.extend_from_slice(&(self.keyframes.len() as u32).to_be_bytes());
        for (t, s) in &self.keyframes {
            b.extend_from_slice(&t.to_be_bytes());
            b.extend_from_slice(&s.to_be_bytes());
        }
        b
    }

    /// Parses signed manifest bytes.
    pub fn parse(b: &[u8]) -> Option<Self> {
        let mut c = Take(b);
        if c.take(16)? != MANIFEST_MAGIC {
            return None;
        }
        let recording_id = Id::from_bytes(arr(c.take(16)?));
        let header_hash = arr(c.take(32)?);
        let segment_count = c.u64()?;
        let final_hash = arr(c.take(32)?);
        let event_count = c.u64()?;
        let raw_bytes = c.u64()?;
        let end_time_us = c.u64()?;
        let end_unix_us = c.u64()?;
        let interrupted = c.take(1)?[0] != 0;
        let rlen = u16::from_be_bytes(arr(c.take(2)?)) as usize;
        let end_reason = String::from_utf8_lossy(c.take(rlen)?).into_owned();
        let n = u32::from_be_bytes(arr(c.take(4)?)) as usize;
        if n > c.0.len() / 16 {
            return None;
        }
        let mut keyframes = Vec::with_capacity(n);
        for _ in 0..n {
            keyframes.push((c.u64()?, c.u64()?));
        }
        // Later minor versions may append fields; they are covered by the signature.
        Some(Self {
            recording_id,
            header_hash,
            segment_count,
            final_hash,
            event_count,
            raw_bytes,
            end_time_us,
            end_unix_us,
            interrupted,
            end_reason,
            keyframes,
        })
    }

    /// Serializes the manifest record: prefix, signed bytes and the SSHSIG PEM armor.
    pub(crate) fn encode_record(signed: &[u8], sig_pem: &str) -> Vec<u8> {
        let body_len = 4 + signed.len() + 4 + sig_pem.len();
        let mut r = Vec::with_capacity(RECORD_PREFIX_LEN + body_len);
        r.push(REC_MANIFEST);
        r.extend_from_slice(&(body_len as u32).to_be_bytes());
        r.extend_from_slice(&(signed.len() as u32).to_be_bytes());
        r.extend_from_slice(signed);
        r.extend_from_slice(&(sig_pem.len() as u32).to_be_bytes());
        r.extend_from_slice(sig_pem.as_bytes());
        r
    }

    /// Splits a manifest record body into signed bytes and the signature armor.
    pub(crate) fn split_record(body: &[u8]) -> Option<(&[u8], &[u8])> {
        let mut c = Take(body);
        let n = u32::from_be_bytes(arr(c.take(4)?)) as usize;
        let signed = c.take(n)?;
        let m = u32::from_be_bytes(arr(c.take(4)?)) as usize;
        let sig = c.take(m)?;
        if !c.0.is_empty() {
            return None;
        }
        Some((signed, sig))
    }
}

struct Take<'a>(&'a [u8]);

impl<'a> Take<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(arr(self.take(8)?)))
    }
}

/// Copies a slice of known length into an array. Callers pass slices of exactly `N` bytes;
/// a shorter slice leaves the rest zeroed instead of panicking.
pub(crate) fn arr<const N: usize>(s: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    let n = s.len().min(N);
    a[..n].copy_from_slice(&s[..n]);
    a
}

fn read_exact_or(
    r: &mut impl Read,
    buf: &mut [u8],
    short: impl FnOnce() -> RecordingError,
) -> Result<(), RecordingError> {
    match r.read_exact(buf) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(short()),
        Err(e) => Err(RecordingError::Crypto(format!("read error: {e}"))),
    }
}

/// One record found while scanning a file.
#[derive(Debug, Clone)]
pub(crate) struct RawRecord {
    /// Offset of the record's type byte.
    pub offset: u64,
    /// Record type.
    pub rtype: u8,
    /// Record body.
    pub body: Vec<u8>,
}

/// Outcome of reading the next record.
pub(crate) enum Next {
    /// A complete record.
    Record(RawRecord),
    /// Clean end of file.
    End,
    /// The file ends inside a record starting at `offset`.
    Partial { offset: u64 },
}

/// Reads records one by one from `r`, which is positioned at `offset`.
pub(crate) fn next_record(r: &mut impl Read, offset: u64) -> io::Result<Next> {
    let mut prefix = [0u8; RECORD_PREFIX_LEN];
    let got = read_full(r, &mut prefix)?;
    if got == 0 {
        return Ok(Next::End);
    }
    if got < RECORD_PREFIX_LEN {
        return Ok(Next::Partial { offset });
    }
    let rtype = prefix[0];
    let len = u32::from_be_bytes(arr(&prefix[1..5]));
    if len > MAX_RECORD_LEN {
        return Ok(Next::Partial { offset });
    }
    let mut body = Vec::new();
    let got = r.take(u64::from(len)).read_to_end(&mut body)?;
    if got < len as usize {
        return Ok(Next::Partial { offset });
    }
    Ok(Next::Record(RawRecord {
        offset,
        rtype,
        body,
    }))
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
