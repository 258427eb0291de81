//! The audit tables: batch appends under the write lock, reads by range, tail, id and search,
//! checkpoints, sink cursors, and the triggers that keep the log append-only.

use custos_store::{AuditFilter, AuditRow, AuditStore, CheckpointRow, StoreError};
use sqlx::Connection;
use std::path::{Path, PathBuf};
use time::OffsetDateTime;

const T0: i64 = 1_793_700_000_000_000;

/// A row whose hash is `[seq; 32]`, linked to the previous one.
fn row(seq: u64, action: &str, user: Option<&str>, session: Option<&str>) -> AuditRow {
    let prev = if seq == 1 {
        [0u8; 32]
    } else {
        [(seq - 1) as u8; 32]
    };
    AuditRow {
        seq,
        id: format!("ID{seq:024}"),
        at_us: T0 + seq as i64 * 1_000_000,
        action: action.into(),
        user: user.map(str::to_string),
        session: session.map(str::to_string),
        doc: format!("{{\"seq\":{seq}}}"),
        prev_hash: prev.to_vec(),
        hash: vec![seq as u8; 32],
    }
}

fn checkpoint(seq: u64) -> CheckpointRow {
    CheckpointRow {
        seq,
        head_hash: vec![seq as u8; 32],
        at_us: T0 + 999,
        signature: "-----BEGIN SSH SIGNATURE-----\n...\n-----END SSH SIGNATURE-----\n".into(),
    }
}

async fn open() -> (tempfile::TempDir, PathBuf, AuditStore) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("custos.db");
    let store = AuditStore::open(&db).await.unwrap();
    (dir, db, store)
}

async fn seed(store: &AuditStore) -> Vec<AuditRow> {
    let rows = vec![
        row(1, "server.start", None, None),
        row(2, "auth.success", Some("alice"), None),
        row(3, "session.start", Some("alice"), Some("S1")),
        row(4, "session.command", Some("alice"), Some("S1")),
        row(5, "auth.failure", Some("bob"), None),
        row(6, "session.end", Some("alice"), Some("S1")),
        row(7, "sessionx", Some("bob"), None),
    ];
    let mut a = store.begin_append().await.unwrap();
    assert_eq!(a.head().seq, 0);
    assert_eq!(a.head().hash, None);
    a.insert_events(&rows).await.unwrap();
    a.insert_checkpoint(&checkpoint(5)).await.unwrap();
    a.commit().await.unwrap();
    rows
}

async fn raw(db: &Path, sql: &'static str) -> Result<u64, sqlx::Error> {
    let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display())).await?;
    let r = sqlx::raw_sql(sql).execute(&mut c).await;
    c.close().await?;
    r.map(|d| d.rows_affected())
}

#[tokio::test]
async fn appends_and_reads_back() {
    let (_d, _db, store) = open().await;
    let rows = seed(&store).await;
    let head = store.head().await.unwrap();
    assert_eq!(head.seq, 7);
    assert_eq!(head.hash, Some(vec![7; 32]));
    assert_eq!(head.checkpoint_seq, 5);
    assert_eq!(head.checkpoint_at_us, Some(T0 + 999));

    assert_eq!(store.range(2, 4).await.unwrap(), rows[1..4].to_vec());
    assert_eq!(store.after(5, 10).await.unwrap(), rows[5..].to_vec());
    assert_eq!(store.after(0, 2).await.unwrap(), rows[..2].to_vec());
    assert_eq!(store.after(7, 10).await.unwrap(), vec![]);
    assert_eq!(
        store.event("ID000000000000000000000003").await.unwrap(),
        Some(rows[2].clone())
    );
    assert_eq!(store.event("nope").await.unwrap(), None);
    assert_eq!(rows[0].at().unwrap().unix_timestamp(), T0 / 1_000_000 + 1);

    assert_eq!(store.checkpoints(0, 10).await.unwrap(), vec![checkpoint(5)]);
    assert_eq!(store.checkpoints(5, 10).await.unwrap(), vec![]);
    assert_eq!(store.checkpoint(5).await.unwrap(), Some(checkpoint(5)));
    assert_eq!(store.checkpoint(4).await.unwrap(), None);
    assert_eq!(store.last_checkpoint().await.unwrap(), Some(checkpoint(5)));

    // A second append continues from the head it reads under the lock.
    let mut a = store.begin_append().await.unwrap();
    assert_eq!(a.head().seq, 7);
    a.insert_events(&[row(8, "server.stop", None, None)])
        .await
        .unwrap();
    a.insert_checkpoint(&checkpoint(8)).await.unwrap();
    a.commit().await.unwrap();
    assert_eq!(store.head().await.unwrap().checkpoint_seq, 8);

    // An append that is dropped leaves nothing behind.
    let mut a = store.begin_append().await.unwrap();
    a.insert_events(&[row(9, "server.start", None, None)])
        .await
        .unwrap();
    drop(a);
    assert_eq!(store.head().await.unwrap().seq, 8);
}

#[tokio::test]
async fn search_filters_newest_first() {
    let (_d, _db, store) = open().await;
    seed(&store).await;
    let seqs = |rows: Vec<AuditRow>| rows.iter().map(|r| r.seq).collect::<Vec<_>>();
    let search = |f: AuditFilter| {
        let store = store.clone();
        async move { seqs(store.search(&f).await.unwrap()) }
    };
    assert_eq!(
        search(AuditFilter::default()).await,
        vec![7, 6, 5, 4, 3, 2, 1]
    );
    let user = |u: &str| Some(u.to_string());
    assert_eq!(
        search(AuditFilter {
            user: user("alice"),
            ..Default::default()
        })
        .await,
        vec![6, 4, 3, 2]
    );
    // An action matches itself and its dotted children, not other words with the prefix.
    assert_eq!(
        search(AuditFilter {
            action: Some("session".into()),
            ..Default::default()
        })
        .await,
        vec![6, 4, 3]
    );
    assert_eq!(
        search(AuditFilter {
            action: Some("auth.failure".into()),
            ..Default::default()
        })
        .await,
        vec![5]
    );
    assert_eq!(
        search(AuditFilter {
            session: Some("S1".into()),
            action: Some("session.command".into()),
            ..Default::default()
        })
        .await,
        vec![4]
    );
    let at = |seq: i64| {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(T0 + seq * 1_000_000) * 1000).unwrap()
    };
    assert_eq!(
        search(AuditFilter {
            since: Some(at(3)),
            until: Some(at(6)),
            ..Default::default()
        })
        .await,
        vec![5, 4, 3]
    );
    assert_eq!(
        search(AuditFilter {
            user: user("alice"),
            since: Some(at(4)),
            limit: Some(1),
            ..Default::default()
        })
        .await,
        vec![6]
    );
    assert_eq!(
        search(AuditFilter {
            user: user("nobody"),
            ..Default::default()
        })
        .await,
        Vec::<u64>::new()
    );
}

#[tokio::test]
async fn inserts_that_do_not_extend_the_chain_are_refused() {
    let (_d, _db, store) = open().await;
    seed(&store).await;
    let refused = |r: Result<(), StoreError>| {
        let e = r.expect_err("must be refused");
        assert!(e.to_string().contains("append-only"), "{e}");
    };
    // A gap.
    let mut a = store.begin_append().await.unwrap();
    refused(a.insert_events(&[row(9, "x", None, None)]).await);
    drop(a);
    // An existing number.
    let mut a = store.begin_append().await.unwrap();
    refused(a.insert_events(&[row(3, "x", None, None)]).await);
    drop(a);
    // The right number with the wrong link.
    let mut wrong = row(8, "x", None, None);
    wrong.prev_hash = vec![1; 32];
    let mut a = store.begin_append().await.unwrap();
    refused(a.insert_events(&[wrong]).await);
    drop(a);
    // A checkpoint of a hash that is not the event's, or older than the newest checkpoint.
    let mut a = store.begin_append().await.unwrap();
    let mut bad = checkpoint(6);
    bad.head_hash = vec![9; 32];
    refused(a.insert_checkpoint(&bad).await);
    drop(a);
    let mut a = store.begin_append().await.unwrap();
    refused(a.insert_checkpoint(&checkpoint(4)).await);
    drop(a);
    let mut a = store.begin_append().await.unwrap();
    refused(a.insert_checkpoint(&checkpoint(99)).await);
    drop(a);
    assert_eq!(store.head().await.unwrap().seq, 7);
}

#[tokio::test]
async fn updates_and_deletes_are_refused_until_the_triggers_are_dropped() {
    let (_d, db, store) = open().await;
    seed(&store).await;
    for sql in [
        "UPDATE audit_events SET user_name = 'eve' WHERE seq = 2",
        "DELETE FROM audit_events WHERE seq = 7",
        "DELETE FROM audit_events",
        "INSERT OR REPLACE INTO audit_events (seq, event_id, at_us, action, doc, prev_hash, hash) \
         VALUES (3, 'X', 0, 'x', '{}', zeroblob(32), zeroblob(32))",
        "UPDATE audit_checkpoints SET signature = 'forged'",
        "DELETE FROM audit_checkpoints",
    ] {
        let e = raw(&db, sql).await.expect_err(sql);
        assert!(e.to_string().contains("append-only"), "{sql}: {e}");
    }
    assert_eq!(store.range(1, 7).await.unwrap().len(), 7);
    assert_eq!(
        store.range(2, 2).await.unwrap()[0].user.as_deref(),
        Some("alice")
    );
    // The owner of the file can drop the triggers; the chain is what catches that.
    raw(&db, "DROP TRIGGER audit_events_no_update")
        .await
        .unwrap();
    assert_eq!(
        raw(
            &db,
            "UPDATE audit_events SET user_name = 'eve' WHERE seq = 2"
        )
        .await
        .unwrap(),
        1
    );
}

#[tokio::test]
async fn sink_cursors_move_both_ways() {
    let (_d, _db, store) = open().await;
    assert_eq!(store.sink_cursor("siem").await.unwrap(), None);
    store.set_sink_cursor("siem", 10).await.unwrap();
    store.set_sink_cursor("archive", 3).await.unwrap();
    store.set_sink_cursor("siem", 12).await.unwrap();
    assert_eq!(store.sink_cursor("siem").await.unwrap(), Some(12));
    store.set_sink_cursor("siem", 4).await.unwrap();
    assert_eq!(store.sink_cursor("siem").await.unwrap(), Some(4));
    let all = store.sink_cursors().await.unwrap();
    assert_eq!(
        all.iter()
            .map(|c| (c.sink.as_str(), c.seq))
            .collect::<Vec<_>>(),
        vec![("archive", 3), ("siem", 4)]
    );
    assert!(store.set_sink_cursor("", 1).await.is_err());
}

#[tokio::test]
async fn large_batches_are_appended_and_checked_row_by_row() {
    let (_d, _db, store) = open().await;
    let hash = |seq: u64| seq.to_be_bytes().repeat(4);
    let rows: Vec<AuditRow> = (1..=200u64)
        .map(|seq| AuditRow {
            prev_hash: if seq == 1 { vec![0; 32] } else { hash(seq - 1) },
            hash: hash(seq),
            ..row(seq, "session.command", Some("alice"), Some("S1"))
        })
        .collect();
    let mut a = store.begin_append().await.unwrap();
    a.insert_events(&rows).await.unwrap();
    a.commit().await.unwrap();
    assert_eq!(store.after(0, 1000).await.unwrap(), rows);
    // One bad link in the middle of a multi-row statement refuses the whole append.
    let mut more: Vec<AuditRow> = (201..=330u64)
        .map(|seq| AuditRow {
            prev_hash: hash(seq - 1),
            hash: hash(seq),
            ..row(seq, "session.command", None, None)
        })
        .collect();
    more[40].prev_hash = vec![7; 32];
    let mut a = store.begin_append().await.unwrap();
    let e = a.insert_events(&more).await.unwrap_err();
    assert!(e.to_string().contains("append-only"), "{e}");
    drop(a);
    assert_eq!(store.head().await.unwrap().seq, 200);
}
