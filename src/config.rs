//! Settings: one typed struct, read from `ORDERLY_*` environment variables with local defaults.
//!
//! Nothing else in the crate reads the environment, so tests build a [`Settings`] by hand and
//! every store location they use is visible in one place.

use std::{collections::HashMap, net::SocketAddr, path::PathBuf, time::Duration};

use thiserror::Error;

use crate::messaging::consumer::Batching;

/// The admin token used when `ORDERLY_DEV_MODE=true` and no `ORDERLY_ADMIN_TOKEN` is set.
/// Documented in the README; never used outside dev mode.
pub const DEV_ADMIN_TOKEN: &str = "orderly-dev-admin-token";

/// Admin tokens that appear in orderly's files (the dev token; the compose file's old default):
/// anyone could use them, so outside dev mode they are refused.
const PUBLISHED_TOKENS: [&str; 2] = [DEV_ADMIN_TOKEN, "change-me-before-production"];

/// Everything the process needs to know about where it runs.
#[derive(Clone)]
pub struct Settings {
    pub http_addr: SocketAddr,
    pub database_url: String,
    /// CA certificates (PEM) that sign Postgres's certificate, when not a public CA; used with
    /// `sslmode=verify-ca|verify-full` in the URL.
    pub database_ca_file: Option<PathBuf>,
    pub pg_max_connections: u32,
    /// The worker roles' pool: `orderly worker`'s only pool, and `orderly run`'s second one.
    pub worker_pg_max_connections: u32,
    pub redis_url: String,
    /// CA certificates (PEM) for a `rediss://` URL, when not a public CA.
    pub redis_ca_file: Option<PathBuf>,
    /// Prefix of every Redis key orderly touches; tests give each app its own.
    pub redis_prefix: String,
    pub mongodb_url: String,
    pub mongodb_database: String,
    pub amqp_url: String,
    /// CA certificates (PEM) for an `amqps://` URL, when not a public CA.
    pub amqp_ca_file: Option<PathBuf>,
    /// Prefix of every exchange and queue name; tests give each app its own.
    pub amqp_prefix: String,
    /// Messages each consumer may hold unacked at once: the batch in hand and the next.
    pub prefetch: u16,
    /// How consumers group deliveries into batches.
    pub batching: Batching,
    /// How long a saga step may take before its command is sent again (doubling per retry).
    pub step_timeout: Duration,
    /// Attempts of a checkout step before the saga gives up with `timed_out`.
    pub step_max_attempts: u32,
    /// How often the orchestrator looks for sagas past their deadline.
    pub sweep_interval: Duration,
    /// How long the log of an ended saga is kept; `None` keeps it for good.
    pub saga_log_retention: Option<Duration>,
    /// Outbox rows the relay publishes per transaction.
    pub relay_batch: i64,
    /// How often the relay polls the outbox when no notification woke it.
    pub relay_poll_interval: Duration,
    /// Where `orderly worker` serves `/metrics` and `/healthz` (it has no API); off when unset.
    pub worker_metrics_addr: Option<SocketAddr>,
    pub admin_token: String,
    pub dev_mode: bool,
    pub log_format: LogFormat,
    pub log_filter: String,
    pub body_limit_bytes: usize,
    pub currency: String,
    /// How often the inventory role re-drives stock adjustments a crash left half-applied.
    pub stock_recovery_interval: Duration,
    pub shutdown_grace: Duration,
    /// Pending orders at which checkout answers `503` (admission control); 0 turns it off.
    pub max_pending_orders: i64,
    /// One customer's pending orders at which its checkouts answer `429`; 0 turns it off.
    pub max_pending_per_customer: i64,
}

impl std::fmt::Debug for Settings {
    // Hand-written so the admin token and URL credentials never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("http_addr", &self.http_addr)
            .field("database_url", &redact_url(&self.database_url))
            .field("redis_url", &redact_url(&self.redis_url))
            .field("redis_prefix", &self.redis_prefix)
            .field("mongodb_url", &redact_url(&self.mongodb_url))
            .field("mongodb_database", &self.mongodb_database)
            .field("amqp_url", &redact_url(&self.amqp_url))
            .field("amqp_prefix", &self.amqp_prefix)
            .field("admin_token", &"<redacted>")
            .field("dev_mode", &self.dev_mode)
            .field("log_format", &self.log_format)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Error)]
pub enum SettingsError {
    #[error("{name} is not valid: {reason}")]
    Invalid { name: &'static str, reason: String },
    #[error(
        "ORDERLY_ADMIN_TOKEN is required (set ORDERLY_DEV_MODE=true to use the documented dev token)"
    )]
    MissingAdminToken,
    #[error("ORDERLY_ADMIN_TOKEN must be at least 16 characters")]
    WeakAdminToken,
    #[error("ORDERLY_ADMIN_TOKEN is a token published in orderly's own files; choose your own")]
    PublishedAdminToken,
}

impl Settings {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, SettingsError> {
        let vars: HashMap<String, String> = std::env::vars()
            .filter(|(key, _)| key.starts_with("ORDERLY_"))
            .collect();
        Self::from_vars(&vars)
    }

    /// Builds settings from a map of `ORDERLY_*` variables; missing ones take local defaults.
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, SettingsError> {
        let get = |name: &str, default: &str| -> String {
            vars.get(name)
                .filter(|v| !v.is_empty())
                .cloned()
                .unwrap_or_else(|| default.to_owned())
        };
        let dev_mode = parse::<bool>(vars, "ORDERLY_DEV_MODE", false)?;
        let admin_token = match vars.get("ORDERLY_ADMIN_TOKEN").filter(|v| !v.is_empty()) {
            Some(token) if token.len() < 16 => return Err(SettingsError::WeakAdminToken),
            Some(token) if !dev_mode && PUBLISHED_TOKENS.contains(&token.as_str()) => {
                return Err(SettingsError::PublishedAdminToken);
            }
            Some(token) => token.clone(),
            None if dev_mode => DEV_ADMIN_TOKEN.to_owned(),
            None => return Err(SettingsError::MissingAdminToken),
        };
        let pg_max_connections = parse(vars, "ORDERLY_PG_MAX_CONNECTIONS", 32)?;
        let log_format = match get("ORDERLY_LOG_FORMAT", "text").as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(SettingsError::Invalid {
                    name: "ORDERLY_LOG_FORMAT",
                    reason: format!("expected text or json, got {other:?}"),
                });
            }
        };
        Ok(Self {
            http_addr: parse(vars, "ORDERLY_HTTP_ADDR", "127.0.0.1:8080".parse().unwrap())?,
            database_url: get(
                "ORDERLY_DATABASE_URL",
                "postgres://postgres@127.0.0.1:5432/orderly",
            ),
            database_ca_file: path(vars, "ORDERLY_DATABASE_CA_FILE"),
            pg_max_connections,
            worker_pg_max_connections: parse(
                vars,
                "ORDERLY_WORKER_PG_MAX_CONNECTIONS",
                default_worker_pool(),
            )?,
            redis_url: get("ORDERLY_REDIS_URL", "redis://127.0.0.1:6379"),
            redis_ca_file: path(vars, "ORDERLY_REDIS_CA_FILE"),
            redis_prefix: get("ORDERLY_REDIS_PREFIX", "orderly:"),
            mongodb_url: get("ORDERLY_MONGODB_URL", "mongodb://127.0.0.1:27017"),
            mongodb_database: get("ORDERLY_MONGODB_DATABASE", "orderly"),
            amqp_url: get("ORDERLY_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
            amqp_ca_file: path(vars, "ORDERLY_AMQP_CA_FILE"),
            amqp_prefix: get("ORDERLY_AMQP_PREFIX", "orderly"),
            prefetch: parse(vars, "ORDERLY_PREFETCH", 256)?,
            batching: Batching {
                size: parse::<usize>(vars, "ORDERLY_BATCH_SIZE", 100)?.max(1),
                linger: Duration::from_millis(parse(vars, "ORDERLY_BATCH_LINGER_MS", 2)?),
                max_linger: Duration::from_millis(parse(vars, "ORDERLY_BATCH_MAX_LINGER_MS", 40)?),
            },
            step_timeout: Duration::from_millis(parse(vars, "ORDERLY_STEP_TIMEOUT_MS", 10_000)?),
            step_max_attempts: parse(vars, "ORDERLY_STEP_MAX_ATTEMPTS", 3)?,
            sweep_interval: Duration::from_millis(parse(vars, "ORDERLY_SWEEP_INTERVAL_MS", 1_000)?),
            saga_log_retention: match parse::<u64>(vars, "ORDERLY_SAGA_LOG_RETENTION_DAYS", 7)? {
                0 => None,
                days => Some(Duration::from_secs(days * 86_400)),
            },
            relay_batch: parse(vars, "ORDERLY_RELAY_BATCH", 500)?,
            relay_poll_interval: Duration::from_millis(parse(vars, "ORDERLY_RELAY_POLL_MS", 500)?),
            worker_metrics_addr: match vars
                .get("ORDERLY_WORKER_METRICS_ADDR")
                .filter(|v| !v.is_empty())
            {
                None => None,
                Some(_) => Some(parse(
                    vars,
                    "ORDERLY_WORKER_METRICS_ADDR",
                    "127.0.0.1:0".parse().unwrap(),
                )?),
            },
            admin_token,
            dev_mode,
            log_format,
            log_filter: get("ORDERLY_LOG", "info"),
            body_limit_bytes: parse(vars, "ORDERLY_BODY_LIMIT_BYTES", 64 * 1024)?,
            currency: get("ORDERLY_CURRENCY", "IDR"),
            stock_recovery_interval: Duration::from_secs(parse(
                vars,
                "ORDERLY_STOCK_RECOVERY_SECS",
                5,
            )?),
            shutdown_grace: Duration::from_secs(parse(vars, "ORDERLY_SHUTDOWN_GRACE_SECS", 30)?),
            max_pending_orders: parse(vars, "ORDERLY_MAX_PENDING_ORDERS", 250)?,
            // A shopper waits for one checkout or a few; twenty at once is a script, and past
            // it one token could hold the global bound and refuse everyone else.
            max_pending_per_customer: parse::<i64>(vars, "ORDERLY_MAX_PENDING_PER_CUSTOMER", 20)?
                .max(0),
        })
    }
}

/// Twice the cores. The roles' transactions are short and Postgres-bound: past a couple per
/// core they only queue inside Postgres, where they also delay the API's queries. Measured on
/// 2 cores at 250 orders/s: 32 connections gave `POST /orders` a p99 of 286 ms, 4 gave 56 ms,
/// at the same throughput; 2 cost a third of it.
fn default_worker_pool() -> u32 {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get() as u32);
    (2 * cores).max(4)
}

fn parse<T>(
    vars: &HashMap<String, String>,
    name: &'static str,
    default: T,
) -> Result<T, SettingsError>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    match vars.get(name).filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(raw) => raw.parse().map_err(|e: T::Err| SettingsError::Invalid {
            name,
            reason: e.to_string(),
        }),
    }
}

/// A file named by `name`, when set and not empty.
fn path(vars: &HashMap<String, String>, name: &str) -> Option<PathBuf> {
    vars.get(name).filter(|v| !v.is_empty()).map(PathBuf::from)
}

/// Hides the password part of `scheme://user:password@host`.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}://{}:***@{}", &url[..scheme_end], user, &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn refuses_to_start_without_admin_token_outside_dev_mode() {
        assert!(matches!(
            Settings::from_vars(&vars(&[])),
            Err(SettingsError::MissingAdminToken)
        ));
    }

    #[test]
    fn dev_mode_uses_the_documented_token() {
        let s = Settings::from_vars(&vars(&[("ORDERLY_DEV_MODE", "true")])).unwrap();
        assert_eq!(s.admin_token, DEV_ADMIN_TOKEN);
        assert_eq!(s.http_addr.to_string(), "127.0.0.1:8080");
    }

    #[test]
    fn refuses_a_published_token_outside_dev_mode() {
        for token in PUBLISHED_TOKENS {
            assert!(matches!(
                Settings::from_vars(&vars(&[("ORDERLY_ADMIN_TOKEN", token)])),
                Err(SettingsError::PublishedAdminToken)
            ));
        }
        let dev = [
            ("ORDERLY_ADMIN_TOKEN", DEV_ADMIN_TOKEN),
            ("ORDERLY_DEV_MODE", "true"),
        ];
        assert!(Settings::from_vars(&vars(&dev)).is_ok());
    }

    #[test]
    fn rejects_a_bad_value_by_name() {
        let err = Settings::from_vars(&vars(&[
            ("ORDERLY_DEV_MODE", "true"),
            ("ORDERLY_HTTP_ADDR", "nowhere"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("ORDERLY_HTTP_ADDR"));
    }

    #[test]
    fn debug_output_hides_secrets() {
        let s = Settings::from_vars(&vars(&[
            ("ORDERLY_ADMIN_TOKEN", "a-very-secret-admin-token"),
            (
                "ORDERLY_AMQP_URL",
                "amqp://guest:hunter2@127.0.0.1:5672/%2f",
            ),
        ]))
        .unwrap();
        let shown = format!("{s:?}");
        assert!(!shown.contains("a-very-secret-admin-token"));
        assert!(!shown.contains("hunter2"));
    }
}
