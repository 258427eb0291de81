//! A byte-oriented wrapper around the `avt` virtual terminal.

/// Scrollback kept by the emulator. Zero keeps memory small; keyframes only need the visible screen.
const SCROLLBACK: usize = 0;

/// Largest accepted dimension; larger values are clamped so a peer cannot make us allocate
/// an absurd screen.
pub const MAX_DIMENSION: u16 = 1000;

/// Incremental UTF-8 decoder that carries an incomplete trailing sequence to the next call.
///
/// Invalid bytes become U+FFFD, exactly as `String::from_utf8_lossy` would do on the
/// concatenation of all chunks.
#[derive(Debug, Default, Clone)]
pub struct Utf8Carry {
    pending: Vec<u8>,
}

impl Utf8Carry {
    /// Creates an empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes `bytes`, prefixed by any incomplete sequence left from the previous call.
    pub fn decode(&mut self, bytes: &[u8]) -> String {
        let mut buf;
        let input: &[u8] = if self.pending.is_empty() {
            bytes
        } else {
            buf = std::mem::take(&mut self.pending);
            buf.extend_from_slice(bytes);
            &buf
        };
        let mut out = String::with_capacity(input.len());
        let mut rest = input;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    // `valid` is valid UTF-8 by construction of `valid_up_to`.
                    out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                    match e.error_len() {
                        Some(len) => {
                            out.push('\u{FFFD}');
                            rest = &after[len..];
                        }
                        None => {
                            // Incomplete sequence at the end: keep it for the next call.
                            self.pending = after.to_vec();
                            break;
                        }
                    }
                }
            }
        }
        out
    }

    /// Flushes an incomplete trailing sequence as U+FFFD (if any).
    pub fn finish(&mut self) -> String {
        if self.pending.is_empty() {
            String::new()
        } else {
            self.pending.clear();
            "\u{FFFD}".to_string()
        }
    }
}

/// A headless terminal screen fed with raw output bytes.
pub struct Terminal {
    vt: avt::Terminal,
    carry: Utf8Carry,
    cols: u16,
    rows: u16,
}

impl std::fmt::Debug for Terminal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Terminal")
            .field("cols", &self.cols)
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

fn clamp(v: u16) -> u16 {
    v.clamp(1, MAX_DIMENSION)
}

impl Terminal {
    /// Creates a blank terminal; dimensions are clamped to `1..=MAX_DIMENSION`.
    pub fn new(cols: u16, rows: u16) -> Self {
        let (cols, rows) = (clamp(cols), clamp(rows));
        // Both dimensions are at least 1 after clamping, which is all avt requires.
        let vt = avt::Terminal::with_scrollback(cols as usize, rows as usize, Some(SCROLLBACK))
            .expect("terminal dimensions are clamped to at least 1x1");
        Self {
            vt,
            carry: Utf8Carry::new(),
            cols,
            rows,
        }
    }

    /// Feeds raw output bytes; UTF-8 sequences may be split across calls.
    pub fn feed(&mut self, bytes: &[u8]) {
        let text = self.carry.decode(bytes);
        if !text.is_empty() {
            self.vt.feed(text.as_str());
        }
    }

    /// Feeds already-decoded text (for example a keyframe).
    pub fn feed_str(&mut self, text: &str) {
        self.vt.feed(text);
    }

    /// Changes the screen size; dimensions are clamped to `1..=MAX_DIMENSION`.
    pub fn resize(&mut self, cols: u16, rows: u16) {
        let (cols, rows) = (clamp(cols), clamp(rows));
        self.cols = cols;
        self.rows = rows;
        self.vt.resize(cols as usize, rows as usize);
    }

    /// Current `(cols, rows)`.
    pub fn size(&self) -> (u16, u16) {
        (self.cols, self.rows)
    }

    /// Escape sequences that reproduce the current screen when fed to a blank terminal of the
    /// same size.
    pub fn keyframe(&self) -> String {
        self.vt.dump()
    }

    /// The visible screen as text lines (trailing spaces trimmed), one per row.
    pub fn text(&self) -> Vec<String> {
        self.vt
            .screen()
            .visible_lines()
            .map(|l| l.text().trim_end().to_string())
            .collect()
    }

    /// Cursor position `(col, row)` if the cursor is visible.
    pub fn cursor(&self) -> Option<(usize, usize)> {
        self.vt.cursor().position()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyframe_reproduces_screen() {
        let mut t = Terminal::new(40, 10);
        t.feed(b"hello \x1b[1;31mred\x1b[0m\r\nsecond line\r\n\x1b[5;10Hplaced");
        let kf = t.keyframe();
        let mut fresh = Terminal::new(40, 10);
        fresh.feed_str(&kf);
        assert_eq!(t.text(), fresh.text());
        assert_eq!(t.cursor(), fresh.cursor());
        assert_eq!(t.text()[0], "hello red");
        assert_eq!(t.text()[4], "         placed");
    }

    #[test]
    fn keyframe_of_alternate_screen() {
        let mut t = Terminal::new(20, 5);
        t.feed(b"shell$ vim\r\n\x1b[?1049h\x1b[2J\x1b[Hfile contents\x1b[5;1H-- INSERT --");
        let mut fresh = Terminal::new(20, 5);
        fresh.feed_str(&t.keyframe());
        assert_eq!(t.text(), fresh.text());
        fresh.feed(b"\x1b[?1049l");
        t.feed(b"\x1b[?1049l");
        assert_eq!(t.text()[0], "shell$ vim");
    }

    #[test]
    fn utf8_split_across_feeds() {
        let mut t = Terminal::new(20, 2);
        let s = "héllo ✓ 😀".as_bytes();
        for b in s {
            t.feed(std::slice::from_ref(b));
        }
        assert_eq!(t.text()[0], "héllo ✓ 😀");
    }

    #[test]
    fn invalid_utf8_does_not_panic() {
        let mut t = Terminal::new(10, 2);
        t.feed(&[0xff, b'a', 0xc3]);
        t.feed(&[b'b', 0xe2, 0x9c]);
        t.feed(&[0x93]);
        assert_eq!(t.text()[0], "\u{FFFD}a\u{FFFD}b✓");
    }

    #[test]
    fn carry_matches_lossy_conversion() {
        let data: Vec<u8> = (0u32..600)
            .map(|i| (i.wrapping_mul(37) % 256) as u8)
            .collect();
        for split in [1usize, 2, 3, 5, 7, 64] {
            let mut c = Utf8Carry::new();
            let mut out = String::new();
            for chunk in data.chunks(split) {
                out.push_str(&c.decode(chunk));
            }
            out.push_str(&c.finish());
            assert_eq!(out, String::from_utf8_lossy(&data), "split {split}");
        }
    }

    #[test]
    fn resize_and_clamp() {
        let mut t = Terminal::new(0, 0);
        assert_eq!(t.size(), (1, 1));
        t.resize(80, 24);
        assert_eq!(t.size(), (80, 24));
        assert_eq!(t.text().len(), 24);
        t.resize(u16::MAX, 3);
        assert_eq!(t.size(), (MAX_DIMENSION, 3));
    }
}
