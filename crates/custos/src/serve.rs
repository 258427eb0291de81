//! `init`, `serve` and `quickstart`: build the gateway from the data directory and run it.

use anyhow::{Context, Result};
use custos_ssh::{AuthLimits, Gateway, GatewayConfig};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tracing::{error, info, warn};

use crate::datadir::{Created, DataDir};

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CUSTOS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,russh=warn"));
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

pub async fn init(data: &Path) -> Result<i32> {
    let (_dd, created) = DataDir::init(data).await?;
    print_created(data, &created);
    Ok(0)
}

fn print_created(data: &Path, created: &Created) {
    println!("Created the Custos data directory {}", data.display());
    println!();
    println!("  admin user:  admin");
    println!(
        "  password:    {}   (one-time: shown only now; you choose your own at the first login)",
        created.admin_password.expose_str().unwrap_or("")
    );
    println!("  demo target: local (a shell on this host, as the user running custos)");
    println!();
}

pub async fn quickstart(data: &Path, listen: Option<SocketAddr>) -> Result<i32> {
    if DataDir::exists(data) {
        println!("Using the existing data directory {}", data.display());
    } else {
        let (_dd, created) = DataDir::init(data).await?;
        print_created(data, &created);
    }
    serve(data, listen, Some(())).await
}

pub async fn serve(data: &Path, listen: Option<SocketAddr>, quickstart: Option<()>) -> Result<i32> {
    init_logging();
    // A file-size limit must surface as a write error (which ends the affected session with a
    // message) rather than kill the whole gateway.
    // SAFETY: setting a signal disposition to SIG_IGN has no preconditions.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    let dd = DataDir::open(data)?;
    let store = dd.store().await?;
    let keys = dd.recording_keys()?;
    let host_key = dd.host_key()?;
    let recordings = dd.recordings_dir();
    std::fs::create_dir_all(&recordings)
        .with_context(|| format!("cannot create {}", recordings.display()))?;

    let auditor = crate::audit::Auditor::open(&dd).await?;
    let audit = auditor.log();
    let emit = |ev: custos_audit::AuditEvent| {
        if let Err(e) = audit.emit(ev) {
            warn!(error = %e, "an audit event could not be queued");
        }
    };
    for (key, fingerprint) in [
        (
            dd.config.ssh.host_key.display().to_string(),
            host_key
                .public_key()
                .fingerprint(russh::keys::HashAlg::Sha256)
                .to_string(),
        ),
        (
            custos_audit::AUDIT_KEY_FILE.to_string(),
            custos_audit::load_public_key(&dd.keys_dir().join(custos_audit::AUDIT_PUB_FILE))
                .map(|k| k.fingerprint(russh::keys::HashAlg::Sha256).to_string())
                .unwrap_or_default(),
        ),
    ] {
        emit(
            custos_audit::AuditEvent::new(custos_audit::EventKind::KeyOperation {
                key,
                operation: custos_audit::KeyOperation::Load,
                fingerprint: Some(fingerprint),
            })
            .user("gateway"),
        );
    }
    // A configuration that changed since the last start is an administrative change.
    if let Ok(text) = std::fs::read(DataDir::config_path(data)) {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &text);
        let name = format!("custos.toml sha256:{}", hex::encode(&digest.as_ref()[..16]));
        let last = auditor
            .store()
            .search(&custos_store::AuditFilter {
                action: Some("admin.config.update".into()),
                limit: Some(1),
                ..Default::default()
            })
            .await?;
        let known = last
            .first()
            .is_some_and(|r| r.doc.contains(&format!("\"{name}\"")));
        if !known {
            emit(
                custos_audit::AuditEvent::new(custos_audit::EventKind::AdminChange {
                    object: custos_audit::AdminObject::Config,
                    operation: custos_audit::AdminOperation::Update,
                    name,
                    fields: vec!["custos.toml".into()],
                })
                .user("gateway"),
            );
        }
    }
    // Delivery to SIEMs; a sink that cannot run stops the start (nothing silently unsent).
    let sinks = custos_sinks::Sinks::start(auditor.store(), &dd.config.sinks, &dd.root)
        .map_err(|e| anyhow::anyhow!("{}: {e}", DataDir::config_path(data).display()))?;

    // Sessions left live by a crash: mark them interrupted and seal what was recorded.
    let now = time::OffsetDateTime::now_utc();
    for s in store.mark_live_sessions_interrupted(now).await? {
        emit(
            custos_audit::AuditEvent::new(custos_audit::EventKind::SessionInterrupted {
                reason: "the gateway stopped while the session ran".into(),
            })
            .user(s.user.as_str())
            .session(s.id)
            .target(custos_audit::Target::named(s.target.as_str())),
        );
        let path = recordings.join(&s.recording);
        match custos_recording::recover(&path, &keys) {
            Ok(r) => {
                warn!(session = %s.id, user = %s.user, target = %s.target, report = ?r, "session was interrupted by a gateway stop; its recording was recovered and sealed")
            }
            Err(e) => {
                error!(session = %s.id, path = %path.display(), error = %e, "session was interrupted and its recording could not be recovered")
            }
        }
    }

    // Holds whose gateway stopped can never be answered.
    let withdrawn = store
        .withdraw_pending_holds("the gateway stopped before a decision")
        .await?;
    if withdrawn > 0 {
        warn!(
            holds = withdrawn,
            "held requests left by a gateway stop were withdrawn"
        );
    }

    let listen = listen.unwrap_or(dd.config.ssh.listen);
    let c = &dd.config;
    let config = GatewayConfig {
        connect_timeout: Duration::from_secs(c.ssh.connect_timeout_secs.max(1)),
        env_allow: c.ssh.env_allow.clone(),
        auth_limits: AuthLimits {
            max_failures: c.auth.max_failures.max(1),
            window: Duration::from_secs(c.auth.failure_window_secs),
            lockout: Duration::from_secs(c.auth.lockout_secs),
        },
        recordings_dir: recordings,
        hold_timeout: Duration::from_secs(c.rules.hold_timeout_secs.max(1)),
        ..GatewayConfig::default()
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| {
            format!("cannot listen on {listen} (is another gateway running? use --ssh-listen ADDR)")
        })?;
    let admin = crate::control::bind(data).await?;
    let rules_state = crate::rules::fingerprint(data);
    let rules = std::sync::Arc::new(crate::rules::load(data)?);
    info!(rules = rules.len(), "rules loaded");
    let gateway = Gateway::new(store, keys, rules, host_key, config, audit.clone());
    let admin_task = tokio::spawn(crate::control::serve(admin, gateway.live(), audit.clone()));
    let rules_task = tokio::spawn(crate::rules::watch(
        data.to_path_buf(),
        gateway.rules(),
        rules_state,
        audit.clone(),
    ));
    let metrics_task = (!dd.config.metrics.textfile.as_os_str().is_empty()).then(|| {
        tokio::spawn(crate::audit::write_metrics(
            dd.path(&dd.config.metrics.textfile),
            dd.config.sinks.clone(),
            auditor.store(),
            audit.clone(),
            gateway.live(),
            Duration::from_secs(dd.config.metrics.interval_secs.max(1)),
        ))
    });
    emit(
        custos_audit::AuditEvent::new(custos_audit::EventKind::ServerStart {
            version: env!("CARGO_PKG_VERSION").into(),
            listen: vec![listen.to_string()],
        })
        .user("gateway"),
    );
    info!(listen = %listen, data = %data.display(), "custos gateway listening");
    if quickstart.is_some() {
        let host = if listen.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            listen.ip().to_string()
        };
        let port = listen.port();
        println!("Custos is listening on {listen}. Open a recorded shell with:");
        println!();
        println!("    ssh -p {port} admin:local@{host}");
        println!();
        println!("Log in with the admin password printed when the data directory was created;");
        println!(
            "at the first login you choose your own. Afterwards, list and replay sessions with:"
        );
        // The hints name the data directory unless it is the default one.
        let data_arg = if data == Path::new("./custos-data") || data == Path::new("custos-data") {
            String::new()
        } else {
            format!(" --data {}", data.display())
        };
        println!("    cargo run --release --{data_arg} sessions list");
        println!("    cargo run --release --{data_arg} play <SESSION-ID>");
        println!("Stop the gateway with Ctrl-C.");
    } else {
        println!("custos: listening on {listen}");
    }
    let served = gateway.serve(listener, shutdown_signal()).await;
    admin_task.abort();
    rules_task.abort();
    if let Some(t) = metrics_task {
        t.abort();
    }
    emit(
        custos_audit::AuditEvent::new(custos_audit::EventKind::ServerStop {
            reason: match &served {
                Ok(()) => "stopped by a signal".into(),
                Err(e) => format!("error: {e}"),
            },
        })
        .user("gateway"),
    );
    if let Err(e) = auditor.close().await {
        error!(error = %e, "the audit log could not be closed cleanly");
    }
    // A moment for the sinks to pass on the last events; their cursors resume them otherwise.
    tokio::time::sleep(Duration::from_millis(700)).await;
    drop(sinks);
    served?;
    let _ = std::fs::remove_file(crate::control::socket_path(data));
    info!("custos gateway stopped");
    Ok(0)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
