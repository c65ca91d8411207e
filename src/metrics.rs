//! Prometheus metrics. One registry per application (not a global), so tests that run many apps
//! in one process each see only their own numbers.

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_latency: Family<HttpLabels, Histogram>,
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
        Self {
            registry,
            http_requests,
            http_latency,
        }
    }
}

impl Metrics {
    /// The Prometheus text exposition of every metric.
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
