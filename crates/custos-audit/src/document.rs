//! The JSON document of an audit event and its canonical encoding.
//!
//! The canonical encoding is what the chain hashes and what the store keeps, byte for byte
//! (docs/audit-events.md, "Canonical encoding"):
//!
//! - UTF-8 JSON with no whitespace outside strings;
//! - object members sorted by key, comparing the keys' UTF-8 bytes (all keys are ASCII);
//! - strings escape `"` and `\` with a backslash, U+0008, U+0009, U+000A, U+000C and U+000D
//!   as `\b`, `\t`, `\n`, `\f`, `\r`, the other characters below U+0020 as `\u00xx` (lowercase
//!   hex), and nothing else;
//! - numbers are integers written in decimal without sign (unless negative), leading zeros,
//!   fraction or exponent; absent values are omitted rather than written as `null`.
//!
//! For the documents Custos writes this is the output of RFC 8785 (JSON Canonicalization
//! Scheme), so an independent implementation can reproduce the bytes. The writer here does not
//! depend on how `serde_json` orders map keys.

use serde_json::{Map, Value};
use std::borrow::Cow;
use std::fmt::Write as _;
use time::OffsetDateTime;

/// An audit event as a JSON object with nested ECS fields (`{"event": {"action": ...}}`).
#[derive(Clone, Debug, PartialEq)]
pub struct Document(Map<String, Value>);

/// A document that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("not an audit document: {0}")]
pub struct DocumentError(pub String);

impl Document {
    /// An empty document.
    pub(crate) fn new() -> Document {
        Document(Map::new())
    }

    /// Reads a stored document (any JSON object).
    pub fn parse(json: &str) -> Result<Document, DocumentError> {
        match serde_json::from_str::<Value>(json) {
            Ok(Value::Object(m)) => Ok(Document(m)),
            Ok(_) => Err(DocumentError("the JSON value is not an object".into())),
            Err(e) => Err(DocumentError(e.to_string())),
        }
    }

    /// The members of the top-level object.
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    /// Sets the field at a dotted `path` (`event.action`), creating the objects on the way.
    /// A path segment that already holds a non-object value is replaced by an object.
    pub(crate) fn set(&mut self, path: &str, value: impl Into<Value>) {
        let mut map = &mut self.0;
        let mut parts = path.split('.').peekable();
        while let Some(part) = parts.next() {
            if parts.peek().is_none() {
                map.insert(part.to_string(), value.into());
                return;
            }
            // Look the segment up before allocating a key for it: most segments exist.
            if !map.get(part).is_some_and(Value::is_object) {
                map.insert(part.to_string(), Value::Object(Map::new()));
            }
            // Invariant: the slot was just checked or made to be an object.
            map = map
                .get_mut(part)
                .and_then(Value::as_object_mut)
                .expect("object");
        }
    }

    /// The value at a dotted `path`, following nested objects.
    pub fn get(&self, path: &str) -> Option<&Value> {
        let mut parts = path.split('.');
        let mut cur = self.0.get(parts.next()?)?;
        for part in parts {
            cur = cur.as_object()?.get(part)?;
        }
        Some(cur)
    }

    /// The string at `path`, if there is one.
    pub fn str(&self, path: &str) -> Option<&str> {
        self.get(path)?.as_str()
    }

    /// The unsigned integer at `path`, if there is one.
    pub fn u64(&self, path: &str) -> Option<u64> {
        self.get(path)?.as_u64()
    }

    /// The canonical encoding (see the module documentation).
    pub fn canonical(&self) -> String {
        let mut out = String::with_capacity(512);
        write_object(&self.0, &mut out, None, 0);
        out
    }

    /// A readable rendering with sorted keys and two-space indentation (for documentation and
    /// terminals; never hashed).
    pub fn pretty(&self) -> String {
        let mut out = String::with_capacity(1024);
        write_object(&self.0, &mut out, Some(2), 0);
        out
    }
}

fn write_value(v: &Value, out: &mut String, indent: Option<usize>, depth: usize) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        // Integers print in plain decimal; the schema has no floating-point fields.
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                    if indent.is_some() {
                        out.push(' ');
                    }
                }
                write_value(item, out, indent, depth);
            }
            out.push(']');
        }
        Value::Object(m) => write_object(m, out, indent, depth),
    }
}

fn write_object(m: &Map<String, Value>, out: &mut String, indent: Option<usize>, depth: usize) {
    // serde_json's default map already iterates in key order; sort only when it does not
    // (its `preserve_order` feature keeps insertion order instead).
    let in_order = m
        .keys()
        .zip(m.keys().skip(1))
        .all(|(a, b)| a.as_bytes() < b.as_bytes());
    out.push('{');
    if in_order {
        write_members(m.iter(), out, indent, depth);
    } else {
        let mut members: Vec<(&String, &Value)> = m.iter().collect();
        members.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        write_members(members.into_iter(), out, indent, depth);
    }
    if let Some(step) = indent
        && !m.is_empty()
    {
        out.push('\n');
        push_spaces(out, step * depth);
    }
    out.push('}');
}

fn write_members<'a>(
    members: impl Iterator<Item = (&'a String, &'a Value)>,
    out: &mut String,
    indent: Option<usize>,
    depth: usize,
) {
    for (i, (k, v)) in members.enumerate() {
        if i > 0 {
            out.push(',');
        }
        if let Some(step) = indent {
            out.push('\n');
            push_spaces(out, step * (depth + 1));
        }
        write_string(k, out);
        out.push(':');
        if indent.is_some() {
            out.push(' ');
        }
        write_value(v, out, indent, depth + 1);
    }
}

fn push_spaces(out: &mut String, n: usize) {
    out.extend(std::iter::repeat_n(' ', n));
}

fn write_string(s: &str, out: &mut String) {
    out.push('"');
    let mut rest = s;
    // Copy runs that need no escaping in one piece.
    while let Some(pos) = rest.find(|c: char| c == '"' || c == '\\' || c < '\u{20}') {
        out.push_str(&rest[..pos]);
        // Invariant: `pos` is the start of a character found by `find`.
        let c = rest[pos..].chars().next().expect("char");
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{08}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{0C}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            c => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
        }
        rest = &rest[pos + c.len_utf8()..];
    }
    out.push_str(rest);
    out.push('"');
}

/// One value of a flat field list: the document has no other kinds of leaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum FieldValue<'a> {
    Str(Cow<'a, str>),
    U64(u64),
    List(Vec<Cow<'a, str>>),
}

impl<'a> From<&'a str> for FieldValue<'a> {
    fn from(s: &'a str) -> Self {
        FieldValue::Str(Cow::Borrowed(s))
    }
}

impl<'a> From<&'a String> for FieldValue<'a> {
    fn from(s: &'a String) -> Self {
        FieldValue::Str(Cow::Borrowed(s))
    }
}

impl From<String> for FieldValue<'_> {
    fn from(s: String) -> Self {
        FieldValue::Str(Cow::Owned(s))
    }
}

impl From<u64> for FieldValue<'_> {
    fn from(n: u64) -> Self {
        FieldValue::U64(n)
    }
}

impl From<u32> for FieldValue<'_> {
    fn from(n: u32) -> Self {
        FieldValue::U64(u64::from(n))
    }
}

impl From<u16> for FieldValue<'_> {
    fn from(n: u16) -> Self {
        FieldValue::U64(u64::from(n))
    }
}

impl From<u8> for FieldValue<'_> {
    fn from(n: u8) -> Self {
        FieldValue::U64(u64::from(n))
    }
}

impl<'a> From<&'a [String]> for FieldValue<'a> {
    fn from(v: &'a [String]) -> Self {
        FieldValue::List(v.iter().map(|s| Cow::Borrowed(s.as_str())).collect())
    }
}

impl<'a> From<&[&'a str]> for FieldValue<'a> {
    fn from(v: &[&'a str]) -> Self {
        FieldValue::List(v.iter().map(|s| Cow::Borrowed(*s)).collect())
    }
}

/// A document as a flat list of dotted paths and values, which renders straight to the
/// canonical encoding without building a JSON tree (the chain's hot path), or to a
/// [`Document`].
///
/// Paths are made of `[a-z0-9_@]` segments joined by dots. Every one of those characters sorts
/// after `.`, so sorting whole paths bytewise gives exactly the canonical member order of the
/// nested objects.
#[derive(Debug, Default)]
pub(crate) struct Fields<'a> {
    items: Vec<(&'static str, FieldValue<'a>)>,
}

impl<'a> Fields<'a> {
    pub(crate) fn new() -> Fields<'a> {
        Fields {
            items: Vec::with_capacity(48),
        }
    }

    /// Sets the field at `path`; a later value for the same path replaces an earlier one.
    pub(crate) fn set(&mut self, path: &'static str, value: impl Into<FieldValue<'a>>) {
        debug_assert!(
            path.bytes().all(|b| b == b'.'
                || b == b'_'
                || b == b'@'
                || b.is_ascii_lowercase()
                || b.is_ascii_digit()),
            "field path {path}"
        );
        self.items.push((path, value.into()));
    }

    /// Sets the field if `value` is present.
    pub(crate) fn set_opt<V: Into<FieldValue<'a>>>(
        &mut self,
        path: &'static str,
        value: Option<V>,
    ) {
        if let Some(v) = value {
            self.set(path, v);
        }
    }

    /// Sorted by path, the last value of each path kept.
    fn sorted(mut self) -> Vec<(&'static str, FieldValue<'a>)> {
        // A stable sort keeps equal paths in the order they were set.
        self.items
            .sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let mut out: Vec<(&'static str, FieldValue<'a>)> = Vec::with_capacity(self.items.len());
        for item in self.items {
            match out.last_mut() {
                Some(last) if last.0 == item.0 => *last = item,
                _ => out.push(item),
            }
        }
        out
    }

    /// The canonical encoding of the document these fields make.
    pub(crate) fn canonical(self) -> String {
        let mut out = String::with_capacity(768);
        out.push('{');
        // The objects currently open below the top level, and whether the innermost one (or
        // the top level) has members yet.
        let mut open: Vec<&str> = Vec::with_capacity(4);
        let mut has_members: Vec<bool> = vec![false];
        for (path, value) in self.sorted() {
            let mut segments: Vec<&str> = path.split('.').collect();
            // Invariant: `split` yields at least one segment.
            let leaf = segments.pop().expect("segment");
            let common = open
                .iter()
                .zip(&segments)
                .take_while(|(a, b)| a == b)
                .count();
            while open.len() > common {
                open.pop();
                has_members.pop();
                out.push('}');
            }
            for seg in &segments[common..] {
                member_key(&mut out, &mut has_members, seg);
                out.push('{');
                open.push(seg);
                has_members.push(false);
            }
            member_key(&mut out, &mut has_members, leaf);
            match value {
                FieldValue::Str(s) => write_string(&s, &mut out),
                FieldValue::U64(n) => {
                    let _ = write!(out, "{n}");
                }
                FieldValue::List(items) => {
                    out.push('[');
                    for (i, item) in items.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        write_string(item, &mut out);
                    }
                    out.push(']');
                }
            }
        }
        for _ in &open {
            out.push('}');
        }
        out.push('}');
        out
    }

    /// The same fields as a [`Document`].
    pub(crate) fn document(self) -> Document {
        let mut d = Document::new();
        for (path, value) in self.sorted() {
            match value {
                FieldValue::Str(s) => d.set(path, s.into_owned()),
                FieldValue::U64(n) => d.set(path, n),
                FieldValue::List(items) => d.set(
                    path,
                    Value::Array(
                        items
                            .into_iter()
                            .map(|s| Value::String(s.into_owned()))
                            .collect(),
                    ),
                ),
            }
        }
        d
    }
}

/// Writes `"key":`, preceded by a comma unless it is the first member of its object.
fn member_key(out: &mut String, has_members: &mut [bool], key: &str) {
    if let Some(flag) = has_members.last_mut() {
        if *flag {
            out.push(',');
        }
        *flag = true;
    }
    write_string(key, out);
    out.push(':');
}

/// Formats a time as the documents do: UTC, microseconds, `2026-11-05T10:11:12.123456Z`.
pub fn format_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

/// Formats microseconds since the Unix epoch like [`format_time`]; `None` if out of range.
pub fn format_micros(us: i64) -> Option<String> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
        .ok()
        .map(format_time)
}

/// Reads a time written by [`format_time`] (any RFC 3339 time is accepted).
pub fn parse_time(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(json: &str, expected: &str) {
        let d = Document::parse(json).expect("parse");
        assert_eq!(d.canonical(), expected);
        // Canonical output is a fixed point.
        assert_eq!(
            Document::parse(expected).expect("reparse").canonical(),
            expected
        );
    }

    #[test]
    fn members_are_sorted_and_whitespace_removed() {
        check(
            r#"{ "b": 1, "a": { "z": true, "@x": null }, "A": [3, "x"] }"#,
            r#"{"A":[3,"x"],"a":{"@x":null,"z":true},"b":1}"#,
        );
    }

    #[test]
    fn strings_escape_only_what_json_requires() {
        check(
            r#"{"s":"q\" b\\ \b\t\n\f\r \u0001\u001F \/ é ☃ \u007f"}"#,
            "{\"s\":\"q\\\" b\\\\ \\b\\t\\n\\f\\r \\u0001\\u001f / é ☃ \u{7f}\"}",
        );
    }

    #[test]
    fn numbers_are_plain_integers() {
        check(r#"{"n": -12, "z": 0}"#, r#"{"n":-12,"z":0}"#);
        check(
            r#"{"big":18446744073709551615}"#,
            r#"{"big":18446744073709551615}"#,
        );
    }

    #[test]
    fn set_and_get_follow_dotted_paths() {
        let mut d = Document::new();
        d.set("event.action", "auth.success");
        d.set("event.outcome", "success");
        d.set("@timestamp", "t");
        assert_eq!(d.str("event.action"), Some("auth.success"));
        assert_eq!(d.get("user"), None);
        assert_eq!(
            d.canonical(),
            r#"{"@timestamp":"t","event":{"action":"auth.success","outcome":"success"}}"#
        );
        assert!(
            d.pretty()
                .contains("\n  \"event\": {\n    \"action\": \"auth.success\",")
        );
    }

    #[test]
    fn times_have_six_fraction_digits() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_000_001_000).unwrap();
        let s = format_time(t);
        assert_eq!(s, "2023-11-14T22:13:20.000001Z");
        assert_eq!(parse_time(&s), Some(t));
        assert_eq!(
            format_micros(1_700_000_000_000_001).as_deref(),
            Some(s.as_str())
        );
    }

    #[test]
    fn non_objects_are_refused() {
        assert!(Document::parse("[1]").is_err());
        assert!(Document::parse("{").is_err());
    }
}
