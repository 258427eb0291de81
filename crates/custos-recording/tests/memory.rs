//! An idle recording stays small. A counting global allocator measures the live heap growth
//! caused by one open recording with an interactive PTY channel (this binary holds one test so
//! that nothing else allocates concurrently).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use common::*;
use custos_recording::{EventKind, Recorder, RecorderConfig};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator and only adds bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

#[tokio::test]
async fn idle_recording_uses_little_memory() {
    let k = keys();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("rec");
    let cfg = RecorderConfig {
        flush_age: Duration::from_millis(20),
        ..Default::default()
    };
    // Warm up the runtime's blocking pool and lazily initialised statics.
    let warm = Recorder::start_with(dir.path().join("warm"), k.clone(), metadata(), cfg.clone())
        .await
        .expect("start");
    warm.finish("warm").await.expect("finish");
    tokio::time::sleep(Duration::from_millis(50)).await;

    let before = LIVE.load(Ordering::Relaxed);
    let h = Recorder::start_with(&path, k, metadata(), cfg)
        .await
        .expect("start");
    let header_len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    for e in sample_session().into_iter().take(17) {
        h.record(e).await.expect("record");
    }
    h.record(ev(
        5_000_000,
        0,
        EventKind::Output(vec![b'x'; 200_000].into()),
    ))
    .await
    .expect("record");
    // Let the segment flush and the recording go idle.
    for _ in 0..250 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0) > header_len {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let idle = LIVE.load(Ordering::Relaxed) - before;
    eprintln!("idle recording heap: {idle} bytes");
    assert!(idle < 512 * 1024, "idle recording holds {idle} bytes");
    h.finish("done").await.expect("finish");
}
