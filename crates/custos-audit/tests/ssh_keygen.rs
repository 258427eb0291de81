//! Checkpoints verify with stock OpenSSH, exactly as docs/audit-events.md tells auditors to do.

use custos_audit::{
    AUDIT_PUB_FILE, AuditConfig, AuditEvent, AuditKey, AuditLog, CHECKPOINT_NAMESPACE, Checkpoint,
    EventKind, checkpoint_files,
};
use custos_store::AuditStore;
use std::path::Path;
use std::process::{Command, Output};

fn ssh_keygen_verify(dir: &Path, message: &[u8], signature: &str) -> Option<Output> {
    let msg = dir.join("checkpoint.txt");
    let sig = dir.join("checkpoint.sig");
    std::fs::write(&msg, message).unwrap();
    std::fs::write(&sig, signature).unwrap();
    let run = Command::new("ssh-keygen")
        .args(["-Y", "verify", "-f"])
        .arg(dir.join("allowed_signers"))
        .args(["-I", "custos-audit", "-n", CHECKPOINT_NAMESPACE, "-s"])
        .arg(&sig)
        .stdin(std::fs::File::open(&msg).unwrap())
        .output();
    match run {
        Ok(o) => Some(o),
        Err(e) => {
            eprintln!("ssh-keygen not available, skipping: {e}");
            None
        }
    }
}

#[tokio::test]
async fn checkpoints_verify_with_ssh_keygen() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let (key, _) = AuditKey::load_or_generate(&keys).unwrap();
    let store = AuditStore::open(&dir.path().join("custos.db"))
        .await
        .unwrap();
    let log = AuditLog::start(store.clone(), key, AuditConfig::default());
    log.emit(AuditEvent::new(EventKind::ServerStart {
        version: "0.1.0".into(),
        listen: vec![],
    }))
    .unwrap();
    log.close().await.unwrap();
    let row = store.last_checkpoint().await.unwrap().unwrap();
    let (message, signature) = checkpoint_files(&row).unwrap();

    // The allowed_signers line is the public key file with a principal and namespace in front.
    let public = std::fs::read_to_string(keys.join(AUDIT_PUB_FILE)).unwrap();
    std::fs::write(
        dir.path().join("allowed_signers"),
        format!("custos-audit namespaces=\"{CHECKPOINT_NAMESPACE}\" {public}"),
    )
    .unwrap();

    let Some(ok) = ssh_keygen_verify(dir.path(), message.as_bytes(), &signature) else {
        return;
    };
    assert!(
        ok.status.success(),
        "ssh-keygen: {} {}",
        String::from_utf8_lossy(&ok.stdout),
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("Good \"custos-audit@v1\" signature"));

    // The head in the message is the stored hash of the signed event.
    let cp = Checkpoint::parse_message(&message).unwrap();
    let event = store.range(cp.seq, cp.seq).await.unwrap().remove(0);
    assert_eq!(cp.head_hash.to_vec(), event.hash);

    // Changing one digit of the message makes stock OpenSSH refuse it.
    let forged = message.replacen("seq 1\n", "seq 2\n", 1);
    assert_ne!(forged, message);
    let bad = ssh_keygen_verify(dir.path(), forged.as_bytes(), &signature).unwrap();
    assert!(!bad.status.success());

    // The stock-tools recipe of docs/audit-events.md: sqlite3, ssh-keygen, xxd, sha256sum.
    let seq = cp.seq;
    let db = dir.path().join("custos.db");
    let recipe = format!(
        "cd {dir} && \
         sqlite3 -readonly {db} \"SELECT signature FROM audit_checkpoints WHERE seq = {seq}\" \
           > checkpoint.sig && \
         sqlite3 -readonly {db} \"SELECT 'custos-audit-checkpoint v1' || char(10) || \
           'seq ' || seq || char(10) || 'head ' || lower(hex(head_hash)) || char(10) || \
           'time ' || strftime('%Y-%m-%dT%H:%M:%S', at_us / 1000000, 'unixepoch') || \
           printf('.%06dZ', at_us % 1000000) FROM audit_checkpoints WHERE seq = {seq}\" \
           > checkpoint.txt && \
         ssh-keygen -Y verify -f allowed_signers -I custos-audit -n custos-audit@v1 \
           -s checkpoint.sig < checkpoint.txt && \
         sqlite3 -readonly {db} \"SELECT lower(hex(hash)) FROM audit_events WHERE seq = {seq}\" && \
         sqlite3 -readonly {db} \"SELECT hex(prev_hash) || hex(doc) FROM audit_events \
           WHERE seq = {seq}\" | xxd -r -p | sha256sum",
        dir = dir.path().display(),
        db = db.display(),
    );
    let out = match Command::new("sh").arg("-c").arg(&recipe).output() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("sh not available, skipping the stock-tools recipe: {e}");
            return;
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("not found") {
        eprintln!("a stock tool is missing, skipping the recipe: {stderr}");
        return;
    }
    assert!(out.status.success(), "recipe failed: {stdout} {stderr}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("checkpoint.txt")).unwrap(),
        message
    );
    let head = hex(&cp.head_hash);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with("Good \"custos-audit@v1\" signature"),
        "{stdout}"
    );
    assert_eq!(lines[1], head);
    assert_eq!(lines[2], format!("{head}  -"));
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
