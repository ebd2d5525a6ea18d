//! `vitastor-nbd`: `serve` an image over NBD (TCP or a Unix socket), or `map`/`unmap`/`ls`
//! kernel NBD devices.

use clap::{Args, Parser, Subcommand};
use std::os::fd::IntoRawFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use vitastor_client::{Client, ClientOptions, Image};
use vitastor_nbd::backend::ImageBackend;
use vitastor_nbd::kernel;
use vitastor_nbd::server::{serve_connection, serve_transmission, transmission_flags, Backend};

#[derive(Parser)]
#[command(
    name = "vitastor-nbd",
    about = "NBD server and kernel NBD mapping for Vitastor images",
    rename_all = "snake_case"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
#[command(rename_all = "snake_case")]
struct ImageArgs {
    /// etcd endpoints: host:port[/v3], comma-separated.
    #[arg(long, default_value = "127.0.0.1:2379")]
    etcd_address: String,
    #[arg(long, default_value = "/vitastor")]
    etcd_prefix: String,
    /// Image name.
    #[arg(long, conflicts_with_all = ["pool", "inode"])]
    image: Option<String>,
    /// Pool id (with --inode).
    #[arg(long, requires = "inode")]
    pool: Option<u32>,
    /// Inode number inside the pool (with --pool).
    #[arg(long, requires = "pool")]
    inode: Option<u64>,
}

#[derive(Subcommand)]
#[command(rename_all = "snake_case")]
enum Command {
    /// Export an image over NBD until killed.
    Serve {
        #[command(flatten)]
        image: ImageArgs,
        /// Listen on a Unix socket (nbd+unix:///?socket=PATH).
        #[arg(long, conflicts_with_all = ["bind", "port"])]
        socket: Option<PathBuf>,
        #[arg(long, default_value = "127.0.0.1")]
        bind: String,
        #[arg(long)]
        port: Option<u16>,
    },
    /// Attach an image to a kernel /dev/nbdN device (stays in the foreground serving it).
    Map {
        #[command(flatten)]
        image: ImageArgs,
        /// Size in bytes to export (default: the image size).
        #[arg(long)]
        size: Option<u64>,
    },
    /// Detach a kernel NBD device.
    Unmap { device: PathBuf },
    /// List attached kernel NBD devices.
    Ls {
        #[arg(long)]
        json: bool,
    },
}

async fn open(args: &ImageArgs) -> Result<Image, String> {
    let mut options = ClientOptions::new(&args.etcd_address);
    options.etcd_prefix = args.etcd_prefix.clone();
    let client = Client::connect(options).await.map_err(|e| e.to_string())?;
    match (&args.image, args.pool, args.inode) {
        (Some(name), _, _) => client.open_image(name).await.map_err(|e| e.to_string()),
        (None, Some(pool), Some(inode)) => {
            client.open_inode(pool, inode).map_err(|e| e.to_string())
        }
        _ => Err("give --image NAME or --pool P --inode I".to_string()),
    }
}

async fn serve(
    image: ImageArgs,
    socket: Option<PathBuf>,
    bind: String,
    port: Option<u16>,
) -> Result<(), String> {
    let backend: Arc<dyn Backend> = Arc::new(ImageBackend {
        image: open(&image).await?,
    });
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal handler");
        tokio::select! { _ = tokio::signal::ctrl_c() => {}, _ = term.recv() => {} }
    };
    match socket {
        Some(path) => {
            let _ = std::fs::remove_file(&path);
            let listener = tokio::net::UnixListener::bind(&path)
                .map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
            eprintln!(
                "serving {} bytes on nbd+unix:///?socket={}",
                backend.size(),
                path.display()
            );
            let accept = async {
                loop {
                    match listener.accept().await {
                        Ok((stream, _)) => {
                            let backend = backend.clone();
                            tokio::spawn(async move {
                                if let Err(error) = serve_connection(stream, backend).await {
                                    tracing::warn!("NBD client: {error}");
                                }
                            });
                        }
                        Err(error) => tracing::warn!("accept: {error}"),
                    }
                }
            };
            tokio::select! { _ = accept => {}, _ = shutdown => {} }
            let _ = std::fs::remove_file(&path);
        }
        None => {
            let port = port.ok_or("give --socket PATH or --port P")?;
            let listener = tokio::net::TcpListener::bind((bind.as_str(), port))
                .await
                .map_err(|e| format!("cannot listen on {bind}:{port}: {e}"))?;
            eprintln!("serving {} bytes on nbd://{bind}:{port}", backend.size());
            let accept = async {
                loop {
                    match listener.accept().await {
                        Ok((stream, _)) => {
                            let _ = stream.set_nodelay(true);
                            let backend = backend.clone();
                            tokio::spawn(async move {
                                if let Err(error) = serve_connection(stream, backend).await {
                                    tracing::warn!("NBD client: {error}");
                                }
                            });
                        }
                        Err(error) => tracing::warn!("accept: {error}"),
                    }
                }
            };
            tokio::select! { _ = accept => {}, _ = shutdown => {} }
        }
    }
    Ok(())
}

async fn map(image: ImageArgs, size: Option<u64>) -> Result<(), String> {
    let device = kernel::free_device()?;
    let backend: Arc<dyn Backend> = Arc::new(ImageBackend {
        image: open(&image).await?,
    });
    let size = size.unwrap_or_else(|| backend.size());
    let (ours, theirs) =
        std::os::unix::net::UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
    ours.set_nonblocking(true).map_err(|e| e.to_string())?;
    let ours = tokio::net::UnixStream::from_std(ours).map_err(|e| e.to_string())?;
    let flags = transmission_flags(backend.as_ref());
    let kernel_fd = theirs.into_raw_fd();
    let attached = device.clone();
    let kernel_thread =
        std::thread::spawn(move || kernel::attach_and_run(&attached, kernel_fd, size, flags));
    println!("{}", device.display());
    let served = serve_transmission(ours, backend).await;
    let attached = kernel_thread
        .join()
        .map_err(|_| "the NBD_DO_IT thread panicked".to_string())?;
    attached.and(served)
}

fn ls(json: bool) -> Result<(), String> {
    let mapped: Vec<(String, u32)> = kernel::devices()?
        .into_iter()
        .filter_map(|d| Some((d.display().to_string(), kernel::attached_pid(&d)?)))
        .collect();
    if json {
        let map: serde_json::Map<String, serde_json::Value> = mapped
            .into_iter()
            .map(|(device, pid)| (device, serde_json::json!({ "pid": pid })))
            .collect();
        println!("{}", serde_json::Value::Object(map));
    } else {
        for (device, pid) in mapped {
            println!("{device}\tpid {pid}");
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    // One thread: a request crosses several tasks (NBD reader, client, OSD connection,
    // NBD writer); on one thread those hand-offs are queue pushes, not cross-CPU wakeups.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = match cli.command {
        Command::Serve {
            image,
            socket,
            bind,
            port,
        } => runtime.block_on(serve(image, socket, bind, port)),
        Command::Map { image, size } => match kernel::devices() {
            Err(error) => Err(error),
            Ok(_) => runtime.block_on(map(image, size)),
        },
        Command::Unmap { device } => kernel::unmap(&device),
        Command::Ls { json } => ls(json),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("vitastor-nbd: {error}");
            ExitCode::FAILURE
        }
    }
}
