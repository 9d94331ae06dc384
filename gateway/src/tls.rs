//! TLS for every listener a device or an app backend reaches: MQTT over
//! TLS, MQTT over secure WebSocket, the push API and SSE over HTTPS
//! (rustls with its ring provider). Optionally devices present a
//! certificate signed by a configured CA (mutual TLS).
//!
//! ```text
//!  socket ─▶ admission ─▶ TLS handshake, bounded by the connect timeout
//!     MQTT: connection::serve(TlsTransport)   WebSocket: HTTP upgrade   push API: axum
//! ```

use crate::transport::{READ_CHUNK, Received, Transport};
use bytes::BytesMut;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::{debug, warn};

/// A server certificate and key, and optionally the CA devices' client
/// certificates must chain to.
#[derive(Clone)]
pub struct TlsConfig {
    acceptor: TlsAcceptor,
    /// Whether clients must present a certificate.
    pub mutual: bool,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig").field("mutual", &self.mutual).finish()
    }
}

impl TlsConfig {
    /// Reads a PEM certificate chain and its PEM private key (PKCS#8, PKCS#1
    /// or SEC1), and, for mutual TLS, the PEM CA certificates client
    /// certificates must chain to. Errors say which file and what is wrong.
    pub fn from_files(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<TlsConfig, String> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .and_then(|certs| certs.collect::<Result<_, _>>())
            .map_err(|e| format!("{}: {e}", cert.display()))?;
        if chain.is_empty() {
            return Err(format!("{}: no certificate in the file", cert.display()));
        }
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let mut roots = rustls::RootCertStore::empty();
                for ca in
                    CertificateDer::pem_file_iter(path).map_err(|e| format!("{}: {e}", path.display()))?
                {
                    let ca = ca.map_err(|e| format!("{}: {e}", path.display()))?;
                    roots.add(ca).map_err(|e| format!("{}: {e}", path.display()))?;
                }
                let verifier =
                    rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                        .build()
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config =
            builder.with_single_cert(chain, key).map_err(|e| format!("{}: {e}", cert.display()))?;
        // HTTP/1.1 for the push API and WebSocket upgrades; MQTT clients
        // rarely offer ALPN, and those that do get no protocol chosen.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsConfig { acceptor: TlsAcceptor::from(Arc::new(config)), mutual: client_ca.is_some() })
    }

    /// Runs the TLS handshake on `stream`, within `timeout`; a failure is
    /// counted on `failed`.
    pub(crate) async fn accept(
        &self,
        stream: TcpStream,
        timeout: Duration,
        failed: &std::sync::atomic::AtomicU64,
    ) -> Option<TlsStream<TcpStream>> {
        let outcome = tokio::time::timeout(timeout, self.acceptor.accept(stream)).await;
        match outcome {
            Ok(Ok(stream)) => return Some(stream),
            Ok(Err(error)) => debug!(%error, "TLS handshake failed"),
            Err(_elapsed) => debug!("TLS handshake timeout"),
        }
        crate::GatewayCounters::add(failed, 1);
        None
    }
}

/// The subject common name of the certificate a client presented, if any
/// (mutual TLS): what the client id is bound to.
pub(crate) fn client_name(stream: &TlsStream<TcpStream>) -> Option<String> {
    let certificate = stream.get_ref().1.peer_certificates()?.first()?;
    crate::der::subject_common_name(certificate.as_ref())
}

/// What a readiness poll took off the TLS stream for the next read.
enum Pending {
    Bytes(BytesMut),
    Closed,
    Failed,
}

/// MQTT over TLS. The stream is boxed: rustls' state is large, and a
/// pointer keeps the connection task small.
pub(crate) struct TlsTransport {
    stream: Box<TlsStream<TcpStream>>,
    pending: Option<Pending>,
    /// The client certificate's common name (mutual TLS).
    name: Option<Box<str>>,
}

impl TlsTransport {
    pub(crate) fn new(stream: TlsStream<TcpStream>) -> TlsTransport {
        let name = client_name(&stream).map(String::into_boxed_str);
        TlsTransport { stream: Box::new(stream), pending: None, name }
    }
}

impl Transport for TlsTransport {
    fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.pending.is_none() {
            let mut scratch = [0u8; READ_CHUNK];
            let mut buffer = ReadBuf::new(&mut scratch);
            self.pending = Some(match Pin::new(&mut *self.stream).poll_read(cx, &mut buffer) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(())) if buffer.filled().is_empty() => Pending::Closed,
                Poll::Ready(Ok(())) => Pending::Bytes(BytesMut::from(buffer.filled())),
                Poll::Ready(Err(error)) => {
                    debug!(%error, "TLS read failed");
                    Pending::Failed
                }
            });
        }
        Poll::Ready(Ok(()))
    }

    fn read_available(&mut self, buffer: &mut Option<BytesMut>, _limit: usize) -> Received {
        match self.pending.take() {
            None => Received::Nothing,
            Some(Pending::Bytes(bytes)) => {
                match buffer {
                    Some(buffer) => buffer.extend_from_slice(&bytes),
                    None => *buffer = Some(bytes),
                }
                Received::Bytes
            }
            Some(Pending::Closed) => Received::Closed,
            Some(Pending::Failed) => Received::Failed,
        }
    }

    async fn write_batch(&mut self, bytes: BytesMut) -> io::Result<()> {
        self.stream.write_all(&bytes).await?;
        self.stream.flush().await
    }

    async fn close(&mut self) {
        // close_notify, then FIN; fails harmlessly when the peer is gone.
        let _ = self.stream.shutdown().await;
    }

    fn certificate_name(&self) -> Option<&str> {
        self.name.as_deref()
    }
}

/// Accepts MQTT-over-TLS sockets until the task is aborted: each is
/// admitted, its handshake run within the connect timeout, and then served
/// like any MQTT connection.
pub(crate) async fn listen_mqtt(listener: TcpListener, tls: TlsConfig, shared: Arc<crate::Shared>) {
    loop {
        let stream = crate::accept_admitted(&listener, &shared, "MQTT/TLS").await;
        let (tls, shared) = (tls.clone(), shared.clone());
        tokio::spawn(async move {
            let failed = &shared.counters.tls_handshakes_failed;
            match tls.accept(stream, shared.config.connect_timeout, failed).await {
                Some(stream) => crate::connection::serve(TlsTransport::new(stream), shared).await,
                None => shared.release_socket(),
            }
        });
    }
}

/// TLS connections whose handshake is done, waiting for the push API's
/// HTTP server; handshakes run in their own tasks, so a slow client holds
/// up no one.
pub(crate) struct TlsListener {
    accepted: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

/// Handshakes done and not yet taken by the HTTP server, at most; past it
/// handshakes wait (backpressure on accepting).
const HANDSHAKED: usize = 64;

impl TlsListener {
    /// Accepts on `listener` and runs each handshake within `timeout`.
    pub(crate) fn new(
        listener: TcpListener,
        tls: TlsConfig,
        timeout: Duration,
        shared: Arc<crate::Shared>,
    ) -> io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let (done, accepted) = mpsc::channel(HANDSHAKED);
        let task = tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, peer)) => {
                        // As every socket of the gateway: no Nagle delay.
                        let _ = stream.set_nodelay(true);
                        let (tls, done, shared) = (tls.clone(), done.clone(), shared.clone());
                        tokio::spawn(async move {
                            let failed = &shared.counters.tls_handshakes_failed;
                            if let Some(stream) = tls.accept(stream, timeout, failed).await {
                                let _ = done.send((stream, peer)).await;
                            }
                        });
                    }
                    Err(error) => {
                        warn!(%error, "HTTPS accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        });
        Ok(TlsListener { accepted, local, task })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(accepted) => accepted,
            // The accept task is gone (it only ends when aborted): no more
            // connections.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}
