//! Time-ordered 128-bit identifiers shown as 26-character Crockford base32 (ULID layout:
//! 48 bits of milliseconds since the Unix epoch, then 80 random bits). Sorting ids sorts by
//! creation time, which keeps listings and recording folders in a natural order.

use std::fmt;
use std::str::FromStr;

const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A session, recording or other object identifier.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Id(u128);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    #[error("an id has 26 characters, this one has {0}")]
    Length(usize),
    #[error("'{0}' is not a valid id character (ids use 0-9 and A-Z without I, L, O, U)")]
    Char(char),
    #[error("id is out of range")]
    Overflow,
}

impl Id {
    /// Builds an id from a millisecond timestamp and 10 bytes of randomness supplied by the
    /// caller (this crate does no IO, so it cannot draw randomness itself).
    pub fn from_parts(unix_millis: u64, random: [u8; 10]) -> Id {
        let mut r = [0u8; 16];
        r[6..].copy_from_slice(&random);
        let rand = u128::from_be_bytes(r);
        Id((u128::from(unix_millis & 0xFFFF_FFFF_FFFF) << 80) | rand)
    }

    pub fn from_u128(v: u128) -> Id {
        Id(v)
    }

    pub fn as_u128(self) -> u128 {
        self.0
    }

    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }

    pub fn from_bytes(b: [u8; 16]) -> Id {
        Id(u128::from_be_bytes(b))
    }

    /// Milliseconds since the Unix epoch at which the id was made.
    pub fn unix_millis(self) -> u64 {
        (self.0 >> 80) as u64
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = [0u8; 26];
        for (i, slot) in out.iter_mut().enumerate() {
            let shift = 125 - 5 * i as u32;
            // 26 * 5 = 130 bits: the first character carries only the top 3 bits.
            let v = if i == 0 {
                self.0 >> 125
            } else {
                (self.0 >> shift) & 31
            };
            *slot = ALPHABET[v as usize];
        }
        // Invariant: ALPHABET is ASCII.
        f.pad(std::str::from_utf8(&out).expect("ascii"))
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({self})")
    }
}

impl FromStr for Id {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Id, IdError> {
        let n = s.chars().count();
        if n != 26 {
            return Err(IdError::Length(n));
        }
        let mut v: u128 = 0;
        for (i, c) in s.chars().enumerate() {
            let d = decode_char(c).ok_or(IdError::Char(c))?;
            if i == 0 && d > 7 {
                return Err(IdError::Overflow);
            }
            v = (v << 5) | u128::from(d);
        }
        Ok(Id(v))
    }
}

/// Decodes one Crockford base32 digit, accepting lower case and the usual look-alikes.
fn decode_char(c: char) -> Option<u8> {
    let c = c.to_ascii_uppercase();
    let c = match c {
        'O' => '0',
        'I' | 'L' => '1',
        c => c,
    };
    ALPHABET
        .iter()
        .position(|&a| a as char == c)
        .map(|p| p as u8)
}

impl serde::Serialize for Id {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Id {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Id, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_text() {
        for v in [
            0u128,
            1,
            u128::MAX,
            0x0123_4567_89AB_CDEF_0011_2233_4455_6677,
        ] {
            let id = Id(v);
            let s = id.to_string();
            assert_eq!(s.len(), 26);
            assert_eq!(s.parse::<Id>().unwrap(), id);
            assert_eq!(s.to_lowercase().parse::<Id>().unwrap(), id);
        }
    }

    #[test]
    fn display_honours_width_for_tables() {
        assert_eq!(
            format!("{:<27}|", Id(0)),
            format!("{}{}|", "0".repeat(26), " ")
        );
    }

    #[test]
    fn sorts_by_time() {
        let a = Id::from_parts(1000, [0xFF; 10]);
        let b = Id::from_parts(1001, [0; 10]);
        assert!(a < b);
        assert!(a.to_string() < b.to_string());
        assert_eq!(b.unix_millis(), 1001);
    }

    #[test]
    fn rejects_bad_text() {
        assert_eq!("abc".parse::<Id>(), Err(IdError::Length(3)));
        assert_eq!(
            "0000000000000000000000000U".parse::<Id>(),
            Err(IdError::Char('U'))
        );
        assert_eq!(
            "80000000000000000000000000".parse::<Id>(),
            Err(IdError::Overflow)
        );
    }
}
