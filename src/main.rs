//! The `steep` command line: parse, dispatch, map errors to exit codes.

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

mod commands;
mod context;

use commands::{
    demo, doctor, health, init, local, merge, node, ops, replication, schema, snapshot, version,
};
use context::Ctx;
use steep::cli::output::Output;

#[derive(Parser)]
#[command(
    name = "steep",
    version,
    about = "Prepare PostgreSQL servers to replicate with each other",
    long_about = "Prepare PostgreSQL servers to replicate with each other.\n\n\
        Connection: -c/--connection (URI or key=value), else STEEP_CONNECTION, else the libpq \
        environment (PGHOST, PGPORT, PGDATABASE, PGUSER, PGPASSWORD, ...), else the running local \
        sandbox.\n\nExit codes: 0 ok, 1 failure, 2 usage error, 3 blocking findings.",
    propagate_version = true
)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct GlobalArgs {
    /// Connection string: a postgresql:// URI or libpq key=value pairs.
    #[arg(
        short = 'c',
        long = "connection",
        global = true,
        env = "STEEP_CONNECTION",
        hide_env_values = true
    )]
    connection: Option<String>,
    /// Machine-readable output (JSON on stdout).
    #[arg(long, global = true)]
    json: bool,
    /// Only errors on stderr.
    #[arg(short, long, global = true)]
    quiet: bool,
    /// More detail on stderr (repeat for more).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// When to colour output.
    #[arg(long, global = true, value_enum, default_value_t = Color::Auto)]
    color: Color,
}

#[derive(Clone, Copy, ValueEnum)]
enum Color {
    Auto,
    Always,
    Never,
}

#[derive(Subcommand)]
enum Command {
    /// Install or upgrade steep_repl on a server, offer preloading, register this node.
    Init(init::InitArgs),
    /// Check a server's readiness for steep; every problem with its fix.
    Doctor(doctor::DoctorArgs),
    /// steep_repl.health() of the connected database.
    Health(health::HealthArgs),
    /// The node registry: register, heartbeat, status, list, remove.
    Node(node::NodeArgs),
    /// Schema fingerprints: capture, compare with a peer, per-column diff.
    Schema(schema::SchemaArgs),
    /// Snapshots: generate, apply, progress, wait, cancel, list, verify.
    Snapshot(snapshot::SnapshotArgs),
    /// Two nodes that both hold rows: overlap analysis.
    Merge(merge::MergeArgs),
    /// Logical replication between two nodes: init (from a snapshot, a merge or empty
    /// tables), status, drop.
    Replication(replication::ReplicationArgs),
    /// Background operations: list, cancel, watch, selftest.
    Ops(ops::OpsArgs),
    /// Throwaway local PostgreSQL 18 sandboxes with steep_repl installed and preloaded.
    Local(local::LocalArgs),
    /// Versions of this binary, the extension SQL it embeds, and the server's extension.
    Version(version::VersionArgs),
    /// Show steep end to end on local sandboxes.
    Demo(demo::DemoArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(CompletionsArgs),
}

#[derive(clap::Args)]
struct CompletionsArgs {
    shell: clap_complete::Shell,
}

impl CompletionsArgs {
    fn execute(&self, _ctx: &Ctx) -> anyhow::Result<()> {
        use clap::CommandFactory;
        clap_complete::generate(
            self.shell,
            &mut Cli::command(),
            "steep",
            &mut std::io::stdout(),
        );
        Ok(())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    steep::cli::client::install_replication_tls();
    let choice = match cli.global.color {
        Color::Auto => anstream::ColorChoice::Auto,
        Color::Always => anstream::ColorChoice::Always,
        Color::Never => anstream::ColorChoice::Never,
    };
    choice.write_global();
    let out = Output {
        json: cli.global.json,
        quiet: cli.global.quiet,
        verbose: cli.global.verbose,
    };
    let ctx = Ctx::new(out, cli.global.connection);
    let result = match &cli.command {
        Command::Init(a) => a.execute(&ctx),
        Command::Doctor(a) => a.execute(&ctx),
        Command::Health(a) => a.execute(&ctx),
        Command::Node(a) => a.execute(&ctx),
        Command::Schema(a) => a.execute(&ctx),
        Command::Snapshot(a) => a.execute(&ctx),
        Command::Merge(a) => a.execute(&ctx),
        Command::Replication(a) => a.execute(&ctx),
        Command::Ops(a) => a.execute(&ctx),
        Command::Local(a) => a.execute(&ctx),
        Command::Version(a) => a.execute(&ctx),
        Command::Demo(a) => a.execute(&ctx),
        Command::Completions(a) => a.execute(&ctx),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            out.error(format!("{e:#}"));
            ExitCode::from(commands::exit_code(&e))
        }
    }
}
