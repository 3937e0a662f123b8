//! Secrets as the configuration names them (`env:VAR`, `file:/path`, or the value itself),
//! resolved to bytes that no `Debug` output, log line or error message ever shows.

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

#[cfg(test)]
mod tests {
    use super::*;

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
