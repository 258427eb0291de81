//! Audit events raised by the gateway. Emitting never waits: events go to the audit log's
//! writer task (crates/custos-audit), which chains and stores them off the session path.

use custos_audit::{AuditEvent, AuthMethod, EventKind, Match, Position, RuleRef, Severity, Target};
use custos_core::{TargetKind, TargetRecord};
use std::net::SocketAddr;
use tracing::warn;

use crate::gateway::Ctx;
use crate::session::LiveSession;

/// Hands `event` to the audit log. A log that has failed is reported, never waited on.
pub(crate) fn emit(ctx: &Ctx, event: AuditEvent) {
    if let Err(e) = ctx.audit.emit(event) {
        warn!(error = %e, "an audit event could not be queued");
    }
}

/// The audit view of a target: name, address, port and login.
pub(crate) fn target(t: &TargetRecord) -> Target {
    let mut out = Target::named(t.name.as_str());
    match &t.kind {
        TargetKind::Ssh {
            host, port, login, ..
        } => {
            out.address = Some(host.clone());
            out.port = Some(*port);
            out.login = Some(login.clone());
        }
        TargetKind::Local { os_user } => {
            out.address = Some("localhost".into());
            out.login = os_user.clone();
        }
    }
    out
}

/// An event about `session`: user, source, session id and target filled in.
pub(crate) fn in_session(session: &LiveSession, kind: EventKind) -> AuditEvent {
    AuditEvent::new(kind)
        .user(session.user.as_str())
        .source(session.source)
        .session(session.id)
        .target(target(&session.target))
}

pub(crate) fn position(channel: u32, offset_us: u64) -> Position {
    Position { channel, offset_us }
}

pub(crate) fn auth_method(method: &str) -> AuthMethod {
    match method {
        "password" => AuthMethod::Password,
        "publickey" => AuthMethod::PublicKey,
        "keyboard-interactive" => AuthMethod::KeyboardInteractive,
        _ => AuthMethod::None,
    }
}

/// A failed or refused login.
pub(crate) fn auth_failure(ctx: &Ctx, user: &str, peer: SocketAddr, method: &str, why: &str) {
    let mut ev = AuditEvent::new(EventKind::AuthFailure {
        method: auth_method(method),
        reason: why.to_string(),
    })
    .source(peer);
    // A name that is no valid user name is not echoed into the log (it may be a password
    // typed into the wrong field).
    if custos_core::Name::new(user).is_ok() {
        ev = ev.user(user);
    }
    emit(ctx, ev);
}

/// The rule reference of a match.
pub(crate) fn rule(m: &custos_rules::RuleMatch) -> RuleRef {
    RuleRef {
        id: m.id.clone(),
        severity: Severity::parse(&m.severity.to_string()).unwrap_or(Severity::Medium),
        description: Some(m.description.clone()),
    }
}

/// What a rule matched.
pub(crate) fn matched(kind: &str, text: &str, position: Option<Position>) -> Match {
    Match {
        subject: kind.to_string(),
        text: text.to_string(),
        position,
    }
}
