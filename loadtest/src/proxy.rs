//! A TCP proxy between orderly and one of its stores, owned by a test or a chaos run, that can
//! break the link the ways a network or a store does: refuse it, reset every connection on it,
//! slow it down, or freeze it (bytes stop moving, connections stay open, as when the store's
//! process is stopped). Faults injected here reach only the processes pointed at the proxy, so a
//! test can take "Postgres" away from its own orderly without touching the server every other
//! test shares.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the proxy does with the bytes it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Carries them.
    Up,
    /// Holds each chunk this long before carrying it: a congested link, slower the more it
    /// carries.
    Slow(Duration),
    /// Carries nothing and keeps connections open; new ones are accepted and left waiting.
    Frozen,
    /// Resets every connection and each new one: the store looks gone.
    Cut,
}

/// A running proxy; it stops when dropped.
pub struct Proxy {
    addr: SocketAddr,
    link: Arc<watch::Sender<Link>>,
    /// Bumped to reset every open connection.
    resets: Arc<watch::Sender<u64>>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Listens on a port of its own on 127.0.0.1, forwarding to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let link = Arc::new(watch::Sender::new(Link::Up));
        let resets = Arc::new(watch::Sender::new(0u64));
        let task = tokio::spawn(accept(listener, upstream, link.clone(), resets.clone()));
        Ok(Self {
            addr,
            link,
            resets,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn link(&self) -> Link {
        *self.link.borrow()
    }

    /// Sets what the link does from now on; cutting it also resets every open connection.
    pub fn set(&self, link: Link) {
        self.link.send_replace(link);
        if link == Link::Cut {
            self.reset();
        }
    }

    /// Resets every open connection at once (TCP RST), leaving the link as it is.
    pub fn reset(&self) {
        self.resets.send_modify(|n| *n += 1);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.reset();
    }
}

async fn accept(
    listener: TcpListener,
    upstream: SocketAddr,
    link: Arc<watch::Sender<Link>>,
    resets: Arc<watch::Sender<u64>>,
) {
    loop {
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            // Out of file descriptors, say: the link stays, and the next accept may pass.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if *link.borrow() == Link::Cut {
            let _ = client.set_zero_linger();
            continue;
        }
        let (link, resets) = (link.subscribe(), resets.subscribe());
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(upstream).await else {
                let _ = client.set_zero_linger();
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            carry(client, server, link, resets).await;
        });
    }
}

/// How one direction of a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Its sender closed (or failed); the close was passed on.
    Closed,
    /// The link was cut.
    Cut,
}

/// Pumps bytes both ways. A side that closes has its close passed on (the other side may still
/// answer, as after Postgres's last error message); a cut link or a reset resets both sides,
/// so each sees its peer vanish as it would on a real failure.
async fn carry(
    mut client: TcpStream,
    mut server: TcpStream,
    link: watch::Receiver<Link>,
    mut resets: watch::Receiver<u64>,
) {
    let reset = {
        let (mut from_client, mut to_client) = client.split();
        let (mut from_server, mut to_server) = server.split();
        let up = pump(&mut from_client, &mut to_server, link.clone());
        let down = pump(&mut from_server, &mut to_client, link);
        tokio::pin!(up, down);
        let (mut up_open, mut down_open) = (true, true);
        loop {
            tokio::select! {
                end = &mut up, if up_open => {
                    if end == End::Cut { break true }
                    up_open = false;
                }
                end = &mut down, if down_open => {
                    if end == End::Cut { break true }
                    down_open = false;
                }
                _ = resets.changed() => break true,
            }
            if !up_open && !down_open {
                break false;
            }
        }
    };
    if reset {
        let _ = client.set_zero_linger();
        let _ = server.set_zero_linger();
    }
}

async fn pump(
    from: &mut tokio::net::tcp::ReadHalf<'_>,
    to: &mut tokio::net::tcp::WriteHalf<'_>,
    mut link: watch::Receiver<Link>,
) -> End {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return End::Closed;
            }
            Ok(n) => n,
        };
        loop {
            let now = *link.borrow_and_update();
            match now {
                Link::Up => break,
                Link::Slow(delay) => {
                    tokio::time::sleep(delay).await;
                    break;
                }
                Link::Cut => return End::Cut,
                Link::Frozen => {
                    if link.changed().await.is_err() {
                        return End::Cut;
                    }
                }
            }
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return End::Closed;
        }
    }
}

/// The `host:port` a store URL (`scheme://[user[:password]@]host[:port][/rest]`) points at,
/// with `default_port` when it names none; `None` for a host that is not an IP address.
pub fn target(url: &str, default_port: u16) -> Option<SocketAddr> {
    let (_, host_port, _) = authority(url)?;
    match host_port.parse() {
        Ok(addr) => Some(addr),
        Err(_) => {
            let host = host_port.trim_start_matches('[').trim_end_matches(']');
            let host = if host == "localhost" {
                "127.0.0.1"
            } else {
                host
            };
            Some(SocketAddr::new(host.parse().ok()?, default_port))
        }
    }
}

/// `url` pointed at `proxy` instead of its own host and port.
pub fn through(url: &str, proxy: SocketAddr) -> String {
    match authority(url) {
        Some((head, _, tail)) => format!("{head}{proxy}{tail}"),
        None => url.to_owned(),
    }
}

/// A URL split around its `host[:port]`: what comes before it (scheme and credentials), it, and
/// what follows (path and query).
fn authority(url: &str) -> Option<(&str, &str, &str)> {
    let start = url.find("://")? + 3;
    let end = url[start..]
        .find(['/', '?'])
        .map_or(url.len(), |i| start + i);
    let host_start = url[start..end].rfind('@').map_or(start, |i| start + i + 1);
    Some((&url[..host_start], &url[host_start..end], &url[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_pointed_through_the_proxy() {
        let proxy: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let cases = [
            (
                "postgres://postgres@127.0.0.1:5432/orderly_t_1",
                5432,
                "postgres://postgres@127.0.0.1:4000/orderly_t_1",
            ),
            ("redis://127.0.0.1:6379", 6379, "redis://127.0.0.1:4000"),
            (
                "mongodb://localhost/?appName=x",
                27017,
                "mongodb://127.0.0.1:4000/?appName=x",
            ),
            (
                "amqp://guest:guest@127.0.0.1:5672/%2f",
                5672,
                "amqp://guest:guest@127.0.0.1:4000/%2f",
            ),
        ];
        for (url, port, proxied) in cases {
            assert_eq!(through(url, proxy), proxied);
            let upstream = target(url, port).unwrap();
            assert_eq!(upstream.port(), port, "{url}");
            assert!(upstream.ip().is_loopback());
        }
    }

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buffer = [0u8; 1024];
                    while let Ok(n) = socket.read(&mut buffer).await {
                        if n == 0 || socket.write_all(&buffer[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn round_trip(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
        stream.write_all(b"ping").await?;
        let mut answer = [0u8; 4];
        stream.read_exact(&mut answer).await?;
        Ok(answer.to_vec())
    }

    #[tokio::test]
    async fn a_close_is_passed_on_after_the_last_bytes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            // Like Postgres's last error message, then its close.
            socket.write_all(b"goodbye").await.unwrap();
        });
        let proxy = Proxy::start(addr).await.unwrap();
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        let mut said = Vec::new();
        stream.read_to_end(&mut said).await.unwrap();
        assert_eq!(
            said, b"goodbye",
            "the bytes and then a clean end, not a reset"
        );
    }

    #[tokio::test]
    async fn carries_freezes_and_cuts() {
        let proxy = Proxy::start(echo_server().await).await.unwrap();
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut stream).await.unwrap(), b"ping");

        proxy.set(Link::Frozen);
        let frozen =
            tokio::time::timeout(Duration::from_millis(200), round_trip(&mut stream)).await;
        assert!(frozen.is_err(), "nothing moves while frozen");
        proxy.set(Link::Up);
        let mut answer = [0u8; 4];
        stream.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"ping", "what waited arrives once thawed");

        proxy.set(Link::Cut);
        assert!(
            round_trip(&mut stream).await.is_err(),
            "a cut resets the open connection"
        );
        let mut fresh = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(
            round_trip(&mut fresh).await.is_err(),
            "and refuses new ones"
        );

        proxy.set(Link::Up);
        let mut again = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut again).await.unwrap(), b"ping");
        proxy.reset();
        assert!(round_trip(&mut again).await.is_err(), "a reset drops it");
    }
}
