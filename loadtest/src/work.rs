//! What a run's sagas cost in units of work, not seconds: Postgres transactions and statements,
//! relay passes (and the empty ones), messages per publish round and per consumer batch, and
//! wake-ups. Read at the start and the end of the measured window from Postgres's statistics and
//! from every orderly process's `/metrics`, so a worker count that makes each saga dearer shows
//! where.

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::PgPool;

/// Counters at one instant, summed over every orderly process.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// Committed and rolled-back transactions in the run's database.
    transactions: f64,
    /// Statements executed in the run's database; `None` without `pg_stat_statements`.
    statements: Option<f64>,
    /// Every `orderly_…` counter, histogram count and sum by series (name and labels).
    series: BTreeMap<String, f64>,
}

impl Sample {
    /// Reads Postgres's statistics for `database` and the `/metrics` of every URL in `metrics`
    /// (a process that does not answer counts as zero).
    pub async fn take(pg: &PgPool, database: &str, metrics: &[String]) -> Self {
        // A statistics snapshot is cached per transaction; each query here is its own.
        let transactions: f64 = sqlx::query_scalar(
            "SELECT (xact_commit + xact_rollback)::float8 FROM pg_stat_database WHERE datname = $1",
        )
        .bind(database)
        .fetch_one(pg)
        .await
        .unwrap_or(0.0);
        let statements: Option<f64> = sqlx::query_scalar(
            "SELECT sum(calls)::float8 FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid \
             WHERE d.datname = $1",
        )
        .bind(database)
        .fetch_one(pg)
        .await
        .ok()
        .flatten();
        let mut series = BTreeMap::new();
        let client = reqwest::Client::new();
        for url in metrics {
            let Ok(response) = client.get(url).send().await else {
                continue;
            };
            let Ok(text) = response.text().await else {
                continue;
            };
            for (name, value) in parse(&text) {
                *series.entry(name).or_insert(0.0) += value;
            }
        }
        Self {
            transactions,
            statements,
            series,
        }
    }
}

/// `name{labels} value` lines of the counters and histogram totals orderly serves.
fn parse(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| l.starts_with("orderly_"))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            let wanted = name.contains("_total")
                || name.contains("_count")
                || name.contains("_sum")
                || name.starts_with("orderly_lease_held");
            wanted.then(|| Some((name.to_owned(), value.parse().ok()?)))?
        })
        .collect()
}

/// A queue's consumer batches over the window.
#[derive(Debug, Clone, Serialize)]
pub struct Batches {
    pub messages: f64,
    pub batches: f64,
    pub mean: Option<f64>,
}

/// Work over the measured window, per completed saga where it says so.
#[derive(Debug, Clone, Serialize)]
pub struct WorkReport {
    pub transactions_per_saga: Option<f64>,
    /// `None` without `pg_stat_statements` (see docs/performance.md).
    pub statements_per_saga: Option<f64>,
    pub relay_passes: f64,
    pub relay_empty_passes: f64,
    /// Rows published per relay pass that found any: messages per publish-confirm round.
    pub relay_messages_per_pass: Option<f64>,
    /// Consumer batches by queue: messages per transaction and per ack.
    pub batches: BTreeMap<String, Batches>,
    /// Relay passes and consumer batches per second: how often the processes woke to work.
    pub wakeups_per_s: f64,
    /// Processes holding each duty's lease at the end (1 when the cluster runs it once).
    pub lease_holders: BTreeMap<String, f64>,
}

impl WorkReport {
    pub fn between(before: &Sample, after: &Sample, seconds: f64, sagas: Option<u64>) -> Self {
        let delta = |name: &str| {
            after.series.get(name).copied().unwrap_or(0.0)
                - before.series.get(name).copied().unwrap_or(0.0)
        };
        let per_saga = |n: f64| sagas.filter(|&s| s > 0).map(|s| n / s as f64);
        let relay_passes = delta(r#"orderly_relay_passes_total{found="rows"}"#)
            + delta(r#"orderly_relay_passes_total{found="empty"}"#);
        let relay_empty_passes = delta(r#"orderly_relay_passes_total{found="empty"}"#);
        let published = delta("orderly_relay_published_total");
        let with_rows = relay_passes - relay_empty_passes;
        let mut batches = BTreeMap::new();
        for name in after.series.keys() {
            let Some(labels) = name.strip_prefix("orderly_batch_size_count") else {
                continue;
            };
            let queue = labels
                .trim_start_matches("{queue=\"")
                .trim_end_matches("\"}")
                .to_owned();
            let count = delta(name);
            let sum = delta(&format!("orderly_batch_size_sum{labels}"));
            batches.insert(
                queue,
                Batches {
                    messages: sum,
                    batches: count,
                    mean: (count > 0.0).then(|| sum / count),
                },
            );
        }
        let consumer_batches: f64 = batches.values().map(|b| b.batches).sum();
        let lease_holders = after
            .series
            .iter()
            .filter_map(|(name, value)| {
                let duty = name
                    .strip_prefix("orderly_lease_held{duty=\"")?
                    .trim_end_matches("\"}");
                Some((duty.to_owned(), *value))
            })
            .collect();
        Self {
            transactions_per_saga: per_saga(after.transactions - before.transactions),
            statements_per_saga: after
                .statements
                .zip(before.statements)
                .and_then(|(a, b)| per_saga(a - b)),
            relay_passes,
            relay_empty_passes,
            relay_messages_per_pass: (with_rows > 0.0).then(|| published / with_rows),
            batches,
            wakeups_per_s: (relay_passes + consumer_batches) / seconds.max(1e-9),
            lease_holders,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_is_the_difference_of_two_samples_per_saga() {
        let text = |consumed: u32, passes: u32| {
            format!(
                "# TYPE orderly_batch_size histogram\n\
                 orderly_batch_size_count{{queue=\"payments\"}} {passes}\n\
                 orderly_batch_size_sum{{queue=\"payments\"}} {consumed}\n\
                 orderly_batch_size_bucket{{le=\"1.0\",queue=\"payments\"}} 1\n\
                 orderly_relay_passes_total{{found=\"rows\"}} {passes}\n\
                 orderly_relay_passes_total{{found=\"empty\"}} 3\n\
                 orderly_relay_published_total {consumed}\n\
                 orderly_lease_held{{duty=\"relay\"}} 1\n"
            )
        };
        let sample = |consumed, passes, transactions| Sample {
            transactions,
            statements: None,
            series: parse(&text(consumed, passes)).into_iter().collect(),
        };
        let work = WorkReport::between(
            &sample(10, 2, 100.0),
            &sample(110, 12, 600.0),
            10.0,
            Some(50),
        );
        assert_eq!(work.transactions_per_saga, Some(10.0));
        assert_eq!(work.batches["payments"].mean, Some(10.0));
        assert_eq!(work.relay_messages_per_pass, Some(10.0));
        assert_eq!(work.relay_empty_passes, 0.0);
        assert_eq!(work.wakeups_per_s, 2.0);
        assert_eq!(work.lease_holders["relay"], 1.0);
        assert_eq!(work.statements_per_saga, None);
    }
}
