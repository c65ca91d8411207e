//! RabbitMQ: the message envelope, the topology, a confirming publisher and the shared consumer
//! loop (dedupe aside, which the Postgres-writing roles do in their own transactions).

pub mod consumer;
pub mod dead_letters;
pub mod envelope;
pub mod publisher;
pub mod sends;
pub mod topology;

use std::{sync::Arc, time::Duration};

use lapin::{Connection, ConnectionProperties, tcp::OwnedTLSConfig};
use rand::RngCore;

/// Where RabbitMQ is, and for `amqps://` the CA that signs its certificate when it is not a
/// public one. Cheap to clone.
#[derive(Clone)]
pub struct Amqp {
    url: Arc<str>,
    ca_pem: Option<Arc<str>>,
}

impl Amqp {
    pub fn new(url: &str, ca_pem: Option<String>) -> Self {
        Self {
            url: url.into(),
            ca_pem: ca_pem.map(Into::into),
        }
    }

    /// Opens a connection named `name` (as RabbitMQ lists it), giving up after a few seconds so
    /// callers can back off and retry.
    pub async fn connect(&self, name: &str) -> Result<Connection, lapin::Error> {
        // tokio's executor for lapin's tasks; lapin keeps its own (async-io) reactor for the
        // socket, whose IO thread outlives the tokio runtime at exit, where tokio's would log
        // errors after a clean shutdown.
        let properties = ConnectionProperties::default()
            .with_connection_name(name.into())
            .with_executor(tokio_executor_trait::Tokio::current());
        let tls = OwnedTLSConfig {
            identity: None,
            cert_chain: self.ca_pem.as_deref().map(str::to_owned),
        };
        let connect = Connection::connect_with_config(&self.url, properties, tls);
        tokio::time::timeout(Duration::from_secs(5), connect)
            .await
            .map_err(|_| lapin::Error::IOError(Arc::new(std::io::ErrorKind::TimedOut.into())))?
    }
}

/// Opens a connection to `url` trusting the public CAs only (tools and tests).
pub async fn connect(url: &str, name: &str) -> Result<Connection, lapin::Error> {
    Amqp::new(url, None).connect(name).await
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
