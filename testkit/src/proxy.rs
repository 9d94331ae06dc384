//! A TCP fault proxy: clients connect to the proxy, which forwards to a
//! target, and a test switches the fault mode at any time.
//!
//! Modes: `Pass` forwards; `Delay(d)` forwards each chunk after `d`;
//! `Blackhole` keeps connections open but forwards nothing (a partition
//! that TCP cannot see); `Drop` closes every connection and refuses new
//! ones (a crashed peer).

use std::net::SocketAddr;
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

/// A running proxy; stops when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    mode: watch::Sender<Fault>,
    runtime: Option<tokio::runtime::Runtime>,
    connections: Arc<Mutex<usize>>,
}

impl FaultProxy {
    /// Starts a proxy listening on `listen` (use port 0) forwarding to `target`.
    pub fn start(listen: SocketAddr, target: SocketAddr) -> std::io::Result<FaultProxy> {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
        let listener = runtime.block_on(TcpListener::bind(listen))?;
        let addr = listener.local_addr()?;
        let (mode, mode_rx) = watch::channel(Fault::Pass);
        let connections = Arc::new(Mutex::new(0));
        let counter = connections.clone();
        runtime.spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else { continue };
                if *mode_rx.borrow() == Fault::Drop {
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
                        () = pipe(cr, sw, rx.clone()) => {}
                        () = pipe(sr, cw, rx) => {}
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
        let _ = self.mode.send(fault);
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
    mut mode: watch::Receiver<Fault>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            read = from.read(&mut buf) => match read { Ok(0) | Err(_) => return, Ok(n) => n },
            changed = mode.changed() => {
                if changed.is_err() || *mode.borrow() == Fault::Drop { return; }
                continue;
            }
        };
        loop {
            let fault = *mode.borrow();
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
}
