//! `vitastor-nvmf`: the NVMe-oF/TCP gateway. Serves the JSON-RPC socket, restores the
//! configuration stored in etcd, and runs until SIGINT/SIGTERM.

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use vitastor_nvmf::gateway::{ClusterDefaults, Gateway};
use vitastor_nvmf::persist::Store;

/// How often idle controllers are looked for (keep-alive timeouts are at least 100 ms
/// granular; the grace is a whole timeout, so this is precise enough).
const REAP_INTERVAL: Duration = Duration::from_millis(250);

#[derive(Parser)]
#[command(
    name = "vitastor-nvmf",
    about = "NVMe-oF/TCP gateway for Vitastor images, managed with SPDK's rpc.py",
    rename_all = "snake_case"
)]
struct Cli {
    /// etcd endpoints (host:port[/v3], comma-separated): the default cluster of
    /// bdev_vitastor_create and where the configuration is kept.
    #[arg(long)]
    etcd_address: Option<String>,
    #[arg(long, default_value = "/vitastor")]
    etcd_prefix: String,
    /// The JSON-RPC Unix socket (SPDK's rpc.py -s PATH).
    #[arg(
        long = "rpc-socket",
        alias = "rpc_socket",
        default_value = "/var/tmp/spdk.sock"
    )]
    rpc_socket: PathBuf,
    /// This gateway's name: its configuration is at <etcd_prefix>/nvmf/<name>/config.
    #[arg(long, default_value = "default")]
    gateway_name: String,
    /// Fail a cluster request after this many ms (0 = retry forever); a failed request
    /// is a path error to the host, which may retry it on another gateway.
    #[arg(long, default_value_t = 30_000)]
    request_timeout_ms: u64,
}

async fn run(cli: Cli) -> Result<(), String> {
    let defaults = ClusterDefaults {
        etcd_address: cli.etcd_address.clone(),
        etcd_prefix: cli.etcd_prefix.clone(),
        request_timeout: (cli.request_timeout_ms > 0)
            .then(|| Duration::from_millis(cli.request_timeout_ms)),
    };
    let mut gateway = Gateway::new(defaults, None);
    if let Some(address) = &cli.etcd_address {
        let client = gateway.client(address, &cli.etcd_prefix).await?;
        let (etcd, prefix) = client.etcd();
        gateway.store = Some(Store::new(etcd, &prefix, &cli.gateway_name));
    }
    let gateway = Arc::new(gateway);
    if let Some(store) = &gateway.store {
        if let Some(config) = store.load().await? {
            let errors = vitastor_nvmf::rpc::methods::restore(&gateway, config).await;
            for error in &errors {
                tracing::error!("restoring {}: {error}", store.key());
            }
            eprintln!(
                "restored the configuration from {} ({} errors)",
                store.key(),
                errors.len()
            );
        }
    }
    let reaper = {
        let target = gateway.target.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REAP_INTERVAL);
            loop {
                tick.tick().await;
                target.reap_idle_controllers(std::time::Instant::now());
            }
        })
    };
    let rpc = {
        let gateway = gateway.clone();
        let path = cli.rpc_socket.clone();
        tokio::spawn(async move { vitastor_nvmf::rpc::serve(gateway, &path).await })
    };
    eprintln!("vitastor-nvmf: RPC on {}", cli.rpc_socket.display());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("signal handler: {e}"))?;
    let result = tokio::select! {
        _ = tokio::signal::ctrl_c() => Ok(()),
        _ = term.recv() => Ok(()),
        ended = rpc => match ended {
            Ok(Err(e)) => Err(e),
            _ => Err("the RPC server stopped".to_string()),
        },
    };
    reaper.abort();
    gateway.listeners.stop_all();
    let _ = std::fs::remove_file(&cli.rpc_socket);
    result
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("vitastor-nvmf: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vitastor-nvmf: {e}");
            ExitCode::FAILURE
        }
    }
}
