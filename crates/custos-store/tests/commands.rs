//! Command audit storage: substring search through the trigram index and the filters.

use custos_core::{CommandRecord, Id, Name};
use custos_store::{CommandFilter, Store, Vault};
use time::OffsetDateTime;

fn cmd(session: Id, offset_us: u64, text: &str, user: &str) -> CommandRecord {
    CommandRecord {
        session,
        channel: 0,
        offset_us,
        at: OffsetDateTime::now_utc(),
        kind: "shell".into(),
        text: text.into(),
        cwd: Some("/root".into()),
        exit_status: None,
        user: Name::new(user).unwrap(),
        target: Name::new("db1").unwrap(),
    }
}

#[tokio::test]
async fn commands_are_found_by_substring_and_filtered() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        &dir.path().join("c.db"),
        Vault::generate_ephemeral().unwrap(),
    )
    .await
    .unwrap();
    let s1 = Id::from_parts(1, [1; 10]);
    let s2 = Id::from_parts(2, [2; 10]);
    let a = store
        .record_command(&cmd(s1, 10, "ls -la /etc", "alice"))
        .await
        .unwrap();
    store
        .record_command(&cmd(s1, 20, "sudo rm -rf /var/log/nginx", "alice"))
        .await
        .unwrap();
    store
        .record_command(&cmd(s2, 5, "pg_dump \"sales\" > /tmp/x.sql", "bob"))
        .await
        .unwrap();
    store.set_command_exit(a, 0).await.unwrap();

    let find = |text: &str| CommandFilter {
        text: text.into(),
        ..Default::default()
    };
    let r = store.search_commands(&find("rm -rf")).await.unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].text, "sudo rm -rf /var/log/nginx");
    assert_eq!(r[0].offset_us, 20);
    // Case-insensitive substring inside a word, quotes in the query.
    assert_eq!(store.search_commands(&find("NGIN")).await.unwrap().len(), 1);
    assert_eq!(
        store
            .search_commands(&find("\"sales\""))
            .await
            .unwrap()
            .len(),
        1
    );
    // Short text falls back to a scan, with LIKE wildcards taken literally.
    assert_eq!(store.search_commands(&find("ls")).await.unwrap().len(), 1);
    assert_eq!(store.search_commands(&find("%")).await.unwrap().len(), 0);
    assert_eq!(store.search_commands(&find("")).await.unwrap().len(), 3);
    let mut f = find("");
    f.user = Some(Name::new("bob").unwrap());
    assert_eq!(store.search_commands(&f).await.unwrap().len(), 1);
    let mut f = find("");
    f.session = Some(s1);
    let r = store.search_commands(&f).await.unwrap();
    assert_eq!(r.len(), 2);
    assert_eq!(
        r.iter().find(|c| c.offset_us == 10).unwrap().exit_status,
        Some(0)
    );
    let mut f = find("");
    f.since = Some(OffsetDateTime::now_utc() + time::Duration::hours(1));
    assert!(store.search_commands(&f).await.unwrap().is_empty());
    // FTS syntax in the text is not interpreted.
    assert!(
        store
            .search_commands(&find("AND OR NEAR("))
            .await
            .unwrap()
            .is_empty()
    );
}

/// The write-ahead log is copied back into the database while the store stays open: a
/// long-running gateway must not grow it without bound.
#[tokio::test]
async fn the_write_ahead_log_stays_bounded_while_the_store_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    let store = Store::open(&db, Vault::generate_ephemeral().unwrap())
        .await
        .unwrap();
    for i in 0..3000u64 {
        let s = Id::from_parts(1_700_000_000_000 + i % 500, [1; 10]);
        store
            .record_command(&cmd(
                s,
                i,
                &format!("kubectl -n team-{i} get pods --selector app=web-{i} -o wide"),
                "alice",
            ))
            .await
            .unwrap();
        if i % 7 == 0 {
            let _ = store
                .search_commands(&CommandFilter {
                    text: "web-1".into(),
                    ..Default::default()
                })
                .await
                .unwrap();
        }
    }
    let wal = std::fs::metadata(dir.path().join("c.db-wal"))
        .map(|m| m.len())
        .unwrap_or(0);
    let main = std::fs::metadata(&db).unwrap().len();
    eprintln!("database {main} bytes, write-ahead log {wal} bytes");
    assert!(
        main > 100_000,
        "nothing was checkpointed into the database ({main} bytes)"
    );
    assert!(
        wal < 32 * 1024 * 1024,
        "the write-ahead log grew to {wal} bytes"
    );
}

#[tokio::test]
async fn a_batch_of_commands_is_stored_in_order_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        &dir.path().join("c.db"),
        Vault::generate_ephemeral().unwrap(),
    )
    .await
    .unwrap();
    let s = Id::from_parts(2, [2; 10]);
    let batch: Vec<CommandRecord> = (0..50)
        .map(|i| cmd(s, i, &format!("echo batch-{i}"), "alice"))
        .collect();
    let ids = store.record_commands(&batch).await.unwrap();
    assert_eq!(ids.len(), 50);
    assert!(ids.windows(2).all(|w| w[1] > w[0]), "{ids:?}");
    let found = store
        .search_commands(&CommandFilter {
            text: "batch-4".into(),
            limit: Some(100),
            ..Default::default()
        })
        .await
        .unwrap();
    // batch-4 and batch-40 … batch-49, newest first.
    assert_eq!(found.len(), 11, "{found:?}");
    let texts: Vec<&str> = found.iter().map(|c| c.text.as_str()).collect();
    assert_eq!(texts[0], "echo batch-49");
    assert_eq!(texts[10], "echo batch-4");

    let mut bad = vec![cmd(s, 1, "echo good-one", "alice")];
    bad.push(cmd(s, u64::MAX, "echo out-of-range", "alice"));
    assert!(store.record_commands(&bad).await.is_err());
    let none = store
        .search_commands(&CommandFilter {
            text: "good-one".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(none.is_empty(), "a failed batch stores nothing");
    assert!(store.record_commands(&[]).await.unwrap().is_empty());
}
