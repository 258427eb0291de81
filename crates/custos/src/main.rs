//! The `custos` binary: the command line and the composition root. Only this crate knows
//! every backend; it reads the configuration, builds the store, the recording keys and the
//! gateway, and runs the command the user asked for.

mod admin;
mod audit;
mod config;
mod control;
mod datadir;
mod recordings;
mod rules;
mod serve;
mod watch;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "custos",
    version,
    about = "Privileged-session gateway: proxies, records and seals every SSH session"
)]
struct Cli {
    /// The data directory (configuration, database, keys, recordings).
    #[arg(
        long,
        global = true,
        env = "CUSTOS_DATA",
        default_value = "./custos-data"
    )]
    data: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the data directory on first run, then serve and print how to connect.
    Quickstart(ServeArgs),
    /// Create a new data directory (configuration, keys, database, admin user, demo target).
    Init,
    /// Serve an existing data directory.
    Serve(ServeArgs),
    /// Manage users.
    #[command(subcommand)]
    User(admin::UserCmd),
    /// Manage targets.
    #[command(subcommand)]
    Target(admin::TargetCmd),
    /// Allow a user to open sessions on a target (again: change the grant's limits).
    Grant {
        user: String,
        target: String,
        #[command(flatten)]
        limits: admin::LimitArgs,
    },
    /// Withdraw a grant.
    Revoke { user: String, target: String },
    /// List and inspect sessions.
    #[command(subcommand)]
    Sessions(recordings::SessionsCmd),
    /// Check recordings.
    #[command(subcommand)]
    Recordings(recordings::RecordingsCmd),
    /// Check and try rules.
    #[command(subcommand)]
    Rules(rules::RulesCmd),
    /// List the alerts rules raised.
    #[command(subcommand)]
    Alerts(rules::AlertsCmd),
    /// Search the commands users ran.
    #[command(subcommand)]
    Commands(recordings::CommandsCmd),
    /// Check and read the tamper-evident audit trail.
    #[command(subcommand)]
    Audit(audit::AuditCmd),
    /// SIEM delivery.
    #[command(subcommand)]
    Sinks(audit::SinksCmd),
    /// Replay a session in this terminal.
    Play(recordings::PlayArgs),
    /// Export a session's recording.
    Export(recordings::ExportArgs),
}

#[derive(Args, Clone)]
pub struct ServeArgs {
    /// Address for the SSH front door (overrides [ssh] listen in custos.toml).
    #[arg(long)]
    ssh_listen: Option<SocketAddr>,
}

fn main() {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("custos: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("custos: {e:#}");
            1
        }
    };
    std::process::exit(code);
}

async fn run(cli: Cli) -> Result<i32> {
    let data = cli.data;
    match cli.command {
        Command::Quickstart(args) => serve::quickstart(&data, args.ssh_listen).await,
        Command::Init => serve::init(&data).await,
        Command::Serve(args) => serve::serve(&data, args.ssh_listen, None).await,
        Command::User(cmd) => admin::user(&data, cmd).await,
        Command::Target(cmd) => admin::target(&data, cmd).await,
        Command::Grant {
            user,
            target,
            limits,
        } => admin::grant(&data, &user, &target, true, limits).await,
        Command::Revoke { user, target } => {
            admin::grant(&data, &user, &target, false, Default::default()).await
        }
        Command::Sessions(cmd) => recordings::sessions(&data, cmd).await,
        Command::Recordings(cmd) => recordings::recordings(&data, cmd).await,
        Command::Commands(cmd) => recordings::commands(&data, cmd).await,
        Command::Rules(cmd) => rules::rules(&data, cmd).await,
        Command::Alerts(cmd) => rules::alerts(&data, cmd).await,
        Command::Audit(cmd) => audit::audit(&data, cmd).await,
        Command::Sinks(cmd) => audit::sinks(&data, cmd).await,
        Command::Play(args) => recordings::play(&data, args).await,
        Command::Export(args) => recordings::export(&data, args).await,
    }
}
