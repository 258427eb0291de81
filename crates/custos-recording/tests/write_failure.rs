//! A write error (here: the file size limit, as good as a full disk) puts the recorder in a
//! failed state that the gateway can observe. This test binary holds a single test because it
//! lowers the process-wide file size limit.

mod common;

use std::time::Duration;

use common::*;
use custos_recording::{EventKind, Recorder, RecorderConfig};

#[tokio::test]
async fn write_error_fails_the_recording() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("rec");
    let cfg = RecorderConfig {
        flush_bytes: 4096,
        ..Default::default()
    };
    let h = Recorder::start_with(&path, keys(), metadata(), cfg)
        .await
        .expect("start");

    // SAFETY: plain libc calls with valid arguments; ignoring SIGXFSZ makes an oversized
    // write fail with EFBIG instead of killing the process.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let lim = libc::rlimit {
            rlim_cur: 16 * 1024,
            rlim_max: libc::RLIM_INFINITY,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
    }

    let watcher = {
        let h = h.clone();
        tokio::spawn(async move { h.failed().await })
    };
    let mut x: u32 = 1;
    let mut rejected = false;
    for i in 0..20_000u64 {
        // Incompressible output so the file grows quickly.
        let data: Vec<u8> = (0..256)
            .map(|_| {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (x >> 24) as u8
            })
            .collect();
        if h.record(ev(i, 0, EventKind::Output(data.into())))
            .await
            .is_err()
        {
            rejected = true;
            break;
        }
    }
    assert!(rejected, "record must fail once writing failed");
    let msg = tokio::time::timeout(Duration::from_secs(5), watcher)
        .await
        .expect("failed() resolves")
        .expect("join");
    assert!(
        msg.contains("File too large") || msg.contains("rec"),
        "{msg}"
    );
    assert!(h.failure().is_some());
    assert!(h.finish("end").await.is_err());

    unsafe {
        let lim = libc::rlimit {
            rlim_cur: libc::RLIM_INFINITY,
            rlim_max: libc::RLIM_INFINITY,
        };
        libc::setrlimit(libc::RLIMIT_FSIZE, &lim);
    }
}
