//! `HOOKSYNC_<SECTION>__<KEY>` environment variables over the file.

use std::ffi::OsString;

/// Keys set from the environment as `HOOKSYNC_<SECTION>__<KEY>`.
///
/// Read by hand rather than by the config crate's `Environment`, which would take any
/// `HOOKSYNC_` variable for a key (so a secret kept in `HOOKSYNC_GETBILL_SECRET` and named as
/// `env:HOOKSYNC_GETBILL_SECRET` made the daemon refuse to start over an "unknown key"), and
/// which reads values either all as text or all as numbers where they look like one (so a text
/// key set to `1234` was refused). Here every value stays text, which serde reads as a number or
/// a boolean where a key wants one; list keys are split on commas.
pub(super) struct EnvOverrides {
    /// Key, value, and the variable that set them.
    pub(super) set: Vec<(String, config::Value, String)>,
    pub(super) problems: Vec<String>,
}

const ENV_PREFIX: &str = "HOOKSYNC_";
/// Keys whose value is a list, written in the environment as `a,b,c`.
const LIST_KEYS: &[&str] = &["media.allowed_hosts"];

impl EnvOverrides {
    pub(super) fn read(vars: impl IntoIterator<Item = (OsString, OsString)>) -> Self {
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
            if let Some(list) = ["endpoints", "forward"]
                .into_iter()
                .find(|l| key == *l || key.starts_with(&format!("{l}.")))
            {
                out.problems.push(format!(
                    "{name}: [[{list}]] are written in the file only (a secret can come from \
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
    pub(super) fn name_variable(&self, problem: String) -> String {
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
