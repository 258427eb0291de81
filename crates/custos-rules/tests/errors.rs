//! Rule file errors name the file, the line and the reason.

use custos_rules::{Ruleset, check_sources};

fn first_error(yaml: &str) -> (usize, String) {
    match Ruleset::from_str("t.yaml", yaml) {
        Ok(_) => (0, "loaded".into()),
        Err(e) => {
            let d = &e.diagnostics[0];
            assert_eq!(d.file, "t.yaml");
            (d.line, d.message.clone())
        }
    }
}

const GOOD: &str = "- id: a.one
  description: first rule
  severity: low
  mitre: [T1059]
  action: alert
  match: {command: {program: ls}}
";

#[test]
fn good_file_loads() {
    let rs = Ruleset::from_str("t.yaml", GOOD);
    assert_eq!(rs.map(|r| r.len()).ok(), Some(1));
    // A single rule (mapping, not list) is accepted too.
    let single = GOOD.replacen("- id", "id", 1).replace("\n  ", "\n");
    assert_eq!(
        Ruleset::from_str("t.yaml", &single).map(|r| r.len()).ok(),
        Some(1)
    );
}

#[test]
fn unknown_field_names_line() {
    let yaml = format!("{GOOD}  colour: red\n");
    let (line, msg) = first_error(&yaml);
    assert_eq!(line, 7, "{msg}");
    assert!(msg.contains("unknown field `colour`"), "{msg}");
}

#[test]
fn unknown_severity_action_and_kind() {
    let (line, msg) = first_error(&GOOD.replace("severity: low", "severity: urgent"));
    assert_eq!(line, 3, "{msg}");
    assert!(msg.contains("urgent"), "{msg}");
    let (line, msg) = first_error(&GOOD.replace("action: alert", "action: explode"));
    assert_eq!(line, 5, "{msg}");
    assert!(msg.contains("explode"), "{msg}");
    let (line, msg) = first_error(&GOOD.replace("{command:", "{comand:"));
    assert_eq!(line, 6, "{msg}");
    assert!(msg.contains("comand"), "{msg}");
}

#[test]
fn bad_regex_names_line() {
    let yaml = format!(
        "{GOOD}- id: a.two\n  description: second\n  severity: low\n  mitre: [T1059]\n  action: alert\n  match:\n    command:\n      regex: ['(unclosed']\n"
    );
    let (line, msg) = first_error(&yaml);
    assert_eq!(line, 14, "{msg}");
    assert!(msg.contains("bad regex"), "{msg}");
}

#[test]
fn bad_mitre_and_empty_match() {
    let (_, msg) = first_error(&GOOD.replace("[T1059]", "[X99]"));
    assert!(msg.contains("ATT&CK"), "{msg}");
    let (_, msg) = first_error(&GOOD.replace("{command: {program: ls}}", "{command: {}}"));
    assert!(msg.contains("at least one of"), "{msg}");
}

#[test]
fn duplicate_id_across_files() {
    let r = Ruleset::from_sources([
        ("a.yaml".to_string(), GOOD.to_string()),
        ("b.yaml".to_string(), format!("# c\n{GOOD}")),
    ]);
    let e = r.err().map(|e| e.diagnostics).unwrap_or_default();
    assert_eq!(e.len(), 1);
    assert_eq!((e[0].file.as_str(), e[0].line), ("b.yaml", 2));
    assert!(
        e[0].message.contains("duplicate rule id `a.one`") && e[0].message.contains("a.yaml:1"),
        "{}",
        e[0]
    );
}

#[test]
fn failing_examples_are_reported() {
    let yaml = GOOD.to_string() + "  examples: {match: [\"cat x\"], no_match: [\"ls -la\"]}\n";
    let d = check_sources([("t.yaml".to_string(), yaml)]);
    assert_eq!(d.len(), 2, "{d:?}");
    assert!(
        d.iter().all(|d| d.line == 7 && d.message.contains("a.one")),
        "{d:?}"
    );
}

#[test]
fn from_files_reports_missing_file() {
    let e = Ruleset::from_files(&["/nonexistent/custos-rules.yaml"])
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        e.starts_with("/nonexistent/custos-rules.yaml:0: cannot read"),
        "{e}"
    );
}

#[test]
fn conditions_restrict_matches() {
    use custos_rules::{Context, test_command};
    use time::OffsetDateTime;
    let yaml = GOOD.to_string()
        + "  conditions:\n    users: ['ops-*']\n    target_labels: {env: prod}\n    within: [{days: [mon, tue, wed, thu, fri], from: '09:00', to: '17:00', utc_offset: '+01:00'}]\n";
    let rs = Ruleset::from_str("t.yaml", &yaml);
    assert!(rs.is_ok(), "{:?}", rs.err());
    let Ok(rs) = rs else { return };
    // Wednesday 2026-11-25 10:00 UTC = 11:00 at +01:00.
    let t =
        OffsetDateTime::from_unix_timestamp(1_764_064_800).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let hit = Context::new("ops-bob", "db1", t).with_label("env", "prod");
    assert!(!test_command(&rs, "ls", &hit).is_allowed());
    assert!(
        test_command(
            &rs,
            "ls",
            &Context::new("alice", "db1", t).with_label("env", "prod")
        )
        .is_allowed()
    );
    assert!(
        test_command(
            &rs,
            "ls",
            &Context::new("ops-bob", "db1", t).with_label("env", "dev")
        )
        .is_allowed()
    );
    let late = t + time::Duration::hours(8);
    assert!(
        test_command(
            &rs,
            "ls",
            &Context::new("ops-bob", "db1", late).with_label("env", "prod")
        )
        .is_allowed()
    );
}

#[test]
fn exec_rules_ignore_interactive_commands() {
    use custos_rules::{Context, Event};
    let yaml = GOOD.replace("{command: {program: ls}}", "{exec: {program: ls}}");
    let Ok(rs) = Ruleset::from_str("t.yaml", &yaml) else {
        panic!("exec rule did not load")
    };
    let ctx = Context::new("a", "b", time::OffsetDateTime::UNIX_EPOCH);
    assert!(
        !rs.evaluate(
            &Event::Exec {
                command: "ls".into()
            },
            &ctx
        )
        .is_allowed()
    );
    assert!(
        rs.evaluate(&Event::Command { text: "ls".into() }, &ctx)
            .is_allowed()
    );
}

#[test]
fn two_event_kinds_in_one_rule_is_an_error() {
    let (line, msg) = first_error(&GOOD.replace(
        "{command: {program: ls}}",
        "{command: {program: ls}, output: {regex: x}}",
    ));
    assert_eq!(line, 6, "{msg}");
    assert!(msg.contains("more than one event kind"), "{msg}");
}
