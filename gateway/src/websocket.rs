//! MQTT over WebSocket (MQTT 5.0 and 3.1.1, chapter 6): an HTTP/1.1
//! listener that upgrades `/mqtt` requests offering the `mqtt` subprotocol,
//! and the [`Transport`] that carries MQTT bytes in binary messages. Behind
//! the upgrade runs the same connection task as TCP (`connection.rs`):
//! same CONNECT timeout, keep-alive, takeover, drain and limits.
//!
//! ```text
//!  socket ─▶ admission (connection limit) ─▶ HTTP/1.1, bounded by the connect timeout
//!     GET /mqtt + Sec-WebSocket-Protocol: mqtt ─▶ 101 ─▶ connection::serve(WebSocketTransport)
//!     other paths: 404; no `mqtt` subprotocol: 400
//! ```

use crate::Shared;
use crate::connection;
use crate::tls::TlsConfig;
use crate::transport::{Received, Transport};
use axum::Router;
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, close_code};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use std::io;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::net::TcpListener;
use tracing::debug;

/// The request path MQTT clients connect to.
const PATH: &str = "/mqtt";

/// The subprotocol a client must offer and the server selects
/// [MQTT-6.0.0-3], [MQTT-6.0.0-4].
const SUBPROTOCOL: &str = "mqtt";

/// tungstenite's read buffer, allocated at the upgrade and held for the
/// connection's life, and the most it reads per call. Its default, 128 KiB,
/// would dwarf everything else an idle connection holds; measured per idle
/// connection: 4 KiB → 6.7 KB, 1 KiB → 3.6 KB, 256 B → 2.8 KB (ADR 0009).
/// 1 KiB reads most MQTT packets in one call.
const READ_BUFFER: usize = 1024;

/// Accepts sockets and serves their HTTP upgrade (after a TLS handshake,
/// with `tls`: `wss://`), until the task is aborted.
pub(crate) async fn listen(listener: TcpListener, shared: Arc<Shared>, tls: Option<TlsConfig>) {
    let router = Router::new().route(PATH, any(upgrade)).with_state(shared.clone());
    loop {
        let stream = crate::accept_admitted(&listener, &shared, "WebSocket").await;
        let (router, timeout, shared, tls) =
            (router.clone(), shared.config.connect_timeout, shared.clone(), tls.clone());
        tokio::spawn(async move {
            match tls {
                None => serve_http(stream, router, timeout).await,
                Some(tls) => {
                    // One connect timeout covers the handshake and the
                    // upgrade request.
                    let started = tokio::time::Instant::now();
                    let failed = &shared.counters.tls_handshakes_failed;
                    if let Some(stream) = tls.accept(stream, timeout, failed).await {
                        serve_http(stream, router, timeout.saturating_sub(started.elapsed())).await;
                    }
                }
            }
            shared.release_socket();
        });
    }
}

/// Serves HTTP/1.1 on one socket until it upgrades or closes. The connect
/// timeout bounds the HTTP phase as it bounds a TCP socket's wait for
/// CONNECT; after the upgrade the connection task applies it again to the
/// CONNECT itself.
/// Serves the HTTP exchange. The socket holds its place under the
/// connection limit until this ends; the upgraded connection takes a place
/// of its own.
async fn serve_http<S>(stream: S, router: Router, timeout: Duration)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(router);
    let http = http1::Builder::new().serve_connection(TokioIo::new(stream), service).with_upgrades();
    match tokio::time::timeout(timeout, http).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => debug!(%error, "websocket handshake failed"),
        Err(_elapsed) => debug!("websocket upgrade timeout"),
    }
}

/// Upgrades a request that offers the `mqtt` subprotocol; refuses others
/// with 400 (a request that is no WebSocket upgrade at all gets axum's
/// rejection).
async fn upgrade(State(shared): State<Arc<Shared>>, upgrade: WebSocketUpgrade) -> Response {
    let upgrade = upgrade.protocols([SUBPROTOCOL]);
    if upgrade.selected_protocol().is_none() {
        let reason = "MQTT over WebSocket needs the subprotocol \"mqtt\" in Sec-WebSocket-Protocol\n";
        return (StatusCode::BAD_REQUEST, reason).into_response();
    }
    // A message is read whole before any of it is decoded, so the maximum
    // packet size bounds a message as it bounds the TCP read buffer.
    let max_message = usize::try_from(shared.config.limits.max_packet_size).unwrap_or(usize::MAX);
    if !shared.admits_connection() {
        return (StatusCode::SERVICE_UNAVAILABLE, "connection limit reached\n").into_response();
    }
    upgrade
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(max_message)
        .max_frame_size(max_message)
        .on_upgrade(move |socket| connection::serve(WebSocketTransport::new(socket), shared))
}

/// What a readiness poll took off the socket for the next read.
#[derive(Debug)]
enum Incoming {
    /// A binary message: MQTT bytes, any number of whole or partial
    /// packets [MQTT-6.0.0-2].
    Binary(Bytes),
    /// A text message [MQTT-6.0.0-1].
    Text,
    /// A close frame, or the end of the stream.
    End,
    /// A message or frame over the maximum packet size.
    TooLarge,
    /// A WebSocket protocol error or a failed socket.
    Failed,
}

/// A WebSocket carrying MQTT in binary messages. Pings are answered by the
/// library while the connection polls for readiness.
///
/// The socket is boxed: the connection's future holds the transport in
/// more than one of its states, and a pointer there instead of the whole
/// stream keeps the task small (ADR 0009).
pub(crate) struct WebSocketTransport {
    socket: Box<WebSocket>,
    /// Taken off the socket by `poll_readable`, handed over by `read_available`.
    incoming: Option<Incoming>,
    /// The close code sent when the connection ends.
    close_code: u16,
}

impl WebSocketTransport {
    fn new(socket: WebSocket) -> WebSocketTransport {
        WebSocketTransport { socket: Box::new(socket), incoming: None, close_code: close_code::NORMAL }
    }
}

impl Transport for WebSocketTransport {
    fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.incoming.is_none() {
            self.incoming = match ready!(self.socket.poll_next_unpin(cx)) {
                Some(Ok(Message::Binary(bytes))) => Some(Incoming::Binary(bytes)),
                // Answered (pong) or nothing to do; keep polling.
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => None,
                Some(Ok(Message::Text(_))) => Some(Incoming::Text),
                Some(Ok(Message::Close(_))) | None => Some(Incoming::End),
                Some(Err(error)) => Some(classify(error)),
            };
        }
        Poll::Ready(Ok(()))
    }

    fn read_available(&mut self, buffer: &mut Option<BytesMut>, _limit: usize) -> Received {
        match self.incoming.take() {
            None => Received::Nothing,
            Some(Incoming::Binary(bytes)) if bytes.is_empty() => Received::Nothing,
            Some(Incoming::Binary(bytes)) => {
                match buffer {
                    Some(buffer) => buffer.extend_from_slice(&bytes),
                    None => *buffer = Some(BytesMut::from(bytes)),
                }
                Received::Bytes
            }
            Some(Incoming::Text) => {
                debug!("websocket text frame");
                self.close_code = close_code::UNSUPPORTED;
                Received::Failed
            }
            Some(Incoming::End) => Received::Closed,
            Some(Incoming::TooLarge) => {
                self.close_code = close_code::SIZE;
                Received::TooLarge
            }
            Some(Incoming::Failed) => {
                self.close_code = close_code::PROTOCOL;
                Received::Failed
            }
        }
    }

    async fn write_batch(&mut self, bytes: BytesMut) -> io::Result<()> {
        self.socket.send(Message::Binary(bytes.freeze())).await.map_err(io::Error::other)
    }

    async fn close(&mut self) {
        // Fails harmlessly when the peer has closed already; the socket is
        // dropped right after.
        let frame = CloseFrame { code: self.close_code, reason: Utf8Bytes::default() };
        let _ = self.socket.send(Message::Close(Some(frame))).await;
    }
}

/// Sorts a read error: a message over the size limit is answered like a
/// packet over the maximum packet size; anything else ends the connection.
fn classify(error: axum::Error) -> Incoming {
    match error.into_inner().downcast::<tungstenite::Error>() {
        Ok(error) if matches!(*error, tungstenite::Error::Capacity(_)) => Incoming::TooLarge,
        Ok(error) => {
            debug!(%error, "websocket read failed");
            Incoming::Failed
        }
        Err(error) => {
            debug!(%error, "websocket read failed");
            Incoming::Failed
        }
    }
}
