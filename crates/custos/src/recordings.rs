//! Session listing, recording verification, replay and export.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use custos_core::{Name, SessionRecord};
use custos_recording::{Reader, export, play as playback};
use custos_store::SessionFilter;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::admin::fmt_time;
use crate::datadir::DataDir;

#[derive(Subcommand)]
pub enum SessionsCmd {
    /// List sessions, newest first.
    List {
        /// Only sessions still running.
        #[arg(long)]
        live: bool,
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        target: Option<String>,
        /// Only sessions that started at or after this time (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show one session (an id or a unique prefix of one).
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// End a live session now; its user sees the reason.
    Kill {
        id: String,
        #[arg(long, default_value = "ended by an administrator")]
        reason: String,
    },
    /// Mirror a live session read-only in this terminal, from its current screen until it
    /// ends (or Ctrl-C). The gateway logs the access.
    Watch { id: String },
}

#[derive(Subcommand)]
pub enum CommandsCmd {
    /// Commands containing TEXT (case-insensitive), newest first, across all sessions.
    Search {
        text: String,
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        target: Option<String>,
        /// Only commands of this session (an id or a unique prefix).
        #[arg(long)]
        session: Option<String>,
        /// Only commands run at or after this time (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// At most this many results.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum RecordingsCmd {
    /// Verify the integrity of one session's recording, or of all of them.
    Verify { id: Option<String> },
}

#[derive(Args)]
pub struct PlayArgs {
    id: String,
    /// Playback speed factor.
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// Cap pauses to this many seconds.
    #[arg(long)]
    idle_limit: Option<f64>,
    /// Start this many seconds into the recording.
    #[arg(long)]
    at: Option<f64>,
}

#[derive(Copy, Clone, ValueEnum)]
pub enum Format {
    #[value(name = "asciicast-v2")]
    AsciicastV2,
    #[value(name = "asciicast-v3")]
    AsciicastV3,
    Text,
    Jsonl,
}

#[derive(Args)]
pub struct ExportArgs {
    id: String,
    #[arg(long, value_enum)]
    format: Format,
    /// Write to this file instead of standard output.
    #[arg(short = 'o', long)]
    output: Option<PathBuf>,
}

fn parse_since(since: Option<String>) -> Result<Option<time::OffsetDateTime>> {
    since
        .map(|s| {
            time::OffsetDateTime::parse(&s, &time::format_description::well_known::Rfc3339)
                .map_err(|e| anyhow::anyhow!("--since '{s}' is not an RFC 3339 time: {e}"))
        })
        .transpose()
}

pub async fn commands(data: &Path, cmd: CommandsCmd) -> Result<i32> {
    let dd = DataDir::open(data)?;
    let store = dd.store().await?;
    let CommandsCmd::Search {
        text,
        user,
        target,
        session,
        since,
        limit,
        json,
    } = cmd;
    let session = match session {
        Some(s) => Some(store.find_session(&s).await?.id),
        None => None,
    };
    let filter = custos_store::CommandFilter {
        text,
        user: opt_name(&user)?,
        target: opt_name(&target)?,
        session,
        since: parse_since(since)?,
        limit: Some(limit),
    };
    let found = store.search_commands(&filter).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&found)?);
        return Ok(0);
    }
    println!(
        "{:<20} {:<26} {:>9} {:<12} {:<12} {:<5} {:>4}  COMMAND",
        "TIME", "SESSION", "AT (S)", "USER", "TARGET", "KIND", "EXIT"
    );
    for c in &found {
        println!(
            "{:<20} {:<26} {:>9.1} {:<12} {:<12} {:<5} {:>4}  {}",
            fmt_time(&c.at).chars().take(19).collect::<String>(),
            c.session,
            c.offset_us as f64 / 1e6,
            c.user,
            c.target,
            c.kind,
            c.exit_status
                .map(|e| e.to_string())
                .unwrap_or_else(|| "-".into()),
            c.text.replace('\n', "\\n")
        );
    }
    if found.is_empty() {
        eprintln!("no commands found");
    }
    Ok(0)
}

fn opt_name(s: &Option<String>) -> Result<Option<Name>> {
    s.as_deref()
        .map(|s| Name::new(s).map_err(|e| anyhow::anyhow!("{e}")))
        .transpose()
}

fn print_session(s: &SessionRecord) {
    let now = time::OffsetDateTime::now_utc();
    println!("id:          {}", s.id);
    println!("state:       {}", s.state.as_str());
    println!("user:        {}", s.user);
    println!("source:      {}", s.source);
    println!("target:      {}", s.target);
    println!("login:       {}", s.login);
    println!("start:       {}", fmt_time(&s.start));
    println!(
        "end:         {}",
        s.end.as_ref().map(fmt_time).unwrap_or_else(|| "-".into())
    );
    println!("duration:    {} s", s.duration_secs(now));
    println!("bytes in:    {}", s.bytes_in);
    println!("bytes out:   {}", s.bytes_out);
    println!(
        "exit status: {}",
        s.exit_status
            .map(|c| c.to_string())
            .unwrap_or_else(|| "-".into())
    );
    println!("end reason:  {}", s.end_reason.as_deref().unwrap_or("-"));
    println!("recording:   {}", s.recording);
}

pub async fn sessions(data: &Path, cmd: SessionsCmd) -> Result<i32> {
    let dd = DataDir::open(data)?;
    let store = dd.store().await?;
    match cmd {
        SessionsCmd::List {
            live,
            user,
            target,
            since,
            json,
        } => {
            let since = since
                .map(|s| {
                    time::OffsetDateTime::parse(&s, &time::format_description::well_known::Rfc3339)
                        .map_err(|e| anyhow::anyhow!("--since '{s}' is not an RFC 3339 time: {e}"))
                })
                .transpose()?;
            let filter = SessionFilter {
                live_only: live,
                user: opt_name(&user)?,
                target: opt_name(&target)?,
                since,
                limit: None,
            };
            let list = store.sessions(filter).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                let now = time::OffsetDateTime::now_utc();
                println!(
                    "{:<26} {:<11} {:<14} {:<14} {:<20} {:>8} {:>12} {:>5}",
                    "ID", "STATE", "USER", "TARGET", "START", "SECONDS", "BYTES OUT", "EXIT"
                );
                for s in list {
                    println!(
                        "{:<26} {:<11} {:<14} {:<14} {:<20} {:>8} {:>12} {:>5}",
                        s.id,
                        s.state.as_str(),
                        s.user,
                        s.target,
                        fmt_time(&s.start).chars().take(19).collect::<String>(),
                        s.duration_secs(now),
                        s.bytes_out,
                        s.exit_status
                            .map(|c| c.to_string())
                            .unwrap_or_else(|| "-".into())
                    );
                }
            }
        }
        SessionsCmd::Kill { id, reason } => {
            let s = store.find_session(&id).await?;
            if s.state != custos_core::SessionState::Live {
                bail!("session {} is not live (it is {})", s.id, s.state.as_str());
            }
            let req = crate::control::Request::Kill {
                session: s.id,
                reason,
                by: Some(crate::audit::operator()),
            };
            match crate::control::request(data, &req).await? {
                None => bail!(
                    "the gateway is not running (no admin socket in {})",
                    data.display()
                ),
                Some(r) if r.ok => println!("session {} ended", s.id),
                Some(r) => bail!(
                    "{}",
                    r.error.unwrap_or_else(|| "the gateway refused".into())
                ),
            }
        }
        SessionsCmd::Watch { id } => return crate::watch::run(data, &store, &id).await,
        SessionsCmd::Show { id, json } => {
            let s = store.find_session(&id).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                print_session(&s);
            }
        }
    }
    Ok(0)
}

pub async fn recordings(data: &Path, cmd: RecordingsCmd) -> Result<i32> {
    let dd = DataDir::open(data)?;
    let store = dd.store().await?;
    let keys = dd.recording_keys()?;
    let dir = dd.recordings_dir();
    let RecordingsCmd::Verify { id } = cmd;
    let list = match id {
        Some(id) => vec![store.find_session(&id).await?],
        None => store.sessions(SessionFilter::default()).await?,
    };
    let mut bad = 0;
    for s in &list {
        let path = dir.join(&s.recording);
        let live = s.state == custos_core::SessionState::Live;
        match custos_recording::verify(&path, keys.verifying_key()) {
            Ok(r) => println!(
                "ok        {}  {} segments, sealed{}",
                s.id,
                r.segments,
                if r.interrupted { " (interrupted)" } else { "" }
            ),
            Err(e @ custos_recording::VerifyError::Unsealed { .. }) if live => {
                println!("live      {}  {e}", s.id)
            }
            Err(e) => {
                bad += 1;
                println!("FAILED    {}  {e}", s.id);
            }
        }
    }
    if list.is_empty() {
        println!("no recordings");
    }
    if bad > 0 {
        eprintln!(
            "custos: {bad} of {} recordings failed verification",
            list.len()
        );
        return Ok(2);
    }
    Ok(0)
}

async fn open_reader(data: &Path, id: &str) -> Result<(SessionRecord, Reader)> {
    let dd = DataDir::open(data)?;
    let store = dd.store().await?;
    let keys = dd.recording_keys()?;
    let s = store.find_session(id).await?;
    let path = dd.recordings_dir().join(&s.recording);
    let reader = Reader::open(&path, &keys)
        .with_context(|| format!("cannot open the recording of session {}", s.id))?;
    Ok((s, reader))
}

/// Records an access to a session's recording before it happens; an access that cannot be
/// recorded does not happen.
async fn record_access(
    data: &Path,
    s: &SessionRecord,
    access: custos_audit::RecordingAccess,
    format: Option<&str>,
) -> Result<()> {
    let dd = DataDir::open(data)?;
    let audit = crate::audit::Auditor::open(&dd).await?;
    audit.emit(
        custos_audit::AuditEvent::new(custos_audit::EventKind::RecordingAccess {
            access,
            format: format.map(str::to_string),
        })
        .session(s.id)
        .target(custos_audit::Target::named(s.target.as_str())),
    );
    audit.close().await.context(
        "the access to the recording cannot be recorded in the audit log, so it is refused",
    )
}

pub async fn play(data: &Path, args: PlayArgs) -> Result<i32> {
    if !(args.speed > 0.0 && args.speed.is_finite()) {
        bail!("--speed must be a positive number");
    }
    let (s, reader) = open_reader(data, &args.id).await?;
    record_access(data, &s, custos_audit::RecordingAccess::Play, None).await?;
    let out = std::io::stdout();
    let mut out = out.lock();
    playback::play(&reader, &mut out, args.speed, args.idle_limit, args.at)?;
    out.flush()?;
    Ok(0)
}

pub async fn export(data: &Path, args: ExportArgs) -> Result<i32> {
    let (s, reader) = open_reader(data, &args.id).await?;
    let format = match args.format {
        Format::AsciicastV2 => "asciicast-v2",
        Format::AsciicastV3 => "asciicast-v3",
        Format::Text => "text",
        Format::Jsonl => "jsonl",
    };
    record_access(
        data,
        &s,
        custos_audit::RecordingAccess::Export,
        Some(format),
    )
    .await?;
    let mut buf: Box<dyn Write> = match &args.output {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
    };
    match args.format {
        Format::AsciicastV2 => export::asciicast_v2(&reader, &mut buf)?,
        Format::AsciicastV3 => export::asciicast_v3(&reader, &mut buf)?,
        Format::Text => export::text(&reader, &mut buf)?,
        Format::Jsonl => export::jsonl(&reader, &mut buf)?,
    }
    buf.flush()?;
    Ok(0)
}
