//! Leases: the work a cluster needs once — a relay pass over the outbox, the deadline sweep, the
//! stock recovery — runs in one process at a time, however many run the role.
//!
//! A lease is a Postgres session advisory lock on a connection of its own. The process that
//! takes it runs the duty; the others try again every [`CONTEND`] and run nothing. The lock
//! lives exactly as long as the holder's connection: a holder killed with `kill -9` closes its
//! socket with it, Postgres ends the session, and another process takes over at its next try.
//! The holder asks its connection every [`CHECK`] whether it still stands, and stops the duty
//! when it does not (Postgres restarted, the link broke), before contending again.
//!
//! A lease is for cost, not correctness: two holders at once (a partition Postgres has not
//! noticed yet) are safe, since relays skip each other's rows, consumers dedupe by message id
//! and every saga write carries its version. Advisory locks are per database, so each
//! installation (and each test's database) has its own.

use std::{future::Future, time::Duration};

use sqlx::{ConnectOptions, Connection, PgConnection};
use tokio::sync::watch;

use super::RoleContext;
use crate::{metrics::DutyLabels, readiness::Backoff, store::postgres};

/// How often a process that does not hold a lease tries to take it.
pub const CONTEND: Duration = Duration::from_secs(1);
/// How often the holder checks that its lock connection still stands.
pub const CHECK: Duration = Duration::from_secs(1);

/// Work that runs in one process of the cluster at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Duty {
    Relay,
    DeadlineSweep,
    StockRecovery,
}

impl Duty {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Relay => "relay",
            Self::DeadlineSweep => "deadline_sweep",
            Self::StockRecovery => "stock_recovery",
        }
    }

    /// The advisory lock's key: "orderly" in ASCII and the duty's number, so it is unlikely to
    /// meet another application's key in the same database.
    fn key(self) -> i64 {
        const ORDERLY: i64 = 0x6f72_6465_726c_7900;
        ORDERLY
            | match self {
                Self::Relay => 1,
                Self::DeadlineSweep => 2,
                Self::StockRecovery => 3,
            }
    }
}

/// Runs `duty` while this process holds its lease, until `shutdown`: `work` is started with a
/// stop signal of its own each time the lease is taken, and stopped (and awaited) when it is
/// lost or at shutdown.
pub async fn lead<W, F>(context: RoleContext, duty: Duty, shutdown: watch::Receiver<bool>, work: W)
where
    W: Fn(watch::Receiver<bool>) -> F + Send + Sync,
    F: Future<Output = ()> + Send + 'static,
{
    let labels = DutyLabels {
        duty: duty.as_str(),
    };
    context.metrics.lease_held.get_or_create(&labels).set(0);
    let _ = context.metrics.leases_taken.get_or_create(&labels);
    let mut backoff = Backoff::default();
    // Until shutdown, or until nothing can signal it any more.
    while !*shutdown.borrow() && shutdown.has_changed().is_ok() {
        let started = std::time::Instant::now();
        match hold(&context, duty, &shutdown, &work).await {
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(duty = duty.as_str(), error = %e, "lease lost or not reachable; contending again");
                backoff.wait(started.elapsed(), &shutdown).await;
            }
        }
    }
}

/// One lock connection: contends until it takes the lease, then runs the duty until the
/// connection fails or shutdown. `Ok` only at shutdown.
async fn hold<W, F>(
    context: &RoleContext,
    duty: Duty,
    shutdown: &watch::Receiver<bool>,
    work: &W,
) -> Result<(), sqlx::Error>
where
    W: Fn(watch::Receiver<bool>) -> F + Send + Sync,
    F: Future<Output = ()> + Send + 'static,
{
    let mut conn = postgres::connect_options(&context.settings)?
        .application_name(&format!("orderly-lease-{}", duty.as_str()))
        .connect()
        .await?;
    let mut shutdown = shutdown.clone();
    loop {
        if *shutdown.borrow() || shutdown.has_changed().is_err() {
            let _ = conn.close().await;
            return Ok(());
        }
        if try_take(&mut conn, duty).await? {
            break;
        }
        let wait = CONTEND.mul_f64(rand::random_range(0.5..=1.0));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.wait_for(|stop| *stop) => {}
        }
    }
    let labels = DutyLabels {
        duty: duty.as_str(),
    };
    context.metrics.lease_held.get_or_create(&labels).set(1);
    context.metrics.leases_taken.get_or_create(&labels).inc();
    tracing::info!(duty = duty.as_str(), "took the lease; running the duty");
    let (stop, stopped) = watch::channel(false);
    let mut task = tokio::spawn(work(stopped));
    let outcome = loop {
        let check = tokio::select! {
            _ = &mut task => false,
            _ = shutdown.wait_for(|stop| *stop) => false,
            _ = tokio::time::sleep(CHECK) => true,
        };
        if !check {
            break Ok(());
        }
        // A link that hangs instead of failing is a lost lease too: Postgres frees the lock
        // once it notices, and another process may hold it by then.
        let alive = sqlx::query("SELECT 1").execute(&mut conn);
        match tokio::time::timeout(CHECK * 5, alive).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => break Err(e),
            Err(_) => {
                break Err(sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the lease's connection did not answer",
                )));
            }
        }
    };
    stop.send_replace(true);
    if !task.is_finished() {
        let _ = task.await;
    }
    context.metrics.lease_held.get_or_create(&labels).set(0);
    // Closing the connection gives the lock back; a connection that broke has given it already.
    let _ = conn.close().await;
    outcome
}

async fn try_take(conn: &mut PgConnection, duty: Duty) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(duty.key())
        .fetch_one(conn)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_duty_has_a_key_of_its_own() {
        let duties = [Duty::Relay, Duty::DeadlineSweep, Duty::StockRecovery];
        let mut keys: Vec<i64> = duties.iter().map(|d| d.key()).collect();
        keys.dedup();
        assert_eq!(keys.len(), duties.len());
    }
}
