//! The statements on domain rows, built from a table's name, key columns and typed columns:
//! every domain table shares the same key shape and the same bookkeeping columns
//! ([`COMMON`]), so one set of builders serves them all.

use super::{marks, Backend};

/// The columns every domain table has after its own, in the upsert's order.
pub const COMMON: [&str; 6] = [
    "data",
    "versions",
    "last_event_id",
    "last_event_at",
    "deleted_at",
    "synced_at",
];

/// The columns an upsert writes, in the order each row binds them: `source`, the key, the
/// table's own columns, then [`COMMON`].
pub fn upsert_columns<'a>(key: &[&'a str], cols: &[&'a str]) -> Vec<&'a str> {
    let mut names: Vec<&'a str> = vec!["source"];
    names.extend(key.iter().copied());
    names.extend(cols.iter().copied());
    names.extend(COMMON);
    names
}

/// SQLite: reads the current row (the store thread is the only writer, so there is nothing to
/// lock; PostgreSQL goes through [`lock_rows`]).
pub fn select_row(table: &str, key: &[&str]) -> String {
    let mut sql = format!(
        "SELECT data, versions, last_event_id, last_event_at, deleted_at FROM {table} WHERE source = ?"
    );
    for k in key {
        sql.push_str(&format!(" AND \"{k}\" = ?"));
    }
    sql
}

/// The upsert of `n` rows in one statement (each row at most once).
pub fn upsert_rows(table: &str, key: &[&str], cols: &[&str], n: usize) -> String {
    let names = upsert_columns(key, cols);
    let quoted: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    let rows = vec![marks(names.len()); n].join(", ");
    let updates: Vec<String> = cols
        .iter()
        .copied()
        .chain(COMMON)
        .map(|n| format!("\"{n}\" = excluded.\"{n}\""))
        .collect();
    let mut conflict = vec!["source".to_string()];
    conflict.extend(key.iter().map(|k| format!("\"{k}\"")));
    format!(
        "INSERT INTO {table} ({}) VALUES {rows} ON CONFLICT ({}) DO UPDATE SET {}",
        quoted.join(", "),
        conflict.join(", "),
        updates.join(", ")
    )
}

/// PostgreSQL: creates the missing rows of `n` keys in one statement, empty (`versions` `{}`,
/// which reads as absent), so that two instances creating the same row take turns instead of
/// both merging into nothing. The upsert fills them, a rollback removes them.
pub fn claim_rows(table: &str, key: &[&str], n: usize) -> String {
    let mut names = vec!["source".to_string()];
    names.extend(key.iter().map(|k| format!("\"{k}\"")));
    let row = format!(
        "({}, '{{}}', '{{}}', now())",
        vec!["?"; names.len()].join(", ")
    );
    format!(
        "INSERT INTO {table} ({}, data, versions, synced_at) VALUES {} ON CONFLICT DO NOTHING",
        names.join(", "),
        vec![row; n].join(", ")
    )
}

/// PostgreSQL: reads and locks the rows of `n` keys, one index lookup per key in the order
/// given (the keys arrive sorted, so two instances lock in the same order). A lateral lookup
/// per key keeps that plan whatever the table's statistics; an `IN` list over a table that was
/// empty when planned becomes a scan of the whole table. Tables have one or two key columns
/// besides `source`; they come back as `k0` and `k1`.
pub fn lock_rows(table: &str, key: &[&str], n: usize) -> String {
    let b = Backend::Postgres;
    let width = 1 + key.len();
    let k = |i: usize| {
        key.get(i)
            .map(|c| format!("t.\"{c}\""))
            .unwrap_or_else(|| "NULL::text".into())
    };
    let mut cond = vec!["t.source = v.c0".to_string()];
    cond.extend((0..key.len()).map(|i| format!("t.\"{}\" = v.c{}", key[i], i + 1)));
    let tuple = marks(width);
    let names: Vec<String> = (0..width).map(|i| format!("c{i}")).collect();
    format!(
        "SELECT x.* FROM (VALUES {}) AS v({}) CROSS JOIN LATERAL (SELECT t.source, {} AS k0, {} AS k1, \
         {} AS data, {} AS versions, t.last_event_id, {} AS last_event_at, {} AS deleted_at \
         FROM {table} t WHERE {} FOR UPDATE) AS x",
        vec![tuple; n].join(", "),
        names.join(", "),
        k(0),
        k(1),
        b.json_text("t.data"),
        b.json_text("t.versions"),
        b.time_text("t.last_event_at"),
        b.time_text("t.deleted_at"),
        cond.join(" AND ")
    )
}

/// An account-level notice, written once: a later copy of the same event changes nothing.
pub const INSERT_NOTICE: &str = "INSERT INTO notices (source, id, type, company_id, occurred_at, data, \
     last_event_id, last_event_at, synced_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (source, id) DO NOTHING";
