//! CONNECT handling, sans-IO: validate, authenticate, and compute what the
//! session will be and what CONNACK says.

use crate::auth::{Authenticator, Credentials, Principal};
use crate::session::SessionLimits;
use bytes::Bytes;
use herald_core::{
    ByteString, ClientId, ErrorCode, MessageId, QoS, ReasonCode, SessionKey, Topic, UnixMillis,
};
use herald_mqtt::{ConnAck, Connect, Packet, Properties, Property, ProtocolVersion};
use herald_proto::Message;
use herald_proto::seam::Will;
use std::sync::Arc;

/// The outcome of an accepted CONNECT.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// The session the connection claims; shared by the session state and
    /// the connection's handle.
    pub key: Arc<SessionKey>,
    /// The protocol level.
    pub version: ProtocolVersion,
    /// Start a new session, discarding any existing one.
    pub clean_start: bool,
    /// Session expiry interval in seconds, after capping.
    pub expiry_seconds: u32,
    /// The keep-alive in force, in seconds (0: none).
    pub keep_alive: u16,
    /// Whether the client wants reason strings and user properties on errors.
    pub problem_information: bool,
    /// How many QoS 1/2 deliveries the client accepts unacknowledged.
    pub client_receive_maximum: u16,
    /// The largest packet the client accepts.
    pub client_max_packet: u32,
    /// Outbound topic aliases the client accepts, capped by the server's.
    pub client_topic_alias_maximum: u16,
    /// The will, if any.
    pub will: Option<Box<Will>>,
    /// Properties of the CONNACK (v5).
    pub connack_properties: Properties,
    /// The enhanced-authentication method the client authenticated with;
    /// re-authentication must use the same one [MQTT-4.12.1-1].
    pub auth_method: Option<ByteString>,
    /// When the credentials stop being valid (a device token's expiry).
    pub valid_until: Option<UnixMillis>,
    /// The user name the client authenticated with.
    pub username: Option<Box<str>>,
}

/// How the client proves who it is.
pub enum Identity<'a> {
    /// By the user name and password of the CONNECT.
    Password(&'a dyn Authenticator),
    /// By a user name and password already checked against a device user
    /// kept outside configuration (ADR 0026).
    Verified(Principal),
    /// By an enhanced-authentication exchange that has already succeeded.
    Proven {
        /// Who the client proved to be.
        principal: Principal,
        /// The method (carried back in CONNACK).
        method: ByteString,
        /// The exchange's last data, for the CONNACK.
        data: Option<Bytes>,
    },
}

/// Returns the CONNACK refusing a connection with `code` and, for v5, a
/// reason string and the stable error code as the `error` user property.
pub fn refusal(version: ProtocolVersion, code: ReasonCode, detail: &str) -> Packet {
    let mut properties = Properties::default();
    if version == ProtocolVersion::V5 {
        // [MQTT-3.1.2-29] allows both on CONNACK whatever the client asked.
        if !detail.is_empty() {
            properties.push(Property::ReasonString(ByteString::from(detail)));
        }
        error_property(code, &mut properties);
    }
    Packet::ConnAck(ConnAck { session_present: false, reason_code: code, properties })
}

/// Appends the `error` user property naming the stable error code of an
/// error reason code.
pub fn error_property(code: ReasonCode, properties: &mut Properties) {
    if let Some(error) = ErrorCode::from_reason_code(code) {
        properties.push(Property::UserProperty(
            ByteString::from_static("error"),
            ByteString::from_static(error.as_str()),
        ));
    }
}

/// The reason string of a CONNACK refusal.
fn refusal_detail(code: ReasonCode) -> &'static str {
    match code {
        ReasonCode::ClientIdentifierNotValid => "client identifier not valid",
        ReasonCode::BadUserNameOrPassword => "bad user name or password",
        ReasonCode::NotAuthorized => "not authorized",
        ReasonCode::QosNotSupported => "will QoS above the maximum QoS",
        ReasonCode::RetainNotSupported => "retained wills are not available",
        ReasonCode::TopicNameInvalid => "will topic not valid",
        ReasonCode::PayloadFormatInvalid => "will payload is not UTF-8 as its format indicator says",
        _ => "",
    }
}

/// Validates and authenticates `connect`. `assigned_id` supplies a client
/// id when the client sent an empty one. Returns the CONNACK refusing the
/// connection on failure.
pub fn accept(
    connect: &Connect,
    limits: &SessionLimits,
    identity: Identity<'_>,
    assigned_id: impl FnOnce() -> String,
    will_id: MessageId,
    now: UnixMillis,
) -> Result<Accepted, Packet> {
    let version = connect.protocol;
    let v5 = version == ProtocolVersion::V5;
    let refuse = |code: ReasonCode| refusal(version, code, refusal_detail(code));
    if let (true, Some(reference)) = (limits.server_moved, &limits.server_reference) {
        let mut moved = refusal(version, ReasonCode::ServerMoved, "server moved");
        if let Packet::ConnAck(connack) = &mut moved
            && v5
        {
            connack.properties.push(Property::ServerReference(ByteString::from(reference.as_str())));
        }
        return Err(moved);
    }
    let mut connack_properties = Properties::default();
    let client_id = if connect.client_id.is_empty() {
        if !v5 && !connect.clean_start {
            // [MQTT-3.1.3-8]: an empty id needs clean session in 3.1.1.
            return Err(refuse(ReasonCode::ClientIdentifierNotValid));
        }
        let id = assigned_id();
        if v5 {
            connack_properties.push(Property::AssignedClientIdentifier(ByteString::from(id.as_str())));
        }
        id.into()
    } else {
        // A copy, not a slice: the session keeps its id for its lifetime, and
        // a slice would pin the whole read buffer the CONNECT arrived in.
        ByteString::from(&*connect.client_id)
    };
    let client = ClientId::new(client_id).map_err(|_| refuse(ReasonCode::ClientIdentifierNotValid))?;
    let (principal, auth_method) = match identity {
        Identity::Password(authenticator) => {
            let credentials = Credentials {
                client_id: client.as_str(),
                username: connect.username.as_deref(),
                password: connect.password.as_deref(),
            };
            (authenticator.authenticate(credentials).map_err(refuse)?, None)
        }
        Identity::Verified(principal) => (principal, None),
        Identity::Proven { principal, method, data } => {
            connack_properties.push(Property::AuthenticationMethod(method.clone()));
            if let Some(data) = data {
                connack_properties.push(Property::AuthenticationData(data));
            }
            (principal, Some(method))
        }
    };
    let valid_until = principal.valid_until;
    let username = principal.username.as_deref().map(Box::from);
    let key = Arc::new(SessionKey::new(principal.app, client));

    let requested_expiry = if v5 {
        connect.properties.session_expiry_interval().unwrap_or(0)
    } else if connect.clean_start {
        0
    } else {
        // A v3.1.1 persistent session lives until the server maximum.
        u32::MAX
    };
    let expiry_seconds = requested_expiry.min(limits.max_session_expiry_seconds);
    if v5 && expiry_seconds != requested_expiry {
        connack_properties.push(Property::SessionExpiryInterval(expiry_seconds));
    }
    let mut keep_alive = connect.keep_alive;
    if limits.max_keep_alive > 0 && (keep_alive == 0 || keep_alive > limits.max_keep_alive) {
        keep_alive = limits.max_keep_alive;
        if v5 {
            connack_properties.push(Property::ServerKeepAlive(keep_alive));
        }
    }
    if let Some(will) = &connect.will {
        // [MQTT-3.2.2-12] / [MQTT-3.2.2-15]: a will the server could not publish.
        if will.qos > limits.maximum_qos {
            return Err(refuse(ReasonCode::QosNotSupported));
        }
        if will.retain && !limits.retain_available {
            return Err(refuse(ReasonCode::RetainNotSupported));
        }
    }
    let will = match &connect.will {
        Some(will) => Some(build_will(will, &key, will_id, now).map_err(refuse)?),
        None => None,
    };
    if v5 {
        connack_properties.push(Property::ReceiveMaximum(limits.receive_maximum));
        connack_properties.push(Property::MaximumPacketSize(limits.max_packet_size));
        connack_properties.push(Property::TopicAliasMaximum(limits.topic_alias_maximum));
        if !limits.shared_subscriptions {
            connack_properties.push(Property::SharedSubscriptionAvailable(0));
        }
        // Capabilities are announced only where they differ from the
        // defaults the spec gives their absence (§3.2.2.3).
        if limits.maximum_qos != QoS::ExactlyOnce {
            connack_properties.push(Property::MaximumQos(limits.maximum_qos.as_u8()));
        }
        if !limits.retain_available {
            connack_properties.push(Property::RetainAvailable(0));
        }
        if !limits.wildcard_subscriptions {
            connack_properties.push(Property::WildcardSubscriptionAvailable(0));
        }
        if !limits.subscription_identifiers {
            connack_properties.push(Property::SubscriptionIdentifierAvailable(0));
        }
        // [MQTT-3.1.2-28]: only when requested, and only if configured.
        if connect.properties.request_response_information() == Some(1)
            && let Some(prefix) = &limits.response_information
        {
            let information = format!("{prefix}{}", key.client);
            connack_properties.push(Property::ResponseInformation(ByteString::from(information)));
        }
    }
    Ok(Accepted {
        valid_until,
        username,
        key,
        version,
        clean_start: connect.clean_start,
        expiry_seconds,
        keep_alive,
        problem_information: connect.properties.request_problem_information() != Some(0),
        client_receive_maximum: if v5 {
            connect.properties.receive_maximum().unwrap_or(u16::MAX)
        } else {
            limits.max_inflight_v311
        },
        client_max_packet: connect.properties.maximum_packet_size().unwrap_or(u32::MAX),
        client_topic_alias_maximum: connect
            .properties
            .topic_alias_maximum()
            .unwrap_or(0)
            .min(limits.max_outbound_aliases),
        will,
        connack_properties,
        auth_method,
    })
}

fn build_will(
    will: &herald_mqtt::LastWill,
    key: &SessionKey,
    id: MessageId,
    now: UnixMillis,
) -> Result<Box<Will>, ReasonCode> {
    // Copies: the will lives as long as the session (see `client_id` above).
    let topic = Topic::new(ByteString::from(&*will.topic)).map_err(|_| ReasonCode::TopicNameInvalid)?;
    if topic.is_system() {
        return Err(ReasonCode::TopicNameInvalid);
    }
    let p = &will.properties;
    if p.payload_format_indicator() == Some(1) && std::str::from_utf8(&will.payload).is_err() {
        return Err(ReasonCode::PayloadFormatInvalid);
    }
    let properties = crate::session::forwarded_properties(p);
    let message = Message {
        id,
        app: key.app.clone(),
        topic,
        payload: bytes::Bytes::copy_from_slice(&will.payload),
        qos: will.qos,
        retain: will.retain,
        created_at: now,
        // The will's expiry counts from when it is published: the router
        // sets it then from `Will::expiry_seconds`.
        expires_at: None,
        origin: Some(key.client.clone()),
        properties: (!properties.is_empty()).then(|| Box::new(properties)),
        trace: None,
    };
    Ok(Box::new(Will {
        message: Arc::new(message),
        delay_seconds: p.will_delay_interval().unwrap_or(0),
        expiry_seconds: p.message_expiry_interval(),
    }))
}

#[cfg(test)]
#[path = "handshake_tests.rs"]
mod tests;
