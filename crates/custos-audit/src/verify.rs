//! Verification of a stored audit log: walks the events in sequence order, recomputes the
//! chain, checks every checkpoint signature and head, and names the first problem.
//!
//! What each finding means (the verifier classifies what it sees; an attacker who controls the
//! database can make one kind of tampering look like another, but never like no tampering,
//! except in the unsigned tail):
//!
//! - **altered**: an event's bytes do not match its hash; or an indexed column (id, time,
//!   action, user, session) differs from the hashed document; or an event was changed and
//!   its hash recomputed, so the next event's link no longer matches;
//! - **deleted**: a sequence number is missing; or events were renumbered to close the gap
//!   (their documents still carry their original `custos.seq`); or a checkpoint signs events
//!   beyond the end of the log;
//! - **inserted**: a row sits between two events that link to each other directly;
//! - **reordered**: an event's document says it belongs at another position;
//! - **rewritten**: the chain is consistent but a checkpoint signed a different head, so events
//!   since the previous good checkpoint were changed and every later hash recomputed;
//! - **bad checkpoint**: a checkpoint is malformed or its signature does not verify with any
//!   trusted key.
//!
//! Limit: events after the last checkpoint (the *unsigned tail*, reported) are protected by
//! the chain only; deleting the tail together with nothing else cannot be detected from the
//! database alone. Checkpoints shipped elsewhere (a SIEM, an auditor's copy) close that gap.

use crate::AuditError;
use crate::chain::{Checkpoint, GENESIS_HASH, link_hash};
use crate::document::{Document, format_micros};
use custos_store::{AuditRow, AuditStore, CheckpointRow};
use ssh_key::PublicKey;
use std::collections::VecDeque;
use std::fmt;

/// How many recent hashes are remembered to recognise inserted rows.
const RECENT: usize = 1024;
/// Events read per page by [`verify_store`].
const PAGE: u32 = 5000;

/// The first problem found in an audit log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tamper {
    /// Event `seq` was changed.
    Altered {
        /// The event.
        seq: u64,
        /// What gave it away.
        detail: String,
    },
    /// Event `seq` (and possibly more after it) is gone.
    Deleted {
        /// The first missing event.
        seq: u64,
        /// What gave it away.
        detail: String,
    },
    /// The row at position `seq` does not belong to the chain.
    Inserted {
        /// The position of the first foreign row.
        seq: u64,
        /// What gave it away.
        detail: String,
    },
    /// Event `seq` was found at another position.
    Reordered {
        /// The event, by the sequence number in its document.
        seq: u64,
        /// Where it is stored.
        found_at: u64,
    },
    /// The chain from `from` to `to` is self-consistent but not the one the checkpoint at `to`
    /// signed.
    Rewritten {
        /// The first event after the last good checkpoint.
        from: u64,
        /// The checkpoint that does not match.
        to: u64,
    },
    /// The checkpoint at `seq` is not valid.
    BadCheckpoint {
        /// The event the checkpoint claims to sign.
        seq: u64,
        /// Why.
        reason: String,
    },
}

impl Tamper {
    /// The sequence number the finding names.
    pub fn seq(&self) -> u64 {
        match self {
            Tamper::Altered { seq, .. }
            | Tamper::Deleted { seq, .. }
            | Tamper::Inserted { seq, .. }
            | Tamper::Reordered { seq, .. }
            | Tamper::BadCheckpoint { seq, .. } => *seq,
            Tamper::Rewritten { from, .. } => *from,
        }
    }

    /// One word for the kind of finding: `altered`, `deleted`, `inserted`, `reordered`,
    /// `rewritten` or `bad-checkpoint`.
    pub fn kind(&self) -> &'static str {
        match self {
            Tamper::Altered { .. } => "altered",
            Tamper::Deleted { .. } => "deleted",
            Tamper::Inserted { .. } => "inserted",
            Tamper::Reordered { .. } => "reordered",
            Tamper::Rewritten { .. } => "rewritten",
            Tamper::BadCheckpoint { .. } => "bad-checkpoint",
        }
    }
}

impl fmt::Display for Tamper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tamper::Altered { seq, detail } => write!(f, "event {seq} was altered: {detail}"),
            Tamper::Deleted { seq, detail } => write!(f, "event {seq} was deleted: {detail}"),
            Tamper::Inserted { seq, detail } => {
                write!(f, "the event at position {seq} was inserted: {detail}")
            }
            Tamper::Reordered { seq, found_at } => write!(
                f,
                "event {seq} was reordered: it is stored at position {found_at}"
            ),
            Tamper::Rewritten { from, to } => write!(
                f,
                "events {from} to {to} were rewritten: the checkpoint at {to} signed a \
                 different chain head, so an event in that range was altered, inserted or \
                 deleted and the later hashes recomputed"
            ),
            Tamper::BadCheckpoint { seq, reason } => {
                write!(f, "the checkpoint at event {seq} is bad: {reason}")
            }
        }
    }
}

/// What a successful verification saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// Events checked.
    pub events: u64,
    /// The last event's sequence number (0 for an empty log).
    pub head_seq: u64,
    /// The last event's hash.
    pub head_hash: Option<[u8; 32]>,
    /// Checkpoints whose signature and head were verified.
    pub checkpoints: u64,
    /// The newest verified checkpoint.
    pub last_checkpoint: Option<u64>,
    /// Events after the newest checkpoint: covered by the chain, not yet by a signature.
    pub unsigned: u64,
}

/// A row whose document claims a later position than the one it is stored at: either the
/// events in between were deleted (and the rest renumbered), or they were moved later. Which
/// one is known only once the rest of the log has been seen.
#[derive(Clone, Copy, Debug)]
struct Misplaced {
    at: u64,
    claimed: u64,
}

/// Checks an audit log fed row by row in sequence order (from event 1), against the
/// checkpoints given up front.
pub struct ChainVerifier {
    trusted: Vec<PublicKey>,
    checkpoints: VecDeque<CheckpointRow>,
    next: u64,
    prev: [u8; 32],
    recent: VecDeque<(u64, [u8; 32])>,
    misplaced: Option<Misplaced>,
    last_good_checkpoint: u64,
    checkpoints_ok: u64,
}

impl ChainVerifier {
    /// A verifier that accepts checkpoints signed by any of `trusted` (several keys when the
    /// signing key was rotated).
    pub fn new(trusted: Vec<PublicKey>, mut checkpoints: Vec<CheckpointRow>) -> ChainVerifier {
        checkpoints.sort_by_key(|c| c.seq);
        ChainVerifier {
            trusted,
            checkpoints: checkpoints.into(),
            next: 1,
            prev: GENESIS_HASH,
            recent: VecDeque::with_capacity(RECENT),
            misplaced: None,
            last_good_checkpoint: 0,
            checkpoints_ok: 0,
        }
    }

    /// Checks the next row. After the first error the verifier should not be fed more.
    pub fn push(&mut self, row: &AuditRow) -> Result<(), Tamper> {
        if let Some(m) = self.misplaced {
            // Only look for the events that were missing at `m.at`.
            if let Some(d) = Document::parse(&row.doc)
                .ok()
                .and_then(|d| d.u64("custos.seq"))
                && (m.at..m.claimed).contains(&d)
            {
                return Err(Tamper::Reordered {
                    seq: d,
                    found_at: row.seq,
                });
            }
            return Ok(());
        }
        let seq = row.seq;
        if seq != self.next {
            return Err(if seq > self.next {
                Tamper::Deleted {
                    seq: self.next,
                    detail: gap(self.next, seq),
                }
            } else {
                Tamper::Reordered {
                    seq,
                    found_at: self.next,
                }
            });
        }
        if let Some(cp) = self.checkpoints.front()
            && cp.seq < seq
        {
            return Err(Tamper::BadCheckpoint {
                seq: cp.seq,
                reason: "it names no event of the log".into(),
            });
        }
        let altered = |detail: String| Tamper::Altered { seq, detail };
        let Ok(hash) = <[u8; 32]>::try_from(row.hash.as_slice()) else {
            return Err(altered(format!(
                "its hash has {} bytes, not 32",
                row.hash.len()
            )));
        };
        if row.prev_hash.len() != 32 {
            return Err(altered(format!(
                "its link has {} bytes, not 32",
                row.prev_hash.len()
            )));
        }
        if link_hash(&row.prev_hash, row.doc.as_bytes()) != hash {
            return Err(altered("its content does not match its hash".into()));
        }
        let doc = Document::parse(&row.doc).map_err(|e| altered(e.to_string()))?;
        check_columns(row, &doc).map_err(altered)?;
        let Some(claimed) = doc.u64("custos.seq") else {
            return Err(altered("its document has no custos.seq".into()));
        };
        if claimed > seq {
            self.misplaced = Some(Misplaced { at: seq, claimed });
            return Ok(());
        }
        let links_to = self.position_of(&row.prev_hash);
        if claimed < seq {
            return Err(match links_to {
                Some(q) if q + 1 < seq => inserted(q, seq),
                _ => Tamper::Reordered {
                    seq: claimed,
                    found_at: seq,
                },
            });
        }
        if row.prev_hash != self.prev {
            return Err(match links_to {
                Some(q) if q + 1 < seq => inserted(q, seq),
                _ if seq == 1 => {
                    altered("the first event does not start from the zero hash".into())
                }
                _ => Tamper::Altered {
                    seq: seq - 1,
                    detail: format!(
                        "event {seq} links to a different hash, so event {} was changed and \
                         its hash recomputed (or the link stored in event {seq} was changed)",
                        seq - 1
                    ),
                },
            });
        }
        if let Some(cp) = self.checkpoints.front()
            && cp.seq == seq
        {
            let cp = self
                .checkpoints
                .pop_front()
                .unwrap_or_else(|| unreachable!());
            let signed = Checkpoint::verify_row(&cp, &self.trusted)
                .map_err(|reason| Tamper::BadCheckpoint { seq, reason })?;
            if signed.head_hash != hash {
                return Err(Tamper::Rewritten {
                    from: self.last_good_checkpoint + 1,
                    to: seq,
                });
            }
            self.last_good_checkpoint = seq;
            self.checkpoints_ok += 1;
        }
        self.prev = hash;
        self.next = seq + 1;
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back((seq, hash));
        Ok(())
    }

    /// Ends the walk: reports what is still unresolved, or the summary.
    pub fn finish(self) -> Result<VerifyReport, Tamper> {
        if let Some(m) = self.misplaced {
            return Err(Tamper::Deleted {
                seq: m.at,
                detail: format!(
                    "the event stored at position {} says it is event {}; events {} to {} are \
                     gone and the later ones were renumbered",
                    m.at,
                    m.claimed,
                    m.at,
                    m.claimed - 1
                ),
            });
        }
        let head_seq = self.next - 1;
        if let Some(cp) = self.checkpoints.front() {
            return Err(Tamper::Deleted {
                seq: self.next,
                detail: format!(
                    "the log ends at event {head_seq} but a checkpoint signs event {}",
                    cp.seq
                ),
            });
        }
        Ok(VerifyReport {
            events: head_seq,
            head_seq,
            head_hash: (head_seq > 0).then_some(self.prev),
            checkpoints: self.checkpoints_ok,
            last_checkpoint: (self.last_good_checkpoint > 0).then_some(self.last_good_checkpoint),
            unsigned: head_seq - self.last_good_checkpoint,
        })
    }

    fn position_of(&self, hash: &[u8]) -> Option<u64> {
        if hash == GENESIS_HASH {
            return Some(0);
        }
        self.recent
            .iter()
            .rev()
            .find(|(_, h)| h.as_slice() == hash)
            .map(|(s, _)| *s)
    }
}

fn inserted(links_to: u64, seq: u64) -> Tamper {
    let foreign = if links_to + 2 == seq {
        format!("the row stored at {} does not", links_to + 1)
    } else {
        format!("the rows stored at {} to {} do not", links_to + 1, seq - 1)
    };
    Tamper::Inserted {
        seq: links_to + 1,
        detail: format!(
            "event {seq} links directly to event {links_to}, so {foreign} belong to the chain"
        ),
    }
}

fn gap(next: u64, found: u64) -> String {
    let from = if next == 1 {
        "the log starts at".to_string()
    } else {
        format!("the log jumps from event {} to", next - 1)
    };
    if found - next == 1 {
        format!("{from} event {found}")
    } else {
        format!(
            "{from} event {found} (events {next} to {} are missing)",
            found - 1
        )
    }
}

/// The indexed columns must say what the hashed document says; otherwise searches could be
/// misled without touching the chain.
fn check_columns(row: &AuditRow, doc: &Document) -> Result<(), String> {
    let differs = |column: &str, stored: Option<&str>, hashed: Option<&str>| {
        format!(
            "its {column} column says {} but the hashed document says {}",
            show(stored),
            show(hashed)
        )
    };
    if doc.str("event.id") != Some(row.id.as_str()) {
        return Err(differs("event_id", Some(&row.id), doc.str("event.id")));
    }
    let at = format_micros(row.at_us);
    if doc.str("@timestamp") != at.as_deref() {
        return Err(differs("at_us", at.as_deref(), doc.str("@timestamp")));
    }
    if doc.str("event.action") != Some(row.action.as_str()) {
        return Err(differs(
            "action",
            Some(&row.action),
            doc.str("event.action"),
        ));
    }
    if doc.str("user.name") != row.user.as_deref() {
        return Err(differs(
            "user_name",
            row.user.as_deref(),
            doc.str("user.name"),
        ));
    }
    if doc.str("custos.session.id") != row.session.as_deref() {
        return Err(differs(
            "session_id",
            row.session.as_deref(),
            doc.str("custos.session.id"),
        ));
    }
    Ok(())
}

fn show(v: Option<&str>) -> String {
    match v {
        Some(s) => format!("'{s}'"),
        None => "nothing".into(),
    }
}

/// Verifies rows (in sequence order, from event 1) against checkpoints.
pub fn verify_rows<'a>(
    rows: impl IntoIterator<Item = &'a AuditRow>,
    checkpoints: Vec<CheckpointRow>,
    trusted: &[PublicKey],
) -> Result<VerifyReport, Tamper> {
    let mut v = ChainVerifier::new(trusted.to_vec(), checkpoints);
    for r in rows {
        v.push(r)?;
    }
    v.finish()
}

/// Verifies the whole log in `store`, reading it page by page. Tampering is
/// [`AuditError::Tampered`].
pub async fn verify_store(
    store: &AuditStore,
    trusted: &[PublicKey],
) -> Result<VerifyReport, AuditError> {
    let mut checkpoints = Vec::new();
    loop {
        let after = checkpoints.last().map_or(0, |c: &CheckpointRow| c.seq);
        let page = store.checkpoints(after, PAGE).await?;
        let done = page.len() < PAGE as usize;
        checkpoints.extend(page);
        if done {
            break;
        }
    }
    let mut v = ChainVerifier::new(trusted.to_vec(), checkpoints);
    let mut after = 0;
    let mut stopped = false;
    while !stopped {
        let page = store.after(after, PAGE).await?;
        stopped = page.len() < PAGE as usize;
        for r in &page {
            v.push(r).map_err(AuditError::Tampered)?;
            after = r.seq;
        }
    }
    v.finish().map_err(AuditError::Tampered)
}
