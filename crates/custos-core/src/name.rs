//! Names of users and targets. They appear in SSH user names (`alice:db1`), file names, logs
//! and SIEM events, so they are restricted to a conservative character set.

use std::fmt;

/// A validated user or target name: 1 to 64 characters of `A-Z a-z 0-9 . _ -`, starting with
/// a letter or digit.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct Name(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error("name is empty")]
    Empty,
    #[error("name '{0}' is longer than 64 characters")]
    TooLong(String),
    #[error("name '{name}' contains '{ch}'; names use letters, digits, '.', '_' and '-'")]
    BadChar { name: String, ch: char },
    #[error("name '{0}' must start with a letter or digit")]
    BadStart(String),
}

impl Name {
    pub fn new(s: impl Into<String>) -> Result<Name, NameError> {
        let s = s.into();
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        if s.len() > 64 {
            return Err(NameError::TooLong(s));
        }
        if let Some(ch) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(NameError::BadChar { name: s, ch });
        }
        if !s.as_bytes()[0].is_ascii_alphanumeric() {
            return Err(NameError::BadStart(s));
        }
        Ok(Name(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl std::str::FromStr for Name {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Name, NameError> {
        Name::new(s)
    }
}

impl<'de> serde::Deserialize<'de> for Name {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Name, D::Error> {
        Name::new(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_refuses() {
        assert!(Name::new("alice").is_ok());
        assert!(Name::new("db-1.prod_eu").is_ok());
        assert_eq!(Name::new(""), Err(NameError::Empty));
        assert!(matches!(
            Name::new("a:b"),
            Err(NameError::BadChar { ch: ':', .. })
        ));
        assert!(matches!(Name::new("-x"), Err(NameError::BadStart(_))));
        assert!(matches!(
            Name::new("x".repeat(65)),
            Err(NameError::TooLong(_))
        ));
    }

    #[test]
    fn display_honours_width_for_tables() {
        assert_eq!(format!("{:<6}|", Name::new("ab").unwrap()), "ab    |");
    }
}
