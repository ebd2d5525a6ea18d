//! `vitastor-local`: start a local cluster and keep it running until Ctrl-C (or
//! `vitastor-local stop`), then stop everything.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use vitastor_local::{stop_dir, Cluster, Config};
use vitastor_proto::size::parse_size;

#[derive(Parser)]
#[command(
    name = "vitastor-local",
    about = "Run a local Vitastor-compatible cluster",
    rename_all = "snake_case"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
#[command(rename_all = "snake_case")]
enum Command {
    /// Start etcd, a monitor, OSDs, a pool and an image; run until Ctrl-C or `stop`.
    Start {
        #[arg(long, default_value = "vitastor-local")]
        dir: PathBuf,
        #[arg(long, default_value_t = 3)]
        osds: u64,
        #[arg(long, default_value = "1G")]
        osd_size: String,
        #[arg(long, default_value_t = 2)]
        pg_size: u32,
        /// Parity chunks: an EC pool of `pg_size - parity_chunks` data chunks (0: replicated).
        #[arg(long, default_value_t = 0)]
        parity_chunks: u32,
        #[arg(long, default_value_t = 32)]
        pg_count: u32,
        #[arg(long, default_value = "all")]
        immediate_commit: String,
        #[arg(long, default_value = "testimg")]
        image: String,
        #[arg(long, default_value = "256M")]
        image_size: String,
        /// etcd client port (0 = a free one).
        #[arg(long, default_value_t = 0)]
        etcd_port: u16,
    },
    /// Stop the cluster running in a directory.
    Stop {
        #[arg(long, default_value = "vitastor-local")]
        dir: PathBuf,
    },
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Stop { dir } => {
            stop_dir(&dir)?;
            println!("stopped the cluster in {}", dir.display());
            Ok(())
        }
        Command::Start {
            dir,
            osds,
            osd_size,
            pg_size,
            parity_chunks,
            pg_count,
            immediate_commit,
            image,
            image_size,
            etcd_port,
        } => {
            let config = Config {
                dir,
                osds,
                osd_size: parse_size(&osd_size)?,
                pg_size,
                parity_chunks,
                pg_count,
                immediate_commit,
                disable_data_fsync: false,
                image,
                image_size: parse_size(&image_size)?,
                etcd_port,
            };
            // SAFETY: the handler only stores to an atomic.
            unsafe {
                libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
                libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
            }
            let mut cluster = Cluster::start(config)?;
            println!("{}", cluster.usage());
            while !STOP.load(Ordering::SeqCst) {
                std::thread::sleep(std::time::Duration::from_millis(100));
                let dead = cluster.dead_processes();
                if !dead.is_empty() {
                    eprintln!(
                        "vitastor-local: {dead:?} exited; see the logs in {}",
                        cluster.config.dir.display()
                    );
                    break;
                }
            }
            cluster.stop();
            println!("stopped");
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("vitastor-local: {error}");
            ExitCode::FAILURE
        }
    }
}
