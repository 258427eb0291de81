//! Append throughput with the chain and checkpoints on. Ignored by default (timings depend on
//! the machine); run it with
//! `cargo test --release -p custos-audit --test bench -- --ignored --nocapture`.

use custos_audit::{
    AuditConfig, AuditEvent, AuditKey, AuditLog, AuthMethod, EventKind, Position, Target,
    verify_store,
};
use custos_core::Id;
use custos_store::AuditStore;
use std::time::{Duration, Instant};

const EVENTS: u64 = 100_000;

fn event(i: u64, session: Id) -> AuditEvent {
    let kind = if i.is_multiple_of(10) {
        EventKind::AuthSuccess {
            method: AuthMethod::PublicKey,
            key_fingerprint: Some("SHA256:mVPwvezndPv/ARoIadVY98vAC0g+P/5633yTC4d/wXE".into()),
        }
    } else {
        EventKind::Command {
            position: Position {
                channel: 0,
                offset_us: i * 1_000,
            },
            command_line: format!("kubectl -n prod get pods -l app=api-{i} -o wide"),
            working_directory: Some("/home/alice".into()),
        }
    };
    AuditEvent::new(kind)
        .user(format!("user{}", i % 50))
        .source(std::net::SocketAddr::from(([192, 0, 2, 10], 52144)))
        .session(session)
        .target(Target {
            name: "db1".into(),
            address: Some("db1.prod.example.com".into()),
            port: Some(22),
            login: Some("postgres".into()),
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run with --ignored --nocapture"]
async fn append_rate_with_chain_and_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let store = AuditStore::open(&dir.path().join("custos.db"))
        .await
        .unwrap();
    let key = AuditKey::generate().unwrap();
    let public = key.public_key().clone();
    let log = AuditLog::start(
        store.clone(),
        key,
        AuditConfig {
            checkpoint_every: 1000,
            checkpoint_interval: Duration::from_secs(60),
            ..AuditConfig::default()
        },
    );
    let session = Id::from_parts(1, [1; 10]);
    let events: Vec<AuditEvent> = (0..EVENTS).map(|i| event(i, session)).collect();

    let start = Instant::now();
    let mut slowest_emit = Duration::ZERO;
    for e in events {
        let t = Instant::now();
        log.emit(e).unwrap();
        slowest_emit = slowest_emit.max(t.elapsed());
    }
    let emitted = start.elapsed();
    let head = log.flush().await.unwrap();
    let elapsed = start.elapsed();
    assert_eq!(head, EVENTS);
    println!(
        "appended {EVENTS} events in {:.3} s: {:.0} events/s (emitting took {:.3} s, slowest \
         emit {:?})",
        elapsed.as_secs_f64(),
        EVENTS as f64 / elapsed.as_secs_f64(),
        emitted.as_secs_f64(),
        slowest_emit
    );
    log.close().await.unwrap();
    let checkpoints = store.checkpoints(0, 10_000).await.unwrap().len();
    println!("checkpoints: {checkpoints}");

    let start = Instant::now();
    let report = verify_store(&store, &[public]).await.unwrap();
    let elapsed = start.elapsed();
    assert_eq!(report.head_seq, EVENTS);
    println!(
        "verified {} events and {} checkpoints in {:.3} s: {:.0} events/s",
        report.events,
        report.checkpoints,
        elapsed.as_secs_f64(),
        report.events as f64 / elapsed.as_secs_f64()
    );
}
