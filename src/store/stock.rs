//! Redis: each product's available stock, changed only by the Lua scripts in `lua/`.
//!
//! Scripts run by SHA (`EVALSHA`); `redis::Script` reloads one with `SCRIPT LOAD` when Redis
//! answers `NOSCRIPT` (after a restart or `SCRIPT FLUSH`), so callers never see that error.

use std::{
    collections::BTreeMap,
    sync::{Arc, LazyLock},
};

use redis::{Script, aio::ConnectionManager};
use uuid::Uuid;

use super::StoreError;
use crate::domain::{
    order::OrderLine,
    reservation::{Level, Record},
};

// One copy per process: the handles are cloned into every request's state, and a `Script`
// clone copies its source.
static ADJUST: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../lua/adjust.lua")));
static RESERVE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../lua/reserve.lua")));
static RELEASE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../lua/release.lua")));

/// Keys read or written per pipelined round trip by the reconcile tool.
const REBUILD_BATCH: usize = 500;

/// A reservation record as `orderly reconcile` writes it: reserved ones with their lines.
pub struct RebuiltRecord<'a> {
    pub order_id: Uuid,
    pub record: Record,
    pub lines: &'a [OrderLine],
}

/// How long a settled adjustment's marker is kept: seven days.
pub const MARKER_RETENTION_MS: u64 = 7 * 24 * 60 * 60 * 1000;

/// What `adjust.lua` did with an adjustment (now, or the first time it saw it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdjustOutcome {
    Applied { available: i64 },
    Refused { available: i64 },
}

/// What `reserve.lua` did with an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReserveOutcome {
    Reserved,
    /// Line `line` (0-based) wanted more than `available`; nothing was reserved.
    Short {
        line: usize,
        available: i64,
    },
    /// The order was released before this reserve arrived.
    Tombstoned,
}

/// A script to run for an order, in a batch.
#[derive(Debug, Clone, Copy)]
pub enum StockOp<'a> {
    Reserve {
        order_id: Uuid,
        lines: &'a [OrderLine],
    },
    Release {
        order_id: Uuid,
        products: &'a [Uuid],
    },
}

/// What a script of a batch answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StockAnswer {
    Reserve(ReserveOutcome),
    /// `true` when the release gave stock back.
    Release(bool),
}

/// `reserve.lua`'s answer: `{outcome, line, available}`.
fn reserve_outcome((outcome, line, available): (i64, i64, i64)) -> ReserveOutcome {
    match outcome {
        1 => ReserveOutcome::Reserved,
        2 => ReserveOutcome::Tombstoned,
        _ => ReserveOutcome::Short {
            line: usize::try_from(line - 1).unwrap_or_default(),
            available,
        },
    }
}

#[derive(Clone)]
pub struct StockCounters {
    redis: ConnectionManager,
    prefix: Arc<str>,
}

impl StockCounters {
    /// Handles on Redis that connect on first use, not now: a process must start while Redis
    /// is down (see [`crate::readiness`]). With `ca_pem`, a `rediss://` server's certificate
    /// must be signed by one of its certificates instead of a public CA.
    pub fn open(url: &str, prefix: &str, ca_pem: Option<&str>) -> Result<Self, StoreError> {
        let client = match ca_pem {
            None => redis::Client::open(url)?,
            Some(ca) => redis::Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(ca.as_bytes().to_vec()),
                },
            )?,
        };
        let redis = ConnectionManager::new_lazy_with_config(
            client,
            redis::aio::ConnectionManagerConfig::new(),
        )?;
        Ok(Self {
            redis,
            prefix: prefix.into(),
        })
    }

    /// Handles on Redis, once it has answered.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, StoreError> {
        let counters = Self::open(url, prefix, None)?;
        counters.ping().await?;
        Ok(counters)
    }

    /// `{prefix}stock:{<product>}:available`. The braces are a Redis Cluster hash tag: every key
    /// of one product lands in one slot, so one script may touch them all.
    pub fn available_key(&self, product_id: Uuid) -> String {
        format!("{}stock:{{{product_id}}}:available", self.prefix)
    }

    /// `{prefix}stock:{<product>}:held`: units held by live reservations.
    pub fn held_key(&self, product_id: Uuid) -> String {
        format!("{}stock:{{{product_id}}}:held", self.prefix)
    }

    /// `{prefix}reservation:{<order>}`: what the order holds, and whether it still does.
    pub fn reservation_key(&self, order_id: Uuid) -> String {
        format!("{}reservation:{{{order_id}}}", self.prefix)
    }

    /// Runs `reserve.lua` for an order's lines.
    pub async fn reserve(
        &self,
        order_id: Uuid,
        lines: &[OrderLine],
    ) -> Result<ReserveOutcome, StoreError> {
        let answer: (i64, i64, i64) = self
            .reserve_invocation(order_id, lines)
            .invoke_async(&mut self.redis.clone())
            .await?;
        Ok(reserve_outcome(answer))
    }

    /// Runs `release.lua`; `true` when this call gave stock back.
    pub async fn release(&self, order_id: Uuid, products: &[Uuid]) -> Result<bool, StoreError> {
        let gave_back: i64 = self
            .release_invocation(order_id, products)
            .invoke_async(&mut self.redis.clone())
            .await?;
        Ok(gave_back == 1)
    }

    /// Runs the scripts for many orders in one round trip, in the order given: each script is
    /// still atomic and idempotent per order on its own, exactly as when run one by one.
    pub async fn run(&self, ops: &[StockOp<'_>]) -> Result<Vec<StockAnswer>, StoreError> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        // Loaded first, in the same round trip: the calls below find them even right after a
        // Redis restart, without a `NOSCRIPT` and a retry.
        pipe.load_script(&RESERVE)
            .ignore()
            .load_script(&RELEASE)
            .ignore();
        let invocations: Vec<_> = ops
            .iter()
            .map(|op| match op {
                StockOp::Reserve { order_id, lines } => self.reserve_invocation(*order_id, lines),
                StockOp::Release { order_id, products } => {
                    self.release_invocation(*order_id, products)
                }
            })
            .collect();
        for invocation in &invocations {
            pipe.invoke_script(invocation);
        }
        let answers: Vec<redis::Value> = pipe.query_async(&mut self.redis.clone()).await?;
        ops.iter()
            .zip(answers)
            .map(|(op, answer)| {
                Ok(match op {
                    StockOp::Reserve { .. } => {
                        StockAnswer::Reserve(reserve_outcome(redis::from_redis_value(answer)?))
                    }
                    StockOp::Release { .. } => {
                        StockAnswer::Release(redis::from_redis_value::<i64>(answer)? == 1)
                    }
                })
            })
            .collect::<Result<_, redis::RedisError>>()
            .map_err(StoreError::from)
    }

    fn reserve_invocation(
        &self,
        order_id: Uuid,
        lines: &[OrderLine],
    ) -> redis::ScriptInvocation<'static> {
        let mut invocation = RESERVE.key(self.reservation_key(order_id));
        for line in lines {
            invocation
                .key(self.available_key(line.product_id))
                .key(self.held_key(line.product_id))
                .arg(line.quantity);
        }
        for line in lines {
            invocation.arg(line.product_id.to_string());
        }
        invocation
    }

    fn release_invocation(
        &self,
        order_id: Uuid,
        products: &[Uuid],
    ) -> redis::ScriptInvocation<'static> {
        let mut invocation = RELEASE.key(self.reservation_key(order_id));
        for &product in products {
            invocation
                .key(self.available_key(product))
                .key(self.held_key(product))
                .arg(product.to_string());
        }
        invocation
    }

    /// Units held by live reservations, per product, in the order given.
    pub async fn held(&self, product_ids: &[Uuid]) -> Result<Vec<i64>, StoreError> {
        if product_ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = product_ids.iter().map(|&id| self.held_key(id)).collect();
        let values: Vec<Option<i64>> = super::mget(&self.redis, &keys).await?;
        Ok(values.into_iter().map(Option::unwrap_or_default).collect())
    }

    fn adjustment_key(&self, product_id: Uuid, adjustment_id: Uuid) -> String {
        format!("{}stock:{{{product_id}}}:adj:{adjustment_id}", self.prefix)
    }

    /// Available stock for each product, in the order given, in one round trip. A product Redis
    /// has never heard of has none available.
    pub async fn available(&self, product_ids: &[Uuid]) -> Result<Vec<i64>, StoreError> {
        let keys: Vec<String> = product_ids
            .iter()
            .map(|&id| self.available_key(id))
            .collect();
        let values: Vec<Option<i64>> = super::mget(&self.redis, &keys).await?;
        Ok(values.into_iter().map(Option::unwrap_or_default).collect())
    }

    /// Runs `adjust.lua`: applies `delta` at most once per `adjustment_id`, never below zero.
    pub async fn adjust(
        &self,
        product_id: Uuid,
        adjustment_id: Uuid,
        delta: i64,
    ) -> Result<AdjustOutcome, StoreError> {
        let (applied, available): (i64, i64) = ADJUST
            .key(self.available_key(product_id))
            .key(self.adjustment_key(product_id, adjustment_id))
            .arg(delta)
            .invoke_async(&mut self.redis.clone())
            .await?;
        Ok(if applied == 1 {
            AdjustOutcome::Applied { available }
        } else {
            AdjustOutcome::Refused { available }
        })
    }

    /// Lets a settled adjustment's outcome marker expire after [`MARKER_RETENTION_MS`] rather
    /// than dropping it: a script call still in flight from a process that lost its lock, or a
    /// client retrying with the same idempotency key, must still find the first outcome.
    pub async fn retire_marker(
        &self,
        product_id: Uuid,
        adjustment_id: Uuid,
    ) -> Result<(), StoreError> {
        redis::cmd("PEXPIRE")
            .arg(self.adjustment_key(product_id, adjustment_id))
            .arg(MARKER_RETENTION_MS)
            .query_async::<()>(&mut self.redis.clone())
            .await?;
        Ok(())
    }

    /// Each order's reservation record state, in the order given (`None`: no record). Read in
    /// pipelined batches, for `orderly reconcile --check`.
    pub async fn record_states(
        &self,
        order_ids: &[Uuid],
    ) -> Result<Vec<Option<String>>, StoreError> {
        let mut states = Vec::with_capacity(order_ids.len());
        for chunk in order_ids.chunks(REBUILD_BATCH) {
            let mut pipe = redis::pipe();
            for &order in chunk {
                pipe.hget(self.reservation_key(order), "state");
            }
            let batch: Vec<Option<String>> = pipe.query_async(&mut self.redis.clone()).await?;
            states.extend(batch);
        }
        Ok(states)
    }

    /// Each product's `(available, held)` counters, in the order given; a missing key reads 0.
    pub async fn counters(&self, product_ids: &[Uuid]) -> Result<Vec<Level>, StoreError> {
        let mut levels = Vec::with_capacity(product_ids.len());
        for chunk in product_ids.chunks(REBUILD_BATCH) {
            let keys: Vec<String> = chunk
                .iter()
                .flat_map(|&id| [self.available_key(id), self.held_key(id)])
                .collect();
            let values: Vec<Option<i64>> = super::mget(&self.redis, &keys).await?;
            levels.extend(values.chunks(2).map(|pair| Level {
                available: pair[0].unwrap_or_default(),
                held: pair[1].unwrap_or_default(),
            }));
        }
        Ok(levels)
    }

    /// Whether `adjust.lua` applied an adjustment (`None`: it never saw it).
    pub async fn adjustment_applied(
        &self,
        product_id: Uuid,
        adjustment_id: Uuid,
    ) -> Result<Option<bool>, StoreError> {
        let marker: Option<String> = redis::cmd("GET")
            .arg(self.adjustment_key(product_id, adjustment_id))
            .query_async(&mut self.redis.clone())
            .await?;
        Ok(marker.map(|m| m == "applied"))
    }

    /// Replaces every stock key under the prefix — counters, reservation records, adjustment
    /// markers — with `levels` and `records`. Not atomic: only for a system with no traffic
    /// (see `orderly reconcile`). Markers go too, so adjustments still pending in Postgres are
    /// applied again by the recovery loop, on top of on-hand counts that exclude them.
    pub async fn rebuild(
        &self,
        levels: &BTreeMap<Uuid, Level>,
        records: &[RebuiltRecord<'_>],
    ) -> Result<(), StoreError> {
        let mut redis = self.redis.clone();
        for pattern in ["stock:*", "reservation:*"] {
            let pattern = format!("{}{pattern}", self.prefix);
            let mut cursor = 0u64;
            loop {
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(REBUILD_BATCH)
                    .query_async(&mut redis)
                    .await?;
                if !keys.is_empty() {
                    redis::cmd("UNLINK")
                        .arg(&keys)
                        .query_async::<()>(&mut redis)
                        .await?;
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        let levels: Vec<_> = levels.iter().collect();
        for chunk in levels.chunks(REBUILD_BATCH) {
            let mut pipe = redis::pipe();
            for &(&product, level) in chunk {
                pipe.set(self.available_key(product), level.available)
                    .ignore()
                    .set(self.held_key(product), level.held)
                    .ignore();
            }
            pipe.query_async::<()>(&mut redis).await?;
        }
        for chunk in records.chunks(REBUILD_BATCH) {
            let mut pipe = redis::pipe();
            for record in chunk {
                let key = self.reservation_key(record.order_id);
                let mut fields = vec![("state".to_owned(), record.record.as_str().to_owned())];
                match record.record {
                    // The fields `reserve.lua` writes, which `release.lua` gives back from.
                    Record::Reserved => fields.extend(
                        record
                            .lines
                            .iter()
                            .map(|l| (l.product_id.to_string(), l.quantity.to_string())),
                    ),
                    // Which line was short is not kept in Postgres; a replay only logs it.
                    Record::Rejected => fields.push(("short".into(), "1".into())),
                    Record::Released => {}
                }
                pipe.hset_multiple(key, &fields).ignore();
            }
            pipe.query_async::<()>(&mut redis).await?;
        }
        Ok(())
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        redis::cmd("PING")
            .query_async::<String>(&mut self.redis.clone())
            .await?;
        Ok(())
    }

    /// A handle on the connection, for tests and the reconcile tool.
    pub fn connection(&self) -> ConnectionManager {
        self.redis.clone()
    }
}
