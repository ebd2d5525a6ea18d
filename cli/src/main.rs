//! `vitastor-cli`: images, pools, OSDs and PGs, with Vitastor's command names and flags.
//! Errors are one line on stderr and a non-zero exit code.

mod cluster;
mod describe;
mod df;
mod etcd;
mod fix;
mod images;
mod output;
mod pools;
mod rm;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "vitastor-cli",
    about = "Vitastor command-line tool",
    rename_all = "snake_case"
)]
pub struct Cli {
    /// etcd endpoints: host:port[/v3], comma-separated.
    #[arg(long, global = true, default_value = "127.0.0.1:2379")]
    etcd_address: String,
    #[arg(long, global = true, default_value = "/vitastor")]
    etcd_prefix: String,
    /// JSON output for listings.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
#[command(rename_all = "kebab-case")]
pub enum Command {
    /// Create an image: create -s SIZE [-p POOL] NAME
    Create {
        #[arg(short = 's', long = "size")]
        size: String,
        #[arg(short = 'p', long = "pool")]
        pool: Option<String>,
        name: String,
    },
    /// List images.
    Ls {
        #[arg(short = 'l', long = "long")]
        long: bool,
    },
    /// Change an image: --resize SIZE | --rename NEW | --readonly | --readwrite
    Modify {
        name: String,
        #[arg(long)]
        resize: Option<String>,
        #[arg(long)]
        rename: Option<String>,
        #[arg(long, conflicts_with = "readwrite")]
        readonly: bool,
        #[arg(long)]
        readwrite: bool,
    },
    /// Delete an image's data, then its metadata; refused while the image is being
    /// written unless --writers-stopped.
    Rm {
        name: String,
        /// The image's writers are stopped: skip the check (Vitastor's flag).
        #[arg(long)]
        writers_stopped: bool,
    },
    /// Delete the data of an inode, with or without its config (Vitastor's rm-data).
    RmData {
        #[arg(long)]
        pool: String,
        #[arg(long)]
        inode: u64,
    },
    /// Cluster summary.
    Status,
    /// Space per pool.
    Df,
    /// Create a pool: create-pool NAME (-s PG_SIZE | --ec N+K) -n PG_COUNT
    CreatePool(pools::NewPool),
    /// Change a pool's settings.
    ModifyPool {
        name: String,
        #[arg(short = 'n', long = "pg_count")]
        pg_count: Option<u32>,
        #[arg(long = "pg_minsize")]
        pg_minsize: Option<u32>,
        #[arg(long = "failure_domain")]
        failure_domain: Option<String>,
        #[arg(long = "name")]
        new_name: Option<String>,
        /// Scrub this pool's PGs this often (number + unit s/m/h/d/M/y).
        #[arg(long = "scrub_interval")]
        scrub_interval: Option<String>,
    },
    /// Delete an empty pool.
    RmPool { name: String },
    /// List pools.
    LsPools,
    /// The placement tree with OSDs.
    OsdTree,
    /// List OSDs.
    LsOsd,
    /// Objects that are degraded, misplaced, corrupted or inconsistent, and where.
    Describe(describe::DescribeArgs),
    /// Settle inconsistent objects: remove the copies on the OSDs named bad.
    Fix(fix::FixArgs),
    /// List PGs.
    PgList {
        #[arg(long)]
        pool: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("vitastor-cli: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    let ctx = etcd::Context::connect(&cli.etcd_address, &cli.etcd_prefix, cli.json).await?;
    match cli.command {
        Command::Create { size, pool, name } => {
            images::create(&ctx, &name, &size, pool.as_deref()).await
        }
        Command::Ls { long } => images::ls(&ctx, long),
        Command::Modify {
            name,
            resize,
            rename,
            readonly,
            readwrite,
        } => {
            let readonly = match (readonly, readwrite) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            };
            images::modify(&ctx, &name, resize.as_deref(), rename.as_deref(), readonly).await
        }
        Command::Rm {
            name,
            writers_stopped,
        } => rm::rm(&ctx, &name, writers_stopped).await,
        Command::RmData { pool, inode } => rm::rm_data(&ctx, &pool, inode).await,
        Command::Status => cluster::status(&ctx),
        Command::Df => df::df(&ctx),
        Command::CreatePool(spec) => pools::create(&ctx, spec).await,
        Command::ModifyPool {
            name,
            pg_count,
            pg_minsize,
            failure_domain,
            new_name,
            scrub_interval,
        } => {
            let changes = (
                pg_count,
                pg_minsize,
                failure_domain,
                new_name,
                scrub_interval,
            );
            pools::modify(&ctx, &name, changes).await
        }
        Command::RmPool { name } => pools::rm(&ctx, &name).await,
        Command::LsPools => pools::ls(&ctx),
        Command::OsdTree => cluster::osd_tree(&ctx),
        Command::LsOsd => cluster::ls_osd(&ctx),
        Command::PgList { pool } => cluster::pg_list(&ctx, pool.as_deref()),
        Command::Describe(args) => describe::describe(&ctx, args).await,
        Command::Fix(args) => fix::fix(&ctx, args).await,
    }
}
