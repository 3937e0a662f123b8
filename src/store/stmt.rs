//! A raw SQL statement that diesel may keep prepared.
//!
//! `diesel::sql_query` is never cached (diesel cannot tell whether its text is stable), so every
//! call would parse and plan the SQL again. Our statements are fixed texts with `?` markers,
//! so they are safe to cache: diesel keys its cache on the generated text. The markers are
//! turned into each backend's own placeholders (`?` or `$n`) by diesel itself.
//!
//! Values travel as text on both backends. A bind says what the text is (an instant, an exact
//! decimal, a JSON document), and on PostgreSQL the placeholder carries the matching cast, so
//! one statement text serves SQLite's TEXT columns and PostgreSQL's `timestamptz`, `numeric`
//! and `jsonb` alike.

use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{BigInt, Binary, Bool, Nullable, Text, Untyped};
use diesel::sqlite::Sqlite;
use diesel::{QueryResult, RunQueryDsl};

use crate::stamp::Stamp;

/// One bound value.
#[derive(Debug, Clone, Copy)]
pub enum Bind<'a> {
    Text(Option<&'a str>),
    Int(Option<i64>),
    Blob(Option<&'a [u8]>),
    Bool(Option<bool>),
    /// An instant.
    Time(Option<Stamp>),
    /// An exact decimal number as text.
    Money(Option<&'a str>),
    /// A JSON document as text.
    Json(Option<&'a str>),
}

impl Bind<'_> {
    /// The cast PostgreSQL needs to read the text as the column's type.
    fn pg_cast(&self) -> &'static str {
        match self {
            Bind::Time(_) => "::timestamptz",
            Bind::Money(_) => "::numeric",
            Bind::Json(_) => "::jsonb",
            Bind::Text(_) | Bind::Int(_) | Bind::Blob(_) | Bind::Bool(_) => "",
        }
    }
}

#[derive(Debug)]
pub struct Stmt<'a> {
    sql: &'a str,
    binds: Vec<Bind<'a>>,
}

impl<'a> Stmt<'a> {
    pub fn new(sql: &'a str) -> Self {
        Self {
            sql,
            binds: Vec::new(),
        }
    }

    pub fn text(mut self, v: &'a str) -> Self {
        self.binds.push(Bind::Text(Some(v)));
        self
    }

    pub fn opt_text(mut self, v: Option<&'a str>) -> Self {
        self.binds.push(Bind::Text(v));
        self
    }

    pub fn int(mut self, v: i64) -> Self {
        self.binds.push(Bind::Int(Some(v)));
        self
    }

    pub fn time(mut self, v: Stamp) -> Self {
        self.binds.push(Bind::Time(Some(v)));
        self
    }

    pub fn opt_time(mut self, v: Option<Stamp>) -> Self {
        self.binds.push(Bind::Time(v));
        self
    }

    pub fn json(mut self, v: &'a str) -> Self {
        self.binds.push(Bind::Json(Some(v)));
        self
    }

    pub fn opt_json(mut self, v: Option<&'a str>) -> Self {
        self.binds.push(Bind::Json(v));
        self
    }

    pub fn bind(mut self, b: Bind<'a>) -> Self {
        self.binds.push(b);
        self
    }

    pub fn opt_blob(mut self, v: Option<&'a [u8]>) -> Self {
        self.binds.push(Bind::Blob(v));
        self
    }
}

/// The most values one statement may bind on either backend: SQLite's limit
/// (`SQLITE_MAX_VARIABLE_NUMBER`, 32,766 since 3.32; PostgreSQL's is 65,535). A statement over
/// it is refused, and a chunk refused every time it is tried would stop the projector for good.
pub const MAX_BINDS: usize = 32_766;

/// How many rows of `width` values fit in one statement that also binds `fixed` others.
/// Statements whose rows come from the input (a plan's installments, the chunk size) are split
/// into parts of at most this many rows.
pub const fn rows_per_statement(width: usize, fixed: usize) -> usize {
    let width = if width == 0 { 1 } else { width };
    let rows = MAX_BINDS.saturating_sub(fixed) / width;
    if rows == 0 {
        1
    } else {
        rows
    }
}

/// `(?, ?, ...)`: one row of `n` placeholders, for a `VALUES` list or an `IN`.
pub fn marks(n: usize) -> String {
    format!("({})", vec!["?"; n].join(", "))
}

impl<'a> From<&'a str> for Stmt<'a> {
    fn from(sql: &'a str) -> Self {
        Stmt::new(sql)
    }
}

impl<'a> From<&'a String> for Stmt<'a> {
    fn from(sql: &'a String) -> Self {
        Stmt::new(sql)
    }
}

impl QueryId for Stmt<'_> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl Query for Stmt<'_> {
    type SqlType = Untyped;
}

impl<Conn> RunQueryDsl<Conn> for Stmt<'_> {}

macro_rules! walk_ast_for {
    ($backend:ty, $casts:expr) => {
        impl QueryFragment<$backend> for Stmt<'_> {
            fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, $backend>) -> QueryResult<()> {
                let mut parts = self.sql.split('?');
                if let Some(first) = parts.next() {
                    out.push_sql(first);
                }
                let mut binds = self.binds.iter();
                for part in parts {
                    let bind = binds.next().ok_or_else(|| mismatch(self.sql))?;
                    match bind {
                        Bind::Text(v) | Bind::Money(v) | Bind::Json(v) => {
                            out.push_bind_param::<Nullable<Text>, _>(v)?
                        }
                        Bind::Time(v) => out.push_bind_param::<Nullable<Text>, _>(v)?,
                        Bind::Int(v) => out.push_bind_param::<Nullable<BigInt>, _>(v)?,
                        Bind::Blob(v) => out.push_bind_param::<Nullable<Binary>, _>(v)?,
                        Bind::Bool(v) => out.push_bind_param::<Nullable<Bool>, _>(v)?,
                    }
                    if $casts {
                        out.push_sql(bind.pg_cast());
                    }
                    out.push_sql(part);
                }
                if binds.next().is_some() {
                    return Err(mismatch(self.sql));
                }
                Ok(())
            }
        }
    };
}

walk_ast_for!(Sqlite, false);
walk_ast_for!(Pg, true);

fn mismatch(sql: &str) -> diesel::result::Error {
    diesel::result::Error::QueryBuilderError(
        format!("bind count does not match markers in: {sql}").into(),
    )
}
