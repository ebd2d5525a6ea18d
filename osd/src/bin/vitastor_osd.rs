//! `vitastor-osd`: one OSD daemon serving one data device (prepared with `vitastor-disk
//! prepare`). Option names follow Vitastor's.

use clap::Parser;
use std::path::PathBuf;
use std::time::Duration;
use vitastor_osd::net::etcd::EtcdTiming;
use vitastor_osd::net::liveness::LivenessOverrides;
use vitastor_osd::net::{run, DaemonOptions};
use vitastor_proto::etcd::ImmediateCommit;

#[derive(Parser, Debug)]
#[command(name = "vitastor-osd", about = "Vitastor-compatible OSD daemon")]
struct Args {
    /// This OSD's number (> 0), unique in the cluster.
    #[arg(long = "osd_num")]
    osd_num: u64,
    /// The data device or file, prepared with `vitastor-disk prepare`.
    #[arg(long = "data_device")]
    data_device: PathBuf,
    /// etcd endpoints: host:port[/v3], comma-separated.
    #[arg(long = "etcd_address", default_value = "127.0.0.1:2379")]
    etcd_address: String,
    #[arg(long = "etcd_prefix", default_value = "/vitastor")]
    etcd_prefix: String,
    #[arg(long = "bind_address", default_value = "127.0.0.1")]
    bind_address: String,
    /// TCP port; 0 picks a free one (published in /osd/state).
    #[arg(long = "port", default_value_t = 0)]
    port: u16,
    /// When writes are durable: all (every write, fsynced before the reply), small, none.
    #[arg(long = "immediate_commit", default_value = "all", value_parser = parse_commit)]
    immediate_commit: ImmediateCommit,
    /// Do not fsync (only for drives with power-loss protection).
    #[arg(long = "disable_data_fsync", default_value_t = false)]
    disable_data_fsync: bool,
    /// Seconds between lease keep-alives and stats reports. The lease TTL is this plus
    /// max_etcd_attempts x etcd_quick_timeout (10 s by default), as in Vitastor.
    #[arg(long = "etcd_report_interval", default_value_t = 5)]
    etcd_report_interval: u64,
    /// Do not take the data device's exclusive lock (another process may then use it too).
    #[arg(long = "disable_flock", default_value_t = false)]
    disable_flock: bool,
    /// Keep-alive attempts that fit in the lease after a missed one.
    #[arg(long = "max_etcd_attempts", default_value_t = 5)]
    max_etcd_attempts: u32,
    /// Milliseconds one keep-alive may take.
    #[arg(long = "etcd_quick_timeout", default_value_t = 1000)]
    etcd_quick_timeout: u64,
    /// Milliseconds every other etcd request may take.
    #[arg(long = "etcd_slow_timeout", default_value_t = 5000)]
    etcd_slow_timeout: u64,
    /// Seconds an etcd connection may leave its HTTP/2 pings unanswered before it is
    /// reopened (default: max(30, 2 x etcd_report_interval)).
    #[arg(long = "etcd_keepalive_timeout")]
    etcd_keepalive_timeout: Option<u64>,
    /// Seconds without a byte from a peer before it gets a PING (default: /config/global,
    /// else 5).
    #[arg(long = "osd_idle_timeout")]
    osd_idle_timeout: Option<u64>,
    /// Seconds to wait for a PING answer before dropping the peer and revoking its lease
    /// (default: /config/global, else 5).
    #[arg(long = "osd_ping_timeout")]
    osd_ping_timeout: Option<u64>,
    /// Seconds for one connect and handshake to a peer (default: /config/global, else 5).
    #[arg(long = "peer_connect_timeout")]
    peer_connect_timeout: Option<u64>,
}

fn parse_commit(text: &str) -> Result<ImmediateCommit, String> {
    match text {
        "all" => Ok(ImmediateCommit::All),
        "small" => Ok(ImmediateCommit::Small),
        "none" => Ok(ImmediateCommit::None),
        other => Err(format!("{other:?} is not one of all, small, none")),
    }
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if args.osd_num == 0 {
        eprintln!("vitastor-osd: --osd_num must be greater than 0");
        std::process::exit(2);
    }
    let options = DaemonOptions {
        osd_num: args.osd_num,
        data_device: args.data_device,
        etcd_address: args.etcd_address,
        etcd_prefix: args.etcd_prefix,
        bind_address: args.bind_address,
        port: args.port,
        immediate_commit: args.immediate_commit,
        disable_data_fsync: args.disable_data_fsync,
        disable_flock: args.disable_flock,
        liveness: LivenessOverrides {
            osd_idle_timeout: args.osd_idle_timeout,
            osd_ping_timeout: args.osd_ping_timeout,
            peer_connect_timeout: args.peer_connect_timeout,
        },
        etcd: EtcdTiming {
            report_interval: Duration::from_secs(args.etcd_report_interval.max(1)),
            max_attempts: args.max_etcd_attempts.max(1),
            quick_timeout: Duration::from_millis(args.etcd_quick_timeout.max(1)),
            slow_timeout: Duration::from_millis(args.etcd_slow_timeout.max(1)),
            keepalive_timeout: Duration::from_secs(
                args.etcd_keepalive_timeout
                    .unwrap_or_else(|| (2 * args.etcd_report_interval).max(30))
                    .max(1),
            ),
        },
    };
    if let Err(error) = run(options) {
        eprintln!("vitastor-osd: {error}");
        std::process::exit(1);
    }
}
