//! The command line: `hooksync [--config FILE] serve|migrate|check-config|rebuild`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::app::SetLogLevel;
use crate::config::Config;

#[derive(Parser)]
#[command(
    name = "hooksync",
    version,
    about = "Turns signed billing and collections webhooks into SQL tables"
)]
struct Cli {
    /// The TOML configuration file; `HOOKSYNC_<SECTION>__<KEY>` variables override it.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply migrations, then serve webhooks until SIGTERM or SIGINT; SIGHUP reloads the
    /// configuration.
    Serve,
    /// Apply the embedded migrations and exit.
    Migrate,
    /// Validate the configuration and name every problem.
    CheckConfig,
    /// Empty the domain tables and apply the event log again (downloaded media are kept).
    Rebuild,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let cfg = match crate::app::load_config(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hooksync: {e}");
            return ExitCode::from(2);
        }
    };
    if let Command::CheckConfig = cli.command {
        println!(
            "configuration OK: {} endpoint(s), database {}",
            cfg.endpoints.len(),
            crate::config::redact_url(&cfg.database.url)
        );
        return ExitCode::SUCCESS;
    }
    let set_log_level = init_tracing(&cfg);
    let result = match cli.command {
        Command::Serve => serve(cfg, cli.config, set_log_level),
        Command::Migrate => migrate(&cfg),
        Command::Rebuild => rebuild(&cfg).map(|s| println!("{s}")),
        Command::CheckConfig => Ok(()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "hooksync failed");
            eprintln!("hooksync: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The filter for a level spec: the HTTP client may print whole URLs at its finest levels,
/// and a media URL's query is a credential, so it stays at info unless the operator names it.
fn log_filter(spec: &str) -> Result<tracing_subscriber::EnvFilter, String> {
    let mut spec = spec.to_owned();
    if !spec.contains("reqwest") {
        spec.push_str(",reqwest=info,hyper_util=info");
    }
    tracing_subscriber::EnvFilter::try_new(&spec).map_err(|e| e.to_string())
}

/// Installs the log; returns how a reload changes its level.
fn init_tracing(cfg: &Config) -> SetLogLevel {
    let spec = std::env::var("RUST_LOG").unwrap_or_else(|_| cfg.log.level.clone());
    let filter = log_filter(&spec).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal; journald and files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    macro_rules! install {
        ($builder:expr) => {{
            let builder = $builder;
            let handle = builder.reload_handle();
            let _ = builder.try_init();
            Box::new(move |level: &str| {
                handle.reload(log_filter(level)?).map_err(|e| e.to_string())
            }) as SetLogLevel
        }};
    }
    if cfg.log.format == "json" {
        install!(builder.json().with_filter_reloading())
    } else {
        install!(builder.with_filter_reloading())
    }
}

/// Rebuilds the tables of the configured endpoints, as `hooksync rebuild` does.
fn rebuild(cfg: &Config) -> anyhow::Result<crate::rebuild::Summary> {
    let providers = crate::app::providers(&crate::app::endpoints(cfg)?);
    let opts = crate::app::db_options(cfg)?;
    let mut db = crate::store::open_and_migrate(&opts)?;
    let projector = crate::projector::Projector::new(
        providers.clone(),
        crate::projector::chunk_size(&cfg.projector, opts.url.backend()),
        cfg.projector.max_attempts,
        std::sync::Arc::new(crate::metrics::Metrics::default()),
        None,
    );
    crate::rebuild::rebuild(
        &mut db,
        &opts,
        &projector,
        &providers,
        std::time::Duration::from_millis(cfg.projector.poll_interval_ms),
    )
    .context("the rebuild did not finish (running it again is safe)")
}

fn migrate(cfg: &Config) -> anyhow::Result<()> {
    let opts = crate::app::db_options(cfg)?;
    let mut db = crate::store::Db::connect(&opts)?;
    let n = db.migrate()?;
    println!("{n} migration(s) applied");
    Ok(())
}

fn serve(cfg: Config, path: Option<PathBuf>, set_log_level: SetLogLevel) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("hooksync")
        .build()?;
    rt.block_on(async move {
        let listeners = crate::Listeners::bind(&cfg).await?;
        let (tx, requests) = tokio::sync::mpsc::channel(1);
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("cannot install the SIGHUP handler")?;
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                tracing::info!(signal = "SIGHUP", "reading the configuration again");
                // Several signals while one reload runs make one more reload, not a queue.
                let _ = tx.try_send(());
            }
        });
        let reloads = crate::app::Reloads {
            path,
            requests,
            set_log_level,
        };
        crate::app::run_reloadable(cfg, listeners, shutdown_signal(), Some(reloads)).await
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        _ => {
            tracing::error!("cannot install signal handlers; stop with SIGKILL");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutting down"),
        _ = int.recv() => tracing::info!(signal = "SIGINT", "shutting down"),
    }
}
