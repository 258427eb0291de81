//! Minimal checks on OpenSSH public key lines (`ALGO BASE64 [comment]`) before they are
//! stored. Full parsing and signature checks happen in the SSH crate; this only keeps lines
//! that cannot possibly be keys out of the database.

use crate::StoreError;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// A checked key line: `id` is `ALGO BASE64` (what identifies the key), `line` is the trimmed
/// line including any comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyLine {
    pub id: String,
    pub line: String,
}

/// Checks a public key line: an algorithm name, base64 that decodes, whose first field (the
/// SSH wire-format key type) equals the algorithm name, and an optional comment.
/// `authorized_keys` options (`from=...`) are not accepted here.
pub(crate) fn check_key_line(line: &str) -> Result<KeyLine, StoreError> {
    let line = line.trim();
    if line.chars().any(|c| c.is_control() && c != '\t') {
        return Err(StoreError::Invalid(
            "an SSH public key must be a single line without control characters".into(),
        ));
    }
    let mut parts = line.split_whitespace();
    let (Some(algo), Some(b64)) = (parts.next(), parts.next()) else {
        return Err(StoreError::Invalid(format!(
            "'{}' is not an SSH public key line; expected 'ALGORITHM BASE64 [comment]'",
            shorten(line)
        )));
    };
    if !algo
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-@._".contains(&b))
    {
        return Err(StoreError::Invalid(format!(
            "'{}' is not an SSH key algorithm name (authorized_keys options are not accepted)",
            shorten(algo)
        )));
    }
    let blob = STANDARD.decode(b64).map_err(|_| {
        StoreError::Invalid(format!(
            "the key data of this {algo} key is not valid base64"
        ))
    })?;
    match wire_string(&blob) {
        Some(inner) if inner == algo.as_bytes() => {}
        _ => {
            return Err(StoreError::Invalid(format!(
                "the key data does not hold a {algo} key"
            )));
        }
    }
    Ok(KeyLine {
        id: format!("{algo} {b64}"),
        line: line.split_whitespace().collect::<Vec<_>>().join(" "),
    })
}

/// The first length-prefixed string of an SSH wire-format blob.
fn wire_string(blob: &[u8]) -> Option<&[u8]> {
    let len = u32::from_be_bytes(blob.get(..4)?.try_into().ok()?);
    blob.get(4..4 + usize::try_from(len).ok()?)
}

fn shorten(s: &str) -> String {
    const MAX: usize = 40;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        let head: String = s.chars().take(MAX).collect();
        format!("{head}...")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A syntactically valid key line for `algo` with a body derived from `seed`.
    pub(crate) fn fake_key(algo: &str, seed: u8, comment: &str) -> String {
        let mut blob = Vec::new();
        blob.extend_from_slice(&u32::try_from(algo.len()).unwrap().to_be_bytes());
        blob.extend_from_slice(algo.as_bytes());
        blob.extend_from_slice(&32u32.to_be_bytes());
        blob.extend_from_slice(&[seed; 32]);
        format!("{algo} {} {comment}", STANDARD.encode(blob))
            .trim()
            .to_string()
    }

    #[test]
    fn accepts_key_lines() {
        let k = fake_key("ssh-ed25519", 1, "alice@laptop");
        let parsed = check_key_line(&format!("  {k}\n")).unwrap();
        assert_eq!(parsed.line, k);
        assert!(parsed.id.starts_with("ssh-ed25519 AAAA"));
        assert!(!parsed.id.contains("alice@laptop"));
        assert!(check_key_line(&fake_key("ssh-ed25519", 1, "")).is_ok());
    }

    #[test]
    fn refuses_non_keys() {
        for bad in [
            "",
            "ssh-ed25519",
            "ssh-ed25519 !!!notbase64",
            "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIG",
            "from=\"10.0.0.1\" ssh-ed25519 AAAA",
        ] {
            assert!(
                matches!(check_key_line(bad), Err(StoreError::Invalid(_))),
                "{bad}"
            );
        }
        let k = fake_key("ssh-ed25519", 1, "");
        let mislabelled = k.replacen("ssh-ed25519", "ssh-rsa", 1);
        assert!(check_key_line(&mislabelled).is_err());
        assert!(check_key_line(&format!("{k}\n{k}")).is_err());
    }
}
