//! What a run measures: HDR latency histograms per endpoint, saga completion latency, outcomes,
//! errors by status, and a per-second timeline for the chart.
//!
//! One `Stats` is shared by every virtual user behind a mutex: a record is a few histogram
//! increments, far cheaper than the HTTP request it describes, so the lock is never the bottleneck.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies are recorded in microseconds, up to an hour, with three significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static histogram bounds are valid")
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// An endpoint's label in reports: the route template, never a concrete id.
pub type Endpoint = &'static str;

pub const POST_ORDERS: Endpoint = "POST /orders";
pub const GET_ORDER_WAIT: Endpoint = "GET /orders/{id}?wait";
pub const POST_CANCEL: Endpoint = "POST /orders/{id}/cancel";
pub const GET_PRODUCTS: Endpoint = "GET /products?limit=100";
pub const GET_PRODUCT: Endpoint = "GET /products/{id}";

#[derive(Default)]
struct EndpointStats {
    /// From when the request should have started (the open model's schedule) to its answer.
    latency: Option<Histogram<u64>>,
    /// From when it actually started: the server's service time, without queueing in the client.
    service: Option<Histogram<u64>>,
    by_status: BTreeMap<String, u64>,
}

#[derive(Default)]
struct Second {
    requests: u64,
    errors: u64,
    orders_placed: u64,
    sagas_settled: u64,
    post_orders: Option<Histogram<u64>>,
    saga: Option<Histogram<u64>>,
}

/// Shared by every virtual user of one run.
pub struct Stats {
    started: Instant,
    measure_from: Instant,
    endpoints: BTreeMap<Endpoint, EndpointStats>,
    saga: Histogram<u64>,
    settled: BTreeMap<String, u64>,
    timeline: Vec<Second>,
    /// When the latest request was sent: how far into the run the load reached.
    last_sent: Option<Instant>,
}

impl Stats {
    pub fn new(started: Instant, warmup: Duration) -> Self {
        Self {
            started,
            measure_from: started + warmup,
            endpoints: BTreeMap::new(),
            saga: histogram(),
            settled: BTreeMap::new(),
            timeline: Vec::new(),
            last_sent: None,
        }
    }

    fn second(&mut self, at: Instant) -> &mut Second {
        let i = at.saturating_duration_since(self.started).as_secs() as usize;
        if self.timeline.len() <= i {
            self.timeline.resize_with(i + 1, Second::default);
        }
        &mut self.timeline[i]
    }

    /// Records one request. `status` is `None` when no HTTP answer came (a transport error).
    /// `intended` is when the schedule wanted it sent; `sent` when it was.
    pub fn request(
        &mut self,
        endpoint: Endpoint,
        status: Option<u16>,
        intended: Instant,
        sent: Instant,
        done: Instant,
    ) {
        let latency = done.saturating_duration_since(intended);
        self.last_sent = self.last_sent.max(Some(sent));
        let failed = status.is_none_or(|s| s >= 500);
        let second = self.second(done);
        second.requests += 1;
        second.errors += u64::from(failed);
        if endpoint == POST_ORDERS {
            second.orders_placed += u64::from(status == Some(202));
            second
                .post_orders
                .get_or_insert_with(histogram)
                .saturating_record(micros(latency));
        }
        if intended < self.measure_from {
            return; // warm-up: on the chart, not in the totals
        }
        let stats = self.endpoints.entry(endpoint).or_default();
        stats
            .latency
            .get_or_insert_with(histogram)
            .saturating_record(micros(latency));
        stats
            .service
            .get_or_insert_with(histogram)
            .saturating_record(micros(done.saturating_duration_since(sent)));
        let label = status.map_or_else(|| "transport_error".to_owned(), |s| s.to_string());
        *stats.by_status.entry(label).or_default() += 1;
    }

    /// Records a saga seen settling: from its `202` to the answer showing it no longer pending.
    pub fn saga_settled(&mut self, accepted: Instant, settled: Instant, outcome: &str) {
        let took = micros(settled.saturating_duration_since(accepted));
        let second = self.second(settled);
        second.sagas_settled += 1;
        second
            .saga
            .get_or_insert_with(histogram)
            .saturating_record(took);
        if accepted < self.measure_from {
            return;
        }
        self.saga.saturating_record(took);
        *self.settled.entry(outcome.to_owned()).or_default() += 1;
    }

    /// How long after the measured window opened the last request was sent (zero if none was).
    pub fn load_reached(&self) -> Duration {
        self.last_sent.map_or(Duration::ZERO, |t| {
            t.saturating_duration_since(self.measure_from)
        })
    }

    pub fn summary(&self) -> Summary {
        Summary {
            endpoints: self
                .endpoints
                .iter()
                .map(|(name, s)| {
                    let total = s.by_status.values().sum();
                    (
                        (*name).to_owned(),
                        EndpointSummary {
                            requests: total,
                            by_status: s.by_status.clone(),
                            latency: s.latency.as_ref().map(Percentiles::of).unwrap_or_default(),
                            service: s.service.as_ref().map(Percentiles::of).unwrap_or_default(),
                        },
                    )
                })
                .collect(),
            saga_completion: Percentiles::of(&self.saga),
            settled_seen: self.settled.clone(),
            timeline: self
                .timeline
                .iter()
                .enumerate()
                .map(|(i, s)| TimelinePoint {
                    second: i as u64,
                    warmup: self.started + Duration::from_secs(i as u64 + 1) <= self.measure_from,
                    requests: s.requests,
                    errors: s.errors,
                    orders_placed: s.orders_placed,
                    sagas_settled_seen: s.sagas_settled,
                    sagas_completed_db: 0,
                    post_orders_p50_ms: quantile_ms(s.post_orders.as_ref(), 0.50),
                    post_orders_p99_ms: quantile_ms(s.post_orders.as_ref(), 0.99),
                    saga_p50_ms: quantile_ms(s.saga.as_ref(), 0.50),
                    saga_p99_ms: quantile_ms(s.saga.as_ref(), 0.99),
                })
                .collect(),
        }
    }
}

fn quantile_ms(h: Option<&Histogram<u64>>, q: f64) -> Option<f64> {
    h.filter(|h| !h.is_empty())
        .map(|h| h.value_at_quantile(q) as f64 / 1000.0)
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |v: u64| v as f64 / 1000.0;
        Self {
            count: h.len(),
            mean_ms: h.mean() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct EndpointSummary {
    pub requests: u64,
    pub by_status: BTreeMap<String, u64>,
    /// Corrected for coordinated omission in the open model (measured from the scheduled start).
    pub latency: Percentiles,
    /// Measured from the actual send.
    pub service: Percentiles,
}

#[derive(Debug, Clone, Serialize)]
pub struct TimelinePoint {
    pub second: u64,
    pub warmup: bool,
    pub requests: u64,
    pub errors: u64,
    pub orders_placed: u64,
    pub sagas_settled_seen: u64,
    /// Checkout sagas that finished in this second, by their `finished_at` in Postgres.
    pub sagas_completed_db: u64,
    pub post_orders_p50_ms: Option<f64>,
    pub post_orders_p99_ms: Option<f64>,
    pub saga_p50_ms: Option<f64>,
    pub saga_p99_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub endpoints: BTreeMap<String, EndpointSummary>,
    pub saga_completion: Percentiles,
    /// Final states as the clients saw them (`status` or `status/reason`).
    pub settled_seen: BTreeMap<String, u64>,
    pub timeline: Vec<TimelinePoint>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warm_up_requests_reach_the_timeline_but_not_the_totals() {
        let t0 = Instant::now();
        let mut stats = Stats::new(t0, Duration::from_secs(1));
        let early = t0 + Duration::from_millis(100);
        let late = t0 + Duration::from_millis(1_500);
        stats.request(
            POST_ORDERS,
            Some(202),
            early,
            early,
            early + Duration::from_millis(5),
        );
        stats.request(
            POST_ORDERS,
            Some(202),
            late,
            late,
            late + Duration::from_millis(7),
        );
        stats.request(
            POST_ORDERS,
            None,
            late,
            late,
            late + Duration::from_millis(9),
        );

        let summary = stats.summary();
        let orders = &summary.endpoints[POST_ORDERS];
        assert_eq!(orders.requests, 2);
        assert_eq!(orders.by_status["202"], 1);
        assert_eq!(orders.by_status["transport_error"], 1);
        assert_eq!(summary.timeline[0].requests, 1);
        assert!(summary.timeline[0].warmup);
        assert_eq!(summary.timeline[1].requests, 2);
        assert_eq!(summary.timeline[1].errors, 1);
        assert!(!summary.timeline[1].warmup);
    }

    #[test]
    fn latency_counts_from_the_scheduled_start_and_service_time_from_the_send() {
        let t0 = Instant::now();
        let mut stats = Stats::new(t0, Duration::ZERO);
        let sent = t0 + Duration::from_millis(40);
        stats.request(
            GET_PRODUCT,
            Some(200),
            t0,
            sent,
            sent + Duration::from_millis(10),
        );
        let s = &stats.summary().endpoints[GET_PRODUCT];
        assert!((s.latency.p50_ms - 50.0).abs() < 0.1, "{:?}", s.latency);
        assert!((s.service.p50_ms - 10.0).abs() < 0.1, "{:?}", s.service);
    }
}
