//! Server-Sent Events for web pages: `GET /v1/apps/{app}/sse`, authorised
//! by a device token, streams the device's pushes (ADR 0020).
//!
//! A stream is a device session like any other: the handler speaks MQTT 5
//! to the gateway's own connection task over an in-memory pipe, so claims,
//! takeovers, offline queues, resends and delivery reports are the same
//! code as for MQTT devices.
//!
//! ```text
//!  browser ◀─ SSE events ── handler (MQTT client) ◀─ Pipe ─▶ connection task (Session) ◀─▶ router
//! ```
//!
//! Each event's id is the message id. Messages written to the stream stay
//! unacknowledged (QoS 1 in flight) until the browser, reconnecting with
//! `Last-Event-ID`, says how far it got: those are acknowledged, the rest
//! is sent again. Past `WINDOW` unconfirmed events the oldest count as
//! received. When the position cannot be honoured (the session was gone),
//! an explicit `gap` event says so before live data.

use crate::Shared;
use crate::transport::{Received, Transport};
use bytes::{Bytes, BytesMut};
use herald_mqtt::{
    Codec, Connect, Packet, Properties, Property, ProtocolVersion, PubAck, QoS, ReasonCode, Subscribe,
    SubscriptionOptions,
};
use std::collections::VecDeque;
use std::io;
use std::num::NonZeroU16;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;

/// Unconfirmed events kept for a resume at most.
pub(crate) const WINDOW: usize = 1000;
/// How often a comment keeps the stream (and proxies) awake.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// The session expiry a web device asks for (capped by the server's).
const SESSION_EXPIRY: u32 = 7 * 24 * 3600;

/// The gateway's end of the in-memory pipe: a transport for the
/// connection task.
pub(crate) struct Pipe {
    incoming: mpsc::Receiver<Bytes>,
    pending: Option<Bytes>,
    closed: bool,
    outgoing: mpsc::Sender<BytesMut>,
}

impl Transport for Pipe {
    fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.pending.is_some() || self.closed {
            return Poll::Ready(Ok(()));
        }
        match self.incoming.poll_recv(cx) {
            Poll::Ready(Some(bytes)) => {
                self.pending = Some(bytes);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(None) => {
                self.closed = true;
                Poll::Ready(Ok(()))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn read_available(&mut self, buffer: &mut Option<BytesMut>, limit: usize) -> Received {
        let Some(mut bytes) = self.pending.take() else {
            return if self.closed { Received::Closed } else { Received::Nothing };
        };
        if bytes.len() > limit {
            self.pending = Some(bytes.split_off(limit));
        }
        buffer.get_or_insert_with(|| BytesMut::with_capacity(bytes.len())).extend_from_slice(&bytes);
        Received::Bytes
    }

    async fn write_batch(&mut self, bytes: BytesMut) -> io::Result<()> {
        self.outgoing.send(bytes).await.map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))
    }

    async fn close(&mut self) {
        self.incoming.close();
    }
}

/// The handler's end: an MQTT client of the connection task.
pub(crate) struct Client {
    to_gateway: mpsc::Sender<Bytes>,
    from_gateway: mpsc::Receiver<BytesMut>,
    codec: Codec,
    buffer: BytesMut,
}

/// Opens a pipe and serves its gateway end like any connection (within
/// the gateway's connection limit: `None` past it).
pub(crate) fn open(shared: &Arc<Shared>) -> Option<Client> {
    if !shared.admits_connection() {
        return None;
    }
    let (to_gateway, incoming) = mpsc::channel(16);
    let (outgoing, from_gateway) = mpsc::channel(16);
    let pipe = Pipe { incoming, pending: None, closed: false, outgoing };
    tokio::spawn(crate::connection::serve(pipe, shared.clone()));
    Some(Client {
        to_gateway,
        from_gateway,
        codec: Codec::new(ProtocolVersion::V5, u32::MAX),
        buffer: BytesMut::new(),
    })
}

impl Client {
    async fn send(&self, packet: &Packet) -> bool {
        let mut bytes = BytesMut::new();
        if self.codec.encode(packet, &mut bytes).is_err() {
            return false;
        }
        self.to_gateway.send(bytes.freeze()).await.is_ok()
    }

    /// The next packet from the gateway; `None` once it closed the pipe.
    async fn next(&mut self) -> Option<Packet> {
        loop {
            match self.codec.decode(&mut self.buffer) {
                Ok(Some(packet)) => return Some(packet),
                Ok(None) => {}
                Err(_) => return None,
            }
            let more = self.from_gateway.recv().await?;
            self.buffer.extend_from_slice(&more);
        }
    }
}

/// What a stream starts with.
pub(crate) struct Opened {
    pub(crate) client: Client,
    /// Events to send first (`gap`, then what the browser had not got).
    pub(crate) first: Vec<String>,
    /// Unconfirmed deliveries, oldest first: (packet id).
    pub(crate) unconfirmed: VecDeque<NonZeroU16>,
}

/// Why a stream could not start.
#[derive(Debug)]
pub(crate) enum Refused {
    /// CONNACK with this reason.
    Connect(ReasonCode),
    /// The gateway closed the pipe.
    Closed,
    /// The gateway holds as many connections as it may.
    Busy,
}

/// Connects as `device` with `token`, subscribes to its topic, and works
/// out what the browser (at `last_event_id`) still needs.
pub(crate) async fn start(
    shared: &Arc<Shared>,
    device: &str,
    token: &str,
    last_event_id: Option<String>,
) -> Result<Opened, Refused> {
    let mut client = open(shared).ok_or(Refused::Busy)?;
    let mut connect = Connect::new(ProtocolVersion::V5, device);
    connect.clean_start = false;
    connect.password = Some(Bytes::copy_from_slice(token.as_bytes()));
    connect.properties.push(Property::SessionExpiryInterval(SESSION_EXPIRY));
    connect.properties.push(Property::ReceiveMaximum(u16::MAX));
    if !client.send(&Packet::Connect(Box::new(connect))).await {
        return Err(Refused::Closed);
    }
    let session_present = match client.next().await {
        Some(Packet::ConnAck(ack)) if ack.reason_code == ReasonCode::Success => ack.session_present,
        Some(Packet::ConnAck(ack)) => return Err(Refused::Connect(ack.reason_code)),
        _ => return Err(Refused::Closed),
    };
    let topic = format!("{}{device}", herald_core::topic::PUSH_PREFIX);
    let subscribe = Subscribe {
        packet_id: NonZeroU16::MIN,
        properties: Properties::default(),
        filters: vec![(topic.as_str().into(), SubscriptionOptions::new(QoS::AtLeastOnce))],
    };
    if !client.send(&Packet::Subscribe(subscribe)).await {
        return Err(Refused::Closed);
    }
    // What a resumed session resends comes before the SUBACK.
    let mut resent = Vec::new();
    loop {
        match client.next().await {
            Some(Packet::SubAck(_)) => break,
            Some(Packet::Publish(publish)) => resent.push(publish),
            Some(_) => {}
            None => return Err(Refused::Closed),
        }
    }
    let mut first = Vec::new();
    if last_event_id.is_some() && !session_present {
        let data = serde_json::json!({ "reason": "session_lost", "last_event_id": last_event_id });
        first.push(format!("event: gap\ndata: {data}\n\n"));
    }
    // The browser got the resent ones up to and including its last id.
    let seen = last_event_id
        .as_deref()
        .and_then(|last| resent.iter().position(|p| message_id(&p.properties).as_deref() == Some(last)));
    let mut unconfirmed = VecDeque::new();
    for (index, publish) in resent.into_iter().enumerate() {
        if seen.is_some_and(|seen| index <= seen) {
            if let Some(packet_id) = publish.packet_id
                && !client.send(&Packet::PubAck(PubAck::new(packet_id))).await
            {
                return Err(Refused::Closed);
            }
        } else {
            first.push(event(&publish.properties, &publish.payload));
            // A QoS 0 push has nothing to confirm.
            unconfirmed.extend(publish.packet_id);
        }
    }
    Ok(Opened { client, first, unconfirmed })
}

/// The `message-id` user property of a push.
fn message_id(properties: &Properties) -> Option<String> {
    properties.user_properties().find(|(k, _)| *k == "message-id").map(|(_, v)| v.to_owned())
}

/// One SSE event for a push: its id is the message id.
fn event(properties: &Properties, payload: &[u8]) -> String {
    let data = String::from_utf8_lossy(payload);
    let id = message_id(properties).unwrap_or_default();
    // The envelope is one line of JSON; a stray newline would end the event.
    format!("id: {id}\nevent: push\ndata: {}\n\n", data.replace('\n', "\ndata: "))
}

/// Streams the session's pushes as SSE events into `out` until the browser
/// goes (`out` closed), the gateway ends the connection, or `lifetime`
/// passes; then leaves the session to be resumed.
pub(crate) async fn pump(
    opened: Opened,
    out: mpsc::Sender<Result<String, io::Error>>,
    lifetime: Option<Duration>,
) {
    let Opened { mut client, first, mut unconfirmed } = opened;
    for text in first {
        if out.send(Ok(text)).await.is_err() {
            return;
        }
    }
    let ends = async {
        match lifetime {
            Some(lifetime) => tokio::time::sleep(lifetime).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(ends);
    let mut keep_alive = tokio::time::interval(KEEP_ALIVE);
    keep_alive.tick().await;
    loop {
        tokio::select! {
            packet = client.next() => match packet {
                Some(Packet::Publish(publish)) => {
                    if out.send(Ok(event(&publish.properties, &publish.payload))).await.is_err() {
                        return;
                    }
                    if let Some(packet_id) = publish.packet_id {
                        unconfirmed.push_back(packet_id);
                    }
                    while unconfirmed.len() > WINDOW {
                        let Some(oldest) = unconfirmed.pop_front() else { break };
                        if !client.send(&Packet::PubAck(PubAck::new(oldest))).await {
                            return;
                        }
                    }
                }
                Some(Packet::Disconnect(_)) | None => return,
                Some(_) => {}
            },
            _ = keep_alive.tick() => {
                if out.send(Ok(": keep-alive\n\n".to_owned())).await.is_err() {
                    return;
                }
                if !client.send(&Packet::PingReq).await {
                    return;
                }
            }
            () = &mut ends => return,
            () = out.closed() => return,
        }
    }
}
