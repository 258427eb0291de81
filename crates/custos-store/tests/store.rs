//! The store's verbs against a real SQLite file in a temporary folder. Written against the
//! public API only, so the same cases can later run against a PostgreSQL backend.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use custos_core::{
    AlertRecord, HoldDecision, HostKeyPolicy, Id, Name, Secret, SessionLimits, SessionRecord,
    SessionState, TargetKind, TargetRecord,
};
use custos_store::{AlertFilter, NewUser, SessionFilter, Store, StoreError, Vault, password};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

struct Fixture {
    _dir: tempfile::TempDir,
    db: PathBuf,
    key: PathBuf,
    store: Store,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("custos.db");
    let key = dir.path().join("vault.key");
    let vault = Vault::generate_file(&key).unwrap();
    let store = Store::open(&db, vault).await.unwrap();
    Fixture {
        _dir: dir,
        db,
        key,
        store,
    }
}

async fn reopen(db: &Path, key: &Path) -> Store {
    Store::open(db, Vault::load(key).unwrap()).await.unwrap()
}

fn n(s: &str) -> Name {
    Name::new(s).unwrap()
}

fn key(algo: &str, seed: u8, comment: &str) -> String {
    let mut blob = Vec::new();
    blob.extend_from_slice(&u32::try_from(algo.len()).unwrap().to_be_bytes());
    blob.extend_from_slice(algo.as_bytes());
    blob.extend_from_slice(&32u32.to_be_bytes());
    blob.extend_from_slice(&[seed; 32]);
    format!("{algo} {} {comment}", STANDARD.encode(blob))
        .trim()
        .to_string()
}

fn micros(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(t.nanosecond() / 1000 * 1000).unwrap()
}

fn ssh_target(name: &str, host_key: HostKeyPolicy) -> TargetRecord {
    TargetRecord {
        name: n(name),
        kind: TargetKind::Ssh {
            host: format!("{name}.internal"),
            port: 22,
            login: "root".into(),
            host_key,
            credential_kind: "password".into(),
        },
        labels: BTreeMap::from([("env".to_string(), "prod".to_string())]),
        allow_port_forwarding: false,
        limits: Default::default(),
        created: micros(OffsetDateTime::now_utc()),
    }
}

fn local_target(name: &str) -> TargetRecord {
    TargetRecord {
        name: n(name),
        kind: TargetKind::Local { os_user: None },
        labels: BTreeMap::new(),
        allow_port_forwarding: true,
        limits: Default::default(),
        created: micros(OffsetDateTime::now_utc()),
    }
}

fn session(id: Id, user: &str, target: &str, start: OffsetDateTime) -> SessionRecord {
    SessionRecord {
        id,
        user: n(user),
        source: "192.0.2.7:50022".into(),
        target: n(target),
        login: "root".into(),
        start: micros(start),
        end: None,
        state: SessionState::Live,
        bytes_in: 0,
        bytes_out: 0,
        exit_status: None,
        end_reason: None,
        recording: format!("{id}.cstr"),
    }
}

fn id(millis: u64, r: u8) -> Id {
    Id::from_parts(millis, [r; 10])
}

#[tokio::test]
async fn users_round_trip() {
    let f = fixture().await;
    let s = &f.store;
    let k1 = key("ssh-ed25519", 1, "alice@laptop");
    let expires = micros(OffsetDateTime::now_utc() + Duration::days(30));
    let hash = password::hash(&Secret::from("pw".to_string())).unwrap();
    let added = s
        .add_user(NewUser {
            name: n("alice"),
            ssh_keys: vec![k1.clone()],
            password_hash: Some(hash.clone()),
            password_one_time: true,
            expires: Some(expires),
        })
        .await
        .unwrap();
    assert_eq!(added.name, n("alice"));
    assert_eq!(added.ssh_keys, vec![k1.clone()]);
    assert!(added.has_password && added.password_one_time && !added.locked);
    assert_eq!(added.expires, Some(expires));
    assert_eq!(s.user(&n("alice")).await.unwrap(), Some(added.clone()));
    assert_eq!(s.user(&n("nobody")).await.unwrap(), None);

    s.add_user(NewUser::named(n("bob"))).await.unwrap();
    let all = s.users().await.unwrap();
    assert_eq!(
        all.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(),
        ["alice", "bob"]
    );
    assert_eq!(all[0], added);
    assert!(!all[1].has_password && all[1].ssh_keys.is_empty());

    // Duplicate names are refused, naming the user.
    let err = s.add_user(NewUser::named(n("alice"))).await.unwrap_err();
    assert!(matches!(&err, StoreError::Exists { what: "user", name } if name == "alice"));
    assert!(err.to_string().contains("alice"));

    // Passwords.
    assert_eq!(s.user_password_hash(&n("alice")).await.unwrap(), Some(hash));
    assert_eq!(s.user_password_hash(&n("bob")).await.unwrap(), None);
    assert!(matches!(
        s.user_password_hash(&n("zed")).await,
        Err(StoreError::NotFound { .. })
    ));
    let new_hash = password::hash(&Secret::from("new".to_string())).unwrap();
    s.set_password(&n("alice"), Some(&new_hash), false)
        .await
        .unwrap();
    let stored = s.user_password_hash(&n("alice")).await.unwrap().unwrap();
    assert!(password::verify(&Secret::from("new".to_string()), &stored));
    assert!(!password::verify(&Secret::from("pw".to_string()), &stored));
    assert!(
        !s.user(&n("alice"))
            .await
            .unwrap()
            .unwrap()
            .password_one_time
    );
    s.set_password(&n("alice"), None, false).await.unwrap();
    assert!(!s.user(&n("alice")).await.unwrap().unwrap().has_password);
    let err = s
        .set_password(&n("alice"), Some("hunter2"), false)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)));
    assert!(!err.to_string().contains("hunter2"), "{err}");
    assert!(matches!(
        s.set_password(&n("zed"), Some(&new_hash), false).await,
        Err(StoreError::NotFound { .. })
    ));

    // Locking and expiry.
    s.set_locked(&n("bob"), true).await.unwrap();
    let bob = s.user(&n("bob")).await.unwrap().unwrap();
    assert_eq!(
        bob.refusal(OffsetDateTime::now_utc()),
        Some("account is locked")
    );
    s.set_locked(&n("bob"), false).await.unwrap();
    assert!(!s.user(&n("bob")).await.unwrap().unwrap().locked);
    assert!(matches!(
        s.set_locked(&n("zed"), true).await,
        Err(StoreError::NotFound { .. })
    ));
    s.set_expires(
        &n("bob"),
        Some(micros(OffsetDateTime::now_utc() - Duration::hours(1))),
    )
    .await
    .unwrap();
    let bob = s.user(&n("bob")).await.unwrap().unwrap();
    assert_eq!(
        bob.refusal(OffsetDateTime::now_utc()),
        Some("account has expired")
    );

    // Keys.
    let k2 = key("ecdsa-sha2-nistp256", 2, "");
    s.add_user_key(&n("alice"), &k2).await.unwrap();
    assert_eq!(
        s.user(&n("alice")).await.unwrap().unwrap().ssh_keys,
        vec![k1.clone(), k2.clone()]
    );
    // The same key with another comment is the same key.
    let again = key("ssh-ed25519", 1, "other comment");
    assert!(matches!(
        s.add_user_key(&n("alice"), &again).await,
        Err(StoreError::Exists { .. })
    ));
    assert!(matches!(
        s.add_user_key(&n("alice"), "ssh-ed25519 %%%").await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        s.add_user_key(&n("zed"), &k2).await,
        Err(StoreError::NotFound { what: "user", .. })
    ));
    s.remove_user_key(&n("alice"), &again).await.unwrap();
    assert_eq!(
        s.user(&n("alice")).await.unwrap().unwrap().ssh_keys,
        vec![k2.clone()]
    );
    assert!(s.remove_user_key(&n("alice"), &k1).await.is_err());

    // Malformed keys at creation are refused before anything is written.
    let err = s
        .add_user(NewUser {
            ssh_keys: vec!["not a key".into()],
            ..NewUser::named(n("carol"))
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)));
    assert_eq!(s.user(&n("carol")).await.unwrap(), None);

    // Removal.
    s.remove_user(&n("bob")).await.unwrap();
    assert_eq!(s.user(&n("bob")).await.unwrap(), None);
    let err = s.remove_user(&n("bob")).await.unwrap_err();
    assert!(matches!(&err, StoreError::NotFound { what: "user", name } if name == "bob"));
}

#[tokio::test]
async fn targets_and_credentials() {
    let f = fixture().await;
    let s = &f.store;
    let t = ssh_target("db1", HostKeyPolicy::TrustOnFirstUse { key: None });
    let credential = "Sup3r-Secret-Target-Password";
    let added = s
        .add_target(t.clone(), Some(Secret::from(credential.to_string())))
        .await
        .unwrap();
    assert_eq!(added, t);
    assert_eq!(s.target(&n("db1")).await.unwrap(), Some(t.clone()));
    assert_eq!(s.target(&n("nope")).await.unwrap(), None);
    let local = local_target("jump");
    s.add_target(local.clone(), None).await.unwrap();
    assert_eq!(s.targets().await.unwrap(), vec![t.clone(), local.clone()]);

    let got = s.target_credential(&n("db1")).await.unwrap().unwrap();
    assert_eq!(got.expose_str(), Some(credential));
    assert_eq!(s.target_credential(&n("jump")).await.unwrap(), None);
    assert!(matches!(
        s.target_credential(&n("nope")).await,
        Err(StoreError::NotFound { what: "target", .. })
    ));

    // Duplicates and invalid targets.
    let err = s.add_target(t.clone(), None).await.unwrap_err();
    assert!(matches!(&err, StoreError::Exists { what: "target", name } if name == "db1"));
    assert!(matches!(
        s.add_target(local_target("jump2"), Some(Secret::from("x".to_string())))
            .await,
        Err(StoreError::Invalid(_))
    ));
    let bad = ssh_target(
        "db9",
        HostKeyPolicy::Pinned {
            key: "garbage".into(),
        },
    );
    assert!(matches!(
        s.add_target(bad, None).await,
        Err(StoreError::Invalid(_))
    ));

    // Replacing the credential.
    s.set_target_credential(&n("db1"), Some(Secret::from("rotated".to_string())))
        .await
        .unwrap();
    let got = s.target_credential(&n("db1")).await.unwrap().unwrap();
    assert_eq!(got.expose(), b"rotated");
    s.set_target_credential(&n("db1"), None).await.unwrap();
    assert_eq!(s.target_credential(&n("db1")).await.unwrap(), None);

    s.remove_target(&n("jump")).await.unwrap();
    assert_eq!(s.target(&n("jump")).await.unwrap(), None);
    assert!(matches!(
        s.remove_target(&n("jump")).await,
        Err(StoreError::NotFound { what: "target", .. })
    ));
}

#[tokio::test]
async fn credentials_never_reach_the_disk_in_plaintext() {
    let f = fixture().await;
    let secret = "PlainTextCanary-7d1f0c2e9b";
    f.store
        .add_target(
            ssh_target("db1", HostKeyPolicy::TrustOnFirstUse { key: None }),
            Some(Secret::from(secret.to_string())),
        )
        .await
        .unwrap();
    f.store.close().await;
    // Main file plus WAL and shared-memory files, whichever exist.
    let mut scanned = 0;
    for suffix in ["", "-wal", "-shm"] {
        let mut path = f.db.clone().into_os_string();
        path.push(suffix);
        if let Ok(bytes) = std::fs::read(&path) {
            scanned += bytes.len();
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "credential found in plaintext in {path:?}"
            );
        }
    }
    assert!(scanned > 0);

    // The same database opened with the right key still yields the credential...
    let s = reopen(&f.db, &f.key).await;
    let got = s.target_credential(&n("db1")).await.unwrap().unwrap();
    assert_eq!(got.expose_str(), Some(secret));
    s.close().await;

    // ...and with another key it fails with a vault error that does not leak anything.
    let other = Store::open(&f.db, Vault::generate_ephemeral().unwrap())
        .await
        .unwrap();
    let err = other.target_credential(&n("db1")).await.unwrap_err();
    assert!(matches!(err, StoreError::Vault(_)), "{err}");
    assert!(err.to_string().contains("db1"));
    assert!(!err.to_string().contains(secret));
}

#[tokio::test]
async fn trust_on_first_use_pinning() {
    let f = fixture().await;
    let s = &f.store;
    s.add_target(
        ssh_target("db1", HostKeyPolicy::TrustOnFirstUse { key: None }),
        None,
    )
    .await
    .unwrap();
    let first = key("ssh-ed25519", 7, "");
    let other = key("ssh-ed25519", 8, "");

    assert!(s.pin_host_key(&n("db1"), &first).await.unwrap());
    match s.target(&n("db1")).await.unwrap().unwrap().kind {
        TargetKind::Ssh { host_key, .. } => {
            assert_eq!(
                host_key,
                HostKeyPolicy::TrustOnFirstUse {
                    key: Some(first.clone())
                }
            );
        }
        TargetKind::Local { .. } => panic!("kind changed"),
    }
    // Same key again (even with a comment): nothing to do.
    let with_comment = format!("{first} host1");
    assert!(!s.pin_host_key(&n("db1"), &with_comment).await.unwrap());
    // A different key is refused and the pinned one stays.
    let err = s.pin_host_key(&n("db1"), &other).await.unwrap_err();
    assert!(matches!(&err, StoreError::HostKeyMismatch { target } if target == "db1"));
    assert!(!s.pin_host_key(&n("db1"), &first).await.unwrap());

    // A target pinned from the start never takes another key.
    s.add_target(
        ssh_target("db2", HostKeyPolicy::Pinned { key: first.clone() }),
        None,
    )
    .await
    .unwrap();
    assert!(!s.pin_host_key(&n("db2"), &first).await.unwrap());
    assert!(matches!(
        s.pin_host_key(&n("db2"), &other).await,
        Err(StoreError::HostKeyMismatch { .. })
    ));

    // Local targets and unknown targets.
    s.add_target(local_target("jump"), None).await.unwrap();
    assert!(matches!(
        s.pin_host_key(&n("jump"), &first).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        s.pin_host_key(&n("nope"), &first).await,
        Err(StoreError::NotFound { what: "target", .. })
    ));
    assert!(matches!(
        s.pin_host_key(&n("db1"), "junk").await,
        Err(StoreError::Invalid(_))
    ));
}

#[tokio::test]
async fn concurrent_first_pins_agree() {
    let f = fixture().await;
    let s = f.store.clone();
    s.add_target(
        ssh_target("db1", HostKeyPolicy::TrustOnFirstUse { key: None }),
        None,
    )
    .await
    .unwrap();
    let mut tasks = Vec::new();
    for seed in 0..8u8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.pin_host_key(&n("db1"), &key("ssh-ed25519", seed, ""))
                .await
        }));
    }
    let mut pinned = 0;
    let mut refused = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(true) => pinned += 1,
            Err(StoreError::HostKeyMismatch { .. }) => refused += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((pinned, refused), (1, 7));
}

#[tokio::test]
async fn grants() {
    let f = fixture().await;
    let s = &f.store;
    s.add_user(NewUser::named(n("alice"))).await.unwrap();
    s.add_user(NewUser::named(n("bob"))).await.unwrap();
    let db1 = ssh_target("db1", HostKeyPolicy::TrustOnFirstUse { key: None });
    let web = ssh_target("web", HostKeyPolicy::TrustOnFirstUse { key: None });
    s.add_target(db1.clone(), None).await.unwrap();
    s.add_target(web.clone(), None).await.unwrap();

    s.grant(&n("alice"), &n("web")).await.unwrap();
    s.grant(&n("alice"), &n("db1")).await.unwrap();
    let first = s.grants().await.unwrap();
    // Idempotent: granting again changes nothing.
    s.grant(&n("alice"), &n("db1")).await.unwrap();
    assert_eq!(s.grants().await.unwrap(), first);
    s.grant(&n("bob"), &n("db1")).await.unwrap();

    let pairs: Vec<(String, String)> = s
        .grants()
        .await
        .unwrap()
        .into_iter()
        .map(|g| (g.user.to_string(), g.target.to_string()))
        .collect();
    assert_eq!(
        pairs,
        [("alice", "db1"), ("alice", "web"), ("bob", "db1")]
            .map(|(u, t)| (u.to_string(), t.to_string()))
    );
    assert_eq!(
        s.targets_for_user(&n("alice")).await.unwrap(),
        vec![db1.clone(), web.clone()]
    );
    assert!(s.is_granted(&n("alice"), &n("web")).await.unwrap());
    assert!(!s.is_granted(&n("bob"), &n("web")).await.unwrap());
    assert!(!s.is_granted(&n("zed"), &n("web")).await.unwrap());

    // Missing parties are named.
    let err = s.grant(&n("zed"), &n("db1")).await.unwrap_err();
    assert!(matches!(&err, StoreError::NotFound { what: "user", name } if name == "zed"));
    let err = s.grant(&n("alice"), &n("nope")).await.unwrap_err();
    assert!(matches!(&err, StoreError::NotFound { what: "target", name } if name == "nope"));
    assert!(err.to_string().contains("nope"));
    assert!(matches!(
        s.targets_for_user(&n("zed")).await,
        Err(StoreError::NotFound { what: "user", .. })
    ));

    // Revoke.
    s.revoke(&n("alice"), &n("web")).await.unwrap();
    assert!(!s.is_granted(&n("alice"), &n("web")).await.unwrap());
    let err = s.revoke(&n("alice"), &n("web")).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { what: "grant", .. }));
    assert!(err.to_string().contains("alice"));

    // Removing a user removes their grants, not other users' grants.
    s.remove_user(&n("alice")).await.unwrap();
    let left: Vec<String> = s
        .grants()
        .await
        .unwrap()
        .iter()
        .map(|g| format!("{}:{}", g.user, g.target))
        .collect();
    assert_eq!(left, ["bob:db1"]);
    // A user added again under the old name starts without grants.
    s.add_user(NewUser::named(n("alice"))).await.unwrap();
    assert!(s.targets_for_user(&n("alice")).await.unwrap().is_empty());

    // Removing a target removes its grants too.
    s.remove_target(&n("db1")).await.unwrap();
    assert!(s.grants().await.unwrap().is_empty());
}

#[tokio::test]
async fn sessions_lifecycle() {
    let f = fixture().await;
    let s = &f.store;
    let t0 = OffsetDateTime::now_utc() - Duration::hours(3);
    let a = session(id(1_000, 1), "alice", "db1", t0);
    let b = session(id(2_000, 2), "bob", "db1", t0 + Duration::hours(1));
    let c = session(id(3_000, 3), "alice", "web", t0 + Duration::hours(2));
    for x in [&a, &b, &c] {
        s.create_session(x).await.unwrap();
    }
    assert!(matches!(
        s.create_session(&a).await,
        Err(StoreError::Exists {
            what: "session",
            ..
        })
    ));
    assert_eq!(s.session(&a.id).await.unwrap(), Some(a.clone()));
    assert_eq!(s.session(&id(9, 9)).await.unwrap(), None);

    s.update_session_bytes(&a.id, 10, 2000).await.unwrap();
    let got = s.session(&a.id).await.unwrap().unwrap();
    assert_eq!((got.bytes_in, got.bytes_out), (10, 2000));
    assert!(matches!(
        s.update_session_bytes(&id(9, 9), 1, 1).await,
        Err(StoreError::NotFound {
            what: "session",
            ..
        })
    ));

    let end = micros(t0 + Duration::minutes(30));
    s.end_session(&a.id, end, SessionState::Ended, Some(0), "closed", 11, 2001)
        .await
        .unwrap();
    let got = s.session(&a.id).await.unwrap().unwrap();
    assert_eq!(got.state, SessionState::Ended);
    assert_eq!(got.end, Some(end));
    assert_eq!(got.exit_status, Some(0));
    assert_eq!(got.end_reason.as_deref(), Some("closed"));
    assert_eq!((got.bytes_in, got.bytes_out), (11, 2001));
    assert_eq!(got.duration_secs(OffsetDateTime::now_utc()), 1800);
    assert!(matches!(
        s.end_session(&a.id, end, SessionState::Live, None, "x", 0, 0)
            .await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        s.end_session(&id(9, 9), end, SessionState::Ended, None, "x", 0, 0)
            .await,
        Err(StoreError::NotFound { .. })
    ));

    // Listing: newest first, with filters.
    let ids = |v: Vec<SessionRecord>| v.into_iter().map(|s| s.id).collect::<Vec<_>>();
    assert_eq!(
        ids(s.sessions(SessionFilter::default()).await.unwrap()),
        [c.id, b.id, a.id]
    );
    assert_eq!(ids(s.live_sessions().await.unwrap()), [c.id, b.id]);
    let alice = SessionFilter {
        user: Some(n("alice")),
        ..SessionFilter::default()
    };
    assert_eq!(ids(s.sessions(alice).await.unwrap()), [c.id, a.id]);
    let db1_live = SessionFilter {
        live_only: true,
        target: Some(n("db1")),
        ..SessionFilter::default()
    };
    assert_eq!(ids(s.sessions(db1_live).await.unwrap()), [b.id]);
    let since = SessionFilter {
        since: Some(b.start),
        ..SessionFilter::default()
    };
    assert_eq!(ids(s.sessions(since).await.unwrap()), [c.id, b.id]);
    let limited = SessionFilter {
        limit: Some(1),
        ..SessionFilter::default()
    };
    assert_eq!(ids(s.sessions(limited).await.unwrap()), [c.id]);

    // Crash recovery marks what is still live.
    let now = micros(OffsetDateTime::now_utc());
    let marked = s.mark_live_sessions_interrupted(now).await.unwrap();
    assert_eq!(ids(marked.clone()), [c.id, b.id]);
    for m in &marked {
        assert_eq!(m.state, SessionState::Interrupted);
        assert_eq!(m.end, Some(now));
        assert_eq!(s.session(&m.id).await.unwrap().as_ref(), Some(m));
    }
    assert!(s.live_sessions().await.unwrap().is_empty());
    assert!(
        s.mark_live_sessions_interrupted(now)
            .await
            .unwrap()
            .is_empty()
    );
    // The ended session was left alone.
    assert_eq!(
        s.session(&a.id).await.unwrap().unwrap().state,
        SessionState::Ended
    );
}

#[tokio::test]
async fn sessions_outlive_their_user_and_target() {
    let f = fixture().await;
    let s = &f.store;
    s.add_user(NewUser::named(n("alice"))).await.unwrap();
    s.add_target(local_target("jump"), None).await.unwrap();
    s.grant(&n("alice"), &n("jump")).await.unwrap();
    let x = session(id(5_000, 5), "alice", "jump", OffsetDateTime::now_utc());
    s.create_session(&x).await.unwrap();
    s.remove_user(&n("alice")).await.unwrap();
    s.remove_target(&n("jump")).await.unwrap();
    let got = s.session(&x.id).await.unwrap().unwrap();
    assert_eq!((got.user.as_str(), got.target.as_str()), ("alice", "jump"));
}

#[tokio::test]
async fn find_session_by_prefix() {
    let f = fixture().await;
    let s = &f.store;
    let now = OffsetDateTime::now_utc();
    // Same millisecond: the ids share their first 10 characters.
    let a = session(id(1_700_000_000_000, 0x11), "alice", "db1", now);
    let b = session(id(1_700_000_000_000, 0xEE), "alice", "db1", now);
    s.create_session(&a).await.unwrap();
    s.create_session(&b).await.unwrap();
    let a_text = a.id.to_string();
    let b_text = b.id.to_string();
    assert_eq!(a_text[..10], b_text[..10]);

    let err = s.find_session(&a_text[..10]).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Ambiguous {
                what: "session",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains(&a_text[..10]));

    assert_eq!(s.find_session(&a_text[..12]).await.unwrap().id, a.id);
    assert_eq!(s.find_session(&b_text).await.unwrap().id, b.id);
    assert_eq!(
        s.find_session(&a_text[..12].to_lowercase())
            .await
            .unwrap()
            .id,
        a.id
    );

    let err = s.find_session("ZZZZ").await.unwrap_err();
    assert!(matches!(&err, StoreError::NotFound { what: "session", name } if name == "ZZZZ"));
    assert!(matches!(
        s.find_session("").await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        s.find_session("01%").await,
        Err(StoreError::Invalid(_))
    ));
}

#[tokio::test]
async fn reopening_keeps_data_and_schema() {
    let f = fixture().await;
    f.store.add_user(NewUser::named(n("alice"))).await.unwrap();
    f.store.close().await;
    let s = reopen(&f.db, &f.key).await;
    assert!(s.user(&n("alice")).await.unwrap().is_some());
}

#[tokio::test]
async fn open_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("missing-folder").join("custos.db");
    let err = Store::open(&db, Vault::generate_ephemeral().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Database { .. }), "{err}");
    assert!(err.to_string().contains("missing-folder"), "{err}");

    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, vec![0x42; 8192]).unwrap();
    let err = Store::open(&junk, Vault::generate_ephemeral().unwrap())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("junk.db"), "{err}");
}

/// The command line and the server each open their own `Store` on one file and write at the
/// same time; the busy timeout makes them take turns instead of failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_file() {
    let f = fixture().await;
    let server = f.store.clone();
    let cli = reopen(&f.db, &f.key).await;
    server
        .add_target(
            ssh_target("db1", HostKeyPolicy::TrustOnFirstUse { key: None }),
            None,
        )
        .await
        .unwrap();

    let server_task = {
        let server = server.clone();
        tokio::spawn(async move {
            for i in 0..40u64 {
                let sid = id(10_000 + i, 1);
                server
                    .create_session(&session(sid, "svc", "db1", OffsetDateTime::now_utc()))
                    .await
                    .unwrap();
                server.update_session_bytes(&sid, i, i * 2).await.unwrap();
            }
        })
    };
    let cli_task = {
        let cli = cli.clone();
        tokio::spawn(async move {
            for i in 0..40 {
                let name = n(&format!("user{i:02}"));
                cli.add_user(NewUser::named(name.clone())).await.unwrap();
                cli.grant(&name, &n("db1")).await.unwrap();
            }
        })
    };
    server_task.await.unwrap();
    cli_task.await.unwrap();

    // Each sees the other's writes.
    assert_eq!(server.users().await.unwrap().len(), 40);
    assert_eq!(server.grants().await.unwrap().len(), 40);
    assert_eq!(
        cli.sessions(SessionFilter::default()).await.unwrap().len(),
        40
    );
    assert!(cli.is_granted(&n("user07"), &n("db1")).await.unwrap());
}

/// Two processes starting at once on a new database file apply the schema once between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_first_open() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("fresh.db");
    let vault = Vault::generate_ephemeral().unwrap();
    let (a, b) = tokio::join!(
        Store::open(&db, vault.clone()),
        Store::open(&db, vault.clone())
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    a.add_user(NewUser::named(n("alice"))).await.unwrap();
    assert!(b.user(&n("alice")).await.unwrap().is_some());
}

#[test]
fn store_is_shareable_between_tasks() {
    fn shareable<T: Clone + Send + Sync + 'static>() {}
    shareable::<Store>();
    shareable::<Vault>();
}

#[tokio::test]
async fn session_limits_on_targets_and_grants() {
    let f = fixture().await;
    let s = &f.store;
    s.add_user(NewUser::named(n("alice"))).await.unwrap();
    let mut t = local_target("box");
    t.limits.max_duration_secs = Some(3600);
    s.add_target(t, None).await.unwrap();
    let stored = s.target(&n("box")).await.unwrap().unwrap();
    assert_eq!(stored.limits.max_duration_secs, Some(3600));
    assert_eq!(stored.limits.idle_timeout_secs, None);

    let lim = SessionLimits {
        max_duration_secs: None,
        idle_timeout_secs: Some(600),
    };
    s.set_target_limits(&n("box"), lim).await.unwrap();
    assert_eq!(s.target(&n("box")).await.unwrap().unwrap().limits, lim);
    assert!(
        s.set_target_limits(&n("nothere"), lim).await.is_err(),
        "an unknown target is an error"
    );

    assert_eq!(s.grant_of(&n("alice"), &n("box")).await.unwrap(), None);
    assert!(
        s.set_grant_limits(&n("alice"), &n("box"), lim)
            .await
            .is_err()
    );
    s.grant(&n("alice"), &n("box")).await.unwrap();
    let g = s.grant_of(&n("alice"), &n("box")).await.unwrap().unwrap();
    assert!(g.limits.is_none());
    let glim = SessionLimits {
        max_duration_secs: Some(120),
        idle_timeout_secs: None,
    };
    s.set_grant_limits(&n("alice"), &n("box"), glim)
        .await
        .unwrap();
    assert_eq!(
        s.grant_of(&n("alice"), &n("box"))
            .await
            .unwrap()
            .unwrap()
            .limits,
        glim
    );
    assert_eq!(s.grants().await.unwrap()[0].limits, glim);
    // Granting again keeps the limits.
    s.grant(&n("alice"), &n("box")).await.unwrap();
    assert_eq!(s.grants().await.unwrap()[0].limits, glim);
}

#[tokio::test]
async fn holds_are_decided_once() {
    let f = fixture().await;
    let s = &f.store;
    let alert = |decision: Option<&str>| AlertRecord {
        id: 0,
        at: micros(OffsetDateTime::now_utc()),
        session: id(1, 1),
        channel: 0,
        offset_us: 5,
        user: n("alice"),
        target: n("box"),
        rule: "local.hold-reboot".into(),
        severity: "high".into(),
        action: "hold".into(),
        event: "command".into(),
        text: "reboot".into(),
        description: "reboots need a second pair of eyes".into(),
        decision: decision.map(|st| HoldDecision {
            state: st.into(),
            by: None,
            note: None,
            at: None,
        }),
    };
    let plain = s.record_alert(&alert(None)).await.unwrap();
    let held = s.record_alert(&alert(Some("pending"))).await.unwrap();
    let other = s.record_alert(&alert(Some("pending"))).await.unwrap();

    let pending = s
        .alerts(&AlertFilter {
            pending: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        pending.iter().map(|a| a.id).collect::<Vec<_>>(),
        vec![other, held]
    );

    assert!(
        !s.decide_hold(plain, "approved", Some("bob"), None)
            .await
            .unwrap()
    );
    assert!(
        s.decide_hold(held, "denied", Some("bob"), Some("not now"))
            .await
            .unwrap()
    );
    assert!(
        !s.decide_hold(held, "approved", Some("eve"), None)
            .await
            .unwrap(),
        "a decided hold cannot be decided again"
    );
    let a = s.alert(held).await.unwrap().unwrap();
    let d = a.decision.unwrap();
    assert_eq!(d.state, "denied");
    assert_eq!(d.by.as_deref(), Some("bob"));
    assert_eq!(d.note.as_deref(), Some("not now"));
    assert!(d.at.is_some());
    assert!(s.alert(plain).await.unwrap().unwrap().decision.is_none());
    assert!(s.alert(999).await.unwrap().is_none());

    assert_eq!(
        s.withdraw_pending_holds("gateway restarted").await.unwrap(),
        1
    );
    assert_eq!(
        s.alert(other)
            .await
            .unwrap()
            .unwrap()
            .decision
            .unwrap()
            .state,
        "withdrawn"
    );
}
