//! The hash chain and its checkpoints.
//!
//! Event `n` (n ≥ 1) is stored with `prev_hash` = the hash of event `n − 1` (32 zero bytes for
//! event 1) and `hash = SHA-256(prev_hash || canonical document bytes)`; the document contains
//! `custos.seq = n`. A checkpoint signs the chain head — the text message of
//! [`Checkpoint::message`] — as an OpenSSH SSHSIG in namespace [`CHECKPOINT_NAMESPACE`], so
//! `ssh-keygen -Y verify` can check it with nothing but the public key.

use crate::AuditError;
use crate::document::format_micros;
use crate::event::AuditEvent;
use crate::keys::AuditKey;
use aws_lc_rs::digest;
use custos_store::{AuditRow, CheckpointRow};
use ssh_key::{HashAlg, LineEnding, PublicKey, SshSig};
use time::OffsetDateTime;

/// The `prev_hash` of the first event.
pub const GENESIS_HASH: [u8; 32] = [0; 32];

/// SSHSIG namespace of checkpoint signatures.
pub const CHECKPOINT_NAMESPACE: &str = "custos-audit@v1";

/// First line of every checkpoint message.
const MESSAGE_MAGIC: &str = "custos-audit-checkpoint v1";

/// SHA-256(`prev_hash` || `doc`): the hash of an event in the chain.
pub fn link_hash(prev_hash: &[u8], doc: &[u8]) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(prev_hash);
    ctx.update(doc);
    let d = ctx.finish();
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Builds the stored row of `event` at position `seq`, after the event whose hash is
/// `prev_hash`.
pub fn chain_row(event: &AuditEvent, seq: u64, prev_hash: &[u8; 32]) -> AuditRow {
    let doc = event.canonical(seq);
    let hash = link_hash(prev_hash, doc.as_bytes());
    AuditRow {
        seq,
        id: event.id.to_string(),
        at_us: micros(event.time),
        action: event.action(),
        user: event.user.clone(),
        session: event.session.map(|s| s.to_string()),
        doc,
        prev_hash: prev_hash.to_vec(),
        hash: hash.to_vec(),
    }
}

/// What a checkpoint signs: the chain head at `seq` and when it was signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The last event covered.
    pub seq: u64,
    /// That event's hash.
    pub head_hash: [u8; 32],
    /// When the checkpoint was made, microseconds since the Unix epoch.
    pub at_us: i64,
}

impl Checkpoint {
    /// A checkpoint of `head_hash` at `seq`, made now.
    pub fn now(seq: u64, head_hash: [u8; 32]) -> Checkpoint {
        Checkpoint {
            seq,
            head_hash,
            at_us: micros(OffsetDateTime::now_utc()),
        }
    }

    /// The exact bytes that are signed: four LF-terminated ASCII lines.
    ///
    /// ```text
    /// custos-audit-checkpoint v1
    /// seq 1000
    /// head 5d41402abc4b2a76b9719d911017c592ae6d1e9c2c2f1e3b8a7f0e4d3c2b1a09
    /// time 2026-11-03T10:00:05.000000Z
    /// ```
    pub fn message(&self) -> String {
        let time = format_micros(self.at_us).unwrap_or_else(|| self.at_us.to_string());
        format!(
            "{MESSAGE_MAGIC}\nseq {}\nhead {}\ntime {time}\n",
            self.seq,
            hex::encode(self.head_hash)
        )
    }

    /// Reads a message written by [`Checkpoint::message`].
    pub fn parse_message(text: &str) -> Option<Checkpoint> {
        let mut lines = text.strip_suffix('\n')?.split('\n');
        if lines.next()? != MESSAGE_MAGIC {
            return None;
        }
        let seq = lines.next()?.strip_prefix("seq ")?.parse().ok()?;
        let head = hex::decode(lines.next()?.strip_prefix("head ")?).ok()?;
        let time = crate::document::parse_time(lines.next()?.strip_prefix("time ")?)?;
        if lines.next().is_some() {
            return None;
        }
        Some(Checkpoint {
            seq,
            head_hash: head.try_into().ok()?,
            at_us: micros(time),
        })
    }

    /// Signs the message and returns the row to store.
    pub fn sign(&self, key: &AuditKey) -> Result<CheckpointRow, AuditError> {
        let sig = key
            .private()
            .sign(
                CHECKPOINT_NAMESPACE,
                HashAlg::Sha512,
                self.message().as_bytes(),
            )
            .map_err(|e| AuditError::Sign(e.to_string()))?;
        let armored = sig
            .to_pem(LineEnding::LF)
            .map_err(|e| AuditError::Sign(e.to_string()))?;
        Ok(CheckpointRow {
            seq: self.seq,
            head_hash: self.head_hash.to_vec(),
            at_us: self.at_us,
            signature: armored,
        })
    }

    /// Checks a stored checkpoint: well-formed, and signed in [`CHECKPOINT_NAMESPACE`] by one
    /// of `trusted` keys. Returns the checkpoint, or why it fails.
    pub fn verify_row(row: &CheckpointRow, trusted: &[PublicKey]) -> Result<Checkpoint, String> {
        let head_hash: [u8; 32] = row
            .head_hash
            .as_slice()
            .try_into()
            .map_err(|_| format!("its head hash has {} bytes, not 32", row.head_hash.len()))?;
        if format_micros(row.at_us).is_none() {
            return Err(format!("its time {} is out of range", row.at_us));
        }
        let cp = Checkpoint {
            seq: row.seq,
            head_hash,
            at_us: row.at_us,
        };
        let sig = SshSig::from_pem(row.signature.as_bytes())
            .map_err(|e| format!("its signature is not an SSH signature: {e}"))?;
        let Some(key) = trusted.iter().find(|k| k.key_data() == sig.public_key()) else {
            let who = PublicKey::from(sig.public_key().clone()).fingerprint(HashAlg::Sha256);
            return Err(format!("it is signed by {who}, which is not a trusted key"));
        };
        key.verify(CHECKPOINT_NAMESPACE, cp.message().as_bytes(), &sig)
            .map_err(|_| "its signature does not verify".to_string())?;
        Ok(cp)
    }
}

/// The two files an auditor needs for `ssh-keygen -Y verify` (docs/audit-events.md): the
/// signed message and the armored signature.
pub fn checkpoint_files(row: &CheckpointRow) -> Result<(String, String), AuditError> {
    let head_hash: [u8; 32] =
        row.head_hash.as_slice().try_into().map_err(|_| {
            AuditError::Invalid(format!("checkpoint {} has a malformed head", row.seq))
        })?;
    let cp = Checkpoint {
        seq: row.seq,
        head_hash,
        at_us: row.at_us,
    };
    Ok((cp.message(), row.signature.clone()))
}

/// Microseconds since the Unix epoch (saturating far outside the representable range).
pub(crate) fn micros(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventKind;

    #[test]
    fn links_hash_previous_hash_then_document() {
        // SHA-256 of 32 zero bytes followed by "{}".
        let mut input = vec![0u8; 32];
        input.extend_from_slice(b"{}");
        let want = digest::digest(&digest::SHA256, &input);
        assert_eq!(link_hash(&GENESIS_HASH, b"{}").as_slice(), want.as_ref());
    }

    #[test]
    fn rows_carry_the_canonical_document_and_its_link() {
        let e = AuditEvent::new(EventKind::ServerStop {
            reason: "test".into(),
        })
        .user("root");
        let r = chain_row(&e, 7, &[9; 32]);
        assert_eq!(r.seq, 7);
        assert_eq!(r.prev_hash, vec![9; 32]);
        assert_eq!(r.hash, link_hash(&[9; 32], r.doc.as_bytes()).to_vec());
        assert_eq!(r.doc, e.to_document(7).canonical());
        assert_eq!(r.action, "server.stop");
        assert_eq!(r.user.as_deref(), Some("root"));
        assert_eq!(r.id, e.id.to_string());
    }

    #[test]
    fn messages_round_trip_and_signatures_verify() {
        let key = AuditKey::from_seed([4; 32]);
        let other = AuditKey::from_seed([5; 32]);
        let cp = Checkpoint {
            seq: 1000,
            head_hash: [0xAB; 32],
            at_us: 1_793_700_005_000_000,
        };
        let msg = cp.message();
        assert_eq!(
            msg,
            format!(
                "custos-audit-checkpoint v1\nseq 1000\nhead {}\ntime 2026-11-03T10:00:05.000000Z\n",
                "ab".repeat(32)
            )
        );
        assert_eq!(Checkpoint::parse_message(&msg), Some(cp));
        assert_eq!(
            Checkpoint::parse_message("custos-audit-checkpoint v1\n"),
            None
        );
        let row = cp.sign(&key).expect("sign");
        assert!(row.signature.starts_with("-----BEGIN SSH SIGNATURE-----\n"));
        assert_eq!(
            Checkpoint::verify_row(
                &row,
                &[other.public_key().clone(), key.public_key().clone()]
            ),
            Ok(cp)
        );
        let e = Checkpoint::verify_row(&row, &[other.public_key().clone()]).unwrap_err();
        assert!(e.contains("not a trusted key"), "{e}");
        let mut moved = row.clone();
        moved.seq = 999;
        assert_eq!(
            Checkpoint::verify_row(&moved, &[key.public_key().clone()]),
            Err("its signature does not verify".into())
        );
        let mut garbled = row.clone();
        garbled.signature = "not a signature".into();
        assert!(Checkpoint::verify_row(&garbled, &[key.public_key().clone()]).is_err());
        let (m, s) = checkpoint_files(&row).expect("files");
        assert_eq!(m, msg);
        assert_eq!(s, row.signature);
    }
}
