//! Rules applied to what users do: every match becomes an alert (stored, logged and noted in
//! the recording), and the strongest action is enforced — block refuses the request, hold
//! parks it until a moderator answers (no answer in time means no), terminate ends the
//! session, lock also locks the account and ends all its sessions.
//!
//! The gateway evaluates session starts (before the target is contacted), exec requests,
//! interactive command lines (with the Enter held), port forwards, file operations and
//! terminal output.

use custos_core::{AlertRecord, EndReason, HoldDecision, Id, Name, TargetRecord};
use custos_recording::EventKind;
use custos_rules::{Action, Context, Decision, Event};
use std::net::SocketAddr;
use tracing::{info, warn};

use crate::gateway::ConnShared;

/// The writing half of a user's channel.
pub(crate) type UserWrite = russh::ChannelWriteHalf<russh::server::Msg>;
use crate::session::{HoldAnswer, LiveSession};

/// What to do with a request after the rules have seen it.
pub(crate) enum Verdict {
    Allow,
    /// Refused; the message tells the user why.
    Refuse(String),
    /// Parked until a moderator answers; see [`await_hold`].
    Hold(Held),
}

/// A request waiting for a moderator.
pub(crate) struct Held {
    /// The alert a moderator approves or denies.
    pub alert: i64,
    why: String,
    rule: custos_audit::RuleRef,
    matched: custos_audit::Match,
}

impl Held {
    /// What the user is told while the request waits.
    pub fn message(&self, timeout_secs: u64) -> String {
        format!(
            "held by {} — waiting up to {} for a moderator (custos alerts approve|deny {})",
            self.why,
            custos_core::format_secs(timeout_secs),
            self.alert
        )
    }
}

fn context(user: &Name, target: &TargetRecord) -> Context {
    let mut ctx = Context::new(
        user.as_str(),
        target.name.as_str(),
        time::OffsetDateTime::now_utc(),
    );
    ctx.target_labels = target.labels.clone();
    ctx
}

fn alert_row(
    session: Id,
    user: &Name,
    target: &Name,
    (channel, offset_us): (u32, u64),
    kind: &str,
    text: &str,
    m: &custos_rules::RuleMatch,
) -> AlertRecord {
    AlertRecord {
        id: 0,
        at: time::OffsetDateTime::now_utc(),
        session,
        channel,
        offset_us,
        user: user.clone(),
        target: target.clone(),
        rule: m.id.clone(),
        severity: m.severity.to_string(),
        action: m.action.to_string(),
        event: kind.to_string(),
        text: text.to_string(),
        description: m.description.clone(),
        decision: None,
    }
}

fn pending() -> Option<HoldDecision> {
    Some(HoldDecision {
        state: "pending".into(),
        by: None,
        note: None,
        at: None,
    })
}

/// Evaluates `event` for the session's user and target, raises an alert per match and applies
/// the strongest action.
pub(crate) async fn check(
    shared: &ConnShared,
    session: &LiveSession,
    channel: u32,
    kind: &str,
    text: &str,
    event: Event,
) -> Verdict {
    let ctx = context(&session.user, &session.target);
    let decision: Decision = shared.ctx.rules.current().evaluate(&event, &ctx);
    let Some(action) = decision.action else {
        return Verdict::Allow;
    };
    let offset_us = session.now_us();
    let deciding = decision.matches.iter().position(|m| m.action == action);
    let mut held = None;
    let pos = crate::audit::position(channel, offset_us);
    for (i, m) in decision.matches.iter().enumerate() {
        let rule = crate::audit::rule(m);
        let matched = crate::audit::matched(kind, text, Some(pos));
        session.audit(match (Some(i) == deciding, m.action) {
            (true, Action::Hold) => custos_audit::EventKind::Hold {
                rule,
                matched,
                state: custos_audit::HoldState::Requested,
                by: None,
                note: None,
            },
            (true, Action::Terminate) => custos_audit::EventKind::Terminate {
                reason: format!("terminated by rule {} — {}", m.id, m.description),
                by: custos_audit::Initiator::Rule(rule),
            },
            (true, Action::Lock) => custos_audit::EventKind::Lock {
                account: session.user.to_string(),
                reason: format!("locked by rule {} — {}", m.id, m.description),
                by: custos_audit::Initiator::Rule(rule),
            },
            (_, Action::Block) => custos_audit::EventKind::Block { rule, matched },
            _ => custos_audit::EventKind::Alert { rule, matched },
        });
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
        let mut row = alert_row(
            session.id,
            &session.user,
            &session.target.name,
            (channel, offset_us),
            kind,
            text,
            m,
        );
        if action == Action::Hold && Some(i) == deciding {
            // The moderator needs the alert's id now, so this one is stored directly.
            row.decision = pending();
            match shared.ctx.store.record_alert(&row).await {
                Ok(id) => held = Some(id),
                Err(e) => {
                    warn!(session = %session.id, error = %e, "cannot store a hold; refusing the request");
                    return Verdict::Refuse(format!(
                        "held by rule {} — the hold cannot be registered, so it is refused",
                        m.id
                    ));
                }
            }
        } else {
            session.commands.alert(row);
        }
    }
    let Some(rule) = deciding.map(|i| &decision.matches[i]) else {
        return Verdict::Allow;
    };
    let why = format!("rule {} — {}", rule.id, rule.description);
    match action {
        Action::Alert => Verdict::Allow,
        Action::Block => Verdict::Refuse(format!("blocked by {why}")),
        Action::Hold => match held {
            Some(alert) => Verdict::Hold(Held {
                alert,
                why,
                rule: crate::audit::rule(rule),
                matched: crate::audit::matched(kind, text, Some(pos)),
            }),
            None => Verdict::Refuse(format!("held by {why}")),
        },
        Action::Terminate => {
            session.request_stop(EndReason::Killed(format!("terminated by {why}")));
            Verdict::Refuse(format!("session terminated by {why}"))
        }
        Action::Lock => {
            lock_user(shared, &session.user, &why).await;
            Verdict::Refuse(format!("account locked by {why}"))
        }
    }
}

async fn lock_user(shared: &ConnShared, user: &Name, why: &str) {
    if let Err(e) = shared.ctx.store.set_locked(user, true).await {
        warn!(user = %user, error = %e, "cannot lock the account a rule asked to lock");
    }
    shared
        .ctx
        .live
        .kill_user(user, &format!("account locked by {why}"));
}

/// Waits for a moderator's answer to a held request. `None` means approved; otherwise the
/// refusal to show the user (denied, no answer in time, or the session ended meanwhile).
pub(crate) async fn await_hold(
    shared: &ConnShared,
    session: &LiveSession,
    channel: u32,
    held: Held,
) -> Option<String> {
    let stop = session.stop.subscribe();
    let Decided {
        state,
        by,
        note,
        refusal: result,
    } = wait_for_moderator(shared, &held, session.id, Some(stop), "").await;
    info!(session = %session.id, alert = held.alert, decision = state, by = by.as_deref().unwrap_or(""), "hold decided");
    session.audit(custos_audit::EventKind::Hold {
        rule: held.rule.clone(),
        matched: held.matched.clone(),
        state: hold_state(state),
        by: by.clone(),
        note: note.clone(),
    });
    session
        .record(
            channel,
            EventKind::Note(format!(
                "hold {} {state}{}",
                held.alert,
                by.map(|b| format!(" by {b}")).unwrap_or_default()
            )),
        )
        .await;
    result
}

/// What became of a hold.
struct Decided {
    /// `approved`, `denied`, `timed_out` or `withdrawn`.
    state: &'static str,
    by: Option<String>,
    note: Option<String>,
    /// `None` when approved; otherwise what the user is told.
    refusal: Option<String>,
}

/// Registers `held`, waits for a moderator's answer (up to the hold timeout, or until `stop`
/// fires) and stores the outcome with the alert. `what` prefixes a denial ("session ").
async fn wait_for_moderator(
    shared: &ConnShared,
    held: &Held,
    session: Id,
    stop: Option<tokio::sync::watch::Receiver<Option<EndReason>>>,
    what: &str,
) -> Decided {
    let live = &shared.ctx.live;
    let timeout = shared.ctx.config.hold_timeout;
    let answer = live.hold(held.alert, session);
    enum Outcome {
        Answer(HoldAnswer),
        TimedOut,
        Withdrawn,
    }
    let stopped = async {
        match stop {
            Some(mut rx) => {
                let _ = rx.wait_for(|r| r.is_some()).await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    let outcome = tokio::select! {
        r = tokio::time::timeout(timeout, answer) => match r {
            Ok(Ok(a)) => Outcome::Answer(a),
            Ok(Err(_)) => Outcome::Withdrawn,
            Err(_) => Outcome::TimedOut,
        },
        _ = stopped => Outcome::Withdrawn,
    };
    live.unhold(held.alert);
    let d = match outcome {
        Outcome::Answer(a) if a.approve => Decided {
            state: "approved",
            by: Some(a.by),
            note: a.note,
            refusal: None,
        },
        Outcome::Answer(a) => {
            let mut msg = format!("{what}denied by moderator {}: {}", a.by, held.why);
            if let Some(n) = &a.note {
                msg.push_str(&format!(" ({n})"));
            }
            Decided {
                state: "denied",
                by: Some(a.by),
                note: a.note,
                refusal: Some(msg),
            }
        }
        Outcome::TimedOut => Decided {
            state: "timed_out",
            by: None,
            note: None,
            refusal: Some(format!(
                "held by {}: no moderator answered within {}, so it is refused",
                held.why,
                custos_core::format_secs(timeout.as_secs())
            )),
        },
        Outcome::Withdrawn => Decided {
            state: "withdrawn",
            by: None,
            note: Some("the session ended while waiting".into()),
            refusal: Some(format!("held by {}: the session ended", held.why)),
        },
    };
    if let Err(e) = shared
        .ctx
        .store
        .decide_hold(held.alert, d.state, d.by.as_deref(), d.note.as_deref())
        .await
    {
        warn!(alert = held.alert, error = %e, "cannot store the outcome of a hold");
    }
    d
}

/// Denies a hold on something that cannot wait for a moderator (output already on its way, a
/// file operation already done): the decision is stored and audited like any other.
pub(crate) async fn deny_at_once(
    shared: &ConnShared,
    session: &LiveSession,
    held: &Held,
    why: &str,
) {
    if let Err(e) = shared
        .ctx
        .store
        .decide_hold(held.alert, "denied", None, Some(why))
        .await
    {
        warn!(alert = held.alert, error = %e, "cannot store the outcome of a hold");
    }
    session.audit(custos_audit::EventKind::Hold {
        rule: held.rule.clone(),
        matched: held.matched.clone(),
        state: custos_audit::HoldState::Denied,
        by: None,
        note: Some(why.to_string()),
    });
}

fn hold_state(state: &str) -> custos_audit::HoldState {
    match state {
        "approved" => custos_audit::HoldState::Approved,
        "denied" => custos_audit::HoldState::Denied,
        "timed_out" => custos_audit::HoldState::TimedOut,
        _ => custos_audit::HoldState::Withdrawn,
    }
}

/// Checks terminal output against the output rules. Returns the message to show instead of
/// the output when a rule withholds it (block or stronger).
pub(crate) async fn check_output(
    shared: &ConnShared,
    session: &LiveSession,
    channel: u32,
    text: &str,
) -> Option<String> {
    // The alert shows which rule matched, never the output itself (it may be a secret).
    let event = Event::Output {
        text: text.to_string(),
    };
    match check(
        shared,
        session,
        channel,
        "output",
        "(terminal output: see the recording)",
        event,
    )
    .await
    {
        Verdict::Allow => None,
        Verdict::Refuse(m) => Some(match m.strip_prefix("blocked by ") {
            Some(rest) => format!("withheld by {rest}"),
            None => m,
        }),
        // Output cannot wait for a moderator: a hold withholds it like a block.
        Verdict::Hold(h) => {
            deny_at_once(shared, session, &h, "terminal output is not held").await;
            Some(format!("withheld by {}", h.why))
        }
    }
}

/// Evaluates a session that is about to open, before the target is contacted. Alerts are
/// stored under the id the session would have. Returns the refusal, if any; a hold waits
/// here (the user is told through `tell`).
pub(crate) async fn check_session_start(
    shared: &ConnShared,
    id: Id,
    user: &Name,
    target: &TargetRecord,
    peer: SocketAddr,
    tell: Option<&UserWrite>,
) -> Option<String> {
    let event = Event::SessionStart {
        user: user.to_string(),
        target: target.name.to_string(),
        source: peer.ip().to_string(),
        time: time::OffsetDateTime::now_utc(),
    };
    let ctx = context(user, target);
    let decision = shared.ctx.rules.current().evaluate(&event, &ctx);
    let action = decision.action?;
    let text = format!("{user} -> {} from {}", target.name, peer.ip());
    let deciding = decision.matches.iter().position(|m| m.action == action)?;
    let mut held = None;
    let event = |kind| {
        custos_audit::AuditEvent::new(kind)
            .user(user.as_str())
            .source(peer)
            .session(id)
            .target(crate::audit::target(target))
    };
    for (i, m) in decision.matches.iter().enumerate() {
        let rule = crate::audit::rule(m);
        let matched = crate::audit::matched("session", &text, None);
        crate::audit::emit(
            &shared.ctx,
            event(match (i == deciding, m.action) {
                (true, Action::Hold) => custos_audit::EventKind::Hold {
                    rule,
                    matched,
                    state: custos_audit::HoldState::Requested,
                    by: None,
                    note: None,
                },
                (true, Action::Block | Action::Terminate) => {
                    custos_audit::EventKind::Block { rule, matched }
                }
                (true, Action::Lock) => custos_audit::EventKind::Lock {
                    account: user.to_string(),
                    reason: format!("locked by rule {} — {}", m.id, m.description),
                    by: custos_audit::Initiator::Rule(rule),
                },
                _ => custos_audit::EventKind::Alert { rule, matched },
            }),
        );
        warn!(session = %id, user = %user, target = %target.name, rule = %m.id, severity = %m.severity, action = %m.action, event = "session", "rule matched");
        let mut row = alert_row(id, user, &target.name, (0, 0), "session", &text, m);
        if action == Action::Hold && i == deciding {
            row.decision = pending();
        }
        match shared.ctx.store.record_alert(&row).await {
            Ok(a) if action == Action::Hold && i == deciding => held = Some(a),
            Ok(_) => {}
            Err(e) => warn!(session = %id, error = %e, "cannot store an alert"),
        }
    }
    let rule = &decision.matches[deciding];
    let why = format!("rule {} — {}", rule.id, rule.description);
    match action {
        Action::Alert => None,
        Action::Block | Action::Terminate => Some(format!("session refused by {why}")),
        Action::Lock => {
            lock_user(shared, user, &why).await;
            Some(format!("account locked by {why}"))
        }
        Action::Hold => {
            let Some(alert) = held else {
                return Some(format!("held by {why}"));
            };
            let timeout = shared.ctx.config.hold_timeout;
            let h = Held {
                alert,
                why,
                rule: crate::audit::rule(rule),
                matched: crate::audit::matched("session", &text, None),
            };
            if let Some(w) = tell {
                let line = format!("custos: {}\r\n", h.message(timeout.as_secs()));
                let _ = w.extended_data_bytes(1, bytes::Bytes::from(line)).await;
            }
            let Decided {
                state,
                by,
                note,
                refusal: result,
            } = wait_for_moderator(shared, &h, id, None, "session ").await;
            info!(session = %id, alert, decision = state, "session start hold decided");
            crate::audit::emit(
                &shared.ctx,
                event(custos_audit::EventKind::Hold {
                    rule: crate::audit::rule(rule),
                    matched: crate::audit::matched("session", &text, None),
                    state: hold_state(state),
                    by: by.clone(),
                    note: note.clone(),
                }),
            );
            result
        }
    }
}
