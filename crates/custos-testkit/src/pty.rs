//! A program on its own pseudo-terminal, driven like a person at a keyboard.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

/// How often the reader thread checks whether it should stop.
const READER_POLL_MS: libc::c_int = 50;

/// How much of the output an error message quotes (the tail, where the failure usually is).
const ERROR_TAIL: usize = 4000;

/// A child process whose stdin, stdout and stderr are the slave side of a new pseudo-terminal,
/// which is also its controlling terminal.
///
/// A background thread copies everything the program writes into a buffer. [`Pty::expect`]
/// consumes that buffer like `expect(1)`: each match moves a cursor past the matched text, so
/// the next `expect` only sees newer output. [`Pty::output`] always returns everything.
///
/// Dropping the value kills the child's process group and reaps the child.
#[derive(Debug)]
pub struct Pty {
    master: Arc<OwnedFd>,
    child: Child,
    shared: Arc<Shared>,
    cursor: usize,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    output: Vec<u8>,
    eof: bool,
    error: Option<String>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means the reader thread panicked; the bytes are still valid.
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

impl Pty {
    /// Starts `cmd` on a new pseudo-terminal of `cols` x `rows`.
    ///
    /// The child runs in a new session with the terminal as its controlling tty, so job control,
    /// `SIGWINCH` and `/dev/tty` work as in a real terminal. `TERM` defaults to `xterm-256color`
    /// unless `cmd` sets or removes it. Any stdio configured on `cmd` is replaced.
    pub fn spawn(mut cmd: Command, cols: u16, rows: u16) -> Result<Pty> {
        let (master, slave) = open_pty().context("allocating a pseudo-terminal")?;
        set_window_size(master.as_raw_fd(), cols, rows)
            .context("setting the initial terminal size")?;
        let stdio = |fd: &OwnedFd| -> Result<Stdio> {
            Ok(Stdio::from(
                fd.try_clone().context("duplicating the terminal")?,
            ))
        };
        cmd.stdin(stdio(&slave)?)
            .stdout(stdio(&slave)?)
            .stderr(stdio(&slave)?);
        if !cmd.get_envs().any(|(key, _)| key == "TERM") {
            cmd.env("TERM", "xterm-256color");
        }
        // SAFETY: the closure only calls async-signal-safe functions (setsid, ioctl).
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(io::Error::last_os_error());
                }
                // stdin is the slave by now; make it the controlling terminal of the session.
                if libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let program = cmd.get_program().to_string_lossy().into_owned();
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {program} on a pseudo-terminal"))?;
        // Only the child may hold the slave: while any copy stays open here, reading the master
        // would never report the end of the output.
        drop(cmd);
        drop(slave);

        let master = Arc::new(master);
        let shared = Arc::new(Shared::default());
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let master = Arc::clone(&master);
            let shared = Arc::clone(&shared);
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("custos-pty-reader".into())
                .spawn(move || read_loop(&master, &shared, &stop))
        };
        let mut pty = Pty {
            master,
            child,
            shared,
            cursor: 0,
            stop,
            reader: None,
        };
        pty.reader = Some(reader.context("starting the terminal reader thread")?);
        Ok(pty)
    }

    /// The child's process id (also its session and process group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Writes raw bytes to the terminal, as if typed.
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        let fd = self.master.as_raw_fd();
        let mut rest = bytes;
        while !rest.is_empty() {
            // SAFETY: `rest` is a valid buffer of `rest.len()` bytes.
            let n = unsafe { libc::write(fd, rest.as_ptr().cast(), rest.len()) };
            if n < 0 {
                let err = io::Error::last_os_error();
                match err.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock => {
                        wait_fd(fd, libc::POLLOUT, 50);
                        continue;
                    }
                    _ => return Err(err).context("writing to the terminal"),
                }
            }
            let written = usize::try_from(n).unwrap_or(0);
            rest = &rest[written.min(rest.len())..];
        }
        Ok(())
    }

    /// Types `line` followed by Enter (carriage return, which is what a terminal sends).
    pub fn send_line(&mut self, line: &str) -> Result<()> {
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\r');
        self.write(&bytes)
    }

    /// Types Ctrl-`key`, e.g. `'c'` for an interrupt or `'d'` for end of input.
    pub fn send_control(&mut self, key: char) -> Result<()> {
        if !key.is_ascii_alphabetic() && !"@[\\]^_".contains(key) {
            bail!("no control code for {key:?}");
        }
        let code = (key.to_ascii_uppercase() as u8) & 0x1f;
        self.write(&[code])
    }

    /// Waits until the output after the cursor contains `pattern`, then moves the cursor past
    /// the match and returns the text from the old cursor up to and including the match.
    ///
    /// Fails when `timeout` passes or the terminal reaches end of output first; the error
    /// quotes the output seen so far.
    pub fn expect(&mut self, pattern: &str, timeout: Duration) -> Result<String> {
        let needle = pattern.as_bytes();
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        loop {
            if let Some(pos) = find(&state.output[self.cursor..], needle) {
                let start = self.cursor;
                self.cursor += pos + needle.len();
                return Ok(String::from_utf8_lossy(&state.output[start..self.cursor]).into_owned());
            }
            if state.eof {
                let reason = state
                    .error
                    .as_deref()
                    .unwrap_or("end of output")
                    .to_string();
                bail!(
                    "terminal reached {reason} before {pattern:?} appeared; output so far: {}",
                    quote_tail(&state.output)
                );
            }
            let now = Instant::now();
            if now >= deadline {
                bail!(
                    "{pattern:?} did not appear within {timeout:?}; output so far: {}",
                    quote_tail(&state.output)
                );
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, deadline - now)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|poison| poison.into_inner().0);
        }
    }

    /// Waits until the terminal reports end of output (every holder of the slave side, usually
    /// the child and its descendants, has closed it) and returns the output after the cursor.
    pub fn expect_eof(&mut self, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        loop {
            if state.eof {
                let start = self.cursor;
                self.cursor = state.output.len();
                return Ok(String::from_utf8_lossy(&state.output[start..]).into_owned());
            }
            let now = Instant::now();
            if now >= deadline {
                bail!(
                    "the terminal stayed open for {timeout:?}; output so far: {}",
                    quote_tail(&state.output)
                );
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, deadline - now)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|poison| poison.into_inner().0);
        }
    }

    /// Everything the program wrote so far, including escape sequences, decoded lossily.
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.shared.lock().output).into_owned()
    }

    /// Changes the window size. The kernel then sends `SIGWINCH` to the terminal's foreground
    /// process group (for `ssh`, the client, which forwards a window-change request).
    pub fn resize(&mut self, cols: u16, rows: u16) -> Result<()> {
        set_window_size(self.master.as_raw_fd(), cols, rows).context("resizing the terminal")
    }

    /// Returns the exit status if the child has exited, without blocking.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        self.child
            .try_wait()
            .context("polling the terminal's child")
    }

    /// Waits up to `timeout` for the child to exit.
    pub fn wait(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                return Err(anyhow!(
                    "the child (pid {}) did not exit within {timeout:?}; output so far: {}",
                    self.child.id(),
                    quote_tail(&self.shared.lock().output)
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills the child's process group with SIGKILL if the child is still running, and reaps it.
    pub fn kill(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // The child is not reaped yet, so its pid still names its own process group.
            if let Ok(pgid) = libc::pid_t::try_from(self.child.id()) {
                // SAFETY: kill(2) has no memory-safety preconditions.
                unsafe {
                    libc::kill(-pgid, libc::SIGKILL);
                }
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        self.kill();
        self.stop.store(true, Ordering::Relaxed);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// Opens a master/slave pair. Both ends are close-on-exec so that processes spawned by other
/// threads never inherit them (an inherited slave would hide the child's exit from the reader).
fn open_pty() -> io::Result<(OwnedFd, OwnedFd)> {
    // SAFETY: plain syscalls; every returned descriptor is wrapped in an OwnedFd at once.
    unsafe {
        let fd = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let master = OwnedFd::from_raw_fd(fd);
        if libc::grantpt(fd) != 0 || libc::unlockpt(fd) != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut name = [0 as libc::c_char; 128];
        let rc = libc::ptsname_r(fd, name.as_mut_ptr(), name.len());
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        let slave = libc::open(
            CStr::from_ptr(name.as_ptr()).as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        if slave < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((master, OwnedFd::from_raw_fd(slave)))
    }
}

fn set_window_size(fd: RawFd, cols: u16, rows: u16) -> io::Result<()> {
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize from the given valid pointer.
    if unsafe { libc::ioctl(fd, libc::TIOCSWINSZ as _, &size) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Waits up to `timeout_ms` for `events` on `fd`; returns the reported events (0 on timeout).
fn wait_fd(fd: RawFd, events: libc::c_short, timeout_ms: libc::c_int) -> libc::c_short {
    let mut pollfd = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let rc = unsafe { libc::poll(&mut pollfd, 1, timeout_ms) };
    if rc > 0 { pollfd.revents } else { 0 }
}

/// Copies the master's output into `shared` until end of output or `stop`.
fn read_loop(master: &OwnedFd, shared: &Shared, stop: &AtomicBool) {
    let fd = master.as_raw_fd();
    let mut buf = [0u8; 8192];
    let finish = |error: Option<String>| {
        let mut state = shared.lock();
        state.eof = true;
        state.error = error;
        drop(state);
        shared.changed.notify_all();
    };
    while !stop.load(Ordering::Relaxed) {
        if wait_fd(fd, libc::POLLIN, READER_POLL_MS) == 0 {
            continue;
        }
        // SAFETY: `buf` is valid for `buf.len()` bytes.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n > 0 {
            let n = usize::try_from(n).unwrap_or(0);
            shared.lock().output.extend_from_slice(&buf[..n]);
            shared.changed.notify_all();
            continue;
        }
        if n == 0 {
            return finish(None);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) | Some(libc::EAGAIN) => continue,
            // Linux reports EIO on the master once the last slave descriptor is closed.
            Some(libc::EIO) => return finish(None),
            _ => return finish(Some(format!("read error: {err}"))),
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// The last part of the output, escaped so control characters are visible in test failures.
fn quote_tail(output: &[u8]) -> String {
    let start = output.len().saturating_sub(ERROR_TAIL);
    let text = String::from_utf8_lossy(&output[start..]);
    if start > 0 {
        format!("[{start} earlier bytes omitted] {text:?}")
    } else {
        format!("{text:?}")
    }
}
