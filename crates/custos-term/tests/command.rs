//! Command extraction from realistic byte streams of a bash-like shell.

use custos_term::{CommandEvent, CommandTracker};

const PROMPT: &str = "user@host:~$ ";

/// A session driver with a clock.
struct Session {
    t: CommandTracker,
    now: u64,
    commands: Vec<String>,
}

impl Session {
    fn new(cols: u16, rows: u16) -> Self {
        let mut s = Self {
            t: CommandTracker::new(cols, rows),
            now: 0,
            commands: Vec::new(),
        };
        s.out(PROMPT.as_bytes());
        s
    }

    fn tick(&mut self) -> u64 {
        self.now += 1000;
        self.now
    }

    fn out(&mut self, bytes: &[u8]) {
        let now = self.tick();
        self.t.on_output(now, bytes);
    }

    fn input(&mut self, bytes: &[u8]) {
        let now = self.tick();
        for e in self.t.on_input(now, bytes) {
            match e {
                CommandEvent::Command { text, .. } => self.commands.push(text),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// Types `text` one key at a time, each echoed by the shell.
    fn type_echoed(&mut self, text: &str) {
        for c in text.chars() {
            let mut buf = [0u8; 4];
            let s = c.encode_utf8(&mut buf);
            self.input(s.as_bytes());
            self.out(s.as_bytes());
        }
    }

    /// Presses Enter; the shell answers with `output` and a new prompt.
    fn enter(&mut self, output: &str) {
        self.input(b"\r");
        self.out(format!("\r\n{output}{PROMPT}").as_bytes());
    }

    fn take(&mut self) -> Vec<String> {
        std::mem::take(&mut self.commands)
    }
}

#[test]
fn simple_command() {
    let mut s = Session::new(80, 24);
    s.type_echoed("ls -la");
    assert_eq!(s.t.pending_line().as_deref(), Some("ls -la"));
    s.enter("total 0\r\n");
    assert_eq!(s.take(), ["ls -la"]);
    // A bare Enter submits nothing.
    s.enter("");
    assert!(s.take().is_empty());
    s.type_echoed("pwd");
    s.enter("/home/user\r\n");
    assert_eq!(s.take(), ["pwd"]);
}

#[test]
fn editing_with_backspace_and_left_arrow() {
    let mut s = Session::new(80, 24);
    s.type_echoed("echo helo");
    // Left arrow: readline moves the cursor back.
    s.input(b"\x1b[D");
    s.out(b"\x08");
    // Insert 'l' before 'o': readline prints "lo" and moves back over 'o'.
    s.input(b"l");
    s.out(b"lo\x08");
    // Right arrow over 'o'.
    s.input(b"\x1b[C");
    s.out(b"o");
    s.type_echoed("x");
    s.input(b"\x7f");
    s.out(b"\x08\x1b[K");
    s.enter("hello\r\n");
    assert_eq!(s.take(), ["echo hello"]);

    // Ctrl-A then Delete erases the first cell of the line; Ctrl-E, Ctrl-W, Ctrl-U.
    s.type_echoed("xecho a b");
    s.input(b"\x01");
    s.out(b"\r\x1b[13C");
    s.input(b"\x1b[3~");
    s.out(b"\x1b[P");
    s.input(b"\x05");
    s.out(b"\x1b[8C");
    s.input(b"\x17");
    s.out(b"\x08\x1b[K");
    s.enter("a\r\n");
    assert_eq!(s.take(), ["echo a"]);
    s.type_echoed("junk");
    s.input(b"\x15");
    s.out(b"\x08\x08\x08\x08\x1b[K");
    s.type_echoed("id");
    s.enter("uid=1000\r\n");
    assert_eq!(s.take(), ["id"]);
}

#[test]
fn fast_typing_before_echo_uses_the_keys() {
    let mut s = Session::new(80, 24);
    s.type_echoed("git st");
    // "atus" and Enter typed before any echo came back; one typo fixed blind.
    s.input(b"atuz\x7fs\r");
    s.out(b"atus\r\nOn branch main\r\n");
    s.out(PROMPT.as_bytes());
    assert_eq!(s.take(), ["git status"]);
}

#[test]
fn tab_completion() {
    let mut s = Session::new(80, 24);
    s.type_echoed("ec");
    s.input(b"\t");
    s.out(b"ho ");
    s.type_echoed("hi");
    s.enter("hi\r\n");
    assert_eq!(s.take(), ["echo hi"]);

    // Completion of a file name with a listing of candidates and a redrawn prompt.
    s.type_echoed("cat no");
    s.input(b"\t");
    s.out(b"\x07");
    s.input(b"\t");
    s.out(format!("\r\nnotes.txt  notes.md\r\n{PROMPT}cat notes.").as_bytes());
    s.type_echoed("md");
    s.enter("# notes\r\n");
    assert_eq!(s.take(), ["cat notes.md"]);
}

#[test]
fn history_with_up_arrow() {
    let mut s = Session::new(80, 24);
    s.type_echoed("echo first");
    s.enter("first\r\n");
    s.take();
    // Up on an empty line: readline prints the recalled line.
    s.input(b"\x1b[A");
    s.out(b"echo first");
    s.enter("first\r\n");
    assert_eq!(s.take(), ["echo first"]);

    // Up over typed text, redrawn from the start of the row.
    s.type_echoed("ls");
    s.input(b"\x1b[A");
    s.out(format!("\r\x1b[K{PROMPT}echo first").as_bytes());
    s.type_echoed(" again");
    s.enter("first again\r\n");
    assert_eq!(s.take(), ["echo first again"]);

    // Up then backspaces over a longer recalled line.
    s.input(b"\x1b[A");
    s.out(b"echo first again");
    s.input(b"\x7f\x7f\x7f\x7f\x7f\x7f");
    s.out(b"\x08\x08\x08\x08\x08\x08\x1b[K");
    s.enter("first\r\n");
    assert_eq!(s.take(), ["echo first"]);
}

#[test]
fn prompt_redrawn_with_other_text_of_same_width() {
    let mut t = CommandTracker::new(80, 24);
    t.on_output(1, b"[12:00] $ ");
    for (i, c) in "ls".bytes().enumerate() {
        t.on_input(2 + i as u64, &[c]);
        t.on_output(3 + i as u64, &[c]);
    }
    // The shell redraws the whole row with an updated clock.
    t.on_input(10, b"\x1b[A");
    t.on_output(11, b"\r\x1b[K[12:01] $ ls -l");
    assert_eq!(t.pending_line().as_deref(), Some("ls -l"));
    let ev = t.on_input(12, b"\r");
    assert!(matches!(&ev[..], [CommandEvent::Command { text, .. }] if text == "ls -l"));
}

#[test]
fn ctrl_r_search_accepted() {
    let mut s = Session::new(80, 24);
    s.type_echoed("echo needle");
    s.enter("needle\r\n");
    s.type_echoed("ls");
    s.enter("file\r\n");
    s.take();
    s.input(b"\x12");
    s.out(b"\r\x1b[K(reverse-i-search)`': ");
    s.input(b"ne");
    s.out(b"\x08\x08\x08ne': echo needle\x1b[6D");
    s.input(b"\r");
    s.out(format!("\r\x1b[K{PROMPT}echo needle\r\nneedle\r\n{PROMPT}").as_bytes());
    assert_eq!(s.take(), ["echo needle"]);
    // Accepting with a Right arrow first, then editing.
    s.input(b"\x12");
    s.out(b"\r\x1b[K(reverse-i-search)`': ");
    s.input(b"ls");
    s.out(b"\x08\x08\x08ls': ls\x1b[2D");
    s.input(b"\x1b[C");
    s.out(format!("\r\x1b[K{PROMPT}ls\x1b[1D\x1b[C").as_bytes());
    s.type_echoed(" -l");
    s.enter("total 0\r\n");
    assert_eq!(s.take(), ["ls -l"]);
}

#[test]
fn ctrl_r_search_drawn_over_the_prompt_without_erasing() {
    // Bash 5.2's own bytes: the search display overwrites the prompt in place, so the line's
    // start stays a valid position, now in the middle of `(reverse-i-search)`.
    let mut s = Session::new(80, 24);
    s.type_echoed("echo needle");
    s.enter("needle\r\n");
    s.type_echoed("ls /nonexistent-x");
    s.enter("ls: cannot access '/nonexistent-x': No such file or directory\r\n");
    s.take();
    s.input(b"\x12");
    s.out(b"\r(reverse-i-search)`': ");
    s.input(b"ne");
    s.out(b"\x08\x08\x08n': ls /nonexiste\x1b[7mn\x1b[27mt-x\x08\x08\x08\x08\x08\x08\x08\x08\x08\x08\x08\x08\x08\x08\x08\x08\x08\x08\x08\x08e': ls /no\x1b[7mne\x1b[27mxistent-x\x08\x08\x08\x08\x08\x08\x08\x08\x08\x08\x08");
    assert_eq!(s.t.pending_line().as_deref(), Some("ls /nonexistent-x"));
    s.input(b"\r");
    assert_eq!(s.take(), ["ls /nonexistent-x"]);
    s.out(format!("\r\x1b[11P{PROMPT}ls /nonexistent-x\x08\x08\x08\x08\x08\x08\x08\x08\x08\x08\x08\r\nls: cannot access\r\n{PROMPT}").as_bytes());
    s.type_echoed("echo after");
    s.enter("after\r\n");
    assert_eq!(s.take(), ["echo after"]);
}

#[test]
fn paste_of_two_lines() {
    let mut s = Session::new(80, 24);
    s.input(b"\x1b[200~echo one\recho two\r\x1b[201~");
    assert_eq!(s.take(), ["echo one", "echo two"]);
    s.out(format!("echo one\r\none\r\n{PROMPT}echo two\r\ntwo\r\n{PROMPT}").as_bytes());
    s.type_echoed("ls");
    s.enter("file\r\n");
    assert_eq!(s.take(), ["ls"]);

    // A paste without a final Enter: the second line is completed later with Tab.
    s.input(b"\x1b[200~echo a\recho b\x1b[201~");
    assert_eq!(s.take(), ["echo a"]);
    s.out(format!("echo a\r\na\r\n{PROMPT}echo b").as_bytes());
    s.input(b"\t");
    s.out(b"ee");
    s.enter("bee\r\n");
    assert_eq!(s.take(), ["echo bee"]);
}

#[test]
fn bracketed_paste_shown_by_bash_only_after_its_end_mark() {
    // Bash 5.2's own bytes. The gateway reads each pasted line before its line break reaches
    // the shell, so every line comes from the keys alone; the Enter that finally runs the
    // paste submits nothing more.
    let mut s = Session::new(80, 24);
    s.input(b"\x1b[200~echo one");
    assert_eq!(s.t.pending_line().as_deref(), Some("echo one"));
    s.input(b"\r");
    s.input(b"echo two");
    assert_eq!(s.t.pending_line().as_deref(), Some("echo two"));
    s.input(b"\r\x1b[201~");
    assert_eq!(s.take(), ["echo one", "echo two"]);
    s.out(b"\x1b[7mecho one\x1b[27m\r\n\r\x1b[7mecho two\x1b[27m\r\n\r");
    assert_eq!(s.t.pending_line().as_deref(), Some(""));
    s.input(b"\r");
    s.out(format!("\x1b[A\x1b[A\x1b[C\x1b[C\x1b[C\x1b[C\x1b[C\x1b[C\x1b[C\x1b[C\x1b[C\x1b[C\x1b[C\x1b[C\x1b[Cecho one\r\n\recho two\r\n\r\x1b[A\r\n\x1b[?2004l\rone\r\ntwo\r\n\x1b[?2004h{PROMPT}").as_bytes());
    assert!(s.take().is_empty());

    // Without a final line break the last line is completed by the Enter typed after it.
    s.input(b"\x1b[200~echo a\r");
    s.input(b"echo b\x1b[201~");
    assert_eq!(s.take(), ["echo a"]);
    s.out(b"\x1b[7mecho a\x1b[27m\r\n\r\x1b[7mecho b\x1b[27m");
    assert_eq!(s.t.pending_line().as_deref(), Some("echo b"));
    s.input(b"\r");
    assert_eq!(s.take(), ["echo b"]);
}

#[test]
fn continuation_with_backslash_and_open_quote() {
    let mut s = Session::new(80, 24);
    s.type_echoed("echo a \\");
    s.input(b"\r");
    s.out(b"\r\n> ");
    assert!(s.take().is_empty());
    s.type_echoed("b");
    s.enter("a b\r\n");
    assert_eq!(s.take(), ["echo a \\\nb"]);

    s.type_echoed("echo \"one");
    s.input(b"\r");
    s.out(b"\r\n> ");
    assert_eq!(s.t.pending_line().as_deref(), Some("echo \"one\n"));
    s.type_echoed("two");
    s.input(b"\r");
    s.out(b"\r\n> ");
    s.type_echoed("three\"");
    s.enter("one\r\ntwo\r\nthree\r\n");
    assert_eq!(s.take(), ["echo \"one\ntwo\nthree\""]);

    // An apostrophe inside double quotes does not open a quote.
    s.type_echoed("echo \"it's\"");
    s.enter("it's\r\n");
    assert_eq!(s.take(), ["echo \"it's\""]);
}

#[test]
fn pasted_quote_spanning_lines_and_misjudged_continuation() {
    let mut s = Session::new(80, 24);
    s.input(b"echo 'a\rb'\r");
    assert_eq!(s.take(), ["echo 'a\nb'"]);
    s.out(format!("echo 'a\r\n> b'\r\na\r\nb\r\n{PROMPT}").as_bytes());
    // The shell did not continue (no `>` prompt): the held line is reported on its own.
    s.type_echoed("echo \"x");
    s.input(b"\r");
    s.out(format!("\r\nbash: unexpected EOF\r\n{PROMPT}").as_bytes());
    assert!(s.take().is_empty());
    s.input(b"l");
    assert_eq!(s.take(), ["echo \"x"]);
    s.out(b"l");
    s.type_echoed("s");
    s.enter("");
    assert_eq!(s.take(), ["ls"]);
}

#[test]
fn escape_then_enter_still_submits() {
    let mut s = Session::new(80, 24);
    s.type_echoed("uname");
    s.input(b"\x1b\r");
    assert_eq!(s.take(), ["uname"]);
}

#[test]
fn full_screen_program_produces_nothing() {
    let mut s = Session::new(80, 24);
    s.type_echoed("vim notes.txt");
    s.input(b"\r");
    s.out(b"\r\n\x1b[?1049h\x1b[22;0;0t\x1b[H\x1b[2J~\r\n~\r\n\x1b[24;1H\"notes.txt\" 0L\x1b[1;1H");
    assert_eq!(s.take(), ["vim notes.txt"]);
    s.input(b"i");
    s.out(b"\x1b[24;1H-- INSERT --\x1b[1;1H");
    s.input(b"rm -rf /\r");
    s.out(b"rm -rf /\r\n");
    s.input(b"\x1b");
    s.out(b"\x1b[24;1H\x1b[K");
    assert_eq!(s.t.pending_line(), None);
    s.input(b":wq\r");
    s.out(b"\x1b[24;1H:wq\r\n\x1b[?1049l\x1b[23;0;0t");
    s.out(PROMPT.as_bytes());
    assert!(s.take().is_empty());
    s.type_echoed("ls");
    s.enter("notes.txt\r\n");
    assert_eq!(s.take(), ["ls"]);

    // less / top style: 1049 with keys and Enter.
    s.type_echoed("top");
    s.input(b"\r");
    s.out(b"\r\n\x1b[?1049h\x1b[Htop - 10:00:00 up 1 day");
    s.input(b"k\r15\rq");
    s.out(b"\x1b[?1049l");
    s.out(PROMPT.as_bytes());
    assert_eq!(s.take(), ["top"]);
}

#[test]
fn secret_input_is_not_recorded() {
    let mut s = Session::new(80, 24);
    s.type_echoed("sudo id");
    s.input(b"\r");
    s.out(b"\r\n[sudo] password for user: ");
    assert_eq!(s.take(), ["sudo id"]);
    s.t.set_secret_input(true);
    s.input(b"hunter2");
    assert_eq!(s.t.pending_line(), None);
    s.input(b"\r");
    s.t.set_secret_input(false);
    s.out(b"\r\nuid=0(root) gid=0(root)\r\n");
    s.out(PROMPT.as_bytes());
    assert!(s.take().is_empty());
    s.type_echoed("whoami");
    s.enter("user\r\n");
    assert_eq!(s.take(), ["whoami"]);
}

#[test]
fn shell_integration_marks_and_cwd() {
    let mut t = CommandTracker::new(80, 24);
    let prompt = |cwd: &str| {
        format!(
            "\x1b]7;file://host{cwd}\x07\x1b]133;A\x07user@host:~$ \x1b]133;B\x07\
             \x1b7\x1b[70G[12:00:00]\x1b8"
        )
    };
    t.on_output(1, prompt("/home/user/my%20dir").as_bytes());
    for (i, c) in "false".bytes().enumerate() {
        t.on_input(10 + i as u64, &[c]);
        t.on_output(20 + i as u64, &[c]);
    }
    assert_eq!(t.cwd(), Some("/home/user/my dir"));
    let ev = t.on_input(100, b"\r");
    assert_eq!(
        ev,
        [CommandEvent::Command {
            time_us: 100,
            text: "false".into(),
            cwd: Some("/home/user/my dir".into()),
        }]
    );
    t.on_output(
        110,
        format!("\r\n\x1b]133;C\x07\x1b]133;D;1\x1b\\{}", prompt("/tmp")).as_bytes(),
    );
    assert_eq!(
        t.take_events(),
        [CommandEvent::Finished {
            time_us: 110,
            exit_status: Some(1)
        }]
    );
    assert!(t.take_events().is_empty());
    // Typed ahead before the prompt was drawn: the B mark still gives the prompt end.
    t.on_input(120, b"t");
    t.on_output(
        130,
        format!("{}t", prompt("/tmp"))
            .replace("\x1b]7;", "\x1b]7;")
            .as_bytes(),
    );
    t.on_input(140, b"rue");
    t.on_output(150, b"rue");
    let ev = t.on_input(160, b"\r");
    assert_eq!(
        ev,
        [CommandEvent::Command {
            time_us: 160,
            text: "true".into(),
            cwd: Some("/tmp".into()),
        }]
    );
    t.on_output(170, b"\r\n\x1b]133;C\x07\x1b]133;D;0\x07");
    t.on_output(171, b"\x1b]133;D\x07");
    assert_eq!(
        t.take_events(),
        [
            CommandEvent::Finished {
                time_us: 170,
                exit_status: Some(0)
            },
            CommandEvent::Finished {
                time_us: 171,
                exit_status: None
            }
        ]
    );
}

#[test]
fn long_line_wraps_past_terminal_width() {
    let mut s = Session::new(20, 5);
    let cmd = "echo aaaaaaaaaa bbbbbbbbbbbb cccccccccccccc dddd";
    s.type_echoed(cmd);
    s.enter("aaaaaaaaaa bbbbbbbbbbbb cccccccccccccc dddd\r\n");
    assert_eq!(s.take(), [cmd]);
    // Editing in the middle of a wrapped line, with the screen scrolled.
    s.type_echoed("echo 0123456789012345678901234567890");
    s.input(b"\x01");
    s.out(b"\x1b[2A\r\x1b[13C");
    // Delete at the start: readline reprints the rest of the wrapped line and moves back.
    s.input(b"\x1b[3~");
    s.out(b"cho 0123456789012345678901234567890 \x08\x1b[2A\r\x1b[13C");
    s.input(b"\x05");
    s.out(b"\x1b[2B\r\x1b[8C");
    assert_eq!(
        s.t.pending_line().as_deref(),
        Some("cho 0123456789012345678901234567890")
    );
    s.enter("");
    assert_eq!(s.take(), ["cho 0123456789012345678901234567890"]);
}

#[test]
fn megabyte_of_output_between_commands() {
    let mut s = Session::new(80, 24);
    s.type_echoed("cat big.log");
    s.input(b"\r");
    s.out(b"\r\n");
    let line = "2026-01-01 12:00:00 INFO \x1b[32mrequest served\x1b[0m id=12345 path=/a/b/c\r\n";
    let chunk = line.repeat(64);
    let mut sent = 0;
    while sent < 1024 * 1024 {
        s.out(chunk.as_bytes());
        sent += chunk.len();
    }
    s.out(b"\x1b]133;D;0\x07");
    s.out(PROMPT.as_bytes());
    assert_eq!(s.take(), ["cat big.log"]);
    s.type_echoed("uptime");
    s.enter("up 1 day\r\n");
    assert_eq!(s.take(), ["uptime"]);
    assert_eq!(
        s.t.take_events(),
        [CommandEvent::Finished {
            time_us: s.now - 1000 * (1 + 2 * 6 + 2),
            exit_status: Some(0)
        }]
    );

    // A full-screen program that streams a lot stays full-screen after the buffer overflows.
    s.type_echoed("top");
    s.input(b"\r");
    s.out(b"\r\n\x1b[?1049h");
    let frame = "\x1b[H\x1b[2Jtop - 10:00:00 up 1 day, load average: 0.00\r\n".repeat(100);
    for _ in 0..100 {
        s.out(frame.as_bytes());
    }
    s.input(b"ls\r");
    assert_eq!(s.take(), ["top"]);
    s.out(b"\x1b[?1049l");
    s.out(PROMPT.as_bytes());
    s.type_echoed("id");
    s.enter("uid=1000\r\n");
    assert_eq!(s.take(), ["id"]);
}

#[test]
fn resize_keeps_the_line() {
    let mut s = Session::new(20, 5);
    s.type_echoed("echo resized line here");
    s.t.resize(80, 24);
    s.enter("resized line here\r\n");
    assert_eq!(s.take(), ["echo resized line here"]);
}

#[test]
fn ctrl_c_discards_the_line() {
    let mut s = Session::new(80, 24);
    s.type_echoed("echo \"unfinished");
    s.input(b"\r");
    s.out(b"\r\n> ");
    s.input(b"\x03");
    s.out(format!("^C\r\n{PROMPT}").as_bytes());
    s.type_echoed("ls");
    s.enter("");
    assert_eq!(s.take(), ["ls"]);
}

#[test]
fn utf8_command() {
    let mut s = Session::new(80, 24);
    s.type_echoed("echo héllo 界");
    s.enter("héllo 界\r\n");
    assert_eq!(s.take(), ["echo héllo 界"]);
}

#[test]
fn random_bytes_never_panic() {
    let mut x: u32 = 0x1234_5678;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    };
    for (cols, rows) in [(80u16, 24u16), (1, 1), (3, 2), (0, 0)] {
        let mut t = CommandTracker::new(cols, rows);
        for i in 0..3000u64 {
            let len = (next() % 40) as usize;
            let mut buf: Vec<u8> = (0..len).map(|_| (next() >> 8) as u8).collect();
            // Bias towards interesting bytes.
            if next() % 3 == 0 {
                buf.extend_from_slice(b"\x1b]133;B\x07\r\x1b[?1049h\x1b[201~\x1b]7;file://h/%zz%4");
            }
            match next() % 7 {
                0..=2 => t.on_output(i, &buf),
                3..=4 => {
                    t.on_input(i, &buf);
                }
                5 => {
                    t.pending_line();
                    t.set_secret_input(next() % 5 == 0);
                }
                _ => t.resize((next() % 200) as u16, (next() % 60) as u16),
            }
        }
        t.take_events();
    }
}
