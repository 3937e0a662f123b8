//! The command line: `hooksync [--config FILE] serve|migrate|check-config|rebuild|status|
//! events|retry|sign`. What the operator's commands read is in `ops`; this module prints it.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::app::SetLog;
use crate::config::{Config, EndpointConfig};
use crate::stamp::Stamp;

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
    /// Needs no secret: applying stored events verifies nothing.
    Rebuild {
        /// Only this endpoint's source (every configured one by default).
        #[arg(long)]
        endpoint: Option<String>,
        /// Deliver the events applied again to the [[forward]] destinations again (by
        /// default what was delivered once is not delivered again).
        #[arg(long)]
        redeliver: bool,
    },
    /// Per endpoint: events received, by status, and the last one; the queue; media.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List events, newest first (`events show ENDPOINT EVENT_ID` prints one whole).
    Events(EventsArgs),
    /// Queue failed (or unhandled) events again; the projector applies them.
    Retry {
        #[arg(long)]
        endpoint: Option<String>,
        /// `failed` or `unhandled`.
        #[arg(long, default_value = "failed", value_parser = ["failed", "unhandled"])]
        status: String,
        /// Only events received since TIME (RFC 3339, or an age such as 90m, 24h, 7d).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Send a sample event of an endpoint's provider, signed as it would be, to this
    /// configuration's listener (or --url); print the answer and the rows it produced.
    SendTest {
        #[arg(long)]
        endpoint: String,
        /// The sample's event type (see --list-types); the first by default.
        #[arg(long = "type", value_name = "TYPE")]
        event_type: Option<String>,
        /// Send this file's bytes instead of a sample.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Where to post instead of this configuration's listener.
        #[arg(long)]
        url: Option<String>,
        /// List the sample types and exit.
        #[arg(long)]
        list_types: bool,
    },
    /// List deliveries to the [[forward]] destinations, newest first.
    Deliveries {
        #[arg(long)]
        destination: Option<String>,
        /// pending (not delivered yet, retries included), failed (tried and to be tried
        /// again), dead (given up) or delivered.
        #[arg(long, value_parser = ["pending", "failed", "dead", "delivered"])]
        status: Option<String>,
        /// Created at or after TIME (RFC 3339, or an age such as 90m, 24h, 7d).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// Send deliveries again, from now: one event's, the dead ones, or those created since TIME.
    Redeliver {
        #[arg(long)]
        destination: String,
        /// One event, as ENDPOINT:EVENT_ID.
        #[arg(long, value_name = "ENDPOINT:EVENT_ID", group = "which")]
        event: Option<String>,
        /// `dead`: every delivery given up.
        #[arg(long, value_parser = ["dead"], group = "which")]
        status: Option<String>,
        #[arg(long, value_name = "TIME", group = "which")]
        since: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Manage a destination: `forward resume NAME` lets one paused by a 410 deliver again.
    #[command(subcommand)]
    Forward(ForwardCommand),
    /// Print the header(s) an endpoint's provider would send with FILE's bytes.
    Sign {
        #[arg(long)]
        endpoint: String,
        /// The event id to sign (Standard Webhooks); a fresh one by default.
        #[arg(long)]
        id: Option<String>,
        /// The Unix time to sign (Standard Webhooks); now by default.
        #[arg(long)]
        timestamp: Option<i64>,
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum ForwardCommand {
    /// Deliver again to a destination paused after it answered 410 Gone.
    Resume { name: String },
}

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
struct EventsArgs {
    #[command(subcommand)]
    show: Option<EventsCommand>,
    #[arg(long)]
    endpoint: Option<String>,
    #[arg(long, value_parser = ["queued", "applied", "stale", "unhandled", "invalid", "failed"])]
    status: Option<String>,
    #[arg(long = "type", value_name = "TYPE")]
    event_type: Option<String>,
    /// Received at or after TIME (RFC 3339, or an age such as 90m, 24h, 7d).
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Received before TIME.
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    #[arg(long, default_value_t = 50)]
    limit: i64,
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum EventsCommand {
    /// One event: payload, status, attempts, last error, times, and the rows it wrote last.
    Show {
        endpoint: String,
        event_id: String,
        #[arg(long)]
        json: bool,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let loaded = match cli.command {
        Command::Rebuild { .. } => crate::app::load_config_without_secrets(cli.config.as_deref()),
        _ => crate::app::load_config(cli.config.as_deref()),
    };
    let cfg = match loaded {
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
    let set_log = init_tracing(&cfg);
    let result = match cli.command {
        Command::Serve => serve(cfg, cli.config, set_log),
        Command::Migrate => migrate(&cfg),
        Command::Rebuild {
            endpoint,
            redeliver,
        } => rebuild(&cfg, endpoint.as_deref(), redeliver).map(|s| println!("{s}")),
        Command::Status { json } => status(&cfg, json),
        Command::Events(args) => events(&cfg, args),
        Command::Retry {
            endpoint,
            status,
            since,
            json,
        } => retry(&cfg, endpoint, status, since, json),
        Command::SendTest {
            endpoint,
            event_type,
            file,
            url,
            list_types,
        } => send_test(&cfg, &endpoint, event_type, file, url, list_types),
        Command::Sign {
            endpoint,
            id,
            timestamp,
            file,
        } => sign(&cfg, &endpoint, id, timestamp, &file),
        Command::Deliveries {
            destination,
            status,
            since,
            limit,
            json,
        } => deliveries(&cfg, destination, status, since, limit, json),
        Command::Redeliver {
            destination,
            event,
            status,
            since,
            json,
        } => redeliver(&cfg, destination, event, status, since, json),
        Command::Forward(ForwardCommand::Resume { name }) => resume(&cfg, &name),
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

type Filtered = tracing_subscriber::layer::Layered<
    tracing_subscriber::reload::Layer<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>,
    tracing_subscriber::Registry,
>;
type Output = Box<dyn tracing_subscriber::Layer<Filtered> + Send + Sync>;

/// The log's output, text or JSON, on stderr (colours only on a terminal; journald and files
/// get plain text).
fn log_output(format: &str) -> Output {
    use tracing_subscriber::Layer;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    if format == "json" {
        layer.json().boxed()
    } else {
        layer.with_ansi(ansi).boxed()
    }
}

/// Installs the log; returns how a reload changes its level and format.
fn init_tracing(cfg: &Config) -> SetLog {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let spec = std::env::var("RUST_LOG").unwrap_or_else(|_| cfg.log.level.clone());
    let filter = log_filter(&spec).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (filter, filter_handle) = tracing_subscriber::reload::Layer::new(filter);
    let (output, output_handle) =
        tracing_subscriber::reload::Layer::new(log_output(&cfg.log.format));
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .try_init();
    Box::new(move |level: Option<&str>, format: Option<&str>| {
        if let Some(level) = level {
            filter_handle
                .reload(log_filter(level)?)
                .map_err(|e| e.to_string())?;
        }
        if let Some(format) = format {
            output_handle
                .reload(log_output(format))
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    })
}

/// Rebuilds the tables of the configured endpoints, as `hooksync rebuild` does.
fn rebuild(
    cfg: &Config,
    endpoint: Option<&str>,
    redeliver: bool,
) -> anyhow::Result<crate::rebuild::Summary> {
    let mut providers = crate::app::providers(&crate::app::endpoints(cfg)?);
    if let Some(name) = endpoint {
        let source = source_of(cfg, name)?;
        providers.retain(|s, _| *s == source);
    }
    let opts = crate::app::db_options(cfg)?;
    let mut db = crate::store::open_and_migrate(&opts)?;
    let projector = crate::projector::Projector::new(
        providers.clone(),
        crate::projector::chunk_size(&cfg.projector, opts.url.backend()),
        cfg.projector.max_attempts,
        std::sync::Arc::new(crate::metrics::Metrics::default()),
        None,
    )
    // The events applied again find their deliveries: none is made twice, unless asked.
    .forwarding(
        crate::app::routes(cfg),
        std::sync::Arc::new(tokio::sync::watch::Sender::new(())),
    );
    let projector = if redeliver {
        projector.redelivering()
    } else {
        projector
    };
    crate::rebuild::rebuild(
        &mut db,
        &opts,
        &projector,
        &providers,
        std::time::Duration::from_millis(cfg.projector.poll_interval_ms),
    )
    .context("the rebuild did not finish (running it again is safe)")
}

/// The `source` of the endpoint named `name`.
fn source_of(cfg: &Config, name: &str) -> anyhow::Result<String> {
    Ok(endpoint_config(cfg, name)?.source().to_owned())
}

/// The endpoint named `name` in the configuration.
fn endpoint_config<'c>(cfg: &'c Config, name: &str) -> anyhow::Result<&'c EndpointConfig> {
    cfg.endpoints
        .iter()
        .find(|e| e.name == name)
        .ok_or_else(|| anyhow::anyhow!("no endpoint named {name:?} in the configuration"))
}

/// The endpoint named `name`, its secrets resolved.
fn endpoint(cfg: &Config, name: &str) -> anyhow::Result<crate::providers::Endpoint> {
    crate::providers::Endpoint::from_config(endpoint_config(cfg, name)?)
        .map_err(|e| anyhow::anyhow!(e))
}

/// A time given on the command line: RFC 3339 (or a naive date-time, taken as UTC), or an
/// age before now (`90s`, `15m`, `24h`, `7d`).
fn parse_time(text: &str, now: Stamp) -> anyhow::Result<Stamp> {
    if let Some(t) = Stamp::parse(text) {
        return Ok(t);
    }
    let age = crate::config::parse_span(text).ok_or_else(|| {
        anyhow::anyhow!("{text:?} is neither a time (RFC 3339) nor an age such as 24h")
    })?;
    Ok(now.plus(-time::Duration::try_from(age).unwrap_or(time::Duration::MAX)))
}

fn connect(cfg: &Config) -> anyhow::Result<crate::store::Db> {
    let opts = crate::app::db_options(cfg)?;
    Ok(crate::store::Db::connect(&opts)?)
}

fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Prints rows as columns padded to their widest cell.
fn print_table(head: &[&str], rows: &[Vec<String>]) {
    let mut width: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (c, w)) in cells.iter().zip(&width).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  "));
            }
        }
        println!("{}", out.trim_end());
    };
    line(head.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

fn age(at: Stamp, now: Stamp) -> String {
    let s = at.until(now).as_secs();
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

fn status(cfg: &Config, json: bool) -> anyhow::Result<()> {
    let mut db = connect(cfg)?;
    let mut sources: Vec<String> = Vec::new();
    for e in &cfg.endpoints {
        if !sources.iter().any(|s| s == e.source()) {
            sources.push(e.source().to_owned());
        }
    }
    let now = Stamp::now();
    let mut st = crate::ops::status(&mut db, &sources, now)?;
    let endpoints = crate::app::endpoints(cfg)?;
    let retries: Vec<(String, crate::providers::Retries)> = endpoints
        .iter()
        .map(|e| (e.name.clone(), e.provider.retries()))
        .collect();
    st.downtime = crate::ops::downtime(&mut db, &retries, now, 7)?;
    st.destinations = crate::deliveries::summary(&mut db, &destination_names(cfg))?;
    if json {
        return print_json(&st);
    }
    let mut head = vec!["SOURCE", "RECEIVED", "24H"];
    head.extend(crate::ops::STATUSES.iter().map(|s| s.to_owned()));
    head.extend(["LAST EVENT", "TYPE", "AGE"]);
    let rows: Vec<Vec<String>> = st
        .sources
        .iter()
        .map(|s| {
            let mut r = vec![
                s.source.clone(),
                s.received.to_string(),
                s.received_24h.to_string(),
            ];
            r.extend(
                crate::ops::STATUSES
                    .iter()
                    .map(|k| s.by_status.get(*k).copied().unwrap_or(0).to_string()),
            );
            match &s.last {
                Some(l) => r.extend([
                    l.event_id.clone(),
                    l.event_type.clone().unwrap_or_default(),
                    age(l.received_at, now),
                ]),
                None => r.extend(["-".into(), "-".into(), "-".into()]),
            }
            r
        })
        .collect();
    print_table(&head, &rows);
    println!();
    let oldest = st.oldest_queued.map_or("-".to_owned(), |t| age(t, now));
    println!(
        "queue: {} event(s) queued, the oldest received {oldest} ago",
        st.queued
    );
    let media: Vec<String> = st.media.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!("media: {}", media.join(", "));
    for d in &st.destinations {
        println!(
            "forward {}: {} pending (oldest {}), {} dead, last delivered {}{}",
            d.destination,
            d.pending,
            d.oldest_pending
                .map_or("-".to_owned(), |t| format!("{} ago", age(t, now))),
            d.dead,
            d.last_delivered
                .map_or("never".to_owned(), |t| format!("{} ago", age(t, now))),
            d.paused_at.map_or(String::new(), |t| format!(
                "; PAUSED since {t} (it answered 410): hooksync forward resume {}",
                d.destination
            )),
        );
    }
    println!();
    if st.downtime.is_empty() {
        println!("downtime in the last 7 days: none");
    }
    for d in &st.downtime {
        let to =
            d.to.map_or("now (none serving)".to_owned(), |t| t.to_string());
        println!("down from {} to {to} ({} s)", d.from, d.seconds);
        for e in &d.endpoints {
            match (e.covered, e.lost_from, e.lost_to) {
                (Some(true), _, _) => {
                    println!("  {}: covered, the provider resends past it", e.endpoint)
                }
                (_, Some(from), Some(to)) => println!(
                    "  {}: events first sent from {from} to {to} may never arrive; {}",
                    e.endpoint, e.recover
                ),
                _ => println!("  {}: may have lost events; {}", e.endpoint, e.recover),
            }
        }
    }
    Ok(())
}

fn events(cfg: &Config, args: EventsArgs) -> anyhow::Result<()> {
    let mut db = connect(cfg)?;
    let now = Stamp::now();
    if let Some(EventsCommand::Show {
        endpoint,
        event_id,
        json,
    }) = args.show
    {
        let source = source_of(cfg, &endpoint)?;
        let Some(e) =
            crate::ops::event(&mut db, &source, &event_id, crate::rebuild::DOMAIN_TABLES)?
        else {
            anyhow::bail!("no event {event_id:?} from {endpoint}");
        };
        if json {
            return print_json(&e);
        }
        let l = &e.line;
        println!("event      {} (seq {})", l.event_id, l.seq);
        println!("source     {}", l.source);
        println!("type       {}", l.event_type.as_deref().unwrap_or("-"));
        println!("status     {} after {} attempt(s)", l.status, l.attempts);
        println!("error      {}", l.last_error.as_deref().unwrap_or("-"));
        println!(
            "occurred   {}{}",
            l.occurred_at,
            e.time_note
                .as_deref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default()
        );
        println!("received   {}", l.received_at);
        println!(
            "applied    {}",
            e.applied_at.map_or("-".to_owned(), |t| t.to_string())
        );
        println!("payload    {}", e.payload.as_deref().unwrap_or("-"));
        for (table, row) in &e.rows {
            println!("row        {table}: {row}");
        }
        return Ok(());
    }
    let filter = crate::ops::Filter {
        source: args
            .endpoint
            .as_deref()
            .map(|e| source_of(cfg, e))
            .transpose()?,
        status: args.status,
        event_type: args.event_type,
        since: args
            .since
            .as_deref()
            .map(|t| parse_time(t, now))
            .transpose()?,
        until: args
            .until
            .as_deref()
            .map(|t| parse_time(t, now))
            .transpose()?,
    };
    let lines = crate::ops::events(&mut db, &filter, args.limit.max(0))?;
    if args.json {
        return print_json(&lines);
    }
    let rows: Vec<Vec<String>> = lines
        .iter()
        .map(|l| {
            vec![
                l.received_at.to_string(),
                l.source.clone(),
                l.event_id.clone(),
                l.event_type.clone().unwrap_or_default(),
                l.status.clone(),
                l.last_error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    print_table(
        &[
            "RECEIVED",
            "SOURCE",
            "EVENT",
            "TYPE",
            "STATUS",
            "LAST ERROR",
        ],
        &rows,
    );
    Ok(())
}

fn destination_names(cfg: &Config) -> Vec<String> {
    cfg.forward.iter().map(|f| f.name.clone()).collect()
}

/// A destination the configuration names.
fn destination(cfg: &Config, name: &str) -> anyhow::Result<String> {
    if cfg.forward.iter().any(|f| f.name == name) {
        return Ok(name.to_owned());
    }
    anyhow::bail!(
        "no [[forward]] destination is named {name:?} (configured: {})",
        destination_names(cfg).join(", ")
    )
}

fn deliveries(
    cfg: &Config,
    destination_name: Option<String>,
    status: Option<String>,
    since: Option<String>,
    limit: i64,
    json: bool,
) -> anyhow::Result<()> {
    let now = Stamp::now();
    let filter = crate::deliveries::Filter {
        destination: destination_name
            .as_deref()
            .map(|d| destination(cfg, d))
            .transpose()?,
        status,
        since: since.as_deref().map(|t| parse_time(t, now)).transpose()?,
        event: None,
    };
    let mut db = connect(cfg)?;
    let lines = crate::deliveries::list(&mut db, &filter, limit.max(0))?;
    if json {
        return print_json(&lines);
    }
    let rows: Vec<Vec<String>> = lines
        .iter()
        .map(|l| {
            vec![
                l.id.to_string(),
                l.destination.clone(),
                l.source.clone(),
                l.event_id.clone(),
                l.event_type.clone().unwrap_or_default(),
                l.status.clone(),
                l.attempts.to_string(),
                match l.status.as_str() {
                    "delivered" => l.delivered_at.map_or("-".to_owned(), |t| t.to_string()),
                    "pending" | "failed" => format!("next {}", l.next_attempt_at),
                    _ => "-".to_owned(),
                },
                l.last_error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    print_table(
        &[
            "ID",
            "DESTINATION",
            "SOURCE",
            "EVENT",
            "TYPE",
            "STATUS",
            "ATTEMPTS",
            "WHEN",
            "LAST ERROR",
        ],
        &rows,
    );
    Ok(())
}

fn redeliver(
    cfg: &Config,
    destination_name: String,
    event: Option<String>,
    status: Option<String>,
    since: Option<String>,
    json: bool,
) -> anyhow::Result<()> {
    let now = Stamp::now();
    let event = match event {
        Some(e) => {
            let (endpoint, id) = e
                .split_once(':')
                .ok_or_else(|| anyhow::anyhow!("--event takes ENDPOINT:EVENT_ID, found {e:?}"))?;
            Some((source_of(cfg, endpoint)?, id.to_owned()))
        }
        None => None,
    };
    if event.is_none() && status.is_none() && since.is_none() {
        anyhow::bail!(
            "say which deliveries: --event ENDPOINT:EVENT_ID, --status dead or --since TIME"
        );
    }
    let filter = crate::deliveries::Filter {
        destination: Some(destination(cfg, &destination_name)?),
        status,
        since: since.as_deref().map(|t| parse_time(t, now)).transpose()?,
        event,
    };
    let mut db = connect(cfg)?;
    let n = crate::deliveries::redeliver(&mut db, &filter, now)?;
    if json {
        return print_json(
            &serde_json::json!({ "redelivering": n, "destination": destination_name }),
        );
    }
    println!("{destination_name}: {n} delivery(ies) to send again");
    Ok(())
}

fn resume(cfg: &Config, name: &str) -> anyhow::Result<()> {
    let name = destination(cfg, name)?;
    let mut db = connect(cfg)?;
    if crate::deliveries::resume(&mut db, &name)? {
        println!("{name} resumed: its pending deliveries are sent again");
    } else {
        println!("{name} was not paused");
    }
    Ok(())
}

fn retry(
    cfg: &Config,
    endpoint: Option<String>,
    status: String,
    since: Option<String>,
    json: bool,
) -> anyhow::Result<()> {
    let mut db = connect(cfg)?;
    let filter = crate::ops::Filter {
        source: endpoint.as_deref().map(|e| source_of(cfg, e)).transpose()?,
        status: Some(status.clone()),
        since: since
            .as_deref()
            .map(|t| parse_time(t, Stamp::now()))
            .transpose()?,
        ..crate::ops::Filter::default()
    };
    let n = crate::ops::retry(&mut db, &filter)?;
    if json {
        return print_json(&serde_json::json!({ "queued": n, "status": status }));
    }
    println!("{n} {status} event(s) queued again");
    Ok(())
}

fn sign(
    cfg: &Config,
    endpoint: &str,
    id: Option<String>,
    timestamp: Option<i64>,
    file: &std::path::Path,
) -> anyhow::Result<()> {
    let endpoint = self::endpoint(cfg, endpoint)?;
    let body = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let id = id.unwrap_or_else(|| format!("msg_{}", hex::encode(rand::random::<[u8; 12]>())));
    let at = timestamp.unwrap_or_else(|| Stamp::now().unix_timestamp());
    for (name, value) in endpoint.provider.sign(&body, &id, at) {
        println!("{name}: {value}");
    }
    Ok(())
}

fn send_test(
    cfg: &Config,
    name: &str,
    event_type: Option<String>,
    file: Option<PathBuf>,
    url: Option<String>,
    list_types: bool,
) -> anyhow::Result<()> {
    let endpoint = self::endpoint(cfg, name)?;
    let provider = &endpoint.provider;
    if list_types {
        for t in provider.sample_types() {
            println!("{t}");
        }
        return Ok(());
    }
    let id = format!("test_{}", hex::encode(rand::random::<[u8; 8]>()));
    let now = Stamp::now();
    let body = match file {
        Some(f) => std::fs::read(&f).with_context(|| format!("cannot read {}", f.display()))?,
        None => {
            let ty = match event_type {
                Some(t) => t,
                None => provider
                    .sample_types()
                    .into_iter()
                    .next()
                    .unwrap_or_default(),
            };
            let vars = crate::providers::SampleVars {
                id: &id,
                now,
                tenant: endpoint.tenant.as_deref(),
            };
            provider
                .sample(&ty, &vars)
                .map_err(|e| anyhow::anyhow!(e))?
        }
    };
    let headers = provider.sign(&body, &id, now.unix_timestamp());
    let tls = cfg.server.tls_cert.is_some();
    let url = url.unwrap_or_else(|| {
        let listen = cfg.server.listen;
        let host = if listen.ip().is_unspecified() {
            std::net::IpAddr::from([127, 0, 0, 1])
        } else {
            listen.ip()
        };
        let scheme = if tls { "https" } else { "http" };
        format!(
            "{scheme}://{}{}",
            std::net::SocketAddr::new(host, listen.port()),
            endpoint.path
        )
    });
    // Straight to the listener: a proxy set in the environment is for the outside world.
    let mut client = reqwest::Client::builder()
        .use_rustls_tls()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(30));
    // The configured certificate is trusted, as a sender trusts it.
    if let Some(cert) = &cfg.server.tls_cert {
        for c in crate::tls::load_certs(cert)? {
            client = client.add_root_certificate(reqwest::Certificate::from_der(c.as_ref())?);
        }
    }
    let client = client.build()?;
    let mut req = client
        .post(&url)
        .header("content-type", "application/json")
        .body(body);
    for (k, v) in &headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (status, answer) = rt.block_on(async {
        let r = req
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        let status = r.status();
        anyhow::Ok((status, r.text().await.unwrap_or_default()))
    })?;
    println!("{url} answered {status}: {answer}");
    if !status.is_success() {
        anyhow::bail!("the listener answered {status}");
    }
    // The event this request stored: the newest of its source received since it was sent.
    let mut db = connect(cfg)?;
    let filter = crate::ops::Filter {
        source: Some(endpoint.source.to_string()),
        since: Some(now.plus(time::Duration::seconds(-1))),
        ..crate::ops::Filter::default()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let newest = crate::ops::events(&mut db, &filter, 1)?.into_iter().next();
        match newest {
            Some(e) if e.status != "queued" || std::time::Instant::now() > deadline => {
                let detail = crate::ops::event(
                    &mut db,
                    &e.source,
                    &e.event_id,
                    crate::rebuild::DOMAIN_TABLES,
                )?;
                println!(
                    "event {} is {}{}",
                    e.event_id,
                    e.status,
                    e.last_error.map(|m| format!(": {m}")).unwrap_or_default()
                );
                for (table, row) in detail.map(|d| d.rows).unwrap_or_default() {
                    println!("{table}: {row}");
                }
                return Ok(());
            }
            None if std::time::Instant::now() > deadline => {
                anyhow::bail!("the event is not in the database after 10 s (another database?)")
            }
            _ => std::thread::sleep(std::time::Duration::from_millis(100)),
        }
    }
}

fn migrate(cfg: &Config) -> anyhow::Result<()> {
    let opts = crate::app::db_options(cfg)?;
    let mut db = crate::store::Db::connect(&opts)?;
    let n = db.migrate()?;
    println!("{n} migration(s) applied");
    Ok(())
}

fn serve(cfg: Config, path: Option<PathBuf>, set_log: SetLog) -> anyhow::Result<()> {
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
            set_log,
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
