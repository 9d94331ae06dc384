//! A small async MQTT client over the shared codec: one socket, one read
//! buffer, one write buffer, driven by the task that owns it.
//!
//! The scenarios keep their own state (in-flight windows, what arrived) and
//! use the client for framing and I/O: [`Client::send`] encodes into the
//! write buffer, [`Client::pump`] writes it while waiting for bytes to read,
//! [`Client::decode`] takes packets out of the read buffer. TCP_NODELAY is
//! set on every socket.

use bytes::BytesMut;
use herald_mqtt::{
    Codec, Connect, DecodeError, Disconnect, EncodeError, Packet, Properties, Property, ProtocolVersion, QoS,
    ReasonCode, Subscribe, SubscriptionOptions,
};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU16;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout_at};

/// The largest packet accepted from the broker.
const MAX_PACKET_SIZE: u32 = 1024 * 1024;

/// How long [`Client::leave`] waits for the broker to close.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(2);

/// Read buffer growth step: room for a few hundred small publishes per
/// read, without holding much memory per idle client.
const READ_BUFFER: usize = 16 * 1024;

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    /// A socket error.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The broker sent bytes that are not MQTT.
    #[error("decode: {0}")]
    Decode(#[from] DecodeError),
    /// A packet could not be encoded.
    #[error("encode: {0}")]
    Encode(#[from] EncodeError),
    /// A step did not finish in time.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// The broker closed the connection.
    #[error("connection closed by the broker")]
    Closed,
    /// The broker refused the connection.
    #[error("CONNACK refused: {0:?}")]
    Refused(ReasonCode),
    /// The broker ended the connection with DISCONNECT.
    #[error("DISCONNECT from the broker: {0:?}")]
    Disconnected(ReasonCode),
    /// The broker refused a subscription.
    #[error("SUBSCRIBE refused: {0:?}")]
    SubscribeRefused(ReasonCode),
    /// The broker answered with a packet the step did not expect.
    #[error("expected {expected}, got {got}")]
    Unexpected {
        /// What the step waited for.
        expected: &'static str,
        /// What came.
        got: &'static str,
    },
}

/// How to open one connection.
#[derive(Debug, Clone)]
pub(crate) struct ConnectOptions {
    /// The broker.
    pub(crate) target: SocketAddr,
    /// The local address to bind (port chosen by the kernel).
    pub(crate) source: IpAddr,
    /// The protocol version to speak.
    pub(crate) version: ProtocolVersion,
    /// The client id.
    pub(crate) client_id: String,
    /// Keep-alive, seconds.
    pub(crate) keep_alive: u16,
    /// Clean start (5.0) / clean session (3.1.1).
    pub(crate) clean_start: bool,
    /// Session expiry in seconds (5.0 only; 3.1.1 sessions that are not
    /// clean last as long as the broker keeps them).
    pub(crate) session_expiry: u32,
    /// Receive Maximum announced to the broker (5.0 only): the in-flight
    /// window it may open towards this client.
    pub(crate) receive_maximum: u16,
}

impl ConnectOptions {
    /// Returns options for a clean, non-persistent session.
    pub(crate) fn new(
        target: SocketAddr,
        source: IpAddr,
        version: ProtocolVersion,
        client_id: String,
    ) -> Self {
        ConnectOptions {
            target,
            source,
            version,
            client_id,
            keep_alive: 300,
            clean_start: true,
            session_expiry: 0,
            receive_maximum: u16::MAX,
        }
    }
}

/// One MQTT connection.
#[derive(Debug)]
pub(crate) struct Client {
    stream: TcpStream,
    codec: Codec,
    read_buffer: BytesMut,
    write_buffer: BytesMut,
    next_packet_id: u16,
    session_present: bool,
    server_receive_maximum: u16,
}

impl Client {
    /// Connects, sends CONNECT and waits for a successful CONNACK, all
    /// before `deadline`.
    pub(crate) async fn connect(options: &ConnectOptions, deadline: Instant) -> Result<Client, ClientError> {
        let socket = if options.target.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        bind_source(&socket, options.source)?;
        let stream = timeout_at(deadline, socket.connect(options.target))
            .await
            .map_err(|_| ClientError::Timeout("the TCP handshake"))??;
        stream.set_nodelay(true)?;
        let mut client = Client {
            stream,
            codec: Codec::new(options.version, MAX_PACKET_SIZE),
            read_buffer: BytesMut::new(),
            write_buffer: BytesMut::new(),
            next_packet_id: 0,
            session_present: false,
            server_receive_maximum: u16::MAX,
        };
        client.send(&Packet::Connect(Box::new(connect_packet(options))))?;
        client.flush(deadline).await?;
        match client.receive(deadline, "CONNACK").await? {
            Packet::ConnAck(ack) if ack.reason_code == ReasonCode::Success => {
                client.session_present = ack.session_present;
                client.server_receive_maximum = ack.properties.receive_maximum().unwrap_or(u16::MAX);
                Ok(client)
            }
            Packet::ConnAck(ack) => Err(ClientError::Refused(ack.reason_code)),
            other => Err(ClientError::Unexpected { expected: "CONNACK", got: other.name() }),
        }
    }

    /// Returns whether the broker resumed a session (CONNACK's Session
    /// Present).
    pub(crate) fn session_present(&self) -> bool {
        self.session_present
    }

    /// Returns the broker's Receive Maximum (5.0; 65,535 otherwise): how many
    /// QoS 1/2 publishes it accepts unacknowledged.
    pub(crate) fn server_receive_maximum(&self) -> u16 {
        self.server_receive_maximum
    }

    /// Subscribes to `filters` at `qos` and waits for the SUBACK until
    /// `deadline`. Returns the lowest QoS granted; a refused filter is an
    /// error.
    pub(crate) async fn subscribe(
        &mut self,
        filters: &[String],
        qos: QoS,
        deadline: Instant,
    ) -> Result<QoS, ClientError> {
        self.next_packet_id = self.next_packet_id.wrapping_add(1).max(1);
        let packet_id = NonZeroU16::new(self.next_packet_id).expect("kept non-zero");
        let subscribe = Subscribe {
            packet_id,
            properties: Properties::new(),
            filters: filters
                .iter()
                .map(|filter| (filter.as_str().into(), SubscriptionOptions::new(qos)))
                .collect(),
        };
        self.send(&Packet::Subscribe(subscribe))?;
        self.flush(deadline).await?;
        let ack = match self.receive(deadline, "SUBACK").await? {
            Packet::SubAck(ack) if ack.packet_id == packet_id => ack,
            other => return Err(ClientError::Unexpected { expected: "SUBACK", got: other.name() }),
        };
        let mut granted = qos;
        for &code in &ack.reason_codes {
            match QoS::from_u8(code.as_u8()).filter(|_| !code.is_error()) {
                Some(level) => granted = granted.min(level),
                None => return Err(ClientError::SubscribeRefused(code)),
            }
        }
        Ok(granted)
    }

    /// Encodes `packet` into the write buffer; [`Client::pump`] or
    /// [`Client::flush`] writes it.
    pub(crate) fn send(&mut self, packet: &Packet) -> Result<(), ClientError> {
        self.codec.encode(packet, &mut self.write_buffer)?;
        Ok(())
    }

    /// Returns the bytes waiting to be written.
    pub(crate) fn pending_write(&self) -> usize {
        self.write_buffer.len()
    }

    /// Takes the next whole packet out of the read buffer, if there is one.
    pub(crate) fn decode(&mut self) -> Result<Option<Packet>, ClientError> {
        Ok(self.codec.decode(&mut self.read_buffer)?)
    }

    /// Writes pending output while waiting for input; returns after one
    /// read or one write made progress. Fails with [`ClientError::Closed`]
    /// at end of stream.
    ///
    /// Cancel-safe: each branch is a single `read_buf` or `write_buf`, which
    /// either completes or leaves the buffers as they were.
    pub(crate) async fn pump(&mut self) -> Result<(), ClientError> {
        if self.read_buffer.capacity() - self.read_buffer.len() < 1024 {
            self.read_buffer.reserve(READ_BUFFER);
        }
        let (mut reader, mut writer) = self.stream.split();
        if self.write_buffer.is_empty() {
            return match reader.read_buf(&mut self.read_buffer).await? {
                0 => Err(ClientError::Closed),
                _ => Ok(()),
            };
        }
        tokio::select! {
            read = reader.read_buf(&mut self.read_buffer) => match read? {
                0 => Err(ClientError::Closed),
                _ => Ok(()),
            },
            written = writer.write_buf(&mut self.write_buffer) => match written? {
                0 => Err(ClientError::Closed),
                _ => Ok(()),
            },
        }
    }

    /// Writes everything pending, by `deadline`.
    pub(crate) async fn flush(&mut self, deadline: Instant) -> Result<(), ClientError> {
        let write = self.stream.write_all_buf(&mut self.write_buffer);
        timeout_at(deadline, write).await.map_err(|_| ClientError::Timeout("a write"))??;
        Ok(())
    }

    /// Waits for the next packet until `deadline`; `what` names the wait in
    /// a timeout error.
    pub(crate) async fn receive(
        &mut self,
        deadline: Instant,
        what: &'static str,
    ) -> Result<Packet, ClientError> {
        loop {
            if let Some(packet) = self.decode()? {
                return Ok(packet);
            }
            timeout_at(deadline, self.pump()).await.map_err(|_| ClientError::Timeout(what))??;
        }
    }

    /// Sends DISCONNECT (with `session_expiry` when given, 5.0 only),
    /// flushes, and waits until `deadline` for the broker to close the
    /// socket, so the broker has seen the session end when this returns.
    pub(crate) async fn disconnect(
        mut self,
        session_expiry: Option<u32>,
        deadline: Instant,
    ) -> Result<(), ClientError> {
        let mut disconnect = Disconnect::new(ReasonCode::NORMAL_DISCONNECTION);
        if let Some(expiry) = session_expiry.filter(|_| self.codec.version() == ProtocolVersion::V5) {
            disconnect.properties.push(Property::SessionExpiryInterval(expiry));
        }
        self.send(&Packet::Disconnect(disconnect))?;
        self.flush(deadline).await?;
        self.stream.shutdown().await?;
        loop {
            self.read_buffer.clear();
            let read = timeout_at(deadline, self.stream.read_buf(&mut self.read_buffer));
            match read.await {
                Ok(Ok(0)) => return Ok(()),
                Ok(Ok(_)) => continue,
                Ok(Err(error)) if error.kind() == std::io::ErrorKind::ConnectionReset => return Ok(()),
                Ok(Err(error)) => return Err(error.into()),
                Err(_) => return Err(ClientError::Timeout("the broker to close after DISCONNECT")),
            }
        }
    }

    /// Ends a run's connection: DISCONNECT, then up to [`LEAVE_TIMEOUT`] for
    /// the broker to close. A broker too busy to close in time is not an
    /// error here: the run's figures are taken already.
    pub(crate) async fn leave(self) -> Result<(), ClientError> {
        match self.disconnect(None, Instant::now() + LEAVE_TIMEOUT).await {
            Err(ClientError::Timeout(_)) => Ok(()),
            other => other,
        }
    }

    /// Drops the connection without DISCONNECT and with a TCP reset: the
    /// abrupt end of a device that vanished, which leaves no TIME_WAIT
    /// behind on this side.
    pub(crate) fn abort(self) {
        let _ = self.stream.set_zero_linger();
    }

    /// Returns whether the socket is still open: reading would block, no end
    /// of stream and no error.
    pub(crate) fn is_open(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(ref error) if error.kind() == std::io::ErrorKind::WouldBlock)
    }
}

/// Accepts the control packets a broker may send unasked; a DISCONNECT
/// ends the connection.
pub(crate) fn check_control(packet: &Packet) -> Result<(), ClientError> {
    match packet {
        Packet::Disconnect(disconnect) => Err(ClientError::Disconnected(disconnect.reason_code)),
        _ => Ok(()),
    }
}

/// Returns the CONNECT for `options`.
fn connect_packet(options: &ConnectOptions) -> Connect {
    let mut connect = Connect::new(options.version, options.client_id.as_str());
    connect.keep_alive = options.keep_alive;
    connect.clean_start = options.clean_start;
    if options.version == ProtocolVersion::V5 {
        if options.session_expiry > 0 {
            connect.properties.push(Property::SessionExpiryInterval(options.session_expiry));
        }
        if options.receive_maximum < u16::MAX {
            connect.properties.push(Property::ReceiveMaximum(options.receive_maximum.max(1)));
        }
    }
    connect
}

/// Returns `deadline` or `now + limit`, whichever comes first.
pub(crate) fn deadline_within(deadline: Instant, limit: Duration) -> Instant {
    deadline.min(Instant::now() + limit)
}

/// Disconnects every client at once (DISCONNECT, then waiting for the
/// broker to close), by `deadline`; fails with the first failure once all
/// have ended.
pub(crate) async fn disconnect_all(
    clients: Vec<Client>,
    session_expiry: Option<u32>,
    deadline: Instant,
) -> anyhow::Result<()> {
    let mut tasks = JoinSet::new();
    for client in clients {
        tasks.spawn(client.disconnect(session_expiry, deadline));
    }
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        let outcome = joined
            .map_err(anyhow::Error::from)
            .and_then(|ended| ended.map_err(|error| anyhow::anyhow!("going offline: {error}")));
        if let Err(error) = outcome {
            first_error.get_or_insert(error);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Sets up `count` clients with `setup(index)`, at most `parallel` at once,
/// and returns them in index order. Fails with the first client that could
/// not be set up (the others are dropped).
/// Source ports handed out in turn, from this range.
const SOURCE_PORTS: std::ops::Range<u32> = 20_000..60_000;
/// The next source port to hand out, less the process's offset.
static NEXT_SOURCE_PORT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Binds `socket` to `source` on a port of its own choosing. Letting the
/// kernel pick one (port 0) searches every port bound on the address,
/// TIME_WAIT ones of earlier runs included: with tens of thousands of them
/// the search, not the server, bounds the connect rate. Ports are taken in
/// turn (from an offset per process, so that generators side by side
/// rarely meet); one taken meanwhile is skipped, and after 64 of those the
/// kernel picks.
fn bind_source(socket: &TcpSocket, source: std::net::IpAddr) -> std::io::Result<()> {
    use std::sync::atomic::Ordering;
    socket.set_reuseaddr(true)?;
    let span = SOURCE_PORTS.end - SOURCE_PORTS.start;
    let offset = std::process::id().wrapping_mul(7_919) % span;
    for _ in 0..64 {
        let turn = NEXT_SOURCE_PORT.fetch_add(1, Ordering::Relaxed);
        let port = SOURCE_PORTS.start + (turn.wrapping_add(offset) % span);
        match socket.bind(SocketAddr::new(source, port as u16)) {
            Ok(()) => return Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::AddrInUse => continue,
            Err(error) => return Err(error),
        }
    }
    socket.bind(SocketAddr::new(source, 0))
}

pub(crate) async fn connect_many<F, Fut>(count: u32, parallel: u32, setup: F) -> anyhow::Result<Vec<Client>>
where
    F: Fn(u32) -> Fut,
    Fut: Future<Output = Result<Client, ClientError>> + Send + 'static,
{
    let mut clients: Vec<Option<Client>> = (0..count).map(|_| None).collect();
    let mut tasks = JoinSet::new();
    let mut next = 0u32;
    loop {
        while next < count && tasks.len() < parallel.max(1) as usize {
            let index = next;
            let future = setup(index);
            tasks.spawn(async move { (index, future.await) });
            next += 1;
        }
        let Some(joined) = tasks.join_next().await else {
            break;
        };
        let (index, result) = joined?;
        match result {
            Ok(client) => clients[index as usize] = Some(client),
            Err(error) => anyhow::bail!("client {index} of {count}: {error}"),
        }
    }
    Ok(clients.into_iter().map(|client| client.expect("every index joined")).collect())
}
