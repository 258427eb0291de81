//! Live watchers of a recording: they start from the current screen, follow every later
//! terminal event in order, and never slow the recording down.

mod common;

use std::time::Duration;

use common::*;
use custos_recording::{
    EventKind, MAX_WATCHERS, Reader, Recorder, RecorderConfig, RecorderHandle, Watch, WatchEnd,
    WatchEvent,
};

const T: Duration = Duration::from_secs(5);

async fn start(cfg: RecorderConfig) -> (tempfile::TempDir, RecorderHandle) {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = Recorder::start_with(dir.path().join("rec"), keys(), metadata(), cfg)
        .await
        .expect("start");
    (dir, h)
}

fn pty(cols: u16, rows: u16) -> EventKind {
    EventKind::PtyRequest {
        term: "xterm".into(),
        cols,
        rows,
    }
}

async fn next(w: &mut Watch) -> Result<WatchEvent, WatchEnd> {
    tokio::time::timeout(T, w.next())
        .await
        .expect("a watch event in time")
}

fn text(ev: &WatchEvent) -> String {
    match ev {
        WatchEvent::Output { data, .. } => String::from_utf8_lossy(data).into_owned(),
        other => panic!("expected output, got {other:?}"),
    }
}

#[tokio::test]
async fn a_watch_starts_from_the_current_screen_then_follows_until_the_end() {
    let (_dir, h) = start(RecorderConfig::default()).await;
    h.record(ev(0, 0, pty(80, 24))).await.expect("record");
    h.record(out(10, b"first screen\r\n$ "))
        .await
        .expect("record");
    let mut w = h.watch().await.expect("watch");
    assert_eq!(w.screens.len(), 1);
    let s = &w.screens[0];
    assert_eq!((s.channel, s.cols, s.rows), (0, 80, 24));
    let paint = String::from_utf8_lossy(&s.paint);
    assert!(paint.starts_with("\x1bc"), "{paint:?}");
    assert!(paint.contains("first screen"), "{paint:?}");

    h.record(out(20, b"later")).await.expect("record");
    h.record(ev(
        30,
        0,
        EventKind::Resize {
            cols: 100,
            rows: 30,
        },
    ))
    .await
    .expect("record");
    assert_eq!(text(&next(&mut w).await.expect("output")), "later");
    match next(&mut w).await.expect("resize") {
        WatchEvent::Resize {
            channel: 0,
            cols: 100,
            rows: 30,
        } => {}
        other => panic!("expected the resize, got {other:?}"),
    }
    h.finish("closed").await.expect("finish");
    assert_eq!(
        next(&mut w).await.unwrap_err(),
        WatchEnd::Finished("closed".into())
    );
    // The end stays the answer.
    assert_eq!(
        next(&mut w).await.unwrap_err(),
        WatchEnd::Finished("closed".into())
    );
}

#[tokio::test]
async fn echoed_keystrokes_reach_the_watcher_as_output_only() {
    let (_dir, h) = start(RecorderConfig::default()).await;
    h.record(ev(0, 0, pty(80, 24))).await.expect("record");
    let mut w = h.watch().await.expect("watch");
    // The keystroke is held until its echo decides it; the watcher sees the echo, not the key.
    h.record(input(10, b"l")).await.expect("record");
    h.record(out(11, b"l")).await.expect("record");
    h.record(out(12, b"s")).await.expect("record");
    assert_eq!(text(&next(&mut w).await.expect("echo")), "l");
    assert_eq!(text(&next(&mut w).await.expect("output")), "s");
    h.finish("closed").await.expect("finish");
    assert!(matches!(next(&mut w).await, Err(WatchEnd::Finished(_))));
}

#[tokio::test]
async fn terminal_channels_opened_and_closed_later_are_announced() {
    let (_dir, h) = start(RecorderConfig::default()).await;
    let mut w = h.watch().await.expect("watch");
    assert!(w.screens.is_empty());
    h.record(ev(0, 3, pty(40, 10))).await.expect("record");
    // Output of a channel without a terminal (exec, sftp) is not for watchers.
    h.record(ev(1, 4, EventKind::Output(b"\x00binary".to_vec().into())))
        .await
        .expect("record");
    h.record(ev(2, 3, EventKind::Output(b"shell".to_vec().into())))
        .await
        .expect("record");
    h.record(ev(3, 3, EventKind::ChannelClose))
        .await
        .expect("record");
    match next(&mut w).await.expect("opened") {
        WatchEvent::Opened(s) => assert_eq!((s.channel, s.cols, s.rows), (3, 40, 10)),
        other => panic!("expected the new terminal, got {other:?}"),
    }
    assert_eq!(text(&next(&mut w).await.expect("output")), "shell");
    assert!(matches!(
        next(&mut w).await,
        Ok(WatchEvent::Closed { channel: 3 })
    ));
}

#[tokio::test]
async fn a_watcher_that_falls_behind_is_dropped_and_nothing_is_lost_from_the_recording() {
    let cfg = RecorderConfig {
        watch_queue_len: 4,
        ..Default::default()
    };
    let (dir, h) = start(cfg).await;
    h.record(ev(0, 0, pty(80, 24))).await.expect("record");
    let mut slow = h.watch().await.expect("watch");
    for i in 0..200u64 {
        h.record(out(10 + i, format!("line {i}\r\n").as_bytes()))
            .await
            .expect("record");
    }
    h.finish("closed").await.expect("finish");
    let mut got = 0;
    let end = loop {
        match next(&mut slow).await {
            Ok(_) => got += 1,
            Err(end) => break end,
        }
    };
    assert_eq!(end, WatchEnd::Lagged);
    assert!(got <= 4, "{got} events queued for a watcher allowed 4");
    assert!(end.to_string().contains("fell behind"), "{end}");
    let reader = Reader::open(&dir.path().join("rec"), &keys()).expect("open");
    let outputs = reader
        .events()
        .map(|e| e.expect("event"))
        .filter(|e| matches!(e.kind, EventKind::Output(_)))
        .count();
    assert_eq!(outputs, 200);
}

#[tokio::test]
async fn watchers_are_capped_and_a_finished_recording_cannot_be_watched() {
    let (_dir, h) = start(RecorderConfig::default()).await;
    let mut ws = Vec::new();
    for _ in 0..MAX_WATCHERS {
        ws.push(h.watch().await.expect("watch"));
    }
    let refused = h.watch().await.unwrap_err();
    assert!(refused.to_string().contains("watchers"), "{refused}");
    // A watcher that goes away frees its place.
    ws.pop();
    h.watch().await.expect("a place was freed");
    h.finish("closed").await.expect("finish");
    let refused = h.watch().await.unwrap_err();
    assert!(refused.to_string().contains("finished"), "{refused}");
}
