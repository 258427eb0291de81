//! Terminal output checked chunk by chunk against the output rules, with the state a stream
//! needs: the end of the previous chunk (so a pattern split across two chunks is still found,
//! in a window over the seam) and the length of the current burst of bulk output.
//!
//! Output rules exist to catch secrets shown on a screen (a private key printed with `cat`).
//! A burst of bulk output — chunks of at least [`BULK_CHUNK`] bytes back to back — is checked
//! for its first [`BURST_CHECKED`] bytes; past that, until the output slows down again, chunks
//! are not checked (they are still recorded). This keeps the check's cost on a session
//! streaming gigabytes near zero; its price is that a secret buried megabytes deep in a
//! continuous stream is not flagged.

use std::borrow::Cow;

use crate::engine::Ruleset;

/// Bytes of the previous chunk kept to check the seam with the next one (and of the next one).
pub const SEAM: usize = 256;
/// A chunk at least this long counts as bulk output.
pub const BULK_CHUNK: usize = 1024;
/// Bytes of a burst of bulk output that are checked.
pub const BURST_CHECKED: u64 = 1024 * 1024;

/// The output-rule state of one terminal stream.
#[derive(Default)]
pub struct OutputWindow {
    tail: Vec<u8>,
    seam: Vec<u8>,
    burst: u64,
    unchecked: u64,
}

impl OutputWindow {
    /// Takes the next chunk. Returns the texts that need a full evaluation (the chunk, and/or
    /// the window over the seam with the previous chunk) — usually none: a cheap pattern test
    /// runs first.
    pub fn next<'a>(&'a mut self, rules: &Ruleset, d: &'a [u8]) -> Vec<Cow<'a, str>> {
        if d.len() >= BULK_CHUNK {
            self.burst += d.len() as u64;
        } else {
            self.burst = 0;
        }
        if self.burst > BURST_CHECKED {
            self.unchecked += d.len() as u64;
            self.tail.clear();
            return Vec::new();
        }
        let head = &d[..d.len().min(SEAM)];
        self.seam.clear();
        self.seam.extend_from_slice(&self.tail);
        self.seam.extend_from_slice(head);
        let keep = d.len().min(SEAM);
        if keep == SEAM {
            self.tail.clear();
        } else {
            let drop = (self.tail.len() + keep).saturating_sub(SEAM);
            self.tail.drain(..drop);
        }
        self.tail.extend_from_slice(&d[d.len() - keep..]);

        let mut out = Vec::new();
        let chunk = String::from_utf8_lossy(d);
        let chunk_hit = rules.output_may_match(&chunk);
        if chunk_hit {
            out.push(chunk);
        }
        if self.seam.len() > head.len() {
            let old_len = self.seam.len() - head.len();
            let seam = String::from_utf8_lossy(&self.seam);
            // Only a match that crosses the seam: one wholly inside the old tail was reported
            // with the previous chunk, one inside this chunk just now.
            if !chunk_hit && rules.output_may_match(&seam) {
                let boundary = String::from_utf8_lossy(&self.seam[..old_len]).len();
                if rules.output_matches_across(&seam, boundary) {
                    out.push(Cow::Owned(seam.into_owned()));
                }
            }
        }
        out
    }

    /// Bytes of bulk output that were not checked.
    pub fn unchecked(&self) -> u64 {
        self.unchecked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Ruleset {
        Ruleset::from_str(
            "t.yaml",
            "- id: t.secret\n  description: d\n  severity: high\n  mitre: [T1005]\n  action: alert\n  match: {output: {regex: ['SECRET-[0-9]{4}']}}\n",
        )
        .unwrap()
    }

    #[test]
    fn matches_in_a_chunk_and_across_a_seam_are_found_once() {
        let r = rules();
        let mut w = OutputWindow::default();
        assert!(w.next(&r, b"nothing here").is_empty());
        assert_eq!(w.next(&r, b"x SECRET-1234 y").len(), 1);
        assert!(w.next(&r, b"more text").is_empty());
        assert!(w.next(&r, b"split SECR").is_empty());
        let hits = w.next(&r, b"ET-9876 done");
        assert_eq!(hits.len(), 1);
        assert!(hits[0].contains("SECRET-9876"));
        assert!(
            w.next(&r, b"after").is_empty(),
            "the seam match is not reported again"
        );
    }

    #[test]
    fn deep_bulk_bursts_are_not_checked_and_slow_output_is_again() {
        let r = rules();
        let mut w = OutputWindow::default();
        let filler = vec![b'a'; 16 * 1024];
        let mut with_secret = filler.clone();
        with_secret[100..111].copy_from_slice(b"SECRET-0001");
        assert_eq!(
            w.next(&r, &with_secret).len(),
            1,
            "the start of a burst is checked"
        );
        for _ in 0..80 {
            w.next(&r, &filler);
        }
        assert!(w.next(&r, &with_secret).is_empty(), "deep inside a burst");
        assert!(w.unchecked() > 0);
        assert_eq!(
            w.next(&r, b"$ SECRET-0002").len(),
            1,
            "a small chunk ends the burst"
        );
    }
}
