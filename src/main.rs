//! The `slack-gateway` binary: parses the command line, sets up logging and signals, and
//! hands over to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use slack_gateway::config::Config;

#[derive(Parser)]
#[command(
    name = "slack-gateway",
    version,
    about = "The Slack half of a Slack app, as a reverse proxy"
)]
struct Cli {
    /// Config file [default: $SLACK_GATEWAY_CONFIG, else ./gateway.toml]
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Log format on stderr; the level comes from RUST_LOG (default: info)
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the config and print it with secrets redacted
    Check,
}

fn config_path(cli: &Cli) -> PathBuf {
    cli.config
        .clone()
        .or_else(|| std::env::var_os("SLACK_GATEWAY_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("gateway.toml"))
}

fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    let path = config_path(&cli);
    let result = match cli.command {
        Some(Command::Check) => check(&path),
        None => serve(&path),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("slack-gateway: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn check(path: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    print!("{}", config.to_redacted_toml());
    for key in &config.placeholder_secrets {
        eprintln!("warning: {key} uses its development placeholder; set the environment variable before going live");
    }
    Ok(())
}

fn serve(path: &std::path::Path) -> anyhow::Result<()> {
    // Validate everything before anything binds.
    let config = Config::load(path)?;
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if config.server.workers > 0 {
        rt.worker_threads(config.server.workers);
    }
    let rt = rt.build()?;
    rt.block_on(async move {
        for key in &config.placeholder_secrets {
            tracing::warn!(
                key = key.as_str(),
                "!!! USING A DEVELOPMENT PLACEHOLDER SECRET: Slack requests will not verify. Set the real value in the environment. !!!"
            );
        }
        let public_addr = config.server.listen;
        let admin_addr = config.server.admin_listen;
        let gw = slack_gateway::open(config, path)?;
        let public = tokio::net::TcpListener::bind(public_addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {public_addr} (server.listen): {e}"))?;
        let admin = tokio::net::TcpListener::bind(admin_addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {admin_addr} (server.admin_listen): {e}"))?;
        tracing::info!(public = %public.local_addr()?, admin = %admin.local_addr()?, "slack-gateway listening");
        let signals = spawn_signal_handlers(gw.clone());
        slack_gateway::run(gw, public, admin, signals).await?;
        Ok(())
    })
}

/// SIGHUP reloads the config; the returned future resolves on SIGTERM or SIGINT.
fn spawn_signal_handlers(
    gw: std::sync::Arc<slack_gateway::gateway::Gateway>,
) -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).expect("install SIGHUP handler");
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading configuration");
            let _ = slack_gateway::reload::reload(&gw);
        }
    });
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    }
}
