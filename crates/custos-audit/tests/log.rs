//! The audit log against a real SQLite file: chaining, checkpoints by count and by time,
//! flush and close, several writers on one chain, and a failing database.

use custos_audit::{
    AuditConfig, AuditError, AuditEvent, AuditKey, AuditLog, Checkpoint, Document, EventKind,
    GENESIS_HASH, Position, Target, link_hash, verify_store,
};
use custos_core::Id;
use custos_store::AuditStore;
use std::path::PathBuf;
use std::time::Duration;

fn command(i: u64) -> AuditEvent {
    AuditEvent::new(EventKind::Command {
        position: Position {
            channel: 0,
            offset_us: i * 1000,
        },
        command_line: format!("echo {i}"),
        working_directory: None,
    })
    .user("alice")
    .session(Id::from_parts(1, [7; 10]))
    .target(Target::named("db1"))
}

fn config(every: u64, interval: Duration) -> AuditConfig {
    AuditConfig {
        checkpoint_every: every,
        checkpoint_interval: interval,
        max_batch: 64,
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    db: PathBuf,
    store: AuditStore,
    key: AuditKey,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("custos.db");
    let store = AuditStore::open(&db).await.unwrap();
    Fixture {
        _dir: dir,
        db,
        store,
        key: AuditKey::from_seed([1; 32]),
    }
}

fn start(f: &Fixture, config: AuditConfig) -> AuditLog {
    AuditLog::start(f.store.clone(), AuditKey::from_seed([1; 32]), config)
}

#[tokio::test]
async fn events_are_chained_checkpointed_and_verify() {
    let f = fixture().await;
    let log = start(&f, config(10, Duration::from_secs(3600)));
    for i in 0..25 {
        log.emit(command(i)).unwrap();
    }
    assert_eq!(log.flush().await.unwrap(), 25);
    assert_eq!(log.backlog(), 0);
    let rows = f.store.after(0, 100).await.unwrap();
    assert_eq!(rows.len(), 25);
    let mut prev = GENESIS_HASH.to_vec();
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r.seq, i as u64 + 1);
        assert_eq!(r.prev_hash, prev);
        assert_eq!(r.hash, link_hash(&prev, r.doc.as_bytes()).to_vec());
        let d = Document::parse(&r.doc).unwrap();
        assert_eq!(d.u64("custos.seq"), Some(r.seq));
        assert_eq!(
            d.str("process.command_line"),
            Some(format!("echo {i}").as_str())
        );
        assert_eq!(r.doc, d.canonical());
        assert_eq!(r.action, "session.command");
        assert_eq!(r.user.as_deref(), Some("alice"));
        prev = r.hash.clone();
    }
    let cps = f.store.checkpoints(0, 100).await.unwrap();
    assert_eq!(cps.iter().map(|c| c.seq).collect::<Vec<_>>(), vec![10, 20]);
    for c in &cps {
        let cp = Checkpoint::verify_row(c, &[f.key.public_key().clone()]).unwrap();
        assert_eq!(cp.head_hash.to_vec(), rows[c.seq as usize - 1].hash);
    }
    let report = verify_store(&f.store, &[f.key.public_key().clone()])
        .await
        .unwrap();
    assert_eq!(
        (report.head_seq, report.checkpoints, report.unsigned),
        (25, 2, 5)
    );

    // Closing signs the head; the log then refuses new events.
    assert_eq!(log.close().await.unwrap(), 25);
    assert_eq!(f.store.last_checkpoint().await.unwrap().unwrap().seq, 25);
    assert!(matches!(log.emit(command(99)), Err(AuditError::Closed)));
    assert!(matches!(log.flush().await, Err(AuditError::Closed)));
    let report = verify_store(&f.store, &[f.key.public_key().clone()])
        .await
        .unwrap();
    assert_eq!((report.head_seq, report.unsigned), (25, 0));
}

#[tokio::test]
async fn a_quiet_log_is_checkpointed_by_time_and_at_start_up() {
    let f = fixture().await;
    let log = start(&f, config(1000, Duration::from_millis(200)));
    for i in 0..3 {
        log.emit(command(i)).unwrap();
    }
    log.flush().await.unwrap();
    let mut signed = 0;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        signed = f.store.head().await.unwrap().checkpoint_seq;
        if signed == 3 {
            break;
        }
    }
    assert_eq!(signed, 3);
    // Events left unsigned by a log that stopped without closing are signed by the next
    // log as soon as it starts.
    let quiet = start(&f, config(1000, Duration::from_secs(3600)));
    quiet.emit(command(3)).unwrap();
    quiet.flush().await.unwrap();
    drop(quiet);
    let next = start(&f, config(1000, Duration::from_secs(3600)));
    next.flush().await.unwrap();
    assert_eq!(f.store.head().await.unwrap().checkpoint_seq, 4);
    log.close().await.unwrap();
    next.close().await.unwrap();
}

#[tokio::test]
async fn several_writers_extend_one_chain() {
    let f = fixture().await;
    let other_store = AuditStore::open(&f.db).await.unwrap();
    let a = start(&f, config(7, Duration::from_secs(3600)));
    let b = AuditLog::start(
        other_store.clone(),
        AuditKey::from_seed([1; 32]),
        config(7, Duration::from_secs(3600)),
    );
    let mut tasks = Vec::new();
    for (log, base) in [(a.clone(), 0), (b.clone(), 1000)] {
        tasks.push(tokio::spawn(async move {
            for i in 0..200 {
                log.emit(command(base + i)).unwrap();
                if i.is_multiple_of(50) {
                    log.flush().await.unwrap();
                }
            }
            log.flush().await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    a.close().await.unwrap();
    b.close().await.unwrap();
    let report = verify_store(&f.store, &[f.key.public_key().clone()])
        .await
        .unwrap();
    assert_eq!(report.head_seq, 400);
    assert_eq!(report.unsigned, 0);
    // No stretch of more than N events went unsigned.
    let cps = f.store.checkpoints(0, 1000).await.unwrap();
    let mut last = 0;
    for c in &cps {
        assert!(c.seq - last <= 7, "gap before checkpoint {}", c.seq);
        last = c.seq;
    }
}

#[tokio::test]
async fn a_failing_database_keeps_the_events_and_says_so() {
    let f = fixture().await;
    let log = start(&f, config(1000, Duration::from_secs(3600)));
    log.flush().await.unwrap();
    f.store.close().await;
    log.emit(command(1)).unwrap();
    let e = log.flush().await.unwrap_err();
    assert!(matches!(e, AuditError::Write(_)), "{e}");
    assert_eq!(log.backlog(), 1);
    assert!(log.last_error().is_some());
}

#[tokio::test]
async fn events_keep_their_own_time_and_id() {
    let f = fixture().await;
    let log = start(&f, config(1000, Duration::from_secs(3600)));
    let e = command(1);
    let (id, time) = (e.id, e.time);
    log.emit(e).unwrap();
    log.close().await.unwrap();
    let row = f.store.event(&id.to_string()).await.unwrap().unwrap();
    assert_eq!(row.at(), Some(time));
    let d = Document::parse(&row.doc).unwrap();
    assert_eq!(d.str("event.id"), Some(id.to_string().as_str()));
}
