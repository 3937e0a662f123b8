//! Typed configuration, one struct per concern. Loaded from a TOML file and overridden by
//! `HOOKSYNC_<SECTION>__<KEY>` environment variables; `check` names every bad key at once so an
//! operator fixes a file in one pass rather than one error per restart.

use std::collections::HashSet;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub database: DatabaseConfig,
    #[serde(default)]
    pub projector: ProjectorConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub media: MediaConfig,
    #[serde(default)]
    pub endpoints: Vec<EndpointConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    #[serde(deserialize_with = "text::optional_path")]
    pub tls_cert: Option<PathBuf>,
    #[serde(deserialize_with = "text::optional_path")]
    pub tls_key: Option<PathBuf>,
    /// `None` (an empty string in the file) turns the admin listener off.
    #[serde(deserialize_with = "optional_addr")]
    pub admin_listen: Option<SocketAddr>,
    pub max_body_bytes: usize,
    pub max_connections: usize,
    pub max_connections_per_peer: usize,
    pub max_json_depth: usize,
    pub max_future_skew_ms: u64,
    pub header_timeout_ms: u64,
    pub body_timeout_ms: u64,
    pub shutdown_grace_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8443)),
            tls_cert: None,
            tls_key: None,
            admin_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
            max_body_bytes: 1 << 20,
            max_connections: 1024,
            max_connections_per_peer: 256,
            max_json_depth: 64,
            max_future_skew_ms: 300_000,
            header_timeout_ms: 5_000,
            body_timeout_ms: 10_000,
            shutdown_grace_ms: 10_000,
        }
    }
}

/// The config crate hands any scalar over as a string when one is asked for, so `url = 5`
/// would read as the SQLite file "5" and `tenant = 123` as "123". Keys that hold text take
/// text only, and the rest of `check-config` names those that do not.
mod text {
    use std::fmt;
    use std::path::PathBuf;

    use serde::de::{self, Deserialize, Deserializer, Visitor};

    struct Only;

    impl Visitor<'_> for Only {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_owned())
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
            Ok(v)
        }
    }

    struct Text(String);

    impl<'de> Deserialize<'de> for Text {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(Only).map(Text)
        }
    }

    pub fn one<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        Text::deserialize(d).map(|t| t.0)
    }

    pub fn optional<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        Option::<Text>::deserialize(d).map(|t| t.map(|t| t.0))
    }

    pub fn list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        Vec::<Text>::deserialize(d).map(|v| v.into_iter().map(|t| t.0).collect())
    }

    pub fn path<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
        one(d).map(PathBuf::from)
    }

    pub fn optional_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
        optional(d).map(|t| t.map(PathBuf::from))
    }
}

fn optional_addr<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let s = text::one(d)?;
    if s.trim().is_empty() {
        return Ok(None);
    }
    s.parse().map(Some).map_err(serde::de::Error::custom)
}

#[derive(Clone, Deserialize)]
#[serde(default)]
pub struct DatabaseConfig {
    /// May hold a password: printed only through `store::redact_url`.
    #[serde(deserialize_with = "text::one")]
    pub url: String,
    /// Most events one group commit takes.
    pub batch_max: usize,
    /// Requests waiting for a commit before new ones are answered 503.
    pub queue_capacity: usize,
    /// How long a request waits for its commit before it is answered 503.
    pub commit_timeout_ms: u64,
    /// How long a write waits for a lock another process holds before it fails.
    pub busy_timeout_ms: u64,
    /// The nice value the store thread asks for. It commits every batch, and every
    /// acknowledgement waits for it: on two busy cores it otherwise waits for a CPU behind the
    /// HTTP side it serves.
    pub writer_nice: i32,
}

impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &crate::store::redact_url(&self.url))
            .field("batch_max", &self.batch_max)
            .field("queue_capacity", &self.queue_capacity)
            .field("commit_timeout_ms", &self.commit_timeout_ms)
            .field("busy_timeout_ms", &self.busy_timeout_ms)
            .field("writer_nice", &self.writer_nice)
            .finish()
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://hooksync.db".into(),
            batch_max: 512,
            queue_capacity: 8192,
            commit_timeout_ms: 5_000,
            busy_timeout_ms: 2_000,
            writer_nice: -10,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ProjectorConfig {
    pub enabled: bool,
    /// Most events applied in one transaction. Unset, it depends on the backend: see
    /// [`ProjectorConfig::batch_for`].
    pub batch: Option<usize>,
    /// How often the queue is looked at when nothing announced new work.
    pub poll_interval_ms: u64,
    /// How many times an event may fail to apply, with the database otherwise answering,
    /// before it is marked `failed` and the queue goes on without it.
    pub max_attempts: u32,
}

impl Default for ProjectorConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            batch: None,
            poll_interval_ms: 1_000,
            max_attempts: 5,
        }
    }
}

impl ProjectorConfig {
    /// The chunk size. On SQLite a chunk runs on the store thread between ingest batches, so
    /// it bounds how long a waiting sender is held up: 32. On PostgreSQL the projector has a
    /// thread and connection of its own and a chunk costs about seven round trips whatever its
    /// size, so larger chunks drain a backlog faster: 128, where the drain gains most of what
    /// larger chunks give while a sender's p99 under load stays as at 32 (docs/benchmarks.md).
    pub fn batch_for(&self, backend: crate::store::Backend) -> usize {
        self.batch.unwrap_or(match backend {
            crate::store::Backend::Sqlite => 32,
            crate::store::Backend::Postgres => 128,
        })
    }
}

/// Pre-fetching of call recordings and letters (presigned URLs that expire).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct MediaConfig {
    pub enabled: bool,
    /// Where files go: `<dir>/<source>/<followup>-<kind>[.ext]`.
    #[serde(deserialize_with = "text::path")]
    pub dir: PathBuf,
    /// Hosts media may come from: exact names, or `*.domain` for its subdomains.
    #[serde(deserialize_with = "text::list")]
    pub allowed_hosts: Vec<String>,
    /// Allow loopback, private, link-local and other non-public addresses (tests, labs).
    pub allow_private_networks: bool,
    /// Allow plain `http://` URLs.
    pub allow_http: bool,
    pub max_bytes: u64,
    /// Downloads at once.
    pub concurrency: usize,
    pub connect_timeout_ms: u64,
    /// Whole download, first byte to last.
    pub timeout_ms: u64,
    pub max_redirects: usize,
    /// A PEM file of extra CA certificates to trust (besides the public roots).
    #[serde(deserialize_with = "text::optional_path")]
    pub extra_ca_file: Option<PathBuf>,
    /// First retry delay; doubles per attempt, with jitter, up to `retry_max_ms`.
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    /// How often due retries are looked for when nothing announced new media.
    pub poll_interval_ms: u64,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            dir: PathBuf::from("media"),
            allowed_hosts: vec!["*.cloudfront.net".into()],
            allow_private_networks: false,
            allow_http: false,
            max_bytes: 200 << 20,
            concurrency: 4,
            connect_timeout_ms: 10_000,
            timeout_ms: 600_000,
            max_redirects: 3,
            extra_ca_file: None,
            retry_base_ms: 1_000,
            retry_max_ms: 300_000,
            poll_interval_ms: 5_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct LogConfig {
    /// A `tracing` filter (`info`, `hooksync=debug,info`); `RUST_LOG` wins when set.
    #[serde(deserialize_with = "text::one")]
    pub level: String,
    /// `text` or `json`.
    #[serde(deserialize_with = "text::one")]
    pub format: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: "text".into(),
        }
    }
}

/// `Debug` is written by hand below: `secrets` and `auth_header.value` may hold literal secrets.
#[derive(Clone, Deserialize)]
pub struct EndpointConfig {
    #[serde(deserialize_with = "text::one")]
    pub name: String,
    /// The `source` column of its rows; defaults to `name`. Endpoints that describe one system
    /// (one BigLedger subscription per topic) share a source, so their rows meet.
    #[serde(default, deserialize_with = "text::optional")]
    pub source: Option<String>,
    #[serde(deserialize_with = "text::one")]
    pub path: String,
    #[serde(deserialize_with = "text::one")]
    pub provider: String,
    #[serde(default, deserialize_with = "text::list")]
    pub secrets: Vec<String>,
    #[serde(default, deserialize_with = "text::optional")]
    pub tenant: Option<String>,
    /// bigledger-topic: the one topic this subscription carries.
    #[serde(default, deserialize_with = "text::optional")]
    pub topic: Option<String>,
    /// bigledger-topic: the static header the subscription sends; `value` is a secret spec.
    #[serde(default)]
    pub auth_header: Option<AuthHeaderConfig>,
}

impl EndpointConfig {
    /// The `source` of the endpoint's rows: `source` if set, else `name`.
    pub fn source(&self) -> &str {
        self.source.as_deref().unwrap_or(&self.name)
    }
}

#[derive(Clone, Deserialize)]
pub struct AuthHeaderConfig {
    #[serde(deserialize_with = "text::one")]
    pub name: String,
    #[serde(deserialize_with = "text::one")]
    pub value: String,
}

impl std::fmt::Debug for EndpointConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointConfig")
            .field("name", &self.name)
            .field("source", &self.source)
            .field("path", &self.path)
            .field("provider", &self.provider)
            .field(
                "secrets",
                &format_args!("<{} redacted>", self.secrets.len()),
            )
            .field("tenant", &self.tenant)
            .field("topic", &self.topic)
            .field(
                "auth_header",
                &self
                    .auth_header
                    .as_ref()
                    .map(|h| format!("{}: <redacted>", h.name)),
            )
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration has {} problem(s):\n  {}", .0.len(), .0.join("\n  "))]
    Invalid(Vec<String>),
}

/// A secret as written in the file: `env:VAR`, `file:/path` or the literal value.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn resolve(spec: &str) -> Result<Secret, String> {
        let bytes = if let Some(var) = spec.strip_prefix("env:") {
            std::env::var(var)
                .map_err(|_| format!("environment variable {var} is not set"))?
                .into_bytes()
        } else if let Some(path) = spec.strip_prefix("file:") {
            let mut raw = std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
            while raw.last().is_some_and(|b| b.is_ascii_whitespace()) {
                raw.pop();
            }
            raw
        } else {
            spec.as_bytes().to_vec()
        };
        if bytes.is_empty() {
            return Err("secret is empty".into());
        }
        Ok(Secret(bytes))
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A key as the rest of `check-config` spells it: `endpoints[1].name`.
fn key_of(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", key_of(parent)),
        Path::Map { parent, key } => match key_of(parent) {
            p if p.is_empty() => key.clone(),
            p => format!("{p}.{key}"),
        },
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => key_of(parent),
    }
}

/// How many values of the wrong type `check-config` reports before it stops looking.
const MAX_TYPE_ERRORS: usize = 64;

/// Removes the value at `path` from its table, or the whole list when `path` is an element of
/// one (an element cannot go without renumbering the ones after it). Returns the key removed,
/// spelled as in the messages (`endpoints[0].secrets`).
fn take_out(tree: &mut config::Value, path: &serde_path_to_error::Path) -> Option<String> {
    use config::ValueKind;
    use serde_path_to_error::Segment;
    let mut segments: Vec<&Segment> = path.iter().collect();
    let mut spelled = path.to_string();
    while matches!(segments.last(), Some(Segment::Seq { .. })) {
        segments.pop();
        // Each list index is one `[n]` at the end of the spelling.
        spelled.truncate(spelled.rfind('[')?);
    }
    let Some((Segment::Map { key }, parents)) = segments.split_last() else {
        return None;
    };
    let mut node = tree;
    for segment in parents {
        node = match (segment, &mut node.kind) {
            (Segment::Map { key }, ValueKind::Table(t)) => t.get_mut(key)?,
            (Segment::Seq { index }, ValueKind::Array(a)) => a.get_mut(*index)?,
            _ => return None,
        };
    }
    let ValueKind::Table(t) = &mut node.kind else {
        return None;
    };
    t.remove(key)?;
    Some(spelled)
}

/// Keys set from the environment as `HOOKSYNC_<SECTION>__<KEY>`.
///
/// Read by hand rather than by the config crate's `Environment`, which would take any
/// `HOOKSYNC_` variable for a key (so a secret kept in `HOOKSYNC_GETBILL_SECRET` and named as
/// `env:HOOKSYNC_GETBILL_SECRET` made the daemon refuse to start over an "unknown key"), and
/// which reads values either all as text or all as numbers where they look like one (so a text
/// key set to `1234` was refused). Here every value stays text, which serde reads as a number or
/// a boolean where a key wants one; list keys are split on commas.
struct EnvOverrides {
    /// Key, value, and the variable that set them.
    set: Vec<(String, config::Value, String)>,
    problems: Vec<String>,
}

const ENV_PREFIX: &str = "HOOKSYNC_";
/// Keys whose value is a list, written in the environment as `a,b,c`.
const LIST_KEYS: &[&str] = &["media.allowed_hosts"];

impl EnvOverrides {
    fn read(vars: impl IntoIterator<Item = (OsString, OsString)>) -> Self {
        let mut out = EnvOverrides {
            set: Vec::new(),
            problems: Vec::new(),
        };
        for (name, value) in vars {
            // Only `HOOKSYNC_<SECTION>__<KEY>` names a key; other variables (a secret's, say)
            // are not ours to read.
            let Some(name) = name.to_str() else { continue };
            let Some(rest) = name
                .get(..ENV_PREFIX.len())
                .filter(|p| p.eq_ignore_ascii_case(ENV_PREFIX))
                .map(|_| &name[ENV_PREFIX.len()..])
            else {
                continue;
            };
            if !rest.contains("__") {
                continue;
            }
            let key = rest.to_ascii_lowercase().replace("__", ".");
            if key == "endpoints" || key.starts_with("endpoints.") {
                out.problems.push(format!(
                    "{name}: [[endpoints]] are written in the file only (a secret can come from \
                     the environment as \"env:VAR\")"
                ));
                continue;
            }
            let well_formed = key.split('.').all(|part| {
                !part.is_empty()
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            });
            if !well_formed {
                out.problems
                    .push(format!("{name}: not a configuration key ({key:?})"));
                continue;
            }
            let Some(value) = value.to_str() else {
                out.problems.push(format!("{name}: the value is not UTF-8"));
                continue;
            };
            let value = if LIST_KEYS.contains(&key.as_str()) {
                let items: Vec<String> = value
                    .split(',')
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .map(String::from)
                    .collect();
                config::Value::from(items)
            } else {
                config::Value::from(value)
            };
            out.set.push((key, value, name.to_owned()));
        }
        out
    }

    /// A problem with a key the environment set names the variable too: the file an operator
    /// would look in first does not hold that value.
    fn name_variable(&self, problem: String) -> String {
        let var = problem.split_once(": ").and_then(|(key, _)| {
            self.set
                .iter()
                .rev()
                .find(|(k, _, _)| k.as_str() == key)
                .map(|(_, _, var)| var)
        });
        match var {
            Some(var) => problem.replacen(": ", &format!(" (from {var}): "), 1),
            None => problem,
        }
    }
}

impl Config {
    /// Reads the file (if any) and the environment, and checks everything that can be checked
    /// without binding a port, collecting every problem.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_with(path, std::env::vars_os())
    }

    /// [`Config::load`] with the environment given, so tests need not change the process's.
    fn load_with(
        path: Option<&Path>,
        vars: impl IntoIterator<Item = (OsString, OsString)>,
    ) -> Result<Config, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(path) = path {
            builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
        }
        let mut env = EnvOverrides::read(vars);
        for (key, value, _) in &env.set {
            builder = builder.set_override(key, value.clone())?;
        }
        let parsed = builder
            .build()
            .map_err(ConfigError::from)
            .and_then(Self::from_source);
        let mut all = std::mem::take(&mut env.problems);
        let cfg = match parsed {
            Ok(cfg) => Some(cfg),
            Err(ConfigError::Invalid(more)) => {
                all.extend(more.into_iter().map(|p| env.name_variable(p)));
                None
            }
            Err(e) if all.is_empty() => return Err(e),
            Err(e) => {
                all.push(e.to_string());
                None
            }
        };
        match cfg {
            Some(cfg) if all.is_empty() => Ok(cfg),
            _ => Err(ConfigError::Invalid(all)),
        }
    }

    /// Parses a TOML text, environment overrides not applied: for tests and `check-config`.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let raw = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()?;
        Self::from_source(raw)
    }

    fn from_source(raw: config::Config) -> Result<Config, ConfigError> {
        let mut tree: config::Value = raw.try_deserialize()?;
        let mut problems = Vec::new();
        let mut unknown: Vec<String> = Vec::new();
        let mut taken_out: Vec<String> = Vec::new();
        // serde stops at the first value of the wrong type. Each one is noted and taken out of
        // the tree (its default applies) and the parse runs again, so the keys after it are
        // still checked: an operator sees every bad key in one pass.
        let parsed = loop {
            let mut note = |path: serde_ignored::Path<'_>| {
                let key = key_of(&path);
                if !unknown.contains(&key) {
                    unknown.push(key);
                }
            };
            let de = serde_ignored::Deserializer::new(tree.clone(), &mut note);
            match serde_path_to_error::deserialize::<_, Config>(de) {
                Ok(cfg) => break Some(cfg),
                Err(e) => {
                    let path = e.path().to_string();
                    // A required key taken out earlier now reads as missing: not the file's fault.
                    let ours = taken_out.iter().any(|t| {
                        t == &path
                            || path.is_empty()
                            || t.strip_prefix(path.as_str())
                                .is_some_and(|rest| rest.starts_with(['.', '[']))
                    });
                    if !ours {
                        // The config crate names the key again, in its own spelling.
                        let why = e.inner().to_string();
                        let why = why.split(" for key `").next().unwrap_or_default();
                        problems.push(format!("{path}: {why}"));
                    }
                    if ours || taken_out.len() >= MAX_TYPE_ERRORS {
                        break None;
                    }
                    match take_out(&mut tree, e.path()) {
                        Some(key) => taken_out.push(key),
                        None => break None,
                    }
                }
            }
        };
        problems.sort();
        let mut all: Vec<String> = unknown
            .iter()
            .map(|k| format!("{k}: unknown key"))
            .collect();
        all.append(&mut problems);
        match parsed {
            Some(cfg) => {
                // A key taken out holds its default now; what that default makes of it is noise.
                all.extend(cfg.validate().into_iter().filter(|p| {
                    !taken_out.iter().any(|t| {
                        p.strip_prefix(t.as_str())
                            .is_some_and(|r| r.starts_with(':'))
                    })
                }));
                if all.is_empty() {
                    Ok(cfg)
                } else {
                    Err(ConfigError::Invalid(all))
                }
            }
            None => Err(ConfigError::Invalid(all)),
        }
    }

    fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let s = &self.server;
        match (&s.tls_cert, &s.tls_key) {
            (Some(_), None) => {
                problems.push("server.tls_key: required when server.tls_cert is set".into())
            }
            (None, Some(_)) => {
                problems.push("server.tls_cert: required when server.tls_key is set".into())
            }
            (Some(cert), Some(key)) => {
                for (name, p) in [("server.tls_cert", cert), ("server.tls_key", key)] {
                    if let Err(e) = std::fs::metadata(p) {
                        problems.push(format!("{name}: cannot read {}: {e}", p.display()));
                    }
                }
            }
            (None, None) => {}
        }
        for (name, v) in [
            ("server.max_body_bytes", s.max_body_bytes),
            ("server.max_connections", s.max_connections),
            (
                "server.max_connections_per_peer",
                s.max_connections_per_peer,
            ),
            ("server.max_json_depth", s.max_json_depth),
            (
                "projector.max_attempts",
                self.projector.max_attempts as usize,
            ),
            ("database.batch_max", self.database.batch_max),
            ("database.queue_capacity", self.database.queue_capacity),
            ("projector.batch", self.projector.batch.unwrap_or(1)),
            ("media.concurrency", self.media.concurrency),
        ] {
            if v == 0 {
                problems.push(format!("{name}: must be greater than 0"));
            }
        }
        if self.database.batch_max > crate::inbox::MAX_BATCH {
            problems.push(format!(
                "database.batch_max: at most {} (on PostgreSQL a batch is one statement of {} values per event)",
                crate::inbox::MAX_BATCH,
                crate::inbox::EVENT_WIDTH
            ));
        }
        if !(-20..=19).contains(&self.database.writer_nice) {
            problems.push(format!(
                "database.writer_nice: a nice value from -20 to 19, found {}",
                self.database.writer_nice
            ));
        }
        if let Err(e) = crate::store::DbUrl::parse(&self.database.url) {
            problems.push(format!("database.url: {e}"));
        }
        if let Some(ca) = &self.media.extra_ca_file {
            if let Err(e) = crate::tls::load_certs(ca) {
                problems.push(format!("media.extra_ca_file: {e}"));
            }
        }
        // A filter that does not parse would otherwise be replaced by "info" without a word.
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            problems.push(format!("log.level: {e}"));
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            problems.push(format!(
                "log.format: expected \"text\" or \"json\", found {:?}",
                self.log.format
            ));
        }
        if self.endpoints.is_empty() {
            problems.push("endpoints: at least one [[endpoints]] entry is needed".into());
        }
        let mut names = HashSet::new();
        let mut paths = HashSet::new();
        let mut sources: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
        for (i, ep) in self.endpoints.iter().enumerate() {
            let at = format!("endpoints[{i}]");
            if ep.name.is_empty() {
                problems.push(format!("{at}.name: must not be empty"));
            } else if !names.insert(ep.name.as_str()) {
                problems.push(format!(
                    "{at}.name: {:?} is used by another endpoint",
                    ep.name
                ));
            }
            let source = ep.source();
            match sources.insert(source, &ep.provider) {
                Some(other) if other != ep.provider => problems.push(format!(
                    "{at}.source: {source:?} is shared with a {other} endpoint"
                )),
                _ => {}
            }
            if !ep.path.starts_with('/') {
                problems.push(format!("{at}.path: must start with '/'"));
            } else if !paths.insert(ep.path.as_str()) {
                problems.push(format!(
                    "{at}.path: {:?} is used by another endpoint",
                    ep.path
                ));
            }
            let mut secrets = Vec::new();
            for (j, spec) in ep.secrets.iter().enumerate() {
                match Secret::resolve(spec) {
                    Ok(s) => secrets.push(s),
                    Err(e) => problems.push(format!("{at}.secrets[{j}]: {e}")),
                }
            }
            if !crate::providers::kinds().contains(&ep.provider.as_str()) {
                problems.push(format!(
                    "{at}.provider: unknown provider {:?} (known: {})",
                    ep.provider,
                    crate::providers::kinds().join(", ")
                ));
            } else if secrets.len() == ep.secrets.len() {
                if let Err(e) = crate::providers::Endpoint::from_parts(ep, secrets) {
                    problems.push(format!("{at}.{e}"));
                }
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }

    const ONE_ENDPOINT: &str = r#"
        [[endpoints]]
        name = "getbill"
        path = "/webhooks/getbill"
        provider = "getbill"
        secrets = ["k"]
        "#;

    #[test]
    fn the_environment_sets_section_keys_as_each_key_reads_them() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hooksync.toml");
        std::fs::write(&file, ONE_ENDPOINT).unwrap();
        let cfg = Config::load_with(
            Some(&file),
            vars(&[
                // A variable under the same prefix without a section (a secret's, say) is not
                // a key: the process test reads a secret from one.
                ("HOOKSYNC_GETBILL_SECRET", "s3cret"),
                ("HOOKSYNC_DATABASE__URL", "12345"),
                ("hooksync_server__max_body_bytes", "2048"),
                ("HOOKSYNC_PROJECTOR__ENABLED", "false"),
                (
                    "HOOKSYNC_MEDIA__ALLOWED_HOSTS",
                    " cdn.example.com, ,files.example.org,",
                ),
                ("PATH", "/usr/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(cfg.database.url, "12345");
        assert_eq!(cfg.server.max_body_bytes, 2048);
        assert!(!cfg.projector.enabled);
        assert_eq!(
            cfg.media.allowed_hosts,
            ["cdn.example.com", "files.example.org"]
        );
    }

    #[test]
    fn what_the_environment_cannot_set_is_named_beside_the_files_problems() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hooksync.toml");
        std::fs::write(
            &file,
            format!("[server]\nmax_conections = 3\n{ONE_ENDPOINT}"),
        )
        .unwrap();
        let err = Config::load_with(
            Some(&file),
            vars(&[
                ("HOOKSYNC_ENDPOINTS__0__PATH", "/elsewhere"),
                ("HOOKSYNC_SERVER__", "x"),
                ("HOOKSYNC_SERVER__MAX_BODY_BYTES", "lots"),
                ("HOOKSYNC_SERVER__NOPE", "1"),
            ]),
        )
        .unwrap_err()
        .to_string();
        for needle in [
            "HOOKSYNC_ENDPOINTS__0__PATH: [[endpoints]] are written in the file only",
            "HOOKSYNC_SERVER__: not a configuration key",
            "server.max_body_bytes (from HOOKSYNC_SERVER__MAX_BODY_BYTES): invalid type: string \"lots\"",
            "server.nope (from HOOKSYNC_SERVER__NOPE): unknown key",
            "server.max_conections: unknown key",
        ] {
            assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
        }
    }

    #[test]
    fn names_every_bad_key() {
        let err = Config::from_toml(
            r#"
            [server]
            listen = "127.0.0.1:0"
            max_body_byte = 10
            [database]
            url = "mysql://x"
            colour = "blue"
            [[endpoints]]
            name = "a"
            path = "no-slash"
            provider = "nope"
            secrets = ["env:HOOKSYNC_TEST_SURELY_UNSET_VAR"]
            "#,
        )
        .unwrap_err()
        .to_string();
        for needle in [
            "server.max_body_byte: unknown key",
            "database.colour: unknown key",
            "database.url",
            "endpoints[0].path",
            "endpoints[0].provider: unknown provider \"nope\"",
            "endpoints[0].secrets[0]: environment variable HOOKSYNC_TEST_SURELY_UNSET_VAR is not set",
        ] {
            assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
        }
    }

    #[test]
    fn provider_settings_are_checked() {
        let err = Config::from_toml(
            r#"
            [[endpoints]]
            name = "a"
            path = "/a"
            provider = "bigledger-topic"
            [[endpoints]]
            name = "b"
            path = "/b"
            provider = "standard"
            secrets = ["whsec_%%%"]
            [[endpoints]]
            name = "c"
            path = "/c"
            provider = "standard"
            secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
            tenant = "t1"
            [[endpoints]]
            name = "d"
            source = "c"
            path = "/d"
            provider = "bill"
            secrets = ["k"]
            [[endpoints]]
            name = "e"
            path = "/e"
            provider = "bill"
            "#,
        )
        .unwrap_err()
        .to_string();
        for needle in [
            "endpoints[0].topic: required",
            "endpoints[1].secrets[0]: not a whsec_<base64> secret",
            "endpoints[2].tenant: standard events carry no tenant",
            "endpoints[3].source: \"c\" is shared with a standard endpoint",
            "endpoints[4].secrets: at least one secret is needed",
        ] {
            assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
        }
    }

    #[test]
    fn debug_output_hides_secrets() {
        let cfg = Config::from_toml(
            "[database]\nurl = \"postgres://app:db-password-3@127.0.0.1/crm\"\n\
             [[endpoints]]\nname = \"t\"\npath = \"/t\"\nprovider = \"bigledger-topic\"\ntopic = \"X_CREATED\"\n\
             secrets = [\"literal-secret-1\"]\nauth_header = { name = \"X-T\", value = \"literal-token-2\" }\n",
        )
        .unwrap();
        let text = format!("{cfg:?}");
        assert!(
            !text.contains("literal-secret-1")
                && !text.contains("literal-token-2")
                && !text.contains("db-password-3"),
            "{text}"
        );
    }

    #[test]
    fn chunk_and_batch_sizes_follow_the_backend_and_fit_a_statement() {
        use crate::store::Backend;
        let unset = Config::from_toml(ONE_ENDPOINT).unwrap().projector;
        assert_eq!(unset.batch_for(Backend::Sqlite), 32);
        assert_eq!(unset.batch_for(Backend::Postgres), 128);
        let set = Config::from_toml(&format!("[projector]\nbatch = 7\n{ONE_ENDPOINT}"))
            .unwrap()
            .projector;
        assert_eq!(set.batch_for(Backend::Sqlite), 7);
        assert_eq!(set.batch_for(Backend::Postgres), 7);
        let max = crate::inbox::MAX_BATCH;
        let big = Config::from_toml(&format!(
            "[database]\nbatch_max = {}\n{ONE_ENDPOINT}",
            max + 1
        ));
        let said = format!("database.batch_max: at most {max}");
        assert!(
            matches!(&big, Err(ConfigError::Invalid(p)) if p.iter().any(|p| p.starts_with(&said))),
            "{big:?}"
        );
        assert!(
            Config::from_toml(&format!("[database]\nbatch_max = {max}\n{ONE_ENDPOINT}")).is_ok()
        );
        let zero = Config::from_toml(&format!("[projector]\nbatch = 0\n{ONE_ENDPOINT}"));
        assert!(
            matches!(&zero, Err(ConfigError::Invalid(p)) if p.iter().any(|p| p == "projector.batch: must be greater than 0")),
            "{zero:?}"
        );
    }

    /// The example documents the defaults: what it shows is what you get without it.
    #[test]
    fn example_file_shows_the_defaults() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml.example"))
                .unwrap();
        let cfg =
            Config::from_toml(&text.replace("env:GETBILL_WEBHOOK_SECRET", "literal")).unwrap();
        assert_eq!(
            format!("{:?}", cfg.server),
            format!("{:?}", ServerConfig::default())
        );
        assert_eq!(
            format!("{:?}", cfg.database),
            format!("{:?}", DatabaseConfig::default())
        );
        assert_eq!(
            format!("{:?}", cfg.projector),
            format!("{:?}", ProjectorConfig::default())
        );
        assert_eq!(
            format!("{:?}", cfg.media),
            format!("{:?}", MediaConfig::default())
        );
        assert_eq!(
            format!("{:?}", cfg.log),
            format!("{:?}", LogConfig::default())
        );
    }

    #[test]
    fn every_value_of_the_wrong_type_is_named_in_one_pass() {
        let err = Config::from_toml(
            r#"
            [server]
            listen = "nowhere"
            max_body_bytes = "lots"
            header_timeout_ms = -5
            colour = "blue"
            [[endpoints]]
            name = "a"
            path = "no-slash"
            provider = "getbill"
            secrets = "not-a-list"
            "#,
        )
        .unwrap_err()
        .to_string();
        for needle in [
            "server.listen: invalid socket address",
            "server.max_body_bytes: invalid type: string \"lots\"",
            "server.header_timeout_ms: invalid type",
            "server.colour: unknown key",
            "endpoints[0].secrets: invalid type: string \"not-a-list\", expected a sequence",
            "endpoints[0].path: must start with '/'",
        ] {
            assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
        }
        // Taken out after its type error, `secrets` is not reported again as empty.
        assert!(err.starts_with("configuration has 6 problem(s)"), "{err}");
    }

    #[test]
    fn writer_nice_is_a_nice_value() {
        let with = |nice: i32| format!("[database]\nwriter_nice = {nice}\n{ONE_ENDPOINT}");
        assert_eq!(
            Config::from_toml(ONE_ENDPOINT)
                .unwrap()
                .database
                .writer_nice,
            -10
        );
        for ok in [-20, 0, 19] {
            assert_eq!(
                Config::from_toml(&with(ok)).unwrap().database.writer_nice,
                ok
            );
        }
        for bad in [-21, 20] {
            let err = Config::from_toml(&with(bad)).unwrap_err().to_string();
            assert!(
                err.contains(&format!(
                    "database.writer_nice: a nice value from -20 to 19, found {bad}"
                )),
                "{err}"
            );
        }
    }

    #[test]
    fn a_log_filter_that_does_not_parse_is_named() {
        let with_level = |level: &str| format!("[log]\nlevel = {level:?}\n{ONE_ENDPOINT}");
        let err = Config::from_toml(&with_level("info,hooksync=loud"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("log.level: "), "{err}");
        let cfg = Config::from_toml(&with_level("hooksync=debug,warn")).unwrap();
        assert_eq!(cfg.log.level, "hooksync=debug,warn");
    }

    #[test]
    fn text_keys_take_text_only() {
        let err = Config::from_toml(
            r#"
            [server]
            tls_cert = 5
            [database]
            url = 5
            [log]
            level = true
            [media]
            allowed_hosts = ["cdn.example.com", 7]
            [[endpoints]]
            name = "getbill"
            path = "/webhooks/getbill"
            provider = "getbill"
            secrets = [12345]
            tenant = 123
            "#,
        )
        .unwrap_err()
        .to_string();
        for needle in [
            "server.tls_cert: invalid type: integer `5`, expected a string",
            "database.url: invalid type: integer `5`, expected a string",
            "log.level: invalid type: boolean `true`, expected a string",
            "media.allowed_hosts[1]: invalid type: integer `7`, expected a string",
            "endpoints[0].secrets[0]: invalid type: integer `12345`, expected a string",
            "endpoints[0].tenant: invalid type: integer `123`, expected a string",
        ] {
            assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
        }
        // Written as text, the same values are taken.
        let cfg = Config::from_toml(
            r#"
            [database]
            url = "sqlite://5.db"
            [[endpoints]]
            name = "getbill"
            path = "/webhooks/getbill"
            provider = "getbill"
            secrets = ["12345"]
            tenant = "123"
            "#,
        )
        .unwrap();
        assert_eq!(cfg.endpoints[0].tenant.as_deref(), Some("123"));
        assert_eq!(cfg.endpoints[0].secrets, ["12345"]);
        assert_eq!(cfg.server.tls_cert, None);
    }

    #[test]
    fn secrets_resolve_from_env_file_and_literal() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s");
        std::fs::write(&f, "from-file\n").unwrap();
        assert_eq!(
            Secret::resolve(&format!("file:{}", f.display()))
                .unwrap()
                .expose(),
            b"from-file"
        );
        assert_eq!(Secret::resolve("literal").unwrap().expose(), b"literal");
        assert!(Secret::resolve("").is_err());
        assert!(format!("{:?}", Secret::resolve("hunter2").unwrap()).contains("redacted"));
    }
}
