//! A TCP fault proxy: clients connect to the proxy, which forwards to a
//! target, and a test switches the fault mode at any time.
//!
//! Modes: `Pass` forwards; `Delay(d)` forwards each chunk after `d`;
//! `Blackhole` keeps connections open but forwards nothing (a partition
//! that TCP cannot see); `Drop` closes every connection and refuses new
//! ones (a crashed peer). Besides, connections from chosen source
//! addresses can be cut off alone ([`FaultProxy::isolate`]): in front of
//! each Raft node, a partition that separates one node from the others
//! while they still reach each other.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does to traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward everything.
    Pass,
    /// Forward each chunk after a delay.
    Delay(Duration),
    /// Forward nothing, keep connections open.
    Blackhole,
    /// Close all connections and refuse new ones.
    Drop,
}

/// The fault for everyone, and the sources black-holed whatever it is.
#[derive(Debug, Clone, PartialEq, Eq)]
struct State {
    fault: Fault,
    isolated: Vec<IpAddr>,
}

impl State {
    /// What the proxy does to a connection from `source`.
    fn fault_for(&self, source: IpAddr) -> Fault {
        if self.fault == Fault::Pass && self.isolated.contains(&source) {
            Fault::Blackhole
        } else {
            self.fault
        }
    }
}

/// A running proxy; stops when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    mode: watch::Sender<State>,
    runtime: Option<tokio::runtime::Runtime>,
    connections: Arc<Mutex<usize>>,
}

impl FaultProxy {
    /// Starts a proxy listening on `listen` (use port 0) forwarding to `target`.
    pub fn start(listen: SocketAddr, target: SocketAddr) -> std::io::Result<FaultProxy> {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
        let listener = runtime.block_on(TcpListener::bind(listen))?;
        let addr = listener.local_addr()?;
        let (mode, mode_rx) = watch::channel(State { fault: Fault::Pass, isolated: Vec::new() });
        let connections = Arc::new(Mutex::new(0));
        let counter = connections.clone();
        runtime.spawn(async move {
            loop {
                let Ok((client, source)) = listener.accept().await else { continue };
                if mode_rx.borrow().fault == Fault::Drop {
                    continue;
                }
                *counter.lock().unwrap_or_else(|p| p.into_inner()) += 1;
                let rx = mode_rx.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else { return };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::select! {
                        () = pipe(cr, sw, rx.clone(), source.ip()) => {}
                        () = pipe(sr, cw, rx, source.ip()) => {}
                    }
                });
            }
        });
        Ok(FaultProxy { addr, mode, runtime: Some(runtime), connections })
    }

    /// Returns the address clients should connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Switches the fault mode for existing and new connections.
    pub fn set(&self, fault: Fault) {
        self.mode.send_modify(|state| state.fault = fault);
    }

    /// Black-holes connections from `sources` (both directions, existing
    /// and new) while the others pass; an empty list heals.
    pub fn isolate(&self, sources: &[IpAddr]) {
        self.mode.send_modify(|state| state.isolated = sources.to_vec());
    }

    /// Returns how many connections the proxy has accepted.
    pub fn accepted(&self) -> usize {
        *self.connections.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<State>,
    source: IpAddr,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            read = from.read(&mut buf) => match read { Ok(0) | Err(_) => return, Ok(n) => n },
            changed = mode.changed() => {
                if changed.is_err() || mode.borrow().fault == Fault::Drop { return; }
                continue;
            }
        };
        loop {
            let fault = mode.borrow().fault_for(source);
            match fault {
                Fault::Pass => break,
                Fault::Delay(d) => {
                    tokio::time::sleep(d).await;
                    break;
                }
                Fault::Drop => return,
                Fault::Blackhole => {
                    // Hold the bytes until the partition heals or the proxy drops.
                    if mode.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener as StdListener;
    use std::time::Instant;

    /// An echo server on a loopback port.
    fn echo_server() -> SocketAddr {
        let listener = StdListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            for mut stream in listener.incoming().map_while(Result::ok) {
                std::thread::spawn(move || {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = stream.read(&mut buf) {
                        if n == 0 || stream.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    fn round_trip(stream: &mut std::net::TcpStream, payload: &[u8]) -> std::io::Result<Vec<u8>> {
        stream.write_all(payload)?;
        let mut got = vec![0u8; payload.len()];
        stream.read_exact(&mut got)?;
        Ok(got)
    }

    #[test]
    fn passes_delays_blackholes_and_drops() {
        let proxy = FaultProxy::start("127.0.0.1:0".parse().expect("addr"), echo_server()).expect("proxy");
        let mut stream = std::net::TcpStream::connect(proxy.addr()).expect("connect");
        stream.set_read_timeout(Some(Duration::from_millis(800))).expect("timeout");
        assert_eq!(round_trip(&mut stream, b"ping").expect("pass"), b"ping");

        proxy.set(Fault::Delay(Duration::from_millis(150)));
        let started = Instant::now();
        assert_eq!(round_trip(&mut stream, b"slow").expect("delay"), b"slow");
        assert!(started.elapsed() >= Duration::from_millis(150));

        proxy.set(Fault::Blackhole);
        assert!(round_trip(&mut stream, b"lost").is_err(), "nothing crosses a black hole");
        proxy.set(Fault::Pass);
        let mut held = vec![0u8; 4];
        stream.read_exact(&mut held).expect("held bytes flow after healing");
        assert_eq!(&held, b"lost");

        proxy.set(Fault::Drop);
        let mut buf = [0u8; 1];
        assert!(matches!(stream.read(&mut buf), Ok(0) | Err(_)), "connection cut");
        assert_eq!(proxy.accepted(), 1);
    }

    #[test]
    fn isolates_chosen_sources_only() {
        let proxy = FaultProxy::start("127.0.0.1:0".parse().expect("addr"), echo_server()).expect("proxy");
        let from = |source: &str| {
            let socket = connect_from(source, proxy.addr());
            socket.set_read_timeout(Some(Duration::from_millis(500))).expect("timeout");
            socket
        };
        let (mut cut, mut kept) = (from("127.0.0.31"), from("127.0.0.32"));
        proxy.isolate(&["127.0.0.31".parse().expect("ip")]);
        assert!(round_trip(&mut cut, b"cut").is_err(), "an isolated source gets nothing through");
        assert_eq!(round_trip(&mut kept, b"kept").expect("others pass"), b"kept");
        proxy.isolate(&[]);
        let mut held = vec![0u8; 3];
        cut.read_exact(&mut held).expect("held bytes flow after healing");
        assert_eq!(&held, b"cut");
    }

    /// A connection to `target` from the loopback address `source`.
    fn connect_from(source: &str, target: SocketAddr) -> std::net::TcpStream {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let stream = runtime.block_on(async {
            let socket = tokio::net::TcpSocket::new_v4().expect("socket");
            socket.bind(SocketAddr::new(source.parse().expect("ip"), 0)).expect("bind");
            socket.connect(target).await.expect("connect")
        });
        let stream = stream.into_std().expect("std");
        stream.set_nonblocking(false).expect("blocking");
        stream
    }
}
