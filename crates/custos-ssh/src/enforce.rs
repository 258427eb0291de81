//! Rules applied to what users do: every match becomes an alert (stored, logged and noted in
//! the recording), and the strongest action is enforced — block refuses the request, terminate
//! ends the session, lock also locks the account and ends all its sessions.
//!
//! Today the gateway evaluates exec requests and port forwards, which it sees exactly in the
//! protocol. `hold` needs a moderator, which does not exist yet, so it refuses like `block`.

use custos_core::{AlertRecord, EndReason};
use custos_recording::EventKind;
use custos_rules::{Action, Context, Decision, Event};
use tracing::warn;

use crate::gateway::ConnShared;
use crate::session::LiveSession;

/// Evaluates `event` for the session's user and target, raises an alert per match and applies
/// the strongest action. Returns the message to show the user when the request is refused.
pub(crate) async fn check(
    shared: &ConnShared,
    session: &LiveSession,
    channel: u32,
    kind: &str,
    text: &str,
    event: Event,
) -> Option<String> {
    let mut ctx = Context::new(
        session.user.as_str(),
        session.target.name.as_str(),
        time::OffsetDateTime::now_utc(),
    );
    ctx.target_labels = session.target.labels.clone();
    let decision: Decision = shared.ctx.rules.current().evaluate(&event, &ctx);
    let action = decision.action?;
    let offset_us = session.now_us();
    for m in &decision.matches {
        warn!(session = %session.id, user = %session.user, target = %session.target.name, rule = %m.id, severity = %m.severity, action = %m.action, event = kind, text, "rule matched");
        session
            .record(
                channel,
                EventKind::Note(format!(
                    "rule {} ({}) matched: {}",
                    m.id, m.severity, m.action
                )),
            )
            .await;
        session.commands.alert(AlertRecord {
            id: 0,
            at: time::OffsetDateTime::now_utc(),
            session: session.id,
            channel,
            offset_us,
            user: session.user.clone(),
            target: session.target.name.clone(),
            rule: m.id.clone(),
            severity: m.severity.to_string(),
            action: m.action.to_string(),
            event: kind.to_string(),
            text: text.to_string(),
            description: m.description.clone(),
        });
    }
    let rule = decision.matches.iter().find(|m| m.action == action)?;
    let why = format!("rule {} — {}", rule.id, rule.description);
    match action {
        Action::Alert => None,
        Action::Block => Some(format!("blocked by {why}")),
        Action::Hold => Some(format!(
            "held by {why}; moderator approval is not available, so it is refused"
        )),
        Action::Terminate => {
            session.request_stop(EndReason::Killed(format!("terminated by {why}")));
            Some(format!("session terminated by {why}"))
        }
        Action::Lock => {
            let user = session.user.clone();
            if let Err(e) = shared.ctx.store.set_locked(&user, true).await {
                warn!(user = %user, error = %e, "cannot lock the account a rule asked to lock");
            }
            shared
                .ctx
                .live
                .kill_user(&user, &format!("account locked by {why}"));
            Some(format!("account locked by {why}"))
        }
    }
}
