//! Reading recordings: metadata, events and keyframe-based seeking.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;

use custos_core::Id;
use custos_term::Terminal;

use crate::crypto::KEY_LEN;
use crate::error::RecordingError;
use crate::event::{Event, EventKind};
use crate::format::{
    FLAG_KEYFRAME, FileHeader, MAX_RECORD_LEN, Manifest, Metadata, REC_MANIFEST, REC_SEGMENT,
    RECORD_PREFIX_LEN, RawRecord, SEGMENT_FIELDS_LEN, SegmentHeader, arr,
};
use crate::verify::decrypt_segment;

/// Location and header of one segment, found by scanning without decrypting.
#[derive(Debug, Clone, Copy)]
pub struct SegmentInfo {
    /// Byte offset of the record.
    pub offset: u64,
    /// Record body length.
    pub body_len: u32,
    /// The plaintext segment header.
    pub header: SegmentHeader,
}

/// An open recording.
pub struct Reader {
    file: File,
    header: FileHeader,
    dek: [u8; KEY_LEN],
    metadata: Metadata,
    segments: Vec<SegmentInfo>,
    manifest: Option<Manifest>,
    clean_end: bool,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("recording_id", &self.header.recording_id)
            .field("segments", &self.segments.len())
            .field("sealed", &self.manifest.is_some())
            .finish_non_exhaustive()
    }
}

impl Reader {
    /// Opens a recording with its keys: unwraps the data key, decrypts the metadata and scans
    /// segment headers (no decryption). Stops cleanly at a partial or damaged tail.
    /// The manifest signature is not checked here; use [`crate::verify`] for that.
    pub fn open(path: &Path, keys: &crate::RecordingKeys) -> Result<Self, RecordingError> {
        let io = |e| RecordingError::io(path, e);
        let file = File::open(path).map_err(io)?;
        let mut r = BufReader::new(&file);
        let header = FileHeader::read(&mut r)?;
        let dek = header.unwrap_dek(keys.kek())?;
        let metadata = header.metadata(&dek)?;
        let mut offset = header.len();
        let mut segments = Vec::new();
        let mut manifest = None;
        let mut clean_end = false;
        r.seek(SeekFrom::Start(offset)).map_err(io)?;
        let file_len = file.metadata().map_err(io)?.len();
        loop {
            let mut prefix = [0u8; RECORD_PREFIX_LEN + SEGMENT_FIELDS_LEN];
            let got = read_up_to(&mut r, &mut prefix[..RECORD_PREFIX_LEN]).map_err(io)?;
            if got == 0 {
                clean_end = true;
                break;
            }
            if got < RECORD_PREFIX_LEN {
                break;
            }
            let rtype = prefix[0];
            let len = u32::from_be_bytes(arr(&prefix[1..5]));
            if len > MAX_RECORD_LEN {
                break;
            }
            match rtype {
                REC_SEGMENT => {
                    if (len as usize) < SEGMENT_FIELDS_LEN {
                        break;
                    }
                    let got = read_up_to(&mut r, &mut prefix[RECORD_PREFIX_LEN..]).map_err(io)?;
                    if got < SEGMENT_FIELDS_LEN {
                        break;
                    }
                    let Some(h) = SegmentHeader::decode(&prefix[RECORD_PREFIX_LEN..]) else {
                        break;
                    };
                    let skip = i64::from(len) - SEGMENT_FIELDS_LEN as i64;
                    r.seek_relative(skip).map_err(io)?;
                    let end = offset + (RECORD_PREFIX_LEN as u64) + u64::from(len);
                    if end > file_len {
                        break;
                    }
                    // Only consecutive sequence numbers are readable in order.
                    if h.seq != segments.len() as u64 {
                        break;
                    }
                    segments.push(SegmentInfo {
                        offset,
                        body_len: len,
                        header: h,
                    });
                    offset = end;
                }
                REC_MANIFEST => {
                    let mut body = vec![0u8; len as usize];
                    if read_up_to(&mut r, &mut body).map_err(io)? < body.len() {
                        break;
                    }
                    manifest = Manifest::split_record(&body).and_then(|(s, _)| Manifest::parse(s));
                    clean_end = true;
                    break;
                }
                _ => break,
            }
        }
        Ok(Self {
            file,
            header,
            dek,
            metadata,
            segments,
            manifest,
            clean_end,
        })
    }

    /// Session metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// Recording id.
    pub fn recording_id(&self) -> Id {
        self.header.recording_id
    }

    /// Format version `(major, minor)` of the file.
    pub fn format_version(&self) -> (u16, u16) {
        (self.header.major, self.header.minor)
    }

    /// Creation time, µs since the Unix epoch. Event times are relative to it.
    pub fn created_unix_us(&self) -> u64 {
        self.header.created_unix_us
    }

    /// The manifest, if the recording is sealed (signature not checked here).
    pub fn manifest(&self) -> Option<&Manifest> {
        self.manifest.as_ref()
    }

    /// Whether the file ended cleanly (sealed, or unsealed with no partial tail).
    pub fn clean_end(&self) -> bool {
        self.clean_end
    }

    /// Segment headers found by the scan.
    pub fn segments(&self) -> &[SegmentInfo] {
        &self.segments
    }

    /// Time of the last event, µs since start.
    pub fn duration_us(&self) -> u64 {
        self.segments
            .iter()
            .map(|s| s.header.last_time_us)
            .max()
            .unwrap_or(0)
    }

    /// Decrypts and decodes one segment.
    pub fn segment_events(&self, index: usize) -> Result<Vec<Event>, RecordingError> {
        let info = self
            .segments
            .get(index)
            .ok_or_else(|| RecordingError::corrupt(0, format!("no segment {index}")))?;
        let mut body = vec![0u8; info.body_len as usize];
        self.file
            .read_exact_at(&mut body, info.offset + RECORD_PREFIX_LEN as u64)
            .map_err(|e| RecordingError::corrupt(info.offset, format!("read failed: {e}")))?;
        let rec = RawRecord {
            offset: info.offset,
            rtype: REC_SEGMENT,
            body,
        };
        decrypt_segment(&self.header, &self.dek, &rec)
            .map(|(_, events)| events)
            .map_err(|reason| RecordingError::corrupt(info.offset, reason))
    }

    /// All events in order. Stops with an error at a segment that fails to decrypt.
    pub fn events(&self) -> Events<'_> {
        self.events_from(0)
    }

    /// Events starting at segment `index`.
    pub fn events_from(&self, index: usize) -> Events<'_> {
        Events {
            reader: self,
            next_segment: index,
            buffered: VecDeque::new(),
            failed: false,
        }
    }

    /// Screen state at `time_us` and the events from then on. Starts from the last keyframe
    /// segment at or before `time_us` (found from the plaintext segment headers), so it does
    /// not replay the recording from the beginning.
    pub fn seek(&self, time_us: u64) -> Result<SeekResult<'_>, RecordingError> {
        let start = self
            .segments
            .iter()
            .rposition(|s| s.header.flags & FLAG_KEYFRAME != 0 && s.header.first_time_us <= time_us)
            .unwrap_or(0);
        let mut screens: BTreeMap<u32, Terminal> = BTreeMap::new();
        let mut events = self.events_from(start);
        let mut first_remaining = None;
        for ev in events.by_ref() {
            let ev = ev?;
            // A keyframe describes the screen just before the events at its time, so it
            // applies even when it is stamped exactly at `time_us`.
            if ev.time_us >= time_us && !matches!(ev.kind, EventKind::Keyframe { .. }) {
                first_remaining = Some(ev);
                break;
            }
            apply_to_screens(&mut screens, &ev);
        }
        if let Some(ev) = first_remaining {
            events.buffered.push_front(ev);
        }
        Ok(SeekResult {
            time_us,
            screens,
            remaining: events,
        })
    }
}

/// Updates per-channel screens with one event (PTY requests, resizes, output, keyframes).
pub fn apply_to_screens(screens: &mut BTreeMap<u32, Terminal>, ev: &Event) {
    match &ev.kind {
        EventKind::PtyRequest { cols, rows, .. } => {
            screens.insert(ev.channel, Terminal::new(*cols, *rows));
        }
        EventKind::Keyframe { cols, rows, screen } => {
            let mut t = Terminal::new(*cols, *rows);
            t.feed_str(screen);
            screens.insert(ev.channel, t);
        }
        EventKind::Resize { cols, rows } => {
            if let Some(t) = screens.get_mut(&ev.channel) {
                t.resize(*cols, *rows);
            }
        }
        EventKind::Output(b) | EventKind::Stderr(b) => {
            if let Some(t) = screens.get_mut(&ev.channel) {
                t.feed(b);
            }
        }
        EventKind::ChannelClose => {
            screens.remove(&ev.channel);
        }
        _ => {}
    }
}

/// The result of [`Reader::seek`].
pub struct SeekResult<'a> {
    /// The time sought.
    pub time_us: u64,
    /// Screen of every PTY channel open at that time.
    pub screens: BTreeMap<u32, Terminal>,
    /// Events at or after `time_us`.
    pub remaining: Events<'a>,
}

/// Iterator over the events of a recording.
pub struct Events<'a> {
    reader: &'a Reader,
    next_segment: usize,
    buffered: VecDeque<Event>,
    failed: bool,
}

impl Iterator for Events<'_> {
    type Item = Result<Event, RecordingError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(ev) = self.buffered.pop_front() {
                return Some(Ok(ev));
            }
            if self.failed || self.next_segment >= self.reader.segments.len() {
                return None;
            }
            match self.reader.segment_events(self.next_segment) {
                Ok(evs) => {
                    self.buffered = evs.into();
                    self.next_segment += 1;
                }
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
