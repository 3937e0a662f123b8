//! Typed configuration, one file per concern. Loaded from a TOML file and overridden by
//! `HOOKSYNC_<SECTION>__<KEY>` environment variables, it names every bad key at once, so that an
//! operator fixes a file in one pass rather than one error per restart.
//!
//! This module is the bottom layer: it imports nothing of the crate. What only the modules
//! that use a key can judge (a provider's settings, the largest batch one statement takes, a CA
//! file) they check themselves; `app::check` gathers those checks, and `Config::load_checked`
//! names their problems beside the file's own.

mod database;
mod endpoints;
mod env;
mod forward;
mod log;
mod media;
mod projector;
mod server;
mod text;

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::Path;

use serde::Deserialize;

pub use database::{redact_url, DatabaseConfig};
pub use endpoints::{AuthHeaderConfig, EndpointConfig};
pub use forward::{parse_span, ForwardConfig, ForwardMode};
pub use log::LogConfig;
pub use media::MediaConfig;
pub use projector::ProjectorConfig;
pub use server::ServerConfig;

use env::EnvOverrides;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
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
    /// Where events are delivered on to (the CRM's handlers).
    #[serde(default)]
    pub forward: Vec<ForwardConfig>,
}

/// Checks a module above this one makes of a parsed configuration; each problem starts with
/// the key it concerns.
pub type Check<'a> = &'a dyn Fn(&Config) -> Vec<String>;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("cannot read configuration file {path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("configuration has {} problem(s):\n  {}", .0.len(), .0.join("\n  "))]
    Invalid(Vec<String>),
}

/// Whether serde refused a key no struct has (`deny_unknown_fields`). serde's error carries
/// no kind, only its message, "unknown field `x`, expected ..."; the error's path names the key.
fn is_unknown_key(message: &str) -> bool {
    message.starts_with("unknown field `")
}

/// How many bad keys `check-config` reports before it stops looking.
const MAX_BAD_KEYS: usize = 64;

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

impl Config {
    /// Reads the file (if any) and the environment, and checks everything that can be checked
    /// without binding a port, collecting every problem: the file's own, and those `check` (the
    /// checks the modules that use each key make of it) finds in what parsed, in one pass.
    pub fn load_checked(path: Option<&Path>, check: Check<'_>) -> Result<Config, ConfigError> {
        Self::load_with(path, std::env::vars_os(), check)
    }

    /// [`Config::load_checked`] with the environment given, so tests need not change the process's.
    fn load_with(
        path: Option<&Path>,
        vars: impl IntoIterator<Item = (OsString, OsString)>,
        check: Check<'_>,
    ) -> Result<Config, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(path) = path {
            // Read here rather than by the config crate, which calls every unreadable file
            // "not found": a file the service user may not read must say "permission denied".
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::File {
                path: path.display().to_string(),
                source,
            })?;
            builder = builder.add_source(config::File::from_str(&text, config::FileFormat::Toml));
        }
        let mut env = EnvOverrides::read(vars);
        for (key, value, _) in &env.set {
            builder = builder.set_override(key, value.clone())?;
        }
        let parsed = builder
            .build()
            .map_err(ConfigError::from)
            .and_then(|raw| Self::from_source(raw, check));
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
        Self::from_toml_checked(text, &|_| Vec::new())
    }

    /// [`Config::from_toml`] with `check`, as [`Config::load_checked`].
    pub fn from_toml_checked(text: &str, check: Check<'_>) -> Result<Config, ConfigError> {
        let raw = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()?;
        Self::from_source(raw, check)
    }

    fn from_source(raw: config::Config, check: Check<'_>) -> Result<Config, ConfigError> {
        let mut tree: config::Value = raw.try_deserialize()?;
        let mut problems = Vec::new();
        let mut unknown: Vec<String> = Vec::new();
        let mut taken_out: Vec<String> = Vec::new();
        // serde stops at the first key it refuses (unknown, or of the wrong type). Each one is
        // noted and taken out of the tree (a default applies to a value taken out) and the parse
        // runs again, so the keys after it are still checked: an operator sees every bad key in
        // one pass, for one more parse per bad key.
        let parsed = loop {
            match serde_path_to_error::deserialize::<_, Config>(tree.clone()) {
                Ok(cfg) => break Some(cfg),
                Err(e) => {
                    let path = e.path().to_string();
                    let why = e.inner().to_string();
                    if is_unknown_key(&why) {
                        // The path names the unknown key itself.
                        if unknown.contains(&path) || unknown.len() >= MAX_BAD_KEYS {
                            break None;
                        }
                        let removed = take_out(&mut tree, e.path());
                        unknown.push(path);
                        if removed.is_some() {
                            continue;
                        }
                        break None;
                    }
                    // A required key taken out earlier now reads as missing: not the file's fault.
                    let ours = taken_out.iter().any(|t| {
                        t == &path
                            || path.is_empty()
                            || t.strip_prefix(path.as_str())
                                .is_some_and(|rest| rest.starts_with(['.', '[']))
                    });
                    if !ours {
                        // The config crate names the key again, in its own spelling.
                        let why = why.split(" for key `").next().unwrap_or_default();
                        problems.push(format!("{path}: {why}"));
                    }
                    if ours || taken_out.len() >= MAX_BAD_KEYS {
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
                let mut found = cfg.validate();
                found.extend(check(&cfg));
                all.extend(found.into_iter().filter(|p| {
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
        if !(-20..=19).contains(&self.database.writer_nice) {
            problems.push(format!(
                "database.writer_nice: a nice value from -20 to 19, found {}",
                self.database.writer_nice
            ));
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
        }
        let endpoint_names: Vec<&str> = self.endpoints.iter().map(|e| e.name.as_str()).collect();
        let mut destinations = HashSet::new();
        for (i, f) in self.forward.iter().enumerate() {
            problems.extend(f.problems(i, &endpoint_names));
            if !destinations.insert(f.name.as_str()) {
                problems.push(format!(
                    "forward[{i}].name: {:?} is used by another destination",
                    f.name
                ));
            }
        }
        problems
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }

    pub(crate) const ONE_ENDPOINT: &str = r#"
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
            &|_| Vec::new(),
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
            &|_| Vec::new(),
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
}
