//! `vitastor-disk`: format a file or device for an OSD and inspect what is on it.
//!
//! ```text
//! vitastor-disk prepare --data_device /var/lib/vitastor/osd1.bin [--osd_num N] [--block_size 128k] [--journal_size 32M] [--meta_size 0] [--disable_flock]
//! vitastor-disk dump-journal --data_device PATH
//! vitastor-disk dump-meta --data_device PATH
//! ```
//!
//! `prepare` takes the device's exclusive lock first, so it refuses a device an OSD (or
//! another `prepare`) is using; the dumps open the device read-only and take no lock, so
//! they work on a live OSD's device.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use vitastor_osd::blockstore::dump::{dump_journal, dump_meta, superblock_json};
use vitastor_osd::blockstore::prepare::prepare;
use vitastor_osd::blockstore::uring::UringDisk;
use vitastor_osd::blockstore::FormatOptions;
use vitastor_proto::size::parse_size;

#[derive(Parser)]
#[command(
    name = "vitastor-disk",
    about = "Format and inspect OSD data devices",
    version
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Formats a file or block device (everything on it is lost).
    Prepare {
        /// File or block device to format.
        #[arg(long = "data_device")]
        data_device: PathBuf,
        /// Object (block) size: a power of two, default 128k.
        #[arg(long = "block_size", value_parser = parse_u32_size, default_value = "128k")]
        block_size: u32,
        /// Bitmap granularity: a power of two dividing the block size, at least 4k.
        #[arg(long = "bitmap_granularity", value_parser = parse_u32_size, default_value = "4k")]
        bitmap_granularity: u32,
        /// Journal size, default 32M.
        #[arg(long = "journal_size", value_parser = parse_size, default_value = "32M")]
        journal_size: u64,
        /// Metadata area size; limits the number of blocks. 0 = as many as fit.
        #[arg(long = "meta_size", value_parser = parse_size, default_value = "0")]
        meta_size: u64,
        /// The OSD the device is for (recorded in the superblock; an OSD with another
        /// number refuses it). 0 = the first OSD started on it claims it.
        #[arg(long = "osd_num", default_value_t = 0)]
        osd_num: u64,
        /// Do not take the device's exclusive lock (format it even if a process uses it).
        #[arg(long = "disable_flock", default_value_t = false)]
        disable_flock: bool,
    },
    /// Prints the journal header and every entry replay would apply, as JSON.
    DumpJournal {
        #[arg(long = "data_device")]
        data_device: PathBuf,
    },
    /// Prints every used metadata slot (and damaged ones), as JSON.
    DumpMeta {
        #[arg(long = "data_device")]
        data_device: PathBuf,
    },
}

fn parse_u32_size(text: &str) -> Result<u32, String> {
    let bytes = parse_size(text)?;
    u32::try_from(bytes).map_err(|_| format!("{text} is too large"))
}

fn run(cli: Cli) -> Result<serde_json::Value, String> {
    let open = |path: &PathBuf| UringDisk::open_read_only(path).map_err(|error| error.to_string());
    match cli.command {
        Command::Prepare {
            data_device,
            block_size,
            bitmap_granularity,
            journal_size,
            meta_size,
            osd_num,
            disable_flock,
        } => {
            let mut disk = UringDisk::open(&data_device).map_err(|error| error.to_string())?;
            if !disable_flock {
                disk.lock_exclusive(&data_device)
                    .map_err(|error| error.to_string())?;
            }
            let options = FormatOptions {
                block_size,
                bitmap_granularity,
                journal_size,
                meta_size,
                format_id: 0,
                osd_num,
            };
            let superblock = prepare(&mut disk, &options).map_err(|error| error.to_string())?;
            Ok(superblock_json(&superblock))
        }
        Command::DumpJournal { data_device } => {
            dump_journal(open(&data_device)?).map_err(|error| error.to_string())
        }
        Command::DumpMeta { data_device } => {
            dump_meta(open(&data_device)?).map_err(|error| error.to_string())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(value) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&value).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("vitastor-disk: {message}");
            ExitCode::FAILURE
        }
    }
}
