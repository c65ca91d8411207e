//! Prometheus metrics. One registry per application (not a global), so tests that run many apps
//! in one process each see only their own numbers.

use std::sync::atomic::AtomicU64;

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SagaLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub kind: &'static str,
    /// The order's status when the saga ended.
    pub outcome: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    pub step: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    pub queue: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SagaStateLabels {
    pub kind: &'static str,
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreLabels {
    pub store: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DutyLabels {
    pub duty: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RelayPassLabels {
    /// `rows` when the pass found rows to publish, `empty` when it found none.
    pub found: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_latency: Family<HttpLabels, Histogram>,
    pub sagas_started: Family<SagaLabels, Counter>,
    pub sagas_finished: Family<OutcomeLabels, Counter>,
    pub saga_duration: Family<OutcomeLabels, Histogram>,
    pub step_retries: Family<StepLabels, Counter>,
    pub stale_replies: Counter,
    /// Checkouts refused by admission control while too many orders were pending.
    pub checkouts_refused: Counter,
    /// Checkouts refused because their customer had too many orders pending.
    pub checkouts_rate_limited: Counter,
    /// MongoDB rating aggregations: reads the rating cache missed, and new reviews.
    pub rating_aggregations: Counter,
    /// Orders pending as admission control last read them (API processes only).
    pub orders_pending: Gauge,
    /// The pending orders at which checkouts are refused (0: no bound).
    pub orders_pending_limit: Gauge,
    /// Rows waiting in the outbox, as of the last scrape or relay pass.
    pub outbox_backlog: Gauge,
    /// Sagas not yet ended, by kind and state, read from Postgres at scrape time.
    pub sagas_in_flight: Family<SagaStateLabels, Gauge>,
    /// Age of the oldest saga not yet ended, by kind and state (0 when there is none).
    pub saga_oldest_in_flight: Family<SagaStateLabels, Gauge<f64, AtomicU64>>,
    /// Messages waiting in each dead-letter queue, read from RabbitMQ at scrape time.
    pub dead_letters: Family<QueueLabels, Gauge>,
    /// 1 when a store answered this process's last readiness check, else 0.
    pub store_up: Family<StoreLabels, Gauge>,
    /// 1 while this process holds a duty's lease (runs it for the cluster), else 0.
    pub lease_held: Family<DutyLabels, Gauge>,
    /// Times this process took a duty's lease.
    pub leases_taken: Family<DutyLabels, Counter>,
    /// Relay passes over the outbox, by whether they found rows.
    pub relay_passes: Family<RelayPassLabels, Counter>,
    /// Outbox rows the relay published.
    pub relay_published: Counter,
    /// Messages a consumer handled together in one batch, by queue.
    pub batch_size: Family<QueueLabels, Histogram>,
    pub messages_consumed: Family<QueueLabels, Counter>,
    pub messages_redelivered: Family<QueueLabels, Counter>,
    pub messages_retried: Family<QueueLabels, Counter>,
    pub messages_dead_lettered: Family<QueueLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("orderly");
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route and status",
            http_requests.clone(),
        );
        let http_latency = Family::<HttpLabels, Histogram>::new_with_constructor(|| {
            // 0.5 ms to ~16 s: checkouts answer in milliseconds, `?wait=` may hold for seconds.
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.0005, 2.0, 16,
            ))
        });
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request, by route and status",
            http_latency.clone(),
        );
        let sagas_started = Family::<SagaLabels, Counter>::default();
        registry.register(
            "sagas_started",
            "Sagas started, by kind",
            sagas_started.clone(),
        );
        let sagas_finished = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "sagas_finished",
            "Sagas ended, by kind, the order's outcome and its reason",
            sagas_finished.clone(),
        );
        let saga_duration = Family::<OutcomeLabels, Histogram>::new_with_constructor(|| {
            // 1 ms to ~65 s: from a few milliseconds when all is well to the step deadlines.
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.001, 2.0, 17,
            ))
        });
        registry.register(
            "saga_duration_seconds",
            "Time from a saga's start to its end",
            saga_duration.clone(),
        );
        let step_retries = Family::<StepLabels, Counter>::default();
        registry.register(
            "saga_step_retries",
            "Step commands sent again after their deadline passed",
            step_retries.clone(),
        );
        let stale_replies = Counter::default();
        registry.register(
            "saga_stale_replies",
            "Replies recorded and ignored because their step was no longer in flight",
            stale_replies.clone(),
        );
        let checkouts_refused = Counter::default();
        registry.register(
            "checkouts_refused",
            "Checkouts answered 503 because too many orders were pending",
            checkouts_refused.clone(),
        );
        let checkouts_rate_limited = Counter::default();
        registry.register(
            "checkouts_rate_limited",
            "Checkouts answered 429 because their customer had too many orders pending",
            checkouts_rate_limited.clone(),
        );
        let rating_aggregations = Counter::default();
        registry.register(
            "rating_aggregations",
            "MongoDB aggregations of rating totals: reads the Redis cache missed, and new reviews",
            rating_aggregations.clone(),
        );
        let orders_pending = Gauge::default();
        registry.register(
            "orders_pending",
            "Orders not yet settled, as admission control last counted them",
            orders_pending.clone(),
        );
        let orders_pending_limit = Gauge::default();
        registry.register(
            "orders_pending_limit",
            "Pending orders at which checkouts are refused (ORDERLY_MAX_PENDING_ORDERS; 0: no bound)",
            orders_pending_limit.clone(),
        );
        let outbox_backlog = Gauge::default();
        registry.register(
            "outbox_backlog",
            "Messages in the outbox not yet confirmed by RabbitMQ",
            outbox_backlog.clone(),
        );
        let sagas_in_flight = Family::<SagaStateLabels, Gauge>::default();
        registry.register(
            "sagas_in_flight",
            "Sagas not yet ended, by kind and state",
            sagas_in_flight.clone(),
        );
        let saga_oldest_in_flight = Family::<SagaStateLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "saga_oldest_in_flight_seconds",
            "Age of the oldest saga not yet ended, by kind and state",
            saga_oldest_in_flight.clone(),
        );
        let dead_letters = Family::<QueueLabels, Gauge>::default();
        registry.register(
            "dead_letters",
            "Messages waiting in a dead-letter queue, by the queue they came from",
            dead_letters.clone(),
        );
        let store_up = Family::<StoreLabels, Gauge>::default();
        registry.register(
            "store_up",
            "Whether a store answered this process's last readiness check (1) or not (0)",
            store_up.clone(),
        );
        let lease_held = Family::<DutyLabels, Gauge>::default();
        registry.register(
            "lease_held",
            "Whether this process holds a duty's lease and runs it for the cluster (1) or not (0)",
            lease_held.clone(),
        );
        let leases_taken = Family::<DutyLabels, Counter>::default();
        registry.register(
            "leases_taken",
            "Times this process took a duty's lease",
            leases_taken.clone(),
        );
        let relay_passes = Family::<RelayPassLabels, Counter>::default();
        registry.register(
            "relay_passes",
            "Relay passes over the outbox, by whether they found rows",
            relay_passes.clone(),
        );
        let relay_published = Counter::default();
        registry.register(
            "relay_published",
            "Outbox rows the relay published",
            relay_published.clone(),
        );
        let batch_size = Family::<QueueLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0])
        });
        registry.register(
            "batch_size",
            "Messages a consumer handled together in one batch, by queue",
            batch_size.clone(),
        );
        let messages = |registry: &mut Registry, name: &str, help: &str| {
            let family = Family::<QueueLabels, Counter>::default();
            registry.register(name, help, family.clone());
            family
        };
        let messages_consumed = messages(
            &mut registry,
            "messages_consumed",
            "Messages delivered to a consumer, by queue",
        );
        let messages_redelivered = messages(
            &mut registry,
            "messages_redelivered",
            "Deliveries RabbitMQ flagged as redelivered, by queue",
        );
        let messages_retried = messages(
            &mut registry,
            "messages_retried",
            "Messages sent to a delay queue after a transient failure, by queue",
        );
        let messages_dead_lettered = messages(
            &mut registry,
            "messages_dead_lettered",
            "Messages moved to a dead-letter queue, by queue",
        );
        Self {
            registry,
            http_requests,
            http_latency,
            sagas_started,
            sagas_finished,
            saga_duration,
            step_retries,
            stale_replies,
            checkouts_refused,
            checkouts_rate_limited,
            rating_aggregations,
            orders_pending,
            orders_pending_limit,
            outbox_backlog,
            sagas_in_flight,
            saga_oldest_in_flight,
            dead_letters,
            store_up,
            lease_held,
            leases_taken,
            relay_passes,
            relay_published,
            batch_size,
            messages_consumed,
            messages_redelivered,
            messages_retried,
            messages_dead_lettered,
        }
    }
}

impl Metrics {
    /// The Prometheus text exposition of every metric.
    /// The content type of what [`Self::render`] writes: OpenMetrics text (it ends in `# EOF`),
    /// which Prometheus asks for and parses as such.
    pub const CONTENT_TYPE: &'static str =
        "application/openmetrics-text; version=1.0.0; charset=utf-8";

    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }

    pub fn observe_http(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let labels = HttpLabels {
            method: method.to_owned(),
            route: route.to_owned(),
            status,
        };
        self.http_latency.get_or_create(&labels).observe(seconds);
        self.http_requests.get_or_create(&labels).inc();
    }
}
