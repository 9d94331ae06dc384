//! What a connection speaks MQTT over: a stream that says when it has
//! bytes, hands them over without waiting, and takes a batch of encoded
//! packets. TCP implements it here, WebSocket in `websocket.rs`; the
//! connection task (`connection.rs`) drives either one the same way.
//!
//! The connection task is generic over its transport, so the TCP task's
//! future holds a `TcpStream` and nothing of WebSocket (ADR 0009).
//!
//! Hot path: `read_available` and `write_batch`.

use bytes::{Buf, BytesMut};
use std::io;
use std::task::{Context, Poll};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Bytes read from a socket at most per call; the buffer exists only while
/// bytes are being parsed.
pub(crate) const READ_CHUNK: usize = 4096;

/// What one non-blocking read found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Received {
    /// Bytes were appended to the buffer.
    Bytes,
    /// Nothing to read yet: readiness was spurious, or the transport took
    /// something that was not for MQTT (a WebSocket ping).
    Nothing,
    /// The peer closed the stream.
    Closed,
    /// The peer sent more than the maximum packet size at once (a WebSocket
    /// message is read whole before any of it is decoded).
    TooLarge,
    /// The stream failed, or the peer broke the transport's rules (a
    /// WebSocket text frame [MQTT-6.0.0-1]).
    Failed,
}

/// A byte stream carrying MQTT packets.
pub(crate) trait Transport: Send + 'static {
    /// Returns `Ready` when `read_available` would make progress (bytes,
    /// end of stream or an error); otherwise registers `cx`'s waker.
    /// Cancel-safe: whatever it takes off the socket is kept for the next
    /// `read_available`.
    fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;

    /// Appends what can be read now, at most `limit` bytes where the
    /// transport reads a plain stream, to `buffer`, allocating it sized to
    /// what arrived when it is `None`. Never waits.
    fn read_available(&mut self, buffer: &mut Option<BytesMut>, limit: usize) -> Received;

    /// Writes one batch of encoded packets (one socket write, or one binary
    /// WebSocket message). Not cancel-safe: a batch cut short is lost.
    async fn write_batch(&mut self, bytes: BytesMut) -> io::Result<()>;

    /// Writes what the socket takes now from the front of `bytes`, without
    /// waiting, and leaves the rest in `bytes` for [`Transport::write_batch`].
    /// A transport that writes whole messages (WebSocket, SSE) takes
    /// nothing here.
    fn write_now(&mut self, bytes: &mut BytesMut) -> io::Result<()> {
        let _ = bytes;
        Ok(())
    }

    /// Ends the stream in order (TCP: FIN; WebSocket: a close frame).
    async fn close(&mut self);

    /// The subject common name of the certificate the client presented
    /// (mutual TLS): the only client id it may connect as.
    fn certificate_name(&self) -> Option<&str> {
        None
    }
}

impl Transport for TcpStream {
    fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_read_ready(cx)
    }

    fn read_available(&mut self, buffer: &mut Option<BytesMut>, limit: usize) -> Received {
        // Read into scratch space on the stack first: a wake-up with nothing
        // to read (readiness is reported once more after every read) then
        // allocates nothing, and the buffer that packets are sliced from is
        // sized to what arrived.
        let mut scratch = [0u8; READ_CHUNK];
        let scratch = &mut scratch[..limit.min(READ_CHUNK)];
        match self.try_read(scratch) {
            Ok(0) => Received::Closed,
            Ok(n) => {
                buffer.get_or_insert_with(|| BytesMut::with_capacity(n)).extend_from_slice(&scratch[..n]);
                Received::Bytes
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Received::Nothing,
            Err(_) => Received::Failed,
        }
    }

    async fn write_batch(&mut self, bytes: BytesMut) -> io::Result<()> {
        self.write_all(&bytes).await
    }

    fn write_now(&mut self, bytes: &mut BytesMut) -> io::Result<()> {
        while !bytes.is_empty() {
            match self.try_write(bytes) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => bytes.advance(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn close(&mut self) {
        let _ = self.shutdown().await;
        // Read what the client still sends (acknowledgements in flight)
        // until it closes too, for a bounded time: a socket closed with
        // unread bytes is reset, and a reset can make the client lose the
        // DISCONNECT just written before it reads it.
        let mut sink = [0u8; 512];
        let drain = async {
            // While the client keeps sending, it is still working through
            // what came before the DISCONNECT: wait for it, up to the cap.
            while let Ok(Ok(n)) =
                tokio::time::timeout(CLOSE_IDLE, tokio::io::AsyncReadExt::read(self, &mut sink)).await
            {
                if n == 0 {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(CLOSE_DRAIN, drain).await;
    }
}

/// How long a closing connection waits for its client's next bytes. A
/// client busy with the deliveries before the DISCONNECT (a loaded
/// machine, a slow device) acknowledges them late: closing before it is
/// done resets the socket, and the reset can make it lose the DISCONNECT
/// it has not read yet. Most clients close at once, ending the wait.
const CLOSE_IDLE: std::time::Duration = std::time::Duration::from_secs(2);
/// How long a closing connection reads what its client still sends, at
/// most.
const CLOSE_DRAIN: std::time::Duration = std::time::Duration::from_secs(10);
