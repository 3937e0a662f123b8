//! A raw SQL statement that diesel may keep prepared.
//!
//! `diesel::sql_query` is never cached (diesel cannot tell whether its text is stable), so every
//! call would parse and plan the SQL again. Our statements are fixed texts with `?` markers,
//! so they are safe to cache: diesel keys its cache on the generated text. The markers are
//! turned into each backend's own placeholders (`?` or `$n`) by diesel itself.

use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{BigInt, Binary, Nullable, Text, Untyped};
use diesel::sqlite::Sqlite;
use diesel::{QueryResult, RunQueryDsl};

/// One bound value.
#[derive(Debug, Clone, Copy)]
pub enum Bind<'a> {
    Text(Option<&'a str>),
    Int(Option<i64>),
    Blob(Option<&'a [u8]>),
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

    pub fn bind(mut self, b: Bind<'a>) -> Self {
        self.binds.push(b);
        self
    }

    pub fn opt_blob(mut self, v: Option<&'a [u8]>) -> Self {
        self.binds.push(Bind::Blob(v));
        self
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
    ($backend:ty) => {
        impl QueryFragment<$backend> for Stmt<'_> {
            fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, $backend>) -> QueryResult<()> {
                let mut parts = self.sql.split('?');
                if let Some(first) = parts.next() {
                    out.push_sql(first);
                }
                let mut binds = self.binds.iter();
                for part in parts {
                    match binds.next() {
                        Some(Bind::Text(v)) => out.push_bind_param::<Nullable<Text>, _>(v)?,
                        Some(Bind::Int(v)) => out.push_bind_param::<Nullable<BigInt>, _>(v)?,
                        Some(Bind::Blob(v)) => out.push_bind_param::<Nullable<Binary>, _>(v)?,
                        None => return Err(mismatch(self.sql)),
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

walk_ast_for!(Sqlite);

fn mismatch(sql: &str) -> diesel::result::Error {
    diesel::result::Error::QueryBuilderError(
        format!("bind count does not match markers in: {sql}").into(),
    )
}
