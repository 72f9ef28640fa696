//! SQLite's writer: one connection, on a thread of its own, that runs every write transaction
//! of a SQLite ledger. sqlx runs each statement as a hand-off to its connection's thread and
//! back (a channel, a futex wake, two context switches), and its Any driver copies every bound
//! text twice; a settled batch of 80 calls was a dozen hand-offs and every row's texts copied,
//! about a quarter of the gateway's CPU at saturation spent around SQLite rather than in it.
//! Here a whole transaction is one hand-off, and its statements bind borrowed values (SQLite
//! copies each text once) to prepared statements kept between batches. One writer connection
//! also means the ledger's writes never wait on each other for SQLite's lock (only a restart
//! checkpoint holds the writer back, briefly: ledger.rs); reads stay on sqlx's connection (the
//! write-ahead log never makes a reader wait for the writer). PostgreSQL keeps sqlx.

use super::db::{Arg, Cell, Db, Kind, Sql};
use super::types::LedgerError;
use rusqlite::{Connection, OpenFlags, Statement, TransactionBehavior};
use std::panic::AssertUnwindSafe;
use std::path::Path;
use tokio::sync::{mpsc, oneshot};

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// Sends transactions to the writer's thread; the thread ends when the last one is dropped.
#[derive(Clone, Debug)]
pub(crate) struct Writer {
    jobs: mpsc::Sender<Job>,
}

/// Transactions waiting for the writer; past them, a caller waits for a place (a sidecar
/// shipping audit batches faster than they are written is held back, not queued without end).
const QUEUE: usize = 64;

/// Statements kept prepared: each size of each multi-row statement, and the rest.
const PREPARED: usize = 128;

impl Writer {
    /// Opens the database at `path` (created and migrated already) and starts the thread.
    pub(crate) fn open(path: &Path) -> Result<Writer, LedgerError> {
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
        // As sqlx's connection is set up (ledger.rs): a log synced at checkpoints, which are the
        // checkpointer's, and a statement's own journal in memory.
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 0; \
             PRAGMA temp_store = MEMORY; PRAGMA journal_size_limit = 33554432;",
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.set_prepared_statement_cache_capacity(PREPARED);
        let (jobs, mut queue) = mpsc::channel::<Job>(QUEUE);
        let (lowered, started) = std::sync::mpsc::sync_channel::<()>(1);
        std::thread::Builder::new()
            .name(super::priority::WRITER_NAME.into())
            .spawn(move || {
                super::priority::lower_this_thread();
                let _ = lowered.send(());
                let mut conn = conn;
                while let Some(job) = queue.blocking_recv() {
                    job(&mut conn);
                }
            })
            .map_err(|e| LedgerError::Unavailable(format!("could not start the ledger's writer: {e}")))?;
        // Open means running below the calls: the thread has lowered itself before it is handed
        // a job (a moment, once; it fails only if the thread died first).
        started.recv().map_err(|_| LedgerError::Unavailable("the ledger's writer stopped as it started".into()))?;
        Ok(Writer { jobs })
    }

    /// Runs `f` in one immediate transaction on the writer's thread, committed when it returns
    /// `Ok`; what it needs is moved there, and its answer comes back.
    pub(crate) async fn transaction<T, F>(&self, f: F) -> Result<T, LedgerError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Lite<'_>) -> Result<T, LedgerError> + Send + 'static,
    {
        let (done, answer) = oneshot::channel();
        let job: Job = Box::new(move |conn| run(conn, f, done));
        let stopped = || LedgerError::Unavailable("the ledger's writer has stopped".into());
        self.jobs.send(job).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// Runs one job and answers it. A caller that went away while it waited is not run for: its
/// transaction would have rolled back on sqlx as its future was dropped (every write the ledger
/// makes is one its caller would make again: an audit batch is stored once by its id). A job
/// that panics rolls back as it unwinds and is answered [`LedgerError::Failed`]; the next runs.
fn run<T>(conn: &mut Connection, f: impl FnOnce(&mut Lite<'_>) -> Result<T, LedgerError>, done: oneshot::Sender<Result<T, LedgerError>>) {
    if done.is_closed() {
        return;
    }
    let out = std::panic::catch_unwind(AssertUnwindSafe(|| in_transaction(conn, f)))
        .unwrap_or_else(|_| Err(LedgerError::Failed("the ledger's writer panicked in a transaction; it was rolled back".into())));
    let _ = done.send(out);
}

fn in_transaction<T>(conn: &mut Connection, f: impl FnOnce(&mut Lite<'_>) -> Result<T, LedgerError>) -> Result<T, LedgerError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let out = f(&mut Lite(&tx))?;
    tx.commit()?;
    Ok(out)
}

/// A transaction on the writer's connection.
pub(crate) struct Lite<'c>(&'c Connection);

impl Lite<'_> {
    /// `sql`, prepared once and kept, with `args` bound.
    fn prepared(&self, sql: Sql, args: &[Arg<'_>]) -> Result<rusqlite::CachedStatement<'_>, LedgerError> {
        let mut statement = self.0.prepare_cached(sql.given(true)?.as_str())?;
        bind(&mut statement, args)?;
        Ok(statement)
    }
}

impl Db for Lite<'_> {
    fn sqlite(&self) -> bool {
        true
    }

    async fn execute(&mut self, sql: Sql, args: &[Arg<'_>]) -> Result<u64, LedgerError> {
        Ok(u64::try_from(self.prepared(sql, args)?.raw_execute()?).unwrap_or(u64::MAX))
    }

    async fn fetch(&mut self, sql: Sql, args: &[Arg<'_>], kinds: &[Kind]) -> Result<Vec<Cell>, LedgerError> {
        let mut statement = self.prepared(sql, args)?;
        let mut rows = statement.raw_query();
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            for (i, kind) in kinds.iter().enumerate() {
                out.push(match kind {
                    Kind::Int => row.get::<_, Option<i64>>(i)?.map_or(Cell::Null, Cell::Int),
                    Kind::Text => row.get::<_, Option<String>>(i)?.map_or(Cell::Null, Cell::Text),
                });
            }
        }
        Ok(out)
    }
}

/// Binds every parameter of `statement`: a bare `?` takes the next argument, a numbered `$n`
/// the `n`th (SQLite numbers named parameters by where each first appears, not by their names).
fn bind(statement: &mut Statement<'_>, args: &[Arg<'_>]) -> Result<(), LedgerError> {
    let count = statement.parameter_count();
    for k in 1..=count {
        let n = match statement.parameter_name(k) {
            None => k,
            Some(name) => name.strip_prefix('$').and_then(|n| n.parse().ok()).unwrap_or(0),
        };
        match n.checked_sub(1).and_then(|i| args.get(i)) {
            Some(Arg::Int(v)) => statement.raw_bind_parameter(k, v)?,
            Some(Arg::Text(v)) => statement.raw_bind_parameter(k, v)?,
            None => return Err(rusqlite::Error::InvalidParameterCount(args.len(), count).into()),
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A writer on a new database holding one table made by `table`.
    fn writer_on(table: &str) -> (Writer, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        Connection::open(&path).unwrap().execute_batch(table).unwrap();
        (Writer::open(&path).unwrap(), dir)
    }

    #[tokio::test]
    async fn numbered_parameters_bind_by_number_and_bare_ones_in_order() {
        let (w, _dir) = writer_on("CREATE TABLE t (a INTEGER, b TEXT, c INTEGER)");
        let rows = w
            .transaction(|db| {
                futures::executor::block_on(async {
                    db.execute(Sql::written("INSERT INTO t (c, b, a) VALUES ($3, $2, $1)"), &[Arg::Int(1), Arg::Text("x"), Arg::Int(3)]).await?;
                    db.execute(Sql::bare("INSERT INTO t (a, b, c) VALUES ($1, $2, $3)"), &[Arg::Int(4), Arg::Text("y"), Arg::Int(6)]).await?;
                    db.fetch(Sql::written("SELECT a, b, c FROM t ORDER BY a"), &[], &[Kind::Int, Kind::Text, Kind::Int]).await
                })
            })
            .await
            .unwrap();
        assert_eq!(rows, [Cell::Int(1), Cell::Text("x".into()), Cell::Int(3), Cell::Int(4), Cell::Text("y".into()), Cell::Int(6)]);
        let short = w.transaction(|db| futures::executor::block_on(db.execute(Sql::written("INSERT INTO t (a) VALUES ($1)"), &[]))).await;
        assert!(short.is_err(), "a statement short of arguments is refused, never bound with what was left over");
    }

    /// A caller gone before its transaction ran (a sidecar that hung up while its audit batch
    /// waited) is not run for, as sqlx rolled back a transaction whose future was dropped.
    #[tokio::test]
    async fn a_transaction_whose_caller_went_away_before_it_ran_is_not_run() {
        let (w, _dir) = writer_on("CREATE TABLE t (a INTEGER NOT NULL)");
        let (release, hold) = std::sync::mpsc::channel::<()>();
        // Polled once, so queued first; it holds the writer until released.
        let mut first = Box::pin(w.transaction(move |_| hold.recv().map_err(|e| LedgerError::Failed(e.to_string()))));
        assert!(futures::poll!(first.as_mut()).is_pending());
        let insert = Sql::written("INSERT INTO t (a) VALUES ($1)");
        let gone = w.transaction(move |db| futures::executor::block_on(db.execute(insert, &[Arg::Int(7)])));
        // Polled once: queued behind the first, then dropped unanswered.
        assert!(futures::FutureExt::now_or_never(gone).is_none());
        release.send(()).unwrap();
        first.await.unwrap();
        let count = w.transaction(|db| futures::executor::block_on(db.ints(Sql::written("SELECT COUNT(*) FROM t"), &[], 1))).await.unwrap();
        assert_eq!(count, [0]);
        let kept = w.transaction(move |db| futures::executor::block_on(db.execute(insert, &[Arg::Int(8)]))).await.unwrap();
        assert_eq!(kept, 1, "a caller that waits is answered");
    }

    #[tokio::test]
    async fn a_failed_transaction_leaves_nothing_and_the_writer_goes_on() {
        let (w, _dir) = writer_on("CREATE TABLE t (a INTEGER NOT NULL)");
        let insert = Sql::written("INSERT INTO t (a) VALUES ($1)");
        let failed = w
            .transaction(move |db| {
                futures::executor::block_on(async {
                    db.execute(insert, &[Arg::Int(1)]).await?;
                    db.execute(Sql::written("INSERT INTO t (a) VALUES (NULL)"), &[]).await
                })
            })
            .await;
        assert!(failed.is_err());
        let panicked = w.transaction::<(), _>(move |db| {
            futures::executor::block_on(db.execute(insert, &[Arg::Int(2)])).unwrap();
            panic!("a job that panics")
        });
        assert!(matches!(panicked.await, Err(LedgerError::Failed(_))), "a panic is an answer of its own, not a writer gone");
        let count = w.transaction(|db| futures::executor::block_on(db.ints(Sql::written("SELECT COUNT(*) FROM t"), &[], 1))).await.unwrap();
        assert_eq!(count, [0], "neither transaction left a row");
    }
}
