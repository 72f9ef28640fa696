//! The ledger and budgets, in SQLite (one replica, a file) or PostgreSQL (several replicas), with
//! the same SQL: reads through sqlx's Any driver, writes through [`db::Db`], on sqlx's
//! transaction for PostgreSQL and on the writer's own connection for SQLite (`writer.rs`). Calls reserve their estimated cost against every budget
//! that applies to them in groups (`reserver.rs`): one transaction locks each budget period the
//! group touches (in a fixed order, so two replicas never deadlock) and the calls are taken in
//! order in memory (`ledger/group.rs`): a budget already at its hard limit takes no more, so
//! concurrent calls, on any replica, can take spend past the limit by at most one call's
//! estimate. The answer settles the reservation to the actual cost; an error releases it.

pub mod allowance;
pub(crate) mod db;
mod group;
mod lease_sweep;
pub(crate) mod leases;
mod priority;
mod reserve;
pub mod sql;
mod types;
mod writer;
mod writes;
use db::{Arg, Db, Sql};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, SqlSafeStr};
use tollgate_core::model::spend::Micros;
pub use types::{Claim, Exhaustion, Granted, INTERRUPTED, InFlight, LeaseAsk, LedgerError, Period, Reservation, Row, Unit, unregistered};
pub use writes::PIECES;
pub(crate) use writes::{add_all_in, open_all_in, pieces, record_in, settle_all_in};

#[derive(Clone)]
pub struct Ledger {
    /// Reads; and on PostgreSQL, writes.
    pub(crate) pool: AnyPool,
    /// SQLite only: the connection that checkpoints its write-ahead log.
    checkpointer: Option<AnyPool>,
    /// SQLite only: the connection every write transaction runs on, on its own thread.
    pub(crate) writer: Option<writer::Writer>,
}

/// `$body`, an async expression over `$db` (a `&mut impl Db`), run in one transaction of
/// `$ledger`'s, committed when it is `Ok`: on SQLite, on the writer's thread (what the body
/// uses is moved there); on PostgreSQL, on the pool. A future of the body's `Result`.
macro_rules! transaction {
    ($ledger:expr, |$db:ident| $body:expr) => {
        async move {
            match &$ledger.writer {
                // Every statement of the writer's completes at once: a body that awaits anything
                // else is a fault here, refused, never a writer thread blocked for good.
                Some(writer) => {
                    writer
                        .transaction(move |$db| {
                            futures::FutureExt::now_or_never($body).unwrap_or_else(|| {
                                Err($crate::ledger::LedgerError::Failed("a ledger transaction waited on something besides the writer".into()))
                            })
                        })
                        .await
                }
                None => {
                    let mut tx = $ledger.pool.begin().await?;
                    let $db = &mut tx;
                    let out = $body.await?;
                    tx.commit().await?;
                    Ok::<_, $crate::ledger::LedgerError>(out)
                }
            }
        }
    };
}
pub(crate) use transaction;

/// Often enough that the log stays small (every call appends a few pages to it).
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// The log's length, in pages, past which a checkpoint makes it start over (SQLite's own
/// automatic checkpoint uses 1,000): about 4 MiB.
const RESTART_AFTER_FRAMES: i64 = 1_000;

fn migrator(sqlite: bool) -> Migrator {
    Migrator::with_migrations(migrations(sqlite))
}

/// The schema's migrations; SQLite has one PostgreSQL does not need.
fn migrations(sqlite: bool) -> Vec<Migration> {
    let m = |version, name: &str, sql: &'static str| Migration::new(version, name.to_owned().into(), MigrationType::Simple, sql.into_sql_str(), false);
    let mut all = vec![
        m(1, "ledger", include_str!("../migrations/0001_ledger.sql")),
        m(2, "audit", include_str!("../migrations/0002_audit.sql")),
        m(3, "inflight", include_str!("../migrations/0003_inflight.sql")),
        m(4, "slack_seen", include_str!("../migrations/0004_slack_seen.sql")),
        m(5, "audit_gaps", include_str!("../migrations/0005_audit_gaps.sql")),
        m(6, "audit_shadow", include_str!("../migrations/0006_audit_shadow.sql")),
        m(7, "leases", include_str!("../migrations/0007_leases.sql")),
        m(8, "ledger_head", include_str!("../migrations/0008_ledger_head.sql")),
    ];
    if sqlite {
        // SQLite's own: a key declared `BIGINT` there is an index beside a hidden row id.
        all.push(m(9, "rowid_keys", include_str!("../migrations/0009_rowid_keys.sqlite.sql")));
    }
    all
}

/// The file a `sqlite:` URL names, for the writer's own connection to it (sqlx has opened,
/// created and migrated it by then). An in-memory database is one per connection: refused.
fn sqlite_file(url: &str) -> Result<std::path::PathBuf, LedgerError> {
    let options: sqlx::sqlite::SqliteConnectOptions = url.parse()?;
    let file = options.get_filename();
    if url.contains(":memory:") || file.as_os_str().is_empty() || file.to_string_lossy().starts_with("file:sqlx-in-memory") {
        return Err(LedgerError::Unavailable("a SQLite ledger must be a file: an in-memory database is one per connection".into()));
    }
    Ok(file.to_path_buf())
}

/// One checkpoint. The log starts over from its beginning only when a write begins after every
/// page in it was copied; a passive checkpoint leaves the writer be, so under calls that never
/// pause the writer has always added pages by the time it ends, and the log grew without end
/// (hundreds of MiB a minute, each new page of the file zeroed by the kernel first). So once the
/// log is long, a restart checkpoint follows: it waits for the writer's transaction in flight,
/// copies the few pages written since the passive one, and holds the next write back until it
/// is done, which then starts the log over in the file's pages already allocated.
async fn checkpoint(pool: &AnyPool) -> Result<(), sqlx::Error> {
    let log_frames = passive_checkpoint(pool).await?;
    restart_if_long(pool, log_frames).await
}

/// Copies what it can; the log's length in pages.
async fn passive_checkpoint(pool: &AnyPool) -> Result<i64, sqlx::Error> {
    let (_, log_frames, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)").fetch_one(pool).await?;
    Ok(log_frames)
}

async fn restart_if_long(pool: &AnyPool, log_frames: i64) -> Result<(), sqlx::Error> {
    if log_frames > RESTART_AFTER_FRAMES {
        sqlx::query("PRAGMA wal_checkpoint(RESTART)").execute(pool).await?;
    }
    Ok(())
}

impl Ledger {
    /// Connects (`sqlite://path?mode=rwc` or `postgres://…`) and brings the schema up to date.
    pub async fn connect(url: &str) -> Result<Ledger, LedgerError> {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite");
        let mut options = sqlx::any::AnyPoolOptions::new().max_connections(if sqlite { 1 } else { 8 });
        if sqlite {
            // A write-ahead log, synced at checkpoints: a commit costs no fsync of its own. Set on
            // every connection, so a connection the pool opens again later has it too.
            options = options.after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::query("PRAGMA journal_mode = WAL").execute(&mut *conn).await?;
                    sqlx::query("PRAGMA synchronous = NORMAL").execute(&mut *conn).await?;
                    // Checkpoints (and their fsyncs) are the checkpointer's, on its own
                    // connection: a commit that crossed the log's threshold would pay for one.
                    sqlx::query("PRAGMA wal_autocheckpoint = 0").execute(&mut *conn).await?;
                    // A multi-row statement in a transaction keeps a journal of its own (to undo
                    // just it); in a temporary file, that was a write call per page it touched.
                    sqlx::query("PRAGMA temp_store = MEMORY").execute(&mut *conn).await?;
                    // What the log file is cut back to when it starts over, should a burst have grown it.
                    sqlx::query("PRAGMA journal_size_limit = 33554432").execute(&mut *conn).await?;
                    priority::lower_sqlite_threads();
                    Ok(())
                })
            });
        }
        let pool = options.connect(url).await?;
        let checkpointer = if sqlite {
            let checkpointer = sqlx::any::AnyPoolOptions::new().max_connections(1).after_connect(|conn, _| {
                Box::pin(async move {
                    // A restart checkpoint holds the writer back while it waits for readers (a
                    // long audit export): it waits a moment, not sqlx's five seconds, and is
                    // tried again at the next tick.
                    sqlx::query("PRAGMA busy_timeout = 100").execute(&mut *conn).await?;
                    priority::lower_sqlite_threads();
                    Ok(())
                })
            });
            Some(checkpointer.connect(url).await?)
        } else {
            None
        };
        migrator(sqlite).run(&pool).await?;
        // The chain's start, once.
        sqlx::query("INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, $1) ON CONFLICT DO NOTHING")
            .bind(tollgate_core::audit::chain::GENESIS)
            .execute(&pool)
            .await?;
        let writer = if sqlite { Some(writer::Writer::open(&sqlite_file(url)?)?) } else { None };
        Ok(Ledger { pool, checkpointer, writer })
    }

    /// Copies SQLite's write-ahead log into the database file now and then, off the calls' path
    /// (a passive checkpoint never waits for the writer, nor makes it wait). Nothing to do on
    /// PostgreSQL.
    pub async fn checkpoints(&self) {
        let Some(pool) = &self.checkpointer else { return std::future::pending().await };
        loop {
            tokio::time::sleep(CHECKPOINT_EVERY).await;
            match checkpoint(pool).await {
                Ok(()) => {}
                Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("5") => {
                    tracing::debug!(error = %e, "the ledger's write-ahead log was in use: checkpointed at the next tick");
                }
                Err(e) => tracing::warn!(error = %e, "could not checkpoint the ledger's write-ahead log"),
            }
        }
    }

    /// Takes `call.amount` from every budget of `claims`, or from none: the first budget already
    /// at its hard limit refuses the call. With budgets, the call's `inflight` row is written in
    /// the same transaction.
    pub async fn reserve(&self, claims: Vec<Claim>, call: &InFlight) -> Result<Reservation, LedgerError> {
        let mut answers = self.reserve_many(vec![(claims, call.clone())]).await?;
        answers.pop().unwrap_or_else(|| Err(LedgerError::Unavailable("no answer for the reservation".into())))
    }

    /// [`Ledger::reserve`] for many calls in one transaction (a group commit: what queued while
    /// the last group was written goes together). Each call is taken whole or refused on its
    /// own; an error of the transaction refuses them all.
    pub async fn reserve_many(&self, requests: Vec<(Vec<Claim>, InFlight)>) -> Result<Vec<Result<Reservation, LedgerError>>, LedgerError> {
        Ok(self.reserve_and_lease(requests, &[], "").await?.0)
    }

    /// [`Ledger::reserve_many`], and allowances leased to `instance` in the same transaction:
    /// each asked for is granted while its period is far enough from its limit
    /// (`allowance::lease_size`), after the group's calls are taken. Every budget the group
    /// touches is locked first, in one order, so two replicas' groups never deadlock.
    pub async fn reserve_and_lease(
        &self,
        requests: Vec<(Vec<Claim>, InFlight)>,
        leases: &[LeaseAsk],
        instance: &str,
    ) -> Result<(Vec<Result<Reservation, LedgerError>>, Vec<Granted>), LedgerError> {
        let requests: Vec<(Vec<Claim>, InFlight)> = requests.into_iter().map(|(claims, call)| (sorted(claims), call)).collect();
        let (leases, instance) = (leases.to_vec(), instance.to_owned());
        transaction!(self, |db| reserve::reserve_in(db, &requests, &leases, &instance)).await
    }

    /// Rate limits' windows that ended before `before_us` (the current one is all they need).
    pub async fn forget_rate_windows(&self, before_us: i64) -> Result<(), LedgerError> {
        let sql = Sql::written("DELETE FROM budget_spend WHERE budget LIKE 'rate:%' AND period_start_us < $1");
        transaction!(self, |db| db.execute(sql, &[Arg::Int(before_us)])).await?;
        Ok(())
    }

    /// What a budget has taken in a period (reservations in flight included).
    pub async fn spent(&self, budget: &str, period_start_us: i64) -> Result<Micros, LedgerError> {
        let spent: Option<i64> = sqlx::query_scalar("SELECT spent_micros FROM budget_spend WHERE budget = $1 AND period_start_us = $2")
            .bind(budget)
            .bind(period_start_us)
            .fetch_optional(&self.pool)
            .await?;
        Ok(spent.unwrap_or(0))
    }

    /// Whether this ledger has counted the budget (`namespace/name`) in the period from
    /// `period_start_us`. A gateway whose ledger has not writes nothing over another's figure
    /// for that period.
    pub async fn knows_period(&self, budget: &str, period_start_us: i64) -> Result<bool, LedgerError> {
        let row: Option<i32> = sqlx::query_scalar("SELECT 1 FROM budget_spend WHERE budget = $1 AND period_start_us = $2 LIMIT 1")
            .bind(budget)
            .bind(period_start_us)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// Whether this ledger holds a call of the agent.
    pub async fn knows_agent(&self, namespace: &str, agent: &str) -> Result<bool, LedgerError> {
        let row: Option<i32> = sqlx::query_scalar("SELECT 1 FROM ledger WHERE namespace = $1 AND agent = $2 LIMIT 1")
            .bind(namespace)
            .bind(agent)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// What an agent's calls cost since a time.
    pub async fn agent_spend(&self, namespace: &str, agent: &str, since_us: i64) -> Result<Micros, LedgerError> {
        let sum: Option<i64> = sqlx::query_scalar("SELECT CAST(SUM(cost_micros) AS BIGINT) FROM ledger WHERE namespace = $1 AND agent = $2 AND time_us >= $3")
            .bind(namespace)
            .bind(agent)
            .bind(since_us)
            .fetch_one(&self.pool)
            .await?;
        Ok(sum.unwrap_or(0))
    }

    /// Ledger rows of an agent, newest first (for tests and `kubectl`-side tooling).
    pub async fn calls(&self, namespace: &str, agent: &str) -> Result<Vec<(String, i64, i64, i64, i64)>, LedgerError> {
        let rows: Vec<(String, i64, i64, i64, i64)> = sqlx::query_as(
            "SELECT model, input_tokens, output_tokens, cost_micros, status FROM ledger WHERE namespace = $1 AND agent = $2 ORDER BY time_us DESC",
        )
        .bind(namespace)
        .bind(agent)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }
}

impl Ledger {
    /// Whether a Slack request with `signature` is seen here for the first time (and remembers
    /// it); requests older than `keep_us` are forgotten.
    pub async fn first_sighting(&self, signature: &str, now_us: i64, keep_us: i64) -> Result<bool, LedgerError> {
        let signature = signature.to_owned();
        let inserted = transaction!(self, |db| async {
            db.execute(Sql::written("DELETE FROM slack_seen WHERE seen_us < $1"), &[Arg::Int(now_us.saturating_sub(keep_us))]).await?;
            let sql = Sql::written("INSERT INTO slack_seen (signature, seen_us) VALUES ($1, $2) ON CONFLICT DO NOTHING");
            db.execute(sql, &[Arg::Text(&signature), Arg::Int(now_us)]).await
        })
        .await?;
        Ok(inserted == 1)
    }
}

fn sorted(mut claims: Vec<Claim>) -> Vec<Claim> {
    claims.sort_by(|a, b| (&a.budget, a.period_start_us).cmp(&(&b.budget, b.period_start_us)));
    claims.dedup();
    claims
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::writes::{pieces, settlement_deltas};
    use super::*;
    use std::collections::HashSet;

    pub(crate) async fn ledger() -> (Ledger, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("ledger.db").display());
        (Ledger::connect(&url).await.unwrap(), dir)
    }

    /// A call of `amount`, with a fresh id.
    pub(crate) fn call(amount: Micros) -> InFlight {
        InFlight { id: rand::random::<i64>() & i64::MAX, instance: "test".into(), amount, ..InFlight::default() }
    }

    #[test]
    fn the_writer_opens_the_file_a_url_names_and_refuses_a_database_in_memory() {
        assert_eq!(sqlite_file("sqlite:///var/lib/tollgate/ledger.db?mode=rwc").unwrap(), std::path::Path::new("/var/lib/tollgate/ledger.db"));
        assert!(sqlite_file("sqlite::memory:").is_err());
        assert!(sqlite_file("sqlite://:memory:").is_err());
    }

    /// A period this ledger never counted starts from its claim's floor (the status's figure),
    /// a new period of a budget it counted before too (another gateway served it meanwhile);
    /// one it counted is never moved by a floor.
    #[tokio::test]
    async fn a_period_the_ledger_never_counted_starts_from_its_floor_and_only_then() {
        let (l, _dir) = ledger().await;
        let floored = |budget: &str, floor| Claim { floor, ..Claim::budget(budget.into(), 0, 1_000, false) };
        l.reserve(vec![floored("ns/b", 900)], &tests::call(50)).await.unwrap();
        assert_eq!(l.spent("ns/b", 0).await.unwrap(), 950, "started from the floor");
        l.reserve(vec![floored("ns/b", 900)], &tests::call(60)).await.unwrap();
        let refused = l.reserve(vec![floored("ns/b", 900)], &tests::call(10)).await;
        assert!(matches!(refused, Err(LedgerError::Exhausted { .. })), "past its limit: {refused:?}");
        let at_limit = l.reserve(vec![floored("ns/c", 1_000)], &tests::call(10)).await;
        assert!(matches!(at_limit, Err(LedgerError::Exhausted { .. })), "a status at the limit refuses the first call: {at_limit:?}");
        l.reserve(vec![floored("ns/d", 100)], &tests::call(10)).await.unwrap();
        l.reserve(vec![floored("ns/d", 500)], &tests::call(10)).await.unwrap();
        assert_eq!(l.spent("ns/d", 0).await.unwrap(), 120, "a counted period is the ledger's, whatever its status says");
        let next_period = Claim { period_start_us: 7, ..floored("ns/d", 500) };
        l.reserve(vec![next_period], &tests::call(10)).await.unwrap();
        assert_eq!(l.spent("ns/d", 7).await.unwrap(), 510, "a new period another ledger counted starts from what it counted");
        let unshown = Claim { period_start_us: 9, ..floored("ns/d", 0) };
        l.reserve(vec![unshown], &tests::call(10)).await.unwrap();
        assert_eq!(l.spent("ns/d", 9).await.unwrap(), 10, "a new period the status shows nothing of starts from nothing");
    }

    /// A ledger written before its tables were keyed by SQLite's row id keeps every row and
    /// record, and their chain, through the migration that re-keys them.
    #[tokio::test]
    async fn a_ledger_re_keyed_by_row_id_keeps_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("ledger.db").display());
        {
            sqlx::any::install_default_drivers();
            let pool = sqlx::any::AnyPoolOptions::new().max_connections(1).connect(&url).await.unwrap();
            Migrator::with_migrations(migrations(true)[..8].to_vec()).run(&pool).await.unwrap();
            let random_id = 7_365_432_198_765_432_101_i64;
            sqlx::query("INSERT INTO ledger VALUES ($1, 10, 'ns', 'coder', '', 'openai', 'gpt', 1, 0, 2, 30, 4, 200)")
                .bind(random_id)
                .execute(&pool)
                .await
                .unwrap();
            sqlx::query("INSERT INTO audit VALUES (1, 'g', 'h1', 10, 'ns', 'coder', 'coder', 'gpt', 'allow', '{}', 0, 0, '', '')")
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
        }
        let l = Ledger::connect(&url).await.unwrap();
        let shape = |table: &'static str| {
            sqlx::query_scalar::<_, String>("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = $1").bind(table).fetch_one(&l.pool)
        };
        assert!(shape("ledger").await.unwrap().contains("id INTEGER PRIMARY KEY"));
        assert!(shape("audit").await.unwrap().contains("seq INTEGER PRIMARY KEY"));
        assert_eq!(l.calls("ns", "coder").await.unwrap(), [("gpt".to_owned(), 1, 2, 30, 200)], "the row written before");
        let (seq, hash): (i64, String) = sqlx::query_as("SELECT seq, hash FROM audit").fetch_one(&l.pool).await.unwrap();
        assert_eq!((seq, hash.as_str()), (1, "h1"));
        let indexes: Vec<String> = sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'index' AND name NOT LIKE 'sqlite_%' ORDER BY name")
            .fetch_all(&l.pool)
            .await
            .unwrap();
        for index in ["audit_incomplete", "audit_namespace_time", "audit_shadow", "ledger_agent_time"] {
            assert!(indexes.iter().any(|i| i == index), "{index} kept: {indexes:?}");
        }
    }

    /// The gateway's writer is mid-transaction whenever a passive checkpoint ends (at
    /// saturation it always is): that alone never lets the log start over, and it grew by
    /// hundreds of MiB a minute. A long log is then restarted.
    #[tokio::test]
    async fn a_long_log_starts_over_though_a_write_was_in_flight_during_the_checkpoint() {
        let (l, _dir) = ledger().await;
        let checkpointer = l.checkpointer.clone().unwrap();
        let write = |i: i64| sqlx::query("INSERT INTO slack_seen (signature, seen_us) VALUES ($1, $2)").bind(format!("signature-{i}")).bind(i);
        for i in 0..1_200 {
            write(i).execute(&l.pool).await.unwrap();
        }
        // A passive checkpoint while the writer is in a transaction: the log's length then.
        let round = |i: i64| {
            let (l, checkpointer) = (&l, &checkpointer);
            async move {
                let mut in_flight = l.pool.begin().await.unwrap();
                write(i).execute(&mut *in_flight).await.unwrap();
                let log = passive_checkpoint(checkpointer).await.unwrap();
                in_flight.commit().await.unwrap();
                log
            }
        };
        let log = round(-1).await;
        assert!(log > RESTART_AFTER_FRAMES, "{log} pages in the log");
        // Passive checkpoints alone: the log goes on from where it was.
        let longer = round(-2).await;
        assert!(longer > log, "{longer} pages, then {log}");

        restart_if_long(&checkpointer, longer).await.unwrap();
        // The next commit starts the log over (it is where frames are written).
        round(-3).await;
        let log = round(-4).await;
        assert!(log < 10, "the log did not start over: {log} pages");
    }

    #[test]
    fn rows_go_in_pieces_of_each_power_of_two_to_64_largest_first() {
        let sizes = |n: usize| pieces(&vec![0; n]).iter().map(|p| p.len()).collect::<Vec<_>>();
        assert_eq!(sizes(0), Vec::<usize>::new());
        assert_eq!(sizes(7), [4, 2, 1]);
        assert_eq!(sizes(63), [32, 16, 8, 4, 2, 1]);
        assert_eq!(sizes(64), [64]);
        assert_eq!(sizes(85), [64, 16, 4, 1]);
        assert_eq!(sizes(150), [64, 64, 16, 4, 2]);
    }

    fn claim(budget: &str, limit: Micros) -> Claim {
        Claim::budget(budget.into(), 0, limit, false)
    }

    #[tokio::test]
    async fn a_budget_at_its_limit_takes_no_more_and_settling_frees_what_was_not_spent() {
        let (l, _dir) = ledger().await;
        let r1 = l.reserve(vec![claim("ns/team", 100)], &call(60)).await.unwrap();
        // Below the limit: taken, even past it (by at most this call's estimate).
        let r2 = l.reserve(vec![claim("ns/team", 100)], &call(60)).await.unwrap();
        assert_eq!(l.spent("ns/team", 0).await.unwrap(), 120);
        assert!(matches!(l.reserve(vec![claim("ns/team", 100)], &call(1)).await, Err(LedgerError::Exhausted { spent: 120, .. })));
        crate::recorder::settle_many(
            &l,
            &crate::recorder::Unit { opened: Vec::new(), calls: vec![(r1, 10, Some(Row::default())), (r2, 0, Some(Row::default()))], ..Default::default() },
        )
        .await
        .unwrap();
        assert_eq!(l.spent("ns/team", 0).await.unwrap(), 10);
    }

    /// An audited budget counts as an enforced one does and never refuses; past its limit it
    /// says it would have. An enforced budget in the same call still refuses, and gives back
    /// what the audited one took.
    #[tokio::test]
    async fn an_audited_budget_counts_past_its_limit_and_says_it_would_have_refused() {
        let (l, _dir) = ledger().await;
        let audited = |limit| Claim { audit: true, ..claim("ns/shadow", limit) };
        let r = l.reserve(vec![audited(100)], &call(60)).await.unwrap();
        assert!(r.would_refuse.is_empty());
        let r = l.reserve(vec![audited(100)], &call(60)).await.unwrap();
        assert!(r.would_refuse.is_empty(), "below its limit before the call: an enforced one would have taken it too");
        let r = l.reserve(vec![audited(100)], &call(60)).await.unwrap();
        assert_eq!(r.would_refuse, vec![Exhaustion { budget: "ns/shadow".into(), spent: 120, limit: 100 }]);
        assert_eq!(l.spent("ns/shadow", 0).await.unwrap(), 180, "served and counted");
        let zero = l.reserve(vec![audited(0)], &call(5)).await.unwrap();
        assert_eq!(zero.would_refuse.len(), 1, "a zero limit would refuse everything");
        // With an enforced budget at its limit: refused, and the audited claim given back.
        l.reserve(vec![claim("ns/real", 10)], &call(10)).await.unwrap();
        let both = l.reserve(vec![audited(1_000_000), claim("ns/real", 10)], &call(7)).await;
        assert!(matches!(both, Err(LedgerError::Exhausted { .. })), "{both:?}");
        assert_eq!(l.spent("ns/shadow", 0).await.unwrap(), 185);
    }

    /// A rate limit is a claim of one request (or a bound of tokens) in a minute's window: the
    /// limit's worth is served, then refused; a call settled keeps its request and its tokens
    /// become what it used; a call refused by a budget gives its request back.
    #[tokio::test]
    async fn rate_windows_count_requests_and_tokens() {
        let (l, _dir) = ledger().await;
        let requests = |limit| Claim { unit: Unit::Requests, amount: Some(1), ..claim("rate:requests:ManagedAgent ns/a", limit) };
        let tokens = |limit, bound| Claim { unit: Unit::Tokens, amount: Some(bound), ..claim("rate:tokens:ManagedAgent ns/a", limit) };
        let mut r1 = l.reserve(vec![requests(2), tokens(1000, 600)], &call(5)).await.unwrap();
        r1.tokens_used = Some(100);
        l.reserve(vec![requests(2)], &call(5)).await.unwrap();
        assert!(matches!(l.reserve(vec![requests(2)], &call(5)).await, Err(LedgerError::Exhausted { spent: 2, limit: 2, .. })));
        crate::recorder::settle_many(&l, &crate::recorder::Unit { opened: Vec::new(), calls: vec![(r1, 5, Some(Row::default()))], ..Default::default() })
            .await
            .unwrap();
        assert_eq!(l.spent("rate:requests:ManagedAgent ns/a", 0).await.unwrap(), 2, "a settled call keeps its request");
        assert_eq!(l.spent("rate:tokens:ManagedAgent ns/a", 0).await.unwrap(), 100, "tokens settled to what was used");
        l.reserve(vec![claim("ns/b", 10)], &call(10)).await.unwrap();
        let refused = l.reserve(vec![requests(100), claim("ns/b", 10)], &call(1)).await;
        assert!(matches!(refused, Err(LedgerError::Exhausted { .. })));
        assert_eq!(l.spent("rate:requests:ManagedAgent ns/a", 0).await.unwrap(), 2, "a call the budget refused gave its request back");
        l.forget_rate_windows(1).await.unwrap();
        assert_eq!(l.spent("rate:requests:ManagedAgent ns/a", 0).await.unwrap(), 0);
        assert_eq!(l.spent("ns/b", 0).await.unwrap(), 10, "budgets are never forgotten");
    }

    #[tokio::test]
    async fn a_slack_request_is_new_once_to_every_replica() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("l.db").display());
        let (a, b) = (Ledger::connect(&url).await.unwrap(), Ledger::connect(&url).await.unwrap());
        assert!(a.first_sighting("v0=abc", 1_000_000, 600_000_000).await.unwrap());
        assert!(!b.first_sighting("v0=abc", 2_000_000, 600_000_000).await.unwrap(), "a replay to the other replica is refused");
        assert!(b.first_sighting("v0=def", 2_000_000, 600_000_000).await.unwrap());
        // Forgotten once far older than Slack's window (by then its age refuses it anyway).
        assert!(a.first_sighting("v0=abc", 700_000_000, 600_000_000).await.unwrap());
    }

    #[tokio::test]
    async fn a_reservation_says_what_each_budget_holds_and_a_zero_limit_takes_nothing() {
        let (l, _dir) = ledger().await;
        let r = l.reserve(vec![claim("ns/b", 1000), claim("ns/a", 100)], &call(30)).await.unwrap();
        assert_eq!(r.spent, vec![("ns/a".to_owned(), 30), ("ns/b".to_owned(), 30)]);
        let r = l.reserve(vec![claim("ns/a", 100)], &call(30)).await.unwrap();
        assert_eq!(r.spent, vec![("ns/a".to_owned(), 60)]);
        // A period not seen yet is refused at once by a budget of nothing.
        assert!(matches!(l.reserve(vec![claim("ns/zero", 0)], &call(1)).await, Err(LedgerError::Exhausted { spent: 0, limit: 0, .. })));
        assert_eq!(l.spent("ns/zero", 0).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_group_takes_each_call_whole_or_not_at_all_in_order() {
        let (l, _dir) = ledger().await;
        let (a, b, c) = (call(40), call(40), call(40));
        let group = vec![
            (vec![claim("ns/big", 1000), claim("ns/small", 50)], a.clone()),
            // ns/small holds 40 < 50: taken, past the limit by this call's estimate at most.
            (vec![claim("ns/small", 50), claim("ns/big", 1000)], b.clone()),
            // Now at its limit: refused, and what it took from ns/big is given back.
            (vec![claim("ns/big", 1000), claim("ns/small", 50)], c.clone()),
            (Vec::new(), call(5)),
        ];
        let answers = l.reserve_many(group).await.unwrap();
        assert!(answers[0].is_ok() && answers[1].is_ok());
        assert!(matches!(&answers[2], Err(LedgerError::Exhausted { budget, spent: 80, limit: 50 }) if budget == "ns/small"), "{:?}", answers[2]);
        assert!(matches!(&answers[3], Ok(r) if !r.registered), "a call without budgets is the recorder's to register");
        assert_eq!((l.spent("ns/big", 0).await.unwrap(), l.spent("ns/small", 0).await.unwrap()), (80, 80));
        let in_flight: Vec<i64> = sqlx::query_scalar("SELECT id FROM inflight ORDER BY id").fetch_all(&l.pool).await.unwrap();
        let mut want = vec![a.id, b.id];
        want.sort();
        assert_eq!(in_flight, want, "only the calls taken are in flight");
    }

    /// A batch over many budgets changes each one's period in one of a few statements: every
    /// period gets its own change, none another's.
    #[tokio::test]
    async fn a_batch_over_many_budgets_settles_each_by_its_own_calls() {
        let (l, _dir) = ledger().await;
        // 71 budgets: pieces of 64, 4, 2 and 1.
        let budgets: Vec<String> = (0..71).map(|i| format!("ns/b{i}")).collect();
        let mut calls = Vec::new();
        for (i, b) in budgets.iter().enumerate() {
            let r = l.reserve(vec![claim(b, 1000)], &call(100)).await.unwrap();
            calls.push((r, Micros::try_from(i).unwrap(), Some(Row::default())));
        }
        crate::recorder::settle_many(&l, &crate::recorder::Unit { opened: Vec::new(), calls, ..Default::default() }).await.unwrap();
        for (i, b) in budgets.iter().enumerate() {
            assert_eq!(l.spent(b, 0).await.unwrap(), Micros::try_from(i).unwrap(), "{b}");
        }
    }

    #[tokio::test]
    async fn all_budgets_or_none() {
        let (l, _dir) = ledger().await;
        l.reserve(vec![claim("ns/small", 5)], &call(5)).await.unwrap();
        assert!(l.reserve(vec![claim("ns/big", 1000), claim("ns/small", 5)], &call(3)).await.is_err());
        assert_eq!(l.spent("ns/big", 0).await.unwrap(), 0, "the refused call took nothing from the other budget");
    }

    #[tokio::test]
    async fn a_batch_is_written_many_rows_to_a_statement_and_the_chain_still_verifies() {
        let (l, _dir) = ledger().await;
        // Every shape, and 64 and 1 twice.
        let n = PIECES.iter().sum::<usize>() + PIECES[0] + 1;
        let src = crate::audit_store::Source { namespace: "ns".into(), service_account: "coder".into(), shipped: false };
        let calls: Vec<(Reservation, Micros, Option<Row>)> = (0..n)
            .map(|i| {
                let cost = i as Micros + 1;
                (
                    Reservation::default(),
                    cost,
                    Some(Row { time_us: 10, namespace: "ns".into(), agent: "coder".into(), model: format!("m{i}"), cost, status: 200, ..Row::default() }),
                )
            })
            .collect();
        let audit = (0..n)
            .map(|i| crate::audit_store::Prepared::new(&src, serde_json::json!({"kind": "model_call", "tool": format!("m{i}"), "agent": {"name": "coder"}})))
            .collect();
        crate::recorder::settle_many(&l, &crate::recorder::Unit { calls, audit, ..Default::default() }).await.unwrap();
        assert_eq!(l.calls("ns", "coder").await.unwrap().len(), n);
        assert_eq!(l.agent_spend("ns", "coder", 0).await.unwrap(), (1..=n as Micros).sum::<Micros>());
        let all = l.export_audit().await.unwrap();
        assert_eq!(tollgate_core::audit::chain::verify(&all), Ok(n));
        let tools: Vec<String> = all.iter().map(|link| link.record["tool"].as_str().unwrap_or_default().to_owned()).collect();
        assert_eq!(tools, (0..n).map(|i| format!("m{i}")).collect::<Vec<_>>(), "records keep their order and their own columns");
        // A second batch's rows are numbered on from the first's: consecutive ids, so every row
        // lands on the last page of the id's index.
        let again = crate::recorder::Unit {
            calls: vec![(Reservation::default(), 1, Some(Row { namespace: "ns".into(), agent: "coder".into(), ..Row::default() }))],
            ..Default::default()
        };
        crate::recorder::settle_many(&l, &again).await.unwrap();
        let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM ledger ORDER BY time_us, model").fetch_all(&l.pool).await.unwrap();
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (1..=i64::try_from(n + 1).unwrap()).collect::<Vec<_>>());
        assert_eq!(ids[0], n as i64 + 1, "the second batch's row (time 0) comes after the first's");
    }

    #[test]
    fn a_batch_settles_each_budget_once_and_only_what_it_took() {
        let claim = |budget: &str, unit: Unit, amount: Option<Micros>| Claim { unit, amount, ..Claim::budget(budget.into(), 1, 1_000, false) };
        let r = |id: i64, amount: Micros, claims: Vec<Claim>| Reservation { id, amount, claims, ..Reservation::default() };
        let a = r(1, 100, vec![claim("b", Unit::Micros, None), claim("rate:requests:x", Unit::Requests, Some(1))]);
        let b = r(2, 50, vec![claim("b", Unit::Micros, None)]);
        let gone = r(3, 70, vec![claim("b", Unit::Micros, None)]);
        let calls = [(&a, 30), (&b, 50), (&gone, 0)];
        let taken: HashSet<i64> = [1, 2].into();
        let deltas = settlement_deltas(&calls, &taken);
        // a: 30 for 100 reserved; b: exactly what it reserved (no change); the request count
        // stays; the call another gateway settled is not touched again.
        assert_eq!(deltas.into_iter().collect::<Vec<_>>(), [(("b".to_owned(), 1), -70)]);
    }

    #[tokio::test]
    async fn rows_add_up_per_agent() {
        let (l, _dir) = ledger().await;
        for cost in [5, 7] {
            let row = Row { time_us: 10, namespace: "ns".into(), agent: "coder".into(), model: "m".into(), cost, status: 200, ..Row::default() };
            crate::recorder::settle_many(
                &l,
                &crate::recorder::Unit { opened: Vec::new(), calls: vec![(Reservation::default(), cost, Some(row))], ..Default::default() },
            )
            .await
            .unwrap();
        }
        assert_eq!(l.agent_spend("ns", "coder", 0).await.unwrap(), 12);
        assert_eq!(l.agent_spend("ns", "other", 0).await.unwrap(), 0);
        assert_eq!(l.calls("ns", "coder").await.unwrap().len(), 2);
    }
}
