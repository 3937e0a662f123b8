//! `docs/tables.md` is the readers' reference: it names every column of every table, on both
//! backends, and PostgreSQL's column comments say what it says.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::Reader;

/// Each table the document describes, with each column's meaning.
fn documented() -> BTreeMap<String, BTreeMap<String, String>> {
    let text = include_str!("../docs/tables.md");
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut table = None;
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("## `").and_then(|l| l.strip_suffix('`')) {
            table = Some(name.to_string());
            out.entry(name.to_string()).or_default();
            continue;
        }
        if line.starts_with("## ") {
            table = None;
        }
        let (Some(t), Some(row)) = (&table, line.strip_prefix("| `")) else {
            continue;
        };
        let cells: Vec<&str> = row.split(" | ").collect();
        let column = cells[0].trim_end_matches('`');
        out.get_mut(t)
            .unwrap()
            .insert(column.to_string(), cells[3].to_string());
    }
    out
}

fn columns(db: &mut Reader, table: &str) -> BTreeSet<String> {
    db.columns(table).into_iter().collect()
}

fn assert_every_column_documented(db: &mut Reader) {
    let doc = documented();
    let tables: BTreeSet<String> = db
        .list(
            match db.backend() {
                hooksync::store::Backend::Sqlite => "name",
                hooksync::store::Backend::Postgres => "table_name",
            },
            match db.backend() {
                hooksync::store::Backend::Sqlite => {
                    "FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
                     AND name NOT LIKE '__diesel%'"
                }
                hooksync::store::Backend::Postgres => {
                    "FROM information_schema.tables WHERE table_schema = 'public' \
                     AND table_name NOT LIKE '__diesel%'"
                }
            },
        )
        .into_iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        tables,
        doc.keys().cloned().collect::<BTreeSet<_>>(),
        "tables in the database and in docs/tables.md"
    );
    for (table, cols) in &doc {
        assert_eq!(
            columns(db, table),
            cols.keys().cloned().collect::<BTreeSet<_>>(),
            "columns of {table}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tables_doc_names_every_table_and_column() {
    let app = common::TestApp::start(common::Setup::default()).await;
    assert_every_column_documented(&mut app.reader());
    app.stop().await;
}

#[test]
fn pg_column_comments_say_what_the_tables_doc_says() {
    let server = match common::pg::shared() {
        Ok(s) => s,
        Err(why) => return common::pg::skip("pg_column_comments", why),
    };
    let url = {
        let s = server.lock().unwrap_or_else(|p| p.into_inner());
        let name = format!("pg_comments_{}", std::process::id());
        s.ensure_database(&name);
        s.url(&name)
    };
    drop(
        hooksync::store::open_and_migrate(&hooksync::store::DbOptions {
            url: hooksync::store::DbUrl::parse(&url).unwrap(),
            busy_timeout_ms: 1_000,
        })
        .unwrap(),
    );
    let mut db = Reader::open_url(&url);
    assert_every_column_documented(&mut db);
    for (table, cols) in documented() {
        for (column, meaning) in cols {
            let said = db.list(
                &format!("col_description('{table}'::regclass, a.attnum)"),
                &format!(
                    "FROM pg_attribute a WHERE a.attrelid = '{table}'::regclass AND a.attname = '{column}'"
                ),
            );
            assert_eq!(
                said.first().and_then(|v| v.as_str()),
                Some(meaning.as_str()),
                "{table}.{column}"
            );
        }
    }
}
