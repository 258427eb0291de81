//! `custos sessions watch`: a live session mirrored read-only in this terminal.
//!
//! The gateway answers with the session's screen as it is now, then its terminal output as it
//! happens (see `control` for the stream). Standard output gets exactly those terminal bytes,
//! so piping it to a file works too; messages go to standard error.
//!
//! Nothing typed here reaches the session. When standard input is a terminal its echo and line
//! editing are turned off while watching (Ctrl-C still stops) and restored at the end, with
//! anything typed meanwhile discarded: a watched program can make the terminal answer queries
//! (cursor position, device attributes), and those answers must not land in the
//! administrator's shell afterwards.
//!
//! Limits: the picture is exact only on a terminal at least as large as the session's; this
//! terminal is not resized to match.

use anyhow::{Result, bail};
use custos_core::SessionState;
use custos_store::Store;
use std::io::{IsTerminal, Write};
use std::path::Path;
use tokio::signal::unix::{SignalKind, signal};

use crate::control::{self, Frame};

/// Undoes what a session may have switched on in this terminal: DECSTR soft reset (colours,
/// cursor visibility, keypad and cursor-key modes, margins, origin mode), back to the main
/// screen, mouse reporting and bracketed paste off.
const RESTORE: &[u8] =
    b"\x1b[!p\x1b[?1049l\x1b[?1000l\x1b[?1002l\x1b[?1003l\x1b[?1006l\x1b[?2004l\r\n";

enum Outcome {
    Ended(String),
    Stopped(String),
    Interrupted,
    Lost,
}

pub async fn run(data: &Path, store: &Store, id: &str) -> Result<i32> {
    let s = store.find_session(id).await?;
    let not_live = |state: SessionState| {
        anyhow::anyhow!(
            "session {} is not live (it is {}); replay its recording with `custos play {}`",
            s.id,
            state.as_str(),
            s.id
        )
    };
    if s.state != SessionState::Live {
        return Err(not_live(s.state));
    }
    let mut stream = match control::watch_session(data, s.id).await? {
        None => bail!(
            "the gateway is not running (no admin socket in {})",
            data.display()
        ),
        Some(Ok(stream)) => stream,
        Some(Err(refused)) => {
            // The session may have ended since it was looked up.
            let now = store.find_session(&s.id.to_string()).await?;
            if now.state != SessionState::Live {
                return Err(not_live(now.state));
            }
            bail!("cannot watch session {}: {refused}", s.id);
        }
    };
    eprintln!(
        "watching session {} ({}@{}), read-only; Ctrl-C to stop",
        s.id, s.user, s.target
    );
    let tty = std::io::stdout().is_terminal();
    let quiet = QuietInput::start();
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let mut out = std::io::stdout();
    let outcome = loop {
        let frame = tokio::select! {
            f = stream.next() => f,
            _ = interrupt.recv() => break Outcome::Interrupted,
            _ = terminate.recv() => break Outcome::Interrupted,
            _ = hangup.recv() => break Outcome::Interrupted,
        };
        let written = match frame {
            Ok(Some(Frame::Screen { paint, .. })) => out.write_all(&paint),
            Ok(Some(Frame::Output(b))) => out.write_all(&b),
            // This terminal keeps its size; the session's size only matters to the picture.
            Ok(Some(Frame::Resize { .. })) => Ok(()),
            Ok(Some(Frame::Notice(text))) => {
                eprintln!("{text}");
                Ok(())
            }
            Ok(Some(Frame::End(reason))) => break Outcome::Ended(reason),
            Ok(Some(Frame::Stopped(why))) => break Outcome::Stopped(why),
            Ok(None) => break Outcome::Lost,
            Err(e) => break Outcome::Stopped(format!("{e:#}")),
        };
        if written.and_then(|()| out.flush()).is_err() {
            // Standard output is gone (a closed pipe): nobody is watching any more.
            break Outcome::Interrupted;
        }
    };
    if tty {
        let _ = out.write_all(RESTORE);
        let _ = out.flush();
    }
    drop(quiet);
    match outcome {
        Outcome::Ended(reason) => {
            eprintln!("session {} ended: {reason}", s.id);
            Ok(0)
        }
        Outcome::Interrupted => {
            eprintln!("stopped watching session {}", s.id);
            Ok(0)
        }
        Outcome::Stopped(why) => bail!("watching session {} stopped: {why}", s.id),
        Outcome::Lost => bail!(
            "the gateway closed the watch of session {} without saying why (did it stop?)",
            s.id
        ),
    }
}

/// Standard input with echo and line editing off (signals on), for as long as it lives.
struct QuietInput {
    saved: libc::termios,
}

impl QuietInput {
    /// `None` when standard input is not a terminal or cannot be changed; watching works
    /// the same, only without the protection.
    fn start() -> Option<QuietInput> {
        if !std::io::stdin().is_terminal() {
            return None;
        }
        let mut saved = std::mem::MaybeUninit::<libc::termios>::uninit();
        // SAFETY: tcgetattr only writes a termios into the buffer it is given, and the value is
        // read only when it reports success.
        let saved = unsafe {
            if libc::tcgetattr(libc::STDIN_FILENO, saved.as_mut_ptr()) != 0 {
                return None;
            }
            saved.assume_init()
        };
        let mut quiet = saved;
        quiet.c_lflag &= !(libc::ECHO | libc::ICANON);
        quiet.c_cc[libc::VMIN] = 1;
        quiet.c_cc[libc::VTIME] = 0;
        // SAFETY: a plain system call on a valid termios value.
        if unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &quiet) } != 0 {
            return None;
        }
        Some(QuietInput { saved })
    }
}

impl Drop for QuietInput {
    fn drop(&mut self) {
        // TCSAFLUSH also discards input nobody read: keys, and the terminal's answers to
        // queries the session's output made.
        // SAFETY: a plain system call on the termios saved at the start.
        unsafe {
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSAFLUSH, &self.saved);
        }
    }
}
