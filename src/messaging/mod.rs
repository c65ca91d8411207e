//! RabbitMQ: the message envelope, the topology, a confirming publisher and the shared consumer
//! loop (dedupe aside, which the Postgres-writing roles do in their own transactions).

pub mod consumer;
pub mod dead_letters;
pub mod envelope;
pub mod publisher;
pub mod sends;
pub mod topology;

use std::time::Duration;

use lapin::{Connection, ConnectionProperties};
use rand::RngCore;

/// Opens a connection, giving up after a few seconds so callers can back off and retry.
pub async fn connect(url: &str, name: &str) -> Result<Connection, lapin::Error> {
    // lapin's own (async-io) reactor rather than tokio's: its IO thread outlives the tokio
    // runtime at exit, and on tokio's reactor it then logs errors after a clean shutdown.
    let properties = ConnectionProperties::default()
        .with_connection_name(name.into())
        .with_executor(tokio_executor_trait::Tokio::current());
    tokio::time::timeout(Duration::from_secs(5), Connection::connect(url, properties))
        .await
        .map_err(|_| {
            lapin::Error::IOError(std::sync::Arc::new(std::io::ErrorKind::TimedOut.into()))
        })?
}

/// A W3C trace context for a new trace (`00-<trace id>-<span id>-01`).
pub fn new_traceparent() -> String {
    let mut rng = rand::rng();
    let mut trace = [0u8; 16];
    rng.fill_bytes(&mut trace);
    format!("00-{}-{:016x}-01", hex(&trace), rng.next_u64())
}

/// The trace context for a message sent while handling one with `parent`: same trace, new span.
pub fn child_traceparent(parent: Option<&str>) -> String {
    match parent
        .and_then(|p| p.split('-').nth(1))
        .filter(|t| t.len() == 32)
    {
        Some(trace) => format!("00-{trace}-{:016x}-01", rand::rng().next_u64()),
        None => new_traceparent(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_contexts_keep_their_trace() {
        let root = new_traceparent();
        assert_eq!(root.len(), 55, "{root}");
        let child = child_traceparent(Some(&root));
        assert_eq!(child[..35], root[..35]);
        assert_ne!(child, root);
        assert_eq!(child_traceparent(Some("garbage")).len(), 55);
    }
}
