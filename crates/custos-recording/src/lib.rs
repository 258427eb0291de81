//! The recording format: writer, reader, integrity, export, playback.
//!
//! A recording is one append-only file: a plaintext header (with the wrapped data key and the
//! encrypted session metadata), then zstd-compressed, AES-256-GCM-encrypted, hash-chained
//! segments of events, then a manifest signed as an OpenSSH SSHSIG. `docs/recording-format.md`
//! specifies the bytes.
//!
//! - [`Recorder`] / [`RecorderHandle`]: the asynchronous writer the gateway feeds, and the
//!   live [`Watch`] of a recording in progress.
//! - [`verify()`]: integrity from the file and the public key alone; [`recover()`] seals a
//!   recording interrupted by a crash.
//! - [`Reader`]: events, metadata and keyframe-based seeking.
//! - [`export`]: asciicast v2/v3, text transcript, JSON lines; [`play`]: terminal playback.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod crypto;
mod error;
mod event;
pub mod export;
mod format;
mod keys;
pub mod play;
mod reader;
mod recorder;
mod verify;
mod writer;

pub use error::RecordingError;
pub use event::{DecodeError, Event, EventKind};
pub use format::{
    FLAG_KEYFRAME, MAGIC, Manifest, Metadata, SIGNATURE_NAMESPACE, SegmentHeader, VERSION_MAJOR,
    VERSION_MINOR,
};
pub use keys::{KEK_FILE, RecordingKeys, SIGNING_FILE, SIGNING_PUB_FILE, load_public_key};
pub use reader::{Events, Reader, SeekResult, SegmentInfo, apply_to_screens};
pub use recorder::{
    MAX_WATCHERS, Recorder, RecorderConfig, RecorderHandle, RecordingFailed, Screen, Watch,
    WatchEnd, WatchEvent, WatchRefused,
};
pub use verify::{
    RecoverReport, VerifyError, VerifyReport, manifest_signature, recover, verify, verify_with_keys,
};
pub use writer::Summary;

/// Re-exported so callers can name the verifying key type.
pub use ssh_key::PublicKey;
