//! Watching a live session through the real gateway, sshd and ssh: the administrator first
//! sees the screen as it already is, then every later output, until the session ends.

mod support;

use anyhow::{Result, bail};
use custos_testkit::Pty;
use std::io::Read;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use support::Setup;

const T: Duration = Duration::from_secs(15);

fn shell(s: &Setup) -> Pty {
    let mut c = s.ssh();
    c.arg("-tt");
    let mut p = Pty::spawn(c, 80, 24).unwrap();
    p.send_line("echo ready-$((2*21))").unwrap();
    p.expect("ready-42", T).unwrap();
    p
}

fn live_id(s: &Setup) -> String {
    let out = s.gw.cli(&["sessions", "list", "--live", "--json"]).unwrap();
    let v: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(v.len(), 1, "{out}");
    v[0]["id"].as_str().unwrap().to_string()
}

/// `custos sessions watch` with its output piped (not a terminal) and collected as it comes.
struct Watcher {
    child: Child,
    out: Arc<Mutex<Vec<u8>>>,
    err: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
}

fn collect(mut from: impl Read + Send + 'static) -> (Arc<Mutex<Vec<u8>>>, JoinHandle<()>) {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let to = buf.clone();
    let h = std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n @ 1..) = from.read(&mut chunk) {
            to.lock().unwrap().extend_from_slice(&chunk[..n]);
        }
    });
    (buf, h)
}

impl Watcher {
    fn start(s: &Setup, id: &str) -> Watcher {
        let mut child =
            s.gw.cmd()
                .args(["sessions", "watch", id])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
        let (out, a) = collect(child.stdout.take().unwrap());
        let (err, b) = collect(child.stderr.take().unwrap());
        Watcher {
            child,
            out,
            err,
            readers: vec![a, b],
        }
    }

    fn out(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().unwrap()).into_owned()
    }

    fn err(&self) -> String {
        String::from_utf8_lossy(&self.err.lock().unwrap()).into_owned()
    }

    fn expect(&self, needle: &str) -> Result<()> {
        let deadline = Instant::now() + T;
        while Instant::now() < deadline {
            if self.out().contains(needle) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!(
            "the watcher never showed {needle:?}; out: {:?}; err: {}",
            self.out(),
            self.err()
        )
    }

    fn finish(mut self) -> (ExitStatus, String, String) {
        let deadline = Instant::now() + T;
        let status = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the watcher did not exit; err: {}", self.err());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        for r in self.readers.drain(..) {
            r.join().unwrap();
        }
        (status, self.out(), self.err())
    }
}

#[test]
fn a_watcher_sees_the_current_screen_then_live_output_until_the_session_ends() {
    let s = Setup::new().unwrap();
    let mut p = shell(&s);
    // Computed by the shell, so only the output (not the typed line) holds the marker.
    p.send_line("echo before-$((6*7))").unwrap();
    p.expect("before-42", T).unwrap();
    let id = live_id(&s);

    let w = Watcher::start(&s, &id[..12]);
    // Nothing new happens in the session: the marker can only come from the screen the
    // watch starts from.
    w.expect("before-42").unwrap();
    assert!(
        w.out().starts_with("\x1bc"),
        "the stream starts by resetting the terminal: {:?}",
        w.out()
    );
    let header = w.err();
    assert!(
        header.contains(&format!("watching session {id} (alice@srv), read-only")),
        "{header}"
    );

    p.send_line("echo after-$((6*9))").unwrap();
    p.expect("after-54", T).unwrap();
    w.expect("after-54").unwrap();

    p.send_line("exit").unwrap();
    p.wait(T).unwrap();
    let (status, out, err) = w.finish();
    assert!(status.success(), "{status}: {err}");
    assert!(out.contains("after-54"), "{out:?}");
    assert!(err.contains(&format!("session {id} ended: ")), "{err}");

    // Watching is an access: the gateway logs who watched what, and when it stopped.
    s.gw.wait_log("stopped watching a session", T).unwrap();
    let log = s.gw.log();
    let started = log
        .lines()
        .find(|l| l.contains("started watching a live session"))
        .unwrap_or_else(|| panic!("no access in the log:\n{log}"));
    assert!(started.contains(&id), "{started}");
    assert!(started.contains("admin_uid"), "{started}");
}

#[test]
fn ctrl_c_stops_a_watch_on_a_terminal_and_the_session_goes_on() {
    let s = Setup::new().unwrap();
    let mut p = shell(&s);
    p.send_line("echo before-$((6*7))").unwrap();
    p.expect("before-42", T).unwrap();
    let id = live_id(&s);

    // The watcher on a terminal of its own, as an administrator runs it.
    let mut c = s.gw.cmd();
    c.args(["sessions", "watch", &id]);
    let mut w = Pty::spawn(c, 80, 24).unwrap();
    w.expect("Ctrl-C to stop", T).unwrap();
    w.expect("before-42", T).unwrap();
    p.send_line("echo after-$((6*9))").unwrap();
    w.expect("after-54", T).unwrap();

    // Typing into the watcher reaches nothing; Ctrl-C stops it.
    w.send_line("echo typed-$((5*5))").unwrap();
    w.send_control('c').unwrap();
    w.expect(&format!("stopped watching session {id}"), T)
        .unwrap();
    assert!(w.wait(T).unwrap().success());
    // The terminal was handed back in a sane state (main screen, cursor shown, no mouse).
    assert!(
        w.output().contains("\x1b[!p\x1b[?1049l"),
        "{:?}",
        w.output()
    );
    assert!(!w.output().contains("typed-25"), "{:?}", w.output());

    // The watched session never noticed.
    p.send_line("echo still-$((1+1))").unwrap();
    p.expect("still-2", T).unwrap();
    assert!(!p.output().contains("typed-"), "{:?}", p.output());
    s.gw.wait_log("the watcher left", T).unwrap();
}

#[test]
fn watching_an_unknown_or_ended_session_fails_clearly() {
    let s = Setup::new().unwrap();
    let out = s.gw.cli_raw(&["sessions", "watch", "01ZZZZZZZZ"]).unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("01ZZZZZZZZ"), "{err}");

    let done = s.ssh().arg("true").output().unwrap();
    assert!(done.status.success(), "{done:?}");
    s.gw.wait_idle(T).unwrap();
    let id = s.gw.last_session().unwrap();
    let out = s.gw.cli_raw(&["sessions", "watch", &id]).unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not live"), "{err}");
    assert!(err.contains(&format!("custos play {id}")), "{err}");
    assert!(out.stdout.is_empty());
}
