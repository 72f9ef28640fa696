//! The statements a ledger transaction runs, said once for both ways they are run: through
//! sqlx on PostgreSQL (and on SQLite in tests that open a transaction of their own), and on the
//! SQLite writer's own connection (`writer.rs`). The ledger's writes (reservations, settled
//! batches, audit appends, leases) are written against [`Db`]; each backend binds the same
//! statement its own way.

use super::sql::{for_backend, rows_for_backend};
use super::types::LedgerError;
use sqlx::{Row as _, SqlSafeStr, SqlStr};

/// A statement literal and how it reaches the database: as written, with bare parameters on
/// SQLite (`for_backend`), or as a one-row `INSERT` repeated for a piece of rows
/// (`rows_for_backend`). The statement check (`tests/statements.rs`) reads each literal given
/// to [`Sql::written`], [`Sql::bare`] and [`Sql::rows`] and describes it on both databases.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sql {
    text: &'static str,
    form: Form,
}

#[derive(Debug, Clone, Copy)]
enum Form {
    Written,
    Bare,
    Rows(usize),
}

impl Sql {
    pub(crate) const fn written(text: &'static str) -> Sql {
        Sql { text, form: Form::Written }
    }

    pub(crate) const fn bare(text: &'static str) -> Sql {
        Sql { text, form: Form::Bare }
    }

    pub(crate) const fn rows(text: &'static str, rows: usize) -> Sql {
        Sql { text, form: Form::Rows(rows) }
    }

    /// The statement as SQLite (`sqlite`) or PostgreSQL is given it.
    pub(crate) fn given(self, sqlite: bool) -> Result<SqlStr, sqlx::Error> {
        match self.form {
            Form::Written => Ok(self.text.into_sql_str()),
            Form::Bare => Ok(for_backend(self.text, sqlite)),
            Form::Rows(rows) => rows_for_backend(self.text, rows, sqlite),
        }
    }
}

/// A bound value, borrowed from where it is: SQLite copies a text once as it binds it, and
/// nothing else does.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Arg<'a> {
    Int(i64),
    Text(&'a str),
}

impl From<i64> for Arg<'_> {
    fn from(v: i64) -> Self {
        Arg::Int(v)
    }
}

impl<'a> From<&'a str> for Arg<'a> {
    fn from(v: &'a str) -> Self {
        Arg::Text(v)
    }
}

impl<'a> From<&'a String> for Arg<'a> {
    fn from(v: &'a String) -> Self {
        Arg::Text(v)
    }
}

/// What a column of a statement's rows is read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Int,
    Text,
}

/// A value read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Cell {
    Int(i64),
    Text(String),
    Null,
}

impl Cell {
    pub(crate) fn int(&self) -> Result<i64, LedgerError> {
        match self {
            Cell::Int(v) => Ok(*v),
            other => Err(LedgerError::Unavailable(format!("expected an integer from the ledger, read {other:?}"))),
        }
    }

    pub(crate) fn text(self) -> Result<String, LedgerError> {
        match self {
            Cell::Text(v) => Ok(v),
            other => Err(LedgerError::Unavailable(format!("expected a text from the ledger, read {other:?}"))),
        }
    }
}

/// A transaction the ledger's writes run in.
#[allow(async_fn_in_trait)]
pub(crate) trait Db {
    /// SQLite's (one writer: no lock order to keep), or PostgreSQL's.
    fn sqlite(&self) -> bool;

    /// Runs `sql` with `args`; how many rows it changed.
    async fn execute(&mut self, sql: Sql, args: &[Arg<'_>]) -> Result<u64, LedgerError>;

    /// Runs `sql` with `args`; its rows' columns read as `kinds` say, one row after another.
    async fn fetch(&mut self, sql: Sql, args: &[Arg<'_>], kinds: &[Kind]) -> Result<Vec<Cell>, LedgerError>;

    /// [`Db::fetch`] of integer columns, `width` a row.
    async fn ints(&mut self, sql: Sql, args: &[Arg<'_>], width: usize) -> Result<Vec<i64>, LedgerError> {
        const INTS: [Kind; 4] = [Kind::Int; 4];
        let kinds = INTS.get(..width).ok_or_else(|| LedgerError::Unavailable(format!("{width} integer columns asked for")))?;
        self.fetch(sql, args, kinds).await?.iter().map(Cell::int).collect()
    }
}

impl Db for sqlx::Transaction<'_, sqlx::Any> {
    fn sqlite(&self) -> bool {
        self.backend_name() == "SQLite"
    }

    async fn execute(&mut self, sql: Sql, args: &[Arg<'_>]) -> Result<u64, LedgerError> {
        let q = bind(sqlx::query(sql.given(self.sqlite())?), args);
        Ok(q.execute(&mut **self).await?.rows_affected())
    }

    async fn fetch(&mut self, sql: Sql, args: &[Arg<'_>], kinds: &[Kind]) -> Result<Vec<Cell>, LedgerError> {
        let q = bind(sqlx::query(sql.given(self.sqlite())?), args);
        let rows = q.fetch_all(&mut **self).await?;
        let mut out = Vec::with_capacity(rows.len() * kinds.len());
        for row in rows {
            for (i, kind) in kinds.iter().enumerate() {
                out.push(match kind {
                    Kind::Int => row.try_get::<Option<i64>, _>(i)?.map_or(Cell::Null, Cell::Int),
                    Kind::Text => row.try_get::<Option<String>, _>(i)?.map_or(Cell::Null, Cell::Text),
                });
            }
        }
        Ok(out)
    }
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

fn bind<'q>(mut q: AnyQuery<'q>, args: &[Arg<'_>]) -> AnyQuery<'q> {
    for a in args {
        q = match *a {
            Arg::Int(v) => q.bind(v),
            Arg::Text(v) => q.bind(v.to_owned()),
        };
    }
    q
}
