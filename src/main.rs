//! The `slack-gateway` binary: parses the command line, sets up logging and signals, and
//! hands over to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// mimalloc: glibc's malloc consolidates on every free of a request-sized block, which
/// showed up at ~6% of the request path in profiles. The `system-allocator` feature keeps the
/// system's malloc, for heap profilers (valgrind's DHAT, heaptrack) that intercept it.
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
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
    /// Manage installations (list/show/delete go through a running gateway's admin listener;
    /// export/import work on the store directly, with the gateway stopped)
    Installations {
        #[command(subcommand)]
        command: InstallationsCommand,
    },
    /// Queued delivery's events (through a running gateway's admin listener): list pending and
    /// dead ones, retry one or every dead letter, drop one
    Deliveries {
        #[command(subcommand)]
        command: DeliveriesCommand,
    },
    /// Print the Slack app manifest for this config (paste it into "Create New App → From a
    /// manifest", or send it to apps.manifest.create)
    Manifest {
        #[arg(long, value_enum, default_value_t = ManifestFormat::Yaml)]
        format: ManifestFormat,
    },
    /// Exit 0 if the running gateway's admin listener answers GET /healthz with 200, else 1
    /// (a container HEALTHCHECK that needs no curl)
    Healthcheck {
        /// URL to check instead of http://{server.admin_listen}/healthz
        #[arg(long)]
        url: Option<String>,
        /// How long to wait for the answer
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
}

#[derive(Subcommand)]
enum DeliveriesCommand {
    /// List queued events (pending and dead, or one state)
    List {
        #[arg(long, value_parser = ["pending", "dead"])]
        state: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Put a dead letter back in the queue (its attempts start over): one by id, or all with
    /// --dead
    Retry {
        #[arg(required_unless_present = "dead", conflicts_with = "dead")]
        id: Option<String>,
        #[arg(long)]
        dead: bool,
    },
    /// Drop one queued event for good
    Drop { id: String },
}

#[derive(Clone, Copy, ValueEnum)]
enum ManifestFormat {
    Json,
    Yaml,
}

/// Where `installations import` reads from.
#[derive(Clone, Copy, ValueEnum)]
enum ImportSource {
    /// JSON lines with slack_sdk's Installation field names (what `export` writes)
    Jsonl,
    /// The folder of slack_sdk's FileInstallationStore (Bolt for Python)
    SlackSdkFile,
    /// The folder of @slack/oauth's FileInstallationStore (Bolt for JavaScript)
    BoltJsFile,
}

#[derive(Subcommand)]
enum InstallationsCommand {
    /// List installations (tokens are never shown)
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one installation by team id (or enterprise id for an org-wide install)
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Delete one installation and all its tokens
    Delete {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Write every installation as JSON lines (slack_sdk field names) to FILE, `-` for stdout
    Export { file: PathBuf },
    /// Read installations from JSON lines in FILE (`-` for stdin), or from an SDK's file
    /// installation store folder with --from
    Import {
        file: PathBuf,
        /// What FILE is: `slack-sdk-file` and `bolt-js-file` take the SDK's base_dir (or its
        /// client-id folder)
        #[arg(long, value_enum, default_value_t = ImportSource::Jsonl)]
        from: ImportSource,
    },
    /// Rewrite every record under the current storage.encryption_key (after a key rotation,
    /// or after turning sealing on)
    Reseal,
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
        Some(Command::Installations { command }) => installations(&path, command),
        Some(Command::Deliveries { command }) => deliveries(&path, command),
        Some(Command::Manifest { format }) => manifest(&path, format),
        Some(Command::Healthcheck { url, timeout }) => healthcheck(&path, url, timeout),
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
    // The certificate and key as the gateway would load them at start.
    if let Some(t) = &config.server.tls {
        slack_gateway::tls::load_certified_key(t)
            .map_err(|e| anyhow::anyhow!("server.tls: {e}"))?;
    }
    print!("{}", config.to_redacted_toml());
    for key in &config.placeholder_secrets {
        eprintln!("warning: {key} uses its development placeholder; set the environment variable before going live");
    }
    let open_files = slack_gateway::open_files::OpenFiles::current();
    if let Some(w) =
        open_files.and_then(|l| slack_gateway::open_files::check(config.server.max_connections, l))
    {
        eprintln!("warning: {w}");
    }
    Ok(())
}

fn manifest(path: &std::path::Path, format: ManifestFormat) -> anyhow::Result<()> {
    use slack_gateway::manifest;
    let config = Config::load(path)?;
    let m = manifest::manifest(&config);
    match format {
        ManifestFormat::Json => println!("{}", serde_json::to_string_pretty(&m)?),
        ManifestFormat::Yaml => print!("{}", manifest::to_yaml(&m)),
    }
    for w in manifest::warnings(&config) {
        eprintln!("warning: {w}");
    }
    Ok(())
}

fn healthcheck(
    path: &std::path::Path,
    url: Option<String>,
    timeout: std::time::Duration,
) -> anyhow::Result<()> {
    let url = match url {
        Some(u) => u,
        None => format!("{}/healthz", admin_base_url(&Config::load(path)?)),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let client = reqwest::Client::builder().timeout(timeout).build()?;
        let resp = client
            .get(&url)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
        if !resp.status().is_success() {
            anyhow::bail!("{url}: {}", resp.status());
        }
        Ok(())
    })
}

fn installations(path: &std::path::Path, command: InstallationsCommand) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match command {
            InstallationsCommand::List { json } => {
                let v = admin_call(&config, http::Method::GET, "").await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&v)?);
                } else {
                    let items = v.as_array().cloned().unwrap_or_default();
                    println!(
                        "{:<14} {:<14} {:<9} {:<5} {:<6} TEAM NAME",
                        "ID", "ENTERPRISE", "ORG-WIDE", "BOT", "USERS"
                    );
                    for i in &items {
                        println!(
                            "{:<14} {:<14} {:<9} {:<5} {:<6} {}",
                            i["id"].as_str().unwrap_or("-"),
                            i["enterprise_id"].as_str().unwrap_or("-"),
                            i["is_enterprise_install"].as_bool().unwrap_or(false),
                            if i["has_bot_token"].as_bool().unwrap_or(false) {
                                "yes"
                            } else {
                                "no"
                            },
                            i["user_ids_with_tokens"].as_array().map_or(0, Vec::len),
                            i["team_name"]
                                .as_str()
                                .or(i["enterprise_name"].as_str())
                                .unwrap_or("")
                        );
                    }
                    eprintln!("{} installation(s)", items.len());
                }
            }
            InstallationsCommand::Show { id, json } => {
                let v = admin_call(&config, http::Method::GET, &id).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&v)?);
                } else if let Some(map) = v.as_object() {
                    for (k, val) in map {
                        println!(
                            "{k}: {}",
                            if val.is_string() {
                                val.as_str().unwrap_or("").to_owned()
                            } else {
                                val.to_string()
                            }
                        );
                    }
                }
            }
            InstallationsCommand::Delete { id, json } => {
                let v = admin_call(&config, http::Method::DELETE, &id).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&v)?);
                } else {
                    println!("deleted {id} ({} records)", v["records"]);
                }
            }
            InstallationsCommand::Export { file } => {
                let store = open_store_offline(&config).await?;
                let lines =
                    slack_gateway::transfer::export(store.as_ref(), &config.slack.client_id).await?;
                let mut text = String::new();
                for l in &lines {
                    text.push_str(&slack_gateway::transfer::to_line(l));
                    text.push('\n');
                }
                if file.as_os_str() == "-" {
                    use std::io::Write;
                    std::io::stdout().write_all(text.as_bytes())?;
                } else {
                    write_private(&file, text.as_bytes())?;
                }
                eprintln!("exported {} installation(s)", lines.len());
            }
            InstallationsCommand::Reseal => {
                if config.storage.encryption_key.is_none() {
                    anyhow::bail!(
                        "storage.encryption_key is not set: there is nothing to seal with"
                    );
                }
                let store = open_store_offline(&config).await?;
                let n = store.reseal().await?;
                eprintln!("resealed {n} record(s)");
            }
            InstallationsCommand::Import { file, from } if !matches!(from, ImportSource::Jsonl) => {
                use slack_gateway::transfer;
                if !file.is_dir() {
                    anyhow::bail!("{}: not a folder", file.display());
                }
                let client_id = &config.slack.client_id;
                let (dir, found) = match from {
                    ImportSource::BoltJsFile => {
                        (file.clone(), transfer::read_bolt_js_dir(&file, client_id)?)
                    }
                    _ => {
                        let dir = transfer::app_dir(&file, client_id);
                        let found = transfer::read_slack_sdk_dir(&dir)?;
                        (dir, found)
                    }
                };
                if found.is_empty() {
                    anyhow::bail!(
                        "{}: no installations found (expected one folder per team holding {}; the SDK nests them under a folder named after the client id when it was given one)",
                        dir.display(),
                        match from {
                            ImportSource::BoltJsFile => "app-latest / user-*-latest",
                            _ => "bot-latest / installer-*-latest",
                        }
                    );
                }
                let store = open_store_offline(&config).await?;
                let n = transfer::import_installations(store.as_ref(), &config.slack.client_id, found)
                    .await?;
                eprintln!("imported {n} installation(s) from {}", dir.display());
            }
            InstallationsCommand::Import { file, .. } => {
                let text = if file.as_os_str() == "-" {
                    use std::io::Read;
                    let mut s = String::new();
                    std::io::stdin().read_to_string(&mut s)?;
                    s
                } else {
                    std::fs::read_to_string(&file)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?
                };
                let store = open_store_offline(&config).await?;
                let n = slack_gateway::transfer::import(store.as_ref(), &config.slack.client_id, &text)
                    .await
                    .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
                eprintln!("imported {n} installation(s)");
            }
        }
        Ok(())
    })
}

/// Opens the store for export/import. sled allows one process per folder, so this fails
/// with a clear message while the gateway runs; PostgreSQL is shared, so it does not.
async fn open_store_offline(
    config: &Config,
) -> anyhow::Result<std::sync::Arc<dyn slack_gateway::store::InstallationStore>> {
    let sled = config.storage.backend == slack_gateway::config::Backend::Sled;
    slack_gateway::open_store(config).await.map_err(|e| {
        if sled {
            anyhow::anyhow!("{e} (is the gateway running? export/import need it stopped; use the admin API meanwhile)")
        } else {
            anyhow::anyhow!("{e}")
        }
    })
}

/// Writes an export readable by its owner only: it holds every token.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

/// `http://host:port` of the admin listener, as a local client reaches it (an unspecified
/// listen address is reached on loopback).
fn admin_base_url(config: &Config) -> String {
    let addr = config.server.admin_listen;
    let host = match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => "127.0.0.1".to_owned(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => "[::1]".to_owned(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    format!("http://{host}:{}", addr.port())
}

/// Calls the running gateway's admin API.
async fn admin_call(
    config: &Config,
    method: http::Method,
    id: &str,
) -> anyhow::Result<serde_json::Value> {
    let mut path = "/admin/installations".to_owned();
    if !id.is_empty() {
        let encoded: String = url::form_urlencoded::byte_serialize(id.as_bytes()).collect();
        path = format!("{path}/{encoded}");
    }
    admin_request(config, method, &path).await
}

/// Calls `path_and_query` on the running gateway's admin API.
async fn admin_request(
    config: &Config,
    method: http::Method,
    path_and_query: &str,
) -> anyhow::Result<serde_json::Value> {
    let addr = config.server.admin_listen;
    let url = format!("{}{path_and_query}", admin_base_url(config));
    let mut req = reqwest::Client::new().request(method, &url);
    if let Some(t) = &config.admin.token {
        req = req.bearer_auth(t.expose());
    }
    let resp = req.send().await.map_err(|e| {
        anyhow::anyhow!(
            "cannot reach the gateway's admin listener at {addr} (server.admin_listen): {e}"
        )
    })?;
    let status = resp.status();
    let body = resp.text().await?;
    if !status.is_success() {
        anyhow::bail!("{status}: {}", body.trim());
    }
    Ok(serde_json::from_str(&body)?)
}

fn deliveries(path: &std::path::Path, command: DeliveriesCommand) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let id_path = |id: &str| {
        let encoded: String = url::form_urlencoded::byte_serialize(id.as_bytes()).collect();
        format!("/admin/deliveries/{encoded}")
    };
    rt.block_on(async move {
        match command {
            DeliveriesCommand::List { state, json } => {
                let query = state.map(|s| format!("?state={s}")).unwrap_or_default();
                let v = admin_request(
                    &config,
                    http::Method::GET,
                    &format!("/admin/deliveries{query}"),
                )
                .await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&v)?);
                    return Ok(());
                }
                let items = v["deliveries"].as_array().cloned().unwrap_or_default();
                println!(
                    "{:<30} {:<8} {:<8} {:<14} {:<12} LAST ERROR",
                    "ID", "STATE", "ATTEMPTS", "EVENT", "TEAM"
                );
                for d in &items {
                    println!(
                        "{:<30} {:<8} {:<8} {:<14} {:<12} {}",
                        d["id"].as_str().unwrap_or("-"),
                        d["state"].as_str().unwrap_or("-"),
                        d["attempts"].as_u64().unwrap_or(0),
                        d["event_id"].as_str().unwrap_or("-"),
                        d["team_id"].as_str().unwrap_or("-"),
                        d["last_error"].as_str().unwrap_or("")
                    );
                }
                eprintln!("{} deliver(ies)", items.len());
            }
            DeliveriesCommand::Retry { id: Some(id), .. } => {
                admin_request(
                    &config,
                    http::Method::POST,
                    &format!("{}/retry", id_path(&id)),
                )
                .await?;
                eprintln!("{id} is queued again");
            }
            DeliveriesCommand::Retry { id: None, .. } => {
                let v = admin_request(
                    &config,
                    http::Method::POST,
                    "/admin/deliveries/retry?state=dead",
                )
                .await?;
                eprintln!(
                    "{} dead letter(s) queued again",
                    v["retried"].as_u64().unwrap_or(0)
                );
            }
            DeliveriesCommand::Drop { id } => {
                admin_request(&config, http::Method::DELETE, &id_path(&id)).await?;
                eprintln!("{id} dropped");
            }
        }
        Ok(())
    })
}

fn serve(path: &std::path::Path) -> anyhow::Result<()> {
    // Validate everything before anything binds.
    let config = Config::load(path)?;
    // One worker: a current-thread runtime, which skips the work-stealing scheduler's
    // cross-thread bookkeeping (the common case on a one-core container).
    let workers = match config.server.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let mut rt = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    rt.enable_all();
    let rt = rt.build()?;
    rt.block_on(async move {
        for key in &config.placeholder_secrets {
            tracing::warn!(
                key = key.as_str(),
                "!!! USING A DEVELOPMENT PLACEHOLDER SECRET: real Slack requests and installs will fail. Set the real value in the environment. !!!"
            );
        }
        let public_addr = config.server.listen;
        let admin_addr = config.server.admin_listen;
        let gw = slack_gateway::open(config, path).await?;
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
