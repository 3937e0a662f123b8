//! The `media` table: one row per (source, followup, kind) for the call recordings and letters
//! behind followups' presigned URLs, and the names their files get.
//!
//! The projector keeps each row current with the followup's URL (`seen`, inside its
//! transaction); the fetcher (`crate::fetcher`) takes the due rows (`due`), downloads them and
//! records how it went (`record`). The URL's query string is a credential: it is read from
//! `followups` when needed and never stored in `media`, logged, or put in an error message.

use diesel::sql_types::{BigInt, Nullable, Text};
use diesel::QueryableByName;
use sha2::{Digest, Sha256};

use crate::stamp::Stamp;
use crate::store::{Db, Sql, Stmt, StoreError};

/// The two media a followup can carry, with the followups columns that hold their URL and file.
pub const KINDS: &[(&str, &str, &str)] = &[
    ("audio", "audio_url", "audio_path"),
    ("pdf", "pdf_url", "pdf_path"),
];

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    pub source: String,
    pub followup_id: String,
    pub kind: String,
}

/// A download to do.
#[derive(Debug, Clone)]
pub struct Job {
    pub key: Key,
    pub url: String,
    pub digest: String,
    pub expires_at: Option<Stamp>,
    pub attempts: i64,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone)]
pub enum Outcome {
    Fetched {
        path: String,
        sha256: String,
        bytes: i64,
        content_type: Option<String>,
    },
    /// Try again at `next_at`.
    Retry {
        error: String,
        next_at: Stamp,
    },
    Failed {
        error: String,
    },
    Expired {
        error: String,
    },
}

/// The longest name part [`name_part`] writes out in full; longer ones are shortened and end
/// in their SHA-256.
const NAME_PART_MAX: usize = 96;

/// A file or directory name for one id, one-to-one: different ids never share a name, so one
/// followup's recording is never served as another's. Letters, digits, `-` and `_` stand as
/// they are and every other byte as `%XX` (so nothing else can produce the same text, and a
/// name never holds a separator or starts with a dot). Beyond [`NAME_PART_MAX`] characters the
/// name is its first 32 characters, `~`, and the id's SHA-256 in hex: bounded whatever the id,
/// and still distinct, since `~` appears in no written-out name.
pub fn name_part(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.len() <= NAME_PART_MAX {
        if out.is_empty() {
            // The empty id gets a name no other id can have.
            out.push('~');
        }
        return out;
    }
    let mut cut = 32;
    while !out.is_char_boundary(cut) {
        cut -= 1;
    }
    format!(
        "{}~{}",
        &out[..cut],
        hex::encode(Sha256::digest(id.as_bytes()))
    )
}

/// The file a followup's media is stored in, inside its source's directory: one-to-one in
/// (followup id, kind, extension), at most 150 bytes.
pub fn file_name(followup_id: &str, kind: &str, ext: Option<&str>) -> String {
    let ext = ext
        .filter(|e| !e.is_empty() && e.len() <= 8 && e.bytes().all(|b| b.is_ascii_alphanumeric()))
        .map(|e| format!(".{}", e.to_ascii_lowercase()))
        .unwrap_or_default();
    format!("{}.{}{ext}", name_part(followup_id), name_part(kind))
}

pub fn digest(url: &str) -> String {
    hex::encode(Sha256::digest(url.as_bytes()))
}

#[derive(QueryableByName)]
struct Current {
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = Nullable<Text>)]
    url_path: Option<String>,
    #[diesel(sql_type = Text)]
    url_digest: String,
}

/// Keeps the media row of one followup's URL current; true when there is something to fetch.
/// A fresh URL replaces one not fetched yet; a fetched file is fetched again only when the
/// object itself changed (another path), not when only the signature was renewed.
pub fn seen(
    db: &mut Db,
    source: &str,
    followup_id: &str,
    kind: &str,
    url: &str,
    expires_at: Option<Stamp>,
    now: Stamp,
) -> Result<bool, StoreError> {
    let parsed = reqwest::Url::parse(url).ok();
    let host = parsed
        .as_ref()
        .and_then(|u| u.host_str().map(str::to_owned));
    let path = parsed.as_ref().map(|u| u.path().to_owned());
    let d = digest(url);
    let current: Option<Current> = db
        .load(
            Stmt::new("SELECT status, url_path, url_digest FROM media WHERE source = ? AND followup_id = ? AND kind = ?")
                .text(source)
                .text(followup_id)
                .text(kind),
        )?
        .into_iter()
        .next();
    let reset = match &current {
        None => true,
        Some(c) if c.status == "fetched" => c.url_path != path,
        Some(c) => c.url_digest != d,
    };
    if !reset {
        return Ok(false);
    }
    db.exec(
        Stmt::new(
            "INSERT INTO media (source, followup_id, kind, url_host, url_path, url_digest, expires_at, status, attempts, \
             last_error, next_attempt_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', 0, NULL, ?, ?) \
             ON CONFLICT (source, followup_id, kind) DO UPDATE SET url_host = excluded.url_host, url_path = excluded.url_path, \
             url_digest = excluded.url_digest, expires_at = excluded.expires_at, status = 'pending', attempts = 0, \
             last_error = NULL, next_attempt_at = excluded.next_attempt_at, updated_at = excluded.updated_at",
        )
        .text(source)
        .text(followup_id)
        .text(kind)
        .opt_text(host.as_deref())
        .opt_text(path.as_deref())
        .text(&d)
        .opt_time(expires_at)
        .time(now)
        .time(now),
    )?;
    Ok(true)
}

#[derive(QueryableByName)]
struct DueRow {
    #[diesel(sql_type = Text)]
    source: String,
    #[diesel(sql_type = Text)]
    followup_id: String,
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = Text)]
    url_digest: String,
    #[diesel(sql_type = Nullable<Text>)]
    expires_at: Option<Stamp>,
    #[diesel(sql_type = BigInt)]
    attempts: i64,
    #[diesel(sql_type = Nullable<Text>)]
    last_error: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    audio_url: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pdf_url: Option<String>,
}

#[derive(QueryableByName)]
struct NextRow {
    #[diesel(sql_type = Nullable<Text>)]
    next: Option<Stamp>,
}

static DUE: Sql = Sql::new(|b| {
    format!(
        "SELECT m.source, m.followup_id, m.kind, m.url_digest, {} AS expires_at, m.attempts, m.last_error, \
         f.audio_url, f.pdf_url FROM media m JOIN followups f ON f.source = m.source AND f.id = m.followup_id \
         WHERE m.status = 'pending' AND m.next_attempt_at <= ? ORDER BY m.next_attempt_at LIMIT ?",
        b.time_text("m.expires_at")
    )
});

static NEXT_DUE: Sql = Sql::new(|b| {
    format!(
        "SELECT {} AS next FROM media WHERE status = 'pending' AND next_attempt_at > ?",
        b.time_text("MIN(next_attempt_at)")
    )
});

/// Pending downloads due at `now` (at most `limit`), and when the next one not yet due is.
pub fn due(db: &mut Db, now: Stamp, limit: i64) -> Result<(Vec<Job>, Option<Stamp>), StoreError> {
    let b = db.backend();
    let rows: Vec<DueRow> = db.load(Stmt::new(DUE.get(b)).time(now).int(limit))?;
    let next: Vec<NextRow> = db.load(Stmt::new(NEXT_DUE.get(b)).time(now))?;
    let jobs = rows
        .into_iter()
        .filter_map(|r| {
            let url = if r.kind == "audio" {
                r.audio_url
            } else {
                r.pdf_url
            }?;
            Some(Job {
                key: Key {
                    source: r.source,
                    followup_id: r.followup_id,
                    kind: r.kind,
                },
                digest: r.url_digest,
                url,
                expires_at: r.expires_at,
                attempts: r.attempts,
                last_error: r.last_error,
            })
        })
        .collect();
    Ok((jobs, next.into_iter().next().and_then(|n| n.next)))
}

/// Writes what a download came to. Nothing changes if the followup brought a fresh URL in the
/// meantime: that one is pending and will be fetched on its own.
pub fn record(
    db: &mut Db,
    key: &Key,
    url_digest: &str,
    outcome: &Outcome,
    now: Stamp,
) -> Result<(), StoreError> {
    let base = |set: &str| {
        format!(
            "UPDATE media SET {set}, attempts = attempts + 1, updated_at = ? \
             WHERE source = ? AND followup_id = ? AND kind = ? AND url_digest = ?"
        )
    };
    let sql = match outcome {
        Outcome::Fetched { .. } => base(
            "status = 'fetched', path = ?, sha256 = ?, bytes = ?, content_type = ?, fetched_at = ?, last_error = NULL",
        ),
        Outcome::Retry { .. } => base("last_error = ?, next_attempt_at = ?"),
        Outcome::Failed { .. } => base("status = 'failed', last_error = ?"),
        Outcome::Expired { .. } => base("status = 'expired', last_error = ?"),
    };
    let stmt = match outcome {
        Outcome::Fetched {
            path,
            sha256,
            bytes,
            content_type,
        } => Stmt::new(&sql)
            .text(path)
            .text(sha256)
            .int(*bytes)
            .opt_text(content_type.as_deref())
            .time(now),
        Outcome::Retry { error, next_at } => Stmt::new(&sql).text(error).time(*next_at),
        Outcome::Failed { error } | Outcome::Expired { error } => Stmt::new(&sql).text(error),
    };
    let n = db.exec(
        stmt.time(now)
            .text(&key.source)
            .text(&key.followup_id)
            .text(&key.kind)
            .text(url_digest),
    )?;
    if let (Outcome::Fetched { path, .. }, 1) = (outcome, n) {
        if let Some((_, _, column)) = KINDS.iter().find(|(k, _, _)| *k == key.kind) {
            let sql = format!("UPDATE followups SET {column} = ? WHERE source = ? AND id = ?");
            db.exec(
                Stmt::new(&sql)
                    .text(path)
                    .text(&key.source)
                    .text(&key.followup_id),
            )?;
        }
    }
    Ok(())
}
