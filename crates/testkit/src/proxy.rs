//! A TCP fault proxy for partition and blip tests: sits between a client and a server on
//! loopback and, on command, passes traffic, delays it, black-holes it (connections stay open
//! but no byte moves — what a network partition looks like to TCP) or resets every connection.
//!
//! Threads, not async: the proxy must keep working while the code under test blocks or its
//! runtime is stalled, and it must not depend on the test's runtime.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

/// What the proxy does with traffic right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// Forward bytes as they arrive.
    Pass,
    /// Forward bytes after this delay per chunk (each direction).
    Latency(Duration),
    /// Accept connections and read from them, but forward nothing until the mode changes:
    /// bytes are held (not dropped), as a partition that heals would deliver them late.
    Blackhole,
}

struct Shared {
    mode: Mutex<ProxyMode>,
    changed: Condvar,
    closing: AtomicBool,
    conns: Mutex<Vec<(u64, TcpStream, TcpStream)>>,
    next_conn: AtomicU64,
    forwarded_bytes: AtomicU64,
}

impl Shared {
    /// Blocks while the proxy black-holes traffic; returns the delay to apply, or `None` when
    /// the proxy is shutting down.
    fn wait_until_passable(&self) -> Option<Duration> {
        let mut mode = self.mode.lock().expect("proxy mode lock");
        loop {
            if self.closing.load(Ordering::SeqCst) {
                return None;
            }
            match *mode {
                ProxyMode::Pass => return Some(Duration::ZERO),
                ProxyMode::Latency(d) => return Some(d),
                ProxyMode::Blackhole => mode = self.changed.wait(mode).expect("proxy mode lock"),
            }
        }
    }
}

/// A running proxy from a fresh loopback port to `upstream`; stops (and cuts every
/// connection) when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    shared: Arc<Shared>,
}

impl FaultProxy {
    /// Starts a proxy listening on `127.0.0.1:<free port>` in [`ProxyMode::Pass`].
    pub fn start(upstream: SocketAddr) -> io::Result<FaultProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            mode: Mutex::new(ProxyMode::Pass),
            changed: Condvar::new(),
            closing: AtomicBool::new(false),
            conns: Mutex::new(Vec::new()),
            next_conn: AtomicU64::new(0),
            forwarded_bytes: AtomicU64::new(0),
        });
        let accept_shared = Arc::clone(&shared);
        thread::Builder::new()
            .name(format!("fault-proxy-{addr}"))
            .spawn(move || accept_loop(listener, upstream, accept_shared))?;
        Ok(FaultProxy {
            addr,
            upstream,
            shared,
        })
    }

    /// The address clients should connect to instead of the upstream.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The real server behind the proxy.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Switches the mode; held bytes flow again as soon as the mode is no longer
    /// [`ProxyMode::Blackhole`].
    pub fn set_mode(&self, mode: ProxyMode) {
        *self.shared.mode.lock().expect("proxy mode lock") = mode;
        self.shared.changed.notify_all();
    }

    /// The current mode.
    pub fn mode(&self) -> ProxyMode {
        *self.shared.mode.lock().expect("proxy mode lock")
    }

    /// Closes every open connection in both directions (clients see EOF or a reset); new
    /// connections are still accepted.
    pub fn reset_connections(&self) {
        let conns = std::mem::take(&mut *self.shared.conns.lock().expect("proxy conns lock"));
        for (_, client, server) in conns {
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
        }
    }

    /// Connections currently open through the proxy.
    pub fn open_connections(&self) -> usize {
        self.shared.conns.lock().expect("proxy conns lock").len()
    }

    /// Bytes forwarded (handed to the receiving socket) so far in both directions, so a test
    /// can see that traffic did flow.
    pub fn forwarded_bytes(&self) -> u64 {
        self.shared.forwarded_bytes.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::SeqCst);
        self.shared.changed.notify_all();
        self.reset_connections();
        // Wake the accept loop so it sees `closing` and exits.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

fn accept_loop(listener: TcpListener, upstream: SocketAddr, shared: Arc<Shared>) {
    for client in listener.incoming() {
        if shared.closing.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        let Ok(server) = TcpStream::connect_timeout(&upstream, Duration::from_secs(5)) else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let id = shared.next_conn.fetch_add(1, Ordering::SeqCst);
        let (Ok(c2), Ok(s2), Ok(c3), Ok(s3)) = (
            client.try_clone(),
            server.try_clone(),
            client.try_clone(),
            server.try_clone(),
        ) else {
            continue;
        };
        shared
            .conns
            .lock()
            .expect("proxy conns lock")
            .push((id, c3, s3));
        let up = Arc::clone(&shared);
        let down = Arc::clone(&shared);
        let _ = thread::Builder::new()
            .name(format!("fault-proxy-up-{id}"))
            .spawn(move || pump(client, server, id, &up));
        let _ = thread::Builder::new()
            .name(format!("fault-proxy-down-{id}"))
            .spawn(move || pump(s2, c2, id, &down));
    }
}

/// Copies `from` → `to` chunk by chunk, consulting the mode before forwarding each chunk;
/// on EOF or error closes both and forgets the connection.
fn pump(mut from: TcpStream, mut to: TcpStream, id: u64, shared: &Shared) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let Some(delay) = shared.wait_until_passable() else {
            break;
        };
        if !delay.is_zero() {
            thread::sleep(delay);
        }
        // Counted before the write, so a peer that has received the bytes sees them counted.
        shared.forwarded_bytes.fetch_add(n as u64, Ordering::SeqCst);
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
    shared
        .conns
        .lock()
        .expect("proxy conns lock")
        .retain(|(conn, _, _)| *conn != id);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// An echo server on loopback; returns its address.
    fn echo_server() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 || s.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    fn roundtrip(s: &mut TcpStream, msg: &[u8]) -> io::Result<Vec<u8>> {
        s.write_all(msg)?;
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got)?;
        Ok(got)
    }

    #[test]
    fn passes_blackholes_heals_and_resets() {
        let proxy = FaultProxy::start(echo_server()).unwrap();
        let mut s = TcpStream::connect(proxy.addr()).unwrap();
        assert_eq!(roundtrip(&mut s, b"hello").unwrap(), b"hello");
        assert_eq!(proxy.open_connections(), 1);

        // Partition: the write succeeds (kernel buffers) but no reply arrives.
        proxy.set_mode(ProxyMode::Blackhole);
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let err = roundtrip(&mut s, b"lost?").unwrap_err();
        assert!(
            matches!(
                err.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
            "{err:?}"
        );

        // Heal: the held bytes are delivered late, in order.
        proxy.set_mode(ProxyMode::Pass);
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut late = [0u8; 5];
        s.read_exact(&mut late).unwrap();
        assert_eq!(&late, b"lost?");

        // Latency is applied per chunk and direction.
        proxy.set_mode(ProxyMode::Latency(Duration::from_millis(100)));
        let t = Instant::now();
        assert_eq!(roundtrip(&mut s, b"slow").unwrap(), b"slow");
        assert!(
            t.elapsed() >= Duration::from_millis(200),
            "{:?}",
            t.elapsed()
        );
        proxy.set_mode(ProxyMode::Pass);

        // Reset: the client sees the connection end.
        proxy.reset_connections();
        let mut buf = [0u8; 1];
        let r = s.read(&mut buf);
        assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
        assert!(proxy.forwarded_bytes() >= 2 * 14);

        // New connections still work after a reset.
        let mut s2 = TcpStream::connect(proxy.addr()).unwrap();
        assert_eq!(roundtrip(&mut s2, b"again").unwrap(), b"again");
    }
}
