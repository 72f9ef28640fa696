//! A statement as each database binds it fastest. The ledger's SQL is written once, with
//! PostgreSQL's numbered parameters (`$1`, `$2`, …), which SQLite reads too. But SQLite resolves
//! a numbered parameter by its name, and sqlx asks the name of every one it binds; SQLite finds
//! a name by a scan of the statement's list of names, so binding a multi-row `INSERT` of 112
//! parameters was quadratic: 5 % of the gateway's CPU at saturation. Bare `?` parameters have
//! no names and are bound in order.

use sqlx::{AssertSqlSafe, SqlSafeStr, SqlStr};
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

/// `sql` with its `$1 … $n` as bare `?`, when each appears once and in order (as in every
/// multi-row `INSERT` of the ledger); `None` otherwise, or when it has no parameters.
pub fn anonymous_parameters(sql: &str) -> Option<String> {
    let mut out = String::with_capacity(sql.len());
    let mut next = 1u32;
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let digits = rest[at + 1..].bytes().take_while(u8::is_ascii_digit).count();
        let number: u32 = rest[at + 1..at + 1 + digits].parse().ok()?;
        if number != next {
            return None;
        }
        next += 1;
        out.push('?');
        rest = &rest[at + 1 + digits..];
    }
    out.push_str(rest);
    (next > 1).then_some(out)
}

/// `sql`, a one-row `INSERT … VALUES (…)` whose parameters are `$1 … $k` in order, for `rows`
/// rows: the row repeated, its parameters numbered on (`$k+1 …`), whatever follows the row
/// kept. `None` for any other statement.
pub fn with_rows(sql: &str, rows: usize) -> Option<String> {
    let at = sql.rfind("VALUES (")? + "VALUES ".len();
    let end = at + sql[at..].find(')')? + 1;
    let row = &sql[at..end];
    let k = anonymous_parameters(row)?.matches('?').count();
    // Parameters alone: no literal, no call whose parenthesis would end the row early.
    if rows == 0 || !row[1..row.len() - 1].chars().all(|c| c.is_ascii_digit() || matches!(c, '$' | ',' | ' ')) {
        return None;
    }
    let mut out = String::with_capacity(sql.len() + rows * (row.len() + 2 * k));
    out.push_str(&sql[..at]);
    for r in 0..rows {
        if r > 0 {
            out.push_str(", ");
        }
        let mut numbers = (r * k + 1)..;
        let mut rest = row;
        while let Some(p) = rest.find('$') {
            out.push_str(&rest[..p]);
            out.push('$');
            out.push_str(&numbers.next()?.to_string());
            rest = rest[p + 1..].trim_start_matches(|c: char| c.is_ascii_digit());
        }
        out.push_str(rest);
    }
    out.push_str(&sql[end..]);
    Some(out)
}

/// The form of each statement SQLite is given, made once per statement.
static BARE: LazyLock<Mutex<HashMap<&'static str, Arc<str>>>> = LazyLock::new(Mutex::default);

/// A one-row literal, a number of rows, and whether for SQLite.
type RowsKey = (&'static str, usize, bool);

/// Each statement of many rows, made once per statement, size and database.
static ROWS: LazyLock<Mutex<HashMap<RowsKey, Arc<str>>>> = LazyLock::new(Mutex::default);

/// `sql` (see [`with_rows`]) for `rows` rows, as given to SQLite (`sqlite`, with bare
/// parameters) or PostgreSQL. The statement check expands the literal given here to every size
/// [`super::PIECES`] makes and describes each on both databases. One it cannot expand is an
/// error, never the literal as written: SQLite would bind the first row's arguments and drop
/// the rest without a word.
pub(crate) fn rows_for_backend(sql: &'static str, rows: usize, sqlite: bool) -> Result<SqlStr, sqlx::Error> {
    let mut made = ROWS.lock().unwrap_or_else(PoisonError::into_inner);
    let converted = match made.get(&(sql, rows, sqlite)) {
        Some(c) => c.clone(),
        None => {
            let expanded = with_rows(sql, rows).ok_or_else(|| sqlx::Error::Protocol(format!("{sql} cannot be made into {rows} rows")))?;
            let expanded: Arc<str> = Arc::from(if sqlite { anonymous_parameters(&expanded).unwrap_or(expanded) } else { expanded });
            made.insert((sql, rows, sqlite), expanded.clone());
            expanded
        }
    };
    Ok(AssertSqlSafe(converted).into_sql_str())
}

/// `sql` as given to SQLite (`sqlite`) or PostgreSQL: on SQLite, with bare parameters where
/// [`anonymous_parameters`] allows (numbered ones work there too, only slower). The statement
/// check reads the literal given here, and checks that its bare form describes the same on SQLite.
pub(crate) fn for_backend(sql: &'static str, sqlite: bool) -> SqlStr {
    if !sqlite {
        return sql.into_sql_str();
    }
    let mut bare = BARE.lock().unwrap_or_else(PoisonError::into_inner);
    let converted = bare.entry(sql).or_insert_with(|| anonymous_parameters(sql).map_or_else(|| Arc::from(sql), Arc::from));
    AssertSqlSafe(converted.clone()).into_sql_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_parameters_in_order_become_bare_and_anything_else_stays_as_written() {
        assert_eq!(anonymous_parameters("VALUES ($1, $2), ($3, $4)").as_deref(), Some("VALUES (?, ?), (?, ?)"));
        assert_eq!(anonymous_parameters("IN ($9, $10, $11)"), None, "not from 1");
        assert_eq!(anonymous_parameters("SET a = $1 WHERE b = $1"), None, "used twice");
        assert_eq!(anonymous_parameters("VALUES ($2, $1)"), None, "out of order");
        assert_eq!(anonymous_parameters("SELECT 1"), None);
        assert_eq!(anonymous_parameters("SELECT $x"), None, "not a number");
        assert_eq!(for_backend("VALUES ($1)", false).as_str(), "VALUES ($1)");
        assert_eq!(for_backend("VALUES ($1)", true).as_str(), "VALUES (?)");
        assert_eq!(for_backend("SET a = $1 WHERE b = $1", true).as_str(), "SET a = $1 WHERE b = $1");
    }

    #[test]
    fn a_one_row_insert_becomes_many_rows_numbered_on() {
        let one = "INSERT INTO t (a, b) VALUES ($1, $2) ON CONFLICT DO NOTHING";
        assert_eq!(with_rows(one, 1).as_deref(), Some(one));
        assert_eq!(with_rows(one, 3).as_deref(), Some("INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4), ($5, $6) ON CONFLICT DO NOTHING"));
        let made = |sqlite| rows_for_backend("INSERT INTO t (a, b) VALUES ($1, $2)", 2, sqlite).map(|s| s.as_str().to_owned());
        assert_eq!(made(true).ok().as_deref(), Some("INSERT INTO t (a, b) VALUES (?, ?), (?, ?)"));
        assert_eq!(made(false).ok().as_deref(), Some("INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4)"));
        assert!(rows_for_backend("INSERT INTO t (a, b) VALUES ($1, now())", 2, true).is_err(), "never the one row as written");
        assert_eq!(with_rows("INSERT INTO t (a) VALUES ($2)", 2), None, "not numbered from 1");
        assert_eq!(with_rows("INSERT INTO t (a, b) VALUES ($1, 'x')", 2), None, "a literal in the row");
        assert_eq!(with_rows("INSERT INTO t (a, b) VALUES ($1, now())", 2), None, "a call in the row");
        assert_eq!(with_rows("UPDATE t SET a = $1", 2), None);
        assert_eq!(with_rows("INSERT INTO t (a) VALUES ($1)", 0), None);
    }
}
