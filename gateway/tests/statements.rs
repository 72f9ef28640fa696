//! Every SQL statement of the gateway, checked against both databases it runs on.
//!
//! The ledger runs the same SQL on SQLite and PostgreSQL through sqlx's Any driver, whose
//! statements cannot be checked at compile time (`query!` needs one concrete database), so there
//! is no `.sqlx` offline data to keep. What it would protect against, a statement that no longer
//! fits the schema, is checked here instead, and against both databases: each statement in the
//! gateway's source is prepared (described) on a freshly migrated SQLite and PostgreSQL, and what
//! each database says of it (parameters, columns, their types) is kept in `statements.json`,
//! committed, like the CRDs. A statement or migration changed without regenerating it fails
//! here; `TOLLGATE_BLESS=1 cargo test -p tollgate-gateway --test statements` regenerates it.

#![allow(clippy::unwrap_used)]

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use sqlx::{AnyPool, AssertSqlSafe, Column, Executor, SqlSafeStr, Statement, TypeInfo};
use std::path::Path;

/// How a statement's literal reaches the database.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Given {
    AsWritten,
    /// Through `for_backend`: to SQLite with bare parameters.
    Bare,
    /// Through `rows_for_backend`: a one-row insert, given with as many rows as a piece holds.
    Rows,
}

/// The string literals passed to `sqlx::query`, `query_as` and `query_scalar` in `source`, outside
/// its tests, as the compiler reads them (line continuations and escapes resolved); each with how
/// it is given to the database.
fn statements_in(source: &str) -> Result<Vec<(String, Given)>> {
    let code = source.split("#[cfg(test)]").next().unwrap_or_default();
    let mut found = Vec::new();
    let wrappers = [
        ("for_backend(", Given::Bare),
        ("crate::ledger::sql::for_backend(", Given::Bare),
        ("sql::rows_for_backend(", Given::Rows),
        ("crate::ledger::sql::rows_for_backend(", Given::Rows),
    ];
    for start in ["sqlx::query(", "sqlx::query_as(", "sqlx::query_scalar("] {
        let mut rest = code;
        while let Some(at) = rest.find(start) {
            rest = rest[at + start.len()..].trim_start();
            let (given, after_wrapper) = wrappers.iter().find_map(|(w, given)| rest.strip_prefix(w).map(|r| (*given, r))).unwrap_or((Given::AsWritten, rest));
            rest = after_wrapper.trim_start();
            let Some(literal) = rest.strip_prefix('"') else { bail!("a statement that is not a string literal: {}", &rest[..rest.len().min(60)]) };
            let (sql, after) = unescape(literal)?;
            found.push((sql, given));
            rest = after;
        }
    }
    // One written another way (a turbofish, a statement in a variable) would go unchecked.
    let calls = code.matches("sqlx::query").count();
    ensure!(calls == found.len(), "{calls} sqlx::query calls but {} statements read: write each as a literal argument", found.len());
    // The ledger's writes, said once for both backends (`ledger/db.rs`).
    for (start, given) in [("Sql::written(", Given::AsWritten), ("Sql::bare(", Given::Bare), ("Sql::rows(", Given::Rows)] {
        let mut rest = code;
        while let Some(at) = rest.find(start) {
            rest = rest[at + start.len()..].trim_start();
            let Some(literal) = rest.strip_prefix('"') else { bail!("a statement that is not a string literal: {}", &rest[..rest.len().min(60)]) };
            let (sql, after) = unescape(literal)?;
            found.push((sql, given));
            rest = after;
        }
    }
    Ok(found)
}

/// The literal's value, and what follows its closing quote.
fn unescape(literal: &str) -> Result<(String, &str)> {
    let mut out = String::new();
    let mut chars = literal.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, &literal[i + 1..])),
            '\\' => match chars.next() {
                Some((_, '\n')) => {
                    // A continuation: the newline and the next line's leading whitespace go.
                    let rest = &literal[i + 2..];
                    let skip = rest.len() - rest.trim_start().len();
                    for _ in 0..rest[..skip].chars().count() {
                        chars.next();
                    }
                }
                Some((_, '"')) => out.push('"'),
                Some((_, '\\')) => out.push('\\'),
                Some((_, 'n')) => out.push('\n'),
                other => bail!("an escape this check does not read: \\{other:?}"),
            },
            c => out.push(c),
        }
    }
    bail!("an unterminated string literal")
}

/// What `pool`'s database says of `sql` once prepared: its parameters and columns, with their
/// types (a type the Any driver cannot carry fails here, as it would on the first call).
async fn describe(pool: &AnyPool, sql: &str) -> Result<Value> {
    let statement = pool.prepare(AssertSqlSafe(sql.to_owned()).into_sql_str()).await.with_context(|| format!("preparing {sql}"))?;
    let parameters = match statement.parameters() {
        Some(sqlx::Either::Left(types)) => json!(types.iter().map(TypeInfo::name).collect::<Vec<_>>()),
        Some(sqlx::Either::Right(n)) => json!(n),
        None => Value::Null,
    };
    let columns: Vec<Value> = statement.columns().iter().map(|c| json!({"name": c.name(), "type": c.type_info().name()})).collect();
    Ok(json!({"parameters": parameters, "columns": columns}))
}

/// Every `.rs` file under `dir`, its subdirectories' included, but tests of their own.
fn rust_files(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(rust_files(&path)?);
        } else if path.extension().is_some_and(|e| e == "rs") && !path.to_string_lossy().ends_with("_tests.rs") {
            out.push(path);
        }
    }
    Ok(out)
}

/// What `pool` (`name`) is given in place of `sql` describes as `sql` (`one`) does: with bare
/// parameters on SQLite the same; as a piece of rows, the row's parameters once a row.
async fn given_as_described(pool: &AnyPool, name: &str, sql: &str, given: Given, one: &Value) -> Result<()> {
    use tollgate_gateway::ledger::{PIECES, sql as forms};
    let bare =
        |s: &str| if name == "sqlite" { forms::anonymous_parameters(s).with_context(|| format!("no bare parameters for {s}")) } else { Ok(s.to_owned()) };
    if given == Given::Bare {
        let converted = bare(sql)?;
        ensure!(describe(pool, &converted).await? == *one, "{converted} describes otherwise than {sql}");
        return Ok(());
    }
    for rows in PIECES {
        let expanded = bare(&forms::with_rows(sql, rows).with_context(|| format!("{sql} cannot be given as {rows} rows"))?)?;
        let described = describe(pool, &expanded).await?;
        let parameters = match &one["parameters"] {
            Value::Array(types) => json!(types.iter().cycle().take(types.len() * rows).collect::<Vec<_>>()),
            n => json!(n.as_u64().unwrap_or_default() * rows as u64),
        };
        ensure!(described == json!({"parameters": parameters, "columns": one["columns"]}), "{rows} rows of {sql} describe as {described}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_statement_prepares_on_sqlite_and_postgresql_as_recorded() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut statements = Vec::new();
    let src = root.join("src");
    let mut files = rust_files(&src)?;
    files.sort();
    for file in files {
        let name = file.strip_prefix(&src)?.to_string_lossy().into_owned();
        // Runs the `Sql` statements the other files give it, read there.
        if name == "ledger/db.rs" {
            continue;
        }
        for (sql, given) in statements_in(&std::fs::read_to_string(&file)?)? {
            statements.push((name.clone(), sql, given));
        }
    }
    ensure!(statements.len() >= 20, "only {} statements found: the scan no longer reads the source", statements.len());

    let dir = tempfile::tempdir()?;
    let pg = tollgate_e2e::postgres::Postgres::start(dir.path())?;
    let sqlite_url = format!("sqlite://{}?mode=rwc", dir.path().join("ledger.db").display());
    let mut databases = Vec::new();
    for (name, url) in [("sqlite", sqlite_url), ("postgres", pg.url())] {
        // Connecting migrates: every migration applies on both.
        tollgate_gateway::ledger::Ledger::connect(&url).await.with_context(|| format!("migrating {name}"))?;
        databases.push((name, sqlx::any::AnyPoolOptions::new().max_connections(1).connect(&url).await?));
    }
    let mut recorded = Vec::new();
    for (file, sql, given) in &statements {
        let mut entry = json!({"file": file, "sql": sql});
        for (name, pool) in &databases {
            // A PRAGMA tunes SQLite's file, and is sent to SQLite only.
            if *name == "postgres" && sql.starts_with("PRAGMA") {
                continue;
            }
            entry[*name] = describe(pool, sql).await.with_context(|| format!("{file}: on {name}"))?;
            // What the database is given in the literal's place must be the same statement to it.
            if *given != Given::AsWritten {
                given_as_described(pool, name, sql, *given, &entry[*name]).await.with_context(|| format!("{file}: on {name}"))?;
            }
        }
        recorded.push(entry);
    }
    let fresh = serde_json::to_string_pretty(&recorded)? + "\n";
    let path = root.join("statements.json");
    if std::env::var_os("TOLLGATE_BLESS").is_some() {
        // Under CI the file is checked, never rewritten: a blessed run could not fail.
        ensure!(std::env::var("CI").as_deref() != Ok("true"), "TOLLGATE_BLESS is refused under CI=true: regenerate statements.json locally and commit it");
        std::fs::write(&path, &fresh)?;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == fresh,
        "{} is stale: a statement or a migration changed. Regenerate it with `TOLLGATE_BLESS=1 cargo test -p tollgate-gateway --test statements` and review the difference.",
        path.display()
    );
    Ok(())
}

#[test]
fn the_scan_reads_literals_as_the_compiler_does() {
    let src = "let a = sqlx::query(\"SELECT 1 \\\n     FROM t WHERE x = '\\\"'\").bind(1);\nlet b: Vec<(i64,)> = sqlx::query_as(\n  \"SELECT y FROM u\").fetch_all(p);\n#[cfg(test)]\nsqlx::query(\"not this\")";
    assert_eq!(
        statements_in(src).unwrap(),
        vec![("SELECT 1 FROM t WHERE x = '\"'".to_owned(), Given::AsWritten), ("SELECT y FROM u".to_owned(), Given::AsWritten)]
    );
    let wrapped =
        "sqlx::query(for_backend(\n  \"INSERT INTO t VALUES ($1)\", sqlite)); sqlx::query(sql::rows_for_backend(\"INSERT INTO u VALUES ($1)\", 4, sqlite))";
    assert_eq!(
        statements_in(wrapped).unwrap(),
        vec![("INSERT INTO t VALUES ($1)".to_owned(), Given::Bare), ("INSERT INTO u VALUES ($1)".to_owned(), Given::Rows)]
    );
    assert!(statements_in("sqlx::query(&sql)").is_err(), "a statement built at run time is not checked, so it is refused");
    let said_once = "db.execute(Sql::written(\"DELETE FROM t\"), &[]); let s = Sql::rows(\n \"INSERT INTO u VALUES ($1)\", n); Sql::bare(\"SELECT $1\")";
    assert_eq!(
        statements_in(said_once).unwrap(),
        vec![("DELETE FROM t".to_owned(), Given::AsWritten), ("SELECT $1".to_owned(), Given::Bare), ("INSERT INTO u VALUES ($1)".to_owned(), Given::Rows)]
    );
    assert!(statements_in("Sql::written(text)").is_err(), "nor one of the ledger's writes");
}
