//! `vitastor-mon`: the cluster monitor. Run one or more; one is master at a time.

use clap::Parser;
use std::process::ExitCode;
use std::time::Duration;
use vitastor_mon::daemon::{run, MonOptions};

#[derive(Parser, Debug)]
#[command(
    name = "vitastor-mon",
    about = "Vitastor cluster monitor: PG placement, liveness, stats",
    rename_all = "snake_case"
)]
struct Args {
    /// etcd endpoints: host:port[/v3], comma-separated.
    #[arg(long, default_value = "127.0.0.1:2379")]
    etcd_address: String,
    #[arg(long, default_value = "/vitastor")]
    etcd_prefix: String,
    /// Serve Prometheus metrics on this port (GET /metrics).
    #[arg(long, alias = "mon_http_port")]
    prometheus_port: Option<u16>,
    /// Address the metrics endpoint listens on.
    #[arg(long, default_value = "127.0.0.1")]
    mon_http_ip: String,
    /// Master lease TTL in seconds: a standby takes over about this long after the master dies.
    #[arg(long, default_value_t = 5)]
    etcd_mon_ttl: u64,
    /// Milliseconds of quiet after a change before the placement is recomputed.
    #[arg(long, default_value_t = 1000)]
    mon_change_timeout: u64,
    /// Milliseconds between stats aggregations.
    #[arg(long, default_value_t = 1000)]
    mon_stats_timeout: u64,
    /// Seconds a down OSD stays in the placement (overrides /config/global osd_out_time).
    #[arg(long)]
    osd_out_time: Option<u64>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let options = MonOptions {
        etcd_address: args.etcd_address,
        etcd_prefix: args.etcd_prefix,
        prometheus_port: args.prometheus_port,
        http_ip: args.mon_http_ip,
        etcd_mon_ttl: Duration::from_secs(args.etcd_mon_ttl.max(1)),
        mon_change_timeout: Duration::from_millis(args.mon_change_timeout.max(10)),
        mon_stats_timeout: Duration::from_millis(args.mon_stats_timeout.max(100)),
        osd_out_time: args.osd_out_time,
    };
    match run(options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("vitastor-mon: {error}");
            ExitCode::FAILURE
        }
    }
}
