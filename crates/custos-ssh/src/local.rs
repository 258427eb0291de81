//! The `local` target connector: a shell or command on the gateway host itself, on a
//! pseudo-terminal when the user asked for one, on pipes otherwise — the same shape as a
//! remote SSH channel so the pump does not care which it drives.

use bytes::Bytes;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::target::{StartRequest, TargetEvent};

/// The OS account a local session runs as.
#[derive(Clone, Debug)]
pub struct OsAccount {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    pub shell: String,
}

impl OsAccount {
    /// Looks up an account by name, or the account the gateway runs as when `name` is `None`.
    pub fn lookup(name: Option<&str>) -> io::Result<OsAccount> {
        let mut pwd: libc::passwd = unsafe_zeroed_passwd();
        let mut buf = vec![0u8; 16 * 1024];
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = match name {
            Some(n) => {
                let c = CString::new(n).map_err(|_| {
                    io::Error::new(io::ErrorKind::InvalidInput, "OS user name contains NUL")
                })?;
                // SAFETY: all pointers are valid for the duration of the call; buf outlives pwd use.
                unsafe {
                    libc::getpwnam_r(
                        c.as_ptr(),
                        &mut pwd,
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        &mut result,
                    )
                }
            }
            // SAFETY: as above.
            None => unsafe {
                libc::getpwuid_r(
                    libc::geteuid(),
                    &mut pwd,
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    &mut result,
                )
            },
        };
        if rc != 0 || result.is_null() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no OS account named '{}'", name.unwrap_or("(current user)")),
            ));
        }
        // SAFETY: getpwnam_r succeeded, so the string fields point into buf and are NUL-terminated.
        let field = |p: *const libc::c_char| unsafe {
            if p.is_null() {
                String::new()
            } else {
                std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
            }
        };
        let shell = field(pwd.pw_shell);
        Ok(OsAccount {
            name: field(pwd.pw_name),
            uid: pwd.pw_uid,
            gid: pwd.pw_gid,
            home: field(pwd.pw_dir),
            shell: if shell.is_empty() {
                "/bin/sh".into()
            } else {
                shell
            },
        })
    }
}

fn unsafe_zeroed_passwd() -> libc::passwd {
    // SAFETY: passwd is a plain C struct for which all-zero bytes is a valid value.
    unsafe { std::mem::zeroed() }
}

/// Terminal parameters requested by the user.
#[derive(Clone, Debug)]
pub struct PtyParams {
    pub term: String,
    pub cols: u32,
    pub rows: u32,
}

/// Input the pump sends to a local process.
pub enum LocalInput {
    Data(Bytes),
    Eof,
    Resize(u32, u32),
    Signal(i32),
}

/// Starts a local process and returns a sender for its input. Output and lifecycle events
/// arrive on `events`.
pub fn spawn(
    account: &OsAccount,
    pty: Option<&PtyParams>,
    env: &[(String, String)],
    start: &StartRequest,
    events: mpsc::Sender<TargetEvent>,
) -> io::Result<mpsc::Sender<LocalInput>> {
    let mut cmd = std::process::Command::new(&account.shell);
    match start {
        StartRequest::Shell => {
            // A login shell, as sshd starts it: argv[0] prefixed with '-'.
            let base = account.shell.rsplit('/').next().unwrap_or("sh");
            cmd.arg0(format!("-{base}"));
        }
        StartRequest::Exec(command) => {
            cmd.arg("-c")
                .arg(String::from_utf8_lossy(command).into_owned());
        }
        StartRequest::Subsystem(name) if name == "sftp" => {
            cmd = std::process::Command::new(sftp_server_path()?);
        }
        StartRequest::Subsystem(name) => {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("subsystem '{name}' is not available on the local target"),
            ));
        }
    }
    cmd.env_clear()
        .env("HOME", &account.home)
        .env("USER", &account.name)
        .env("LOGNAME", &account.name)
        .env("SHELL", &account.shell)
        .env(
            "PATH",
            "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin",
        )
        .current_dir(&account.home);
    for (k, v) in env {
        cmd.env(k, v);
    }
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if account.uid != euid {
        cmd.uid(account.uid).gid(account.gid);
    }
    match pty {
        Some(p) => spawn_pty(cmd, p, events),
        None => spawn_pipes(cmd, events),
    }
}

fn sftp_server_path() -> io::Result<&'static str> {
    for p in [
        "/usr/lib/openssh/sftp-server",
        "/usr/libexec/openssh/sftp-server",
        "/usr/libexec/sftp-server",
        "/usr/lib/ssh/sftp-server",
    ] {
        if std::path::Path::new(p).exists() {
            return Ok(p);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        "no sftp-server binary found on the gateway host (install openssh-sftp-server)",
    ))
}

fn spawn_pipes(
    mut cmd: std::process::Command,
    events: mpsc::Sender<TargetEvent>,
) -> io::Result<mpsc::Sender<LocalInput>> {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = tokio::process::Command::from(cmd).spawn()?;
    let mut stdin = child.stdin.take();
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| io::Error::other("no stdout pipe"))?;
    let mut stderr = child
        .stderr
        .take()
        .ok_or_else(|| io::Error::other("no stderr pipe"))?;
    let pid = child.id();
    let (tx, mut rx) = mpsc::channel::<LocalInput>(64);

    tokio::spawn(async move {
        while let Some(input) = rx.recv().await {
            match input {
                LocalInput::Data(d) => {
                    if let Some(s) = stdin.as_mut()
                        && s.write_all(&d).await.is_err()
                    {
                        stdin = None;
                    }
                }
                LocalInput::Eof => stdin = None,
                LocalInput::Resize(..) => {}
                LocalInput::Signal(sig) => signal_pid(pid, sig),
            }
        }
    });

    let ev = events.clone();
    let out_task = tokio::spawn(async move { read_into(&mut stdout, &ev, false).await });
    let ev = events.clone();
    let err_task = tokio::spawn(async move { read_into(&mut stderr, &ev, true).await });
    tokio::spawn(async move {
        let _ = out_task.await;
        let _ = err_task.await;
        let _ = events.send(TargetEvent::Eof).await;
        let status = child.wait().await;
        send_exit(&events, status).await;
    });
    Ok(tx)
}

async fn read_into<R: tokio::io::AsyncRead + Unpin>(
    r: &mut R,
    events: &mpsc::Sender<TargetEvent>,
    stderr: bool,
) {
    let mut buf = bytes::BytesMut::with_capacity(32 * 1024);
    loop {
        buf.reserve(32 * 1024);
        match r.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let chunk = buf.split().freeze();
                let ev = if stderr {
                    TargetEvent::Stderr(chunk)
                } else {
                    TargetEvent::Data(chunk)
                };
                if events.send(ev).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn send_exit(
    events: &mpsc::Sender<TargetEvent>,
    status: io::Result<std::process::ExitStatus>,
) {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => {
            if let Some(code) = s.code() {
                let _ = events.send(TargetEvent::ExitStatus(code as u32)).await;
            } else if let Some(sig) = s.signal() {
                let _ = events
                    .send(TargetEvent::ExitSignal {
                        signal: signal_name(sig).to_string(),
                        core_dumped: s.core_dumped(),
                        message: String::new(),
                    })
                    .await;
            }
        }
        Err(e) => {
            let _ = events
                .send(TargetEvent::Stderr(Bytes::from(format!(
                    "custos: waiting for the local process failed: {e}\r\n"
                ))))
                .await;
        }
    }
    let _ = events.send(TargetEvent::Closed).await;
}

fn signal_pid(pid: Option<u32>, sig: i32) {
    if let Some(pid) = pid {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe {
            libc::kill(pid as libc::pid_t, sig);
        }
    }
}

/// SSH signal names (RFC 4254 §6.10) to Unix signal numbers.
pub fn signal_number(name: &str) -> Option<i32> {
    Some(match name {
        "ABRT" => libc::SIGABRT,
        "ALRM" => libc::SIGALRM,
        "FPE" => libc::SIGFPE,
        "HUP" => libc::SIGHUP,
        "ILL" => libc::SIGILL,
        "INT" => libc::SIGINT,
        "KILL" => libc::SIGKILL,
        "PIPE" => libc::SIGPIPE,
        "QUIT" => libc::SIGQUIT,
        "SEGV" => libc::SIGSEGV,
        "TERM" => libc::SIGTERM,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        _ => return None,
    })
}

/// Unix signal numbers to SSH signal names.
pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGABRT => "ABRT",
        libc::SIGALRM => "ALRM",
        libc::SIGFPE => "FPE",
        libc::SIGHUP => "HUP",
        libc::SIGILL => "ILL",
        libc::SIGINT => "INT",
        libc::SIGKILL => "KILL",
        libc::SIGPIPE => "PIPE",
        libc::SIGQUIT => "QUIT",
        libc::SIGSEGV => "SEGV",
        libc::SIGTERM => "TERM",
        libc::SIGUSR1 => "USR1",
        libc::SIGUSR2 => "USR2",
        _ => "UNKNOWN",
    }
}

fn set_winsize(fd: RawFd, cols: u32, rows: u32) {
    let ws = libc::winsize {
        ws_row: rows.min(u16::MAX as u32) as u16,
        ws_col: cols.min(u16::MAX as u32) as u16,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: fd is an open terminal descriptor and ws a valid winsize.
    unsafe {
        libc::ioctl(fd, libc::TIOCSWINSZ, &ws);
    }
}

fn spawn_pty(
    mut cmd: std::process::Command,
    p: &PtyParams,
    events: mpsc::Sender<TargetEvent>,
) -> io::Result<mpsc::Sender<LocalInput>> {
    let mut master: RawFd = -1;
    let mut slave: RawFd = -1;
    // SAFETY: openpty writes two descriptors; name, termios and winsize may be null.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: openpty succeeded, so both descriptors are open and owned by us.
    let master = unsafe { OwnedFd::from_raw_fd(master) };
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    set_winsize(master.as_raw_fd(), p.cols, p.rows);
    cmd.env("TERM", &p.term);
    cmd.stdin(Stdio::from(slave.try_clone()?))
        .stdout(Stdio::from(slave.try_clone()?))
        .stderr(Stdio::from(slave));
    // SAFETY: only async-signal-safe calls (setsid, ioctl) run between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = tokio::process::Command::from(cmd).spawn()?;
    let pid = child.id();
    set_nonblocking(master.as_raw_fd())?;
    // SAFETY: `master` is an owned, open descriptor that nothing else reads or closes; the
    // AsyncFd takes ownership of it.
    let master =
        unsafe { AsyncFd::register(master) }.map_err(|e| io::Error::other(e.to_string()))?;
    let master = std::sync::Arc::new(master);
    let (tx, mut rx) = mpsc::channel::<LocalInput>(64);

    let writer = master.clone();
    tokio::spawn(async move {
        while let Some(input) = rx.recv().await {
            match input {
                LocalInput::Data(d) => {
                    if write_all_fd(&writer, &d).await.is_err() {
                        break;
                    }
                }
                // End of input on a terminal: the line discipline's EOF character.
                LocalInput::Eof => {
                    let _ = write_all_fd(&writer, &[4]).await;
                }
                LocalInput::Resize(c, r) => {
                    set_winsize(writer.get_ref().as_raw_fd(), c, r);
                }
                LocalInput::Signal(sig) => signal_pid(pid, sig),
            }
        }
    });

    tokio::spawn(async move {
        let mut buf = bytes::BytesMut::with_capacity(32 * 1024);
        loop {
            buf.reserve(32 * 1024);
            match read_fd(&master, &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if events
                        .send(TargetEvent::Data(buf.split().freeze()))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
        let _ = events.send(TargetEvent::Eof).await;
        let status = child.wait().await;
        send_exit(&events, status).await;
    });
    Ok(tx)
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on an open descriptor.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

async fn read_fd(fd: &AsyncFd<OwnedFd>, buf: &mut bytes::BytesMut) -> io::Result<usize> {
    loop {
        let mut guard = fd.readable().await?;
        let spare = buf.spare_capacity_mut();
        // SAFETY: reading into uninitialised spare capacity of the right length; only the
        // bytes the kernel reports as written are marked initialised below.
        let res = guard.try_io(|inner| {
            let n = unsafe {
                libc::read(
                    inner.get_ref().as_raw_fd(),
                    spare.as_mut_ptr().cast(),
                    spare.len(),
                )
            };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        });
        match res {
            Ok(Ok(n)) => {
                // SAFETY: the kernel initialised n bytes.
                unsafe { buf.set_len(buf.len() + n) };
                return Ok(n);
            }
            // EIO means the slave side closed: the process and its children have exited.
            Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Ok(0),
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => continue,
        }
    }
}

async fn write_all_fd(fd: &AsyncFd<OwnedFd>, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        let mut guard = fd.writable().await?;
        let res = guard.try_io(|inner| {
            // SAFETY: data is a valid slice.
            let n = unsafe {
                libc::write(
                    inner.get_ref().as_raw_fd(),
                    data.as_ptr().cast(),
                    data.len(),
                )
            };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        });
        match res {
            Ok(Ok(n)) => data = &data[n..],
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => continue,
        }
    }
    Ok(())
}

/// Pumps a TCP stream opened on the gateway for a forwarded connection of the local target.
pub fn pump_tcp(
    stream: tokio::net::TcpStream,
    mut input: mpsc::Receiver<LocalInput>,
    events: mpsc::Sender<TargetEvent>,
) {
    let (mut r, mut w) = stream.into_split();
    tokio::spawn(async move {
        while let Some(i) = input.recv().await {
            match i {
                LocalInput::Data(d) if w.write_all(&d).await.is_err() => break,
                LocalInput::Eof => {
                    let _ = w.shutdown().await;
                }
                _ => {}
            }
        }
    });
    tokio::spawn(async move {
        read_into(&mut r, &events, false).await;
        let _ = events.send(TargetEvent::Eof).await;
        let _ = events.send(TargetEvent::Closed).await;
    });
}
