//! CONNECT (§3.1): the first packet of every connection, and the only one
//! that says which protocol version the rest are in.

use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;
use herald_core::QoS;
use herald_core::topic::validate_topic_name;

use crate::codec::ProtocolVersion;
use crate::error::{DecodeError, EncodeError};
use crate::properties::{Properties, PropertyContext};
use crate::wire;

const PROTOCOL_NAME: &str = "MQTT";
/// MQTT 3.1 (level 3) named itself this; recognising it lets the server
/// refuse it as an unsupported version rather than as garbage.
const MQTT_31_PROTOCOL_NAME: &str = "MQIsdp";

const CLEAN_START: u8 = 0x02;
const WILL: u8 = 0x04;
const WILL_QOS_SHIFT: u8 = 3;
const WILL_RETAIN: u8 = 0x20;
const PASSWORD: u8 = 0x40;
const USERNAME: u8 = 0x80;
const RESERVED: u8 = 0x01;

/// A client's request to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// The protocol level the client speaks; the codec adopts it on decode.
    pub protocol: ProtocolVersion,
    /// Clean Start (5.0) / Clean Session (3.1.1).
    pub clean_start: bool,
    /// Keep alive in seconds; 0 turns the mechanism off.
    pub keep_alive: u16,
    /// CONNECT properties (5.0).
    pub properties: Properties,
    /// The client identifier, possibly empty.
    pub client_id: ByteString,
    /// The will message, published if the connection ends abnormally.
    pub will: Option<LastWill>,
    /// The user name.
    pub username: Option<ByteString>,
    /// The password.
    pub password: Option<Bytes>,
}

/// The will message of a CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastWill {
    /// The topic name to publish to.
    pub topic: ByteString,
    /// The application message.
    pub payload: Bytes,
    /// The QoS to publish at.
    pub qos: QoS,
    /// Whether to publish it retained.
    pub retain: bool,
    /// Will properties (5.0): a set of their own, not PUBLISH's.
    pub properties: Properties,
}

impl Connect {
    /// Returns a CONNECT with Clean Start set, keep alive 0 (off) and no
    /// will, credentials or properties.
    pub fn new(protocol: ProtocolVersion, client_id: impl Into<ByteString>) -> Connect {
        Connect {
            protocol,
            clean_start: true,
            keep_alive: 0,
            properties: Properties::new(),
            client_id: client_id.into(),
            will: None,
            username: None,
            password: None,
        }
    }

    /// Decodes a CONNECT at the version its own protocol level names.
    pub(crate) fn decode(body: &mut Bytes) -> Result<Connect, DecodeError> {
        let name = wire::read_string(body)?;
        if &*name != PROTOCOL_NAME && &*name != MQTT_31_PROTOCOL_NAME {
            return Err(DecodeError::InvalidProtocolName);
        }
        let level = wire::read_u8(body)?;
        let protocol = ProtocolVersion::from_level(level)
            .filter(|_| &*name == PROTOCOL_NAME)
            .ok_or(DecodeError::UnsupportedProtocolVersion { level })?;
        let v5 = protocol == ProtocolVersion::V5;

        let flags = wire::read_u8(body)?;
        if flags & RESERVED != 0 {
            return Err(DecodeError::ConnectReservedFlag);
        }
        let has_will = flags & WILL != 0;
        let will_qos_bits = (flags >> WILL_QOS_SHIFT) & 0b11;
        let will_retain = flags & WILL_RETAIN != 0;
        if !has_will && will_qos_bits != 0 {
            return Err(DecodeError::WillQosWithoutWill);
        }
        if !has_will && will_retain {
            return Err(DecodeError::WillRetainWithoutWill);
        }
        let will_qos = QoS::from_u8(will_qos_bits).ok_or(DecodeError::WillQosThree)?;
        let has_username = flags & USERNAME != 0;
        let has_password = flags & PASSWORD != 0;
        if !v5 && has_password && !has_username {
            return Err(DecodeError::PasswordWithoutUsername);
        }

        let keep_alive = wire::read_u16(body)?;
        let properties =
            if v5 { Properties::decode(body, PropertyContext::Connect)? } else { Properties::new() };
        if properties.authentication_data().is_some() && properties.authentication_method().is_none() {
            return Err(DecodeError::AuthenticationDataWithoutMethod);
        }

        let client_id = wire::read_string(body)?;
        let will = if has_will {
            let properties =
                if v5 { Properties::decode(body, PropertyContext::Will)? } else { Properties::new() };
            let topic = wire::read_string(body)?;
            validate_topic_name(&topic).map_err(DecodeError::InvalidTopicName)?;
            let payload = wire::read_binary(body)?;
            Some(LastWill { topic, payload, qos: will_qos, retain: will_retain, properties })
        } else {
            None
        };
        let username = if has_username { Some(wire::read_string(body)?) } else { None };
        let password = if has_password { Some(wire::read_binary(body)?) } else { None };

        Ok(Connect {
            protocol,
            clean_start: flags & CLEAN_START != 0,
            keep_alive,
            properties,
            client_id,
            will,
            username,
            password,
        })
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        let v5 = version == ProtocolVersion::V5;
        // Protocol name, level, flags, keep alive.
        let mut len = wire::field_len(PROTOCOL_NAME.as_bytes()) + 1 + 1 + 2;
        if v5 {
            len += self.properties.encoded_len();
        }
        len += wire::field_len(self.client_id.as_bytes());
        if let Some(will) = &self.will {
            if v5 {
                len += will.properties.encoded_len();
            }
            len += wire::field_len(will.topic.as_bytes()) + wire::field_len(&will.payload);
        }
        if let Some(username) = &self.username {
            len += wire::field_len(username.as_bytes());
        }
        if let Some(password) = &self.password {
            len += wire::field_len(password);
        }
        len
    }

    pub(crate) fn encode_body(
        &self,
        version: ProtocolVersion,
        dst: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        let v5 = version == ProtocolVersion::V5;
        if !v5 && self.password.is_some() && self.username.is_none() {
            return Err(EncodeError::PasswordWithoutUsername);
        }
        let mut flags = 0;
        if self.clean_start {
            flags |= CLEAN_START;
        }
        if let Some(will) = &self.will {
            flags |= WILL | (will.qos.as_u8() << WILL_QOS_SHIFT);
            if will.retain {
                flags |= WILL_RETAIN;
            }
        }
        if self.username.is_some() {
            flags |= USERNAME;
        }
        if self.password.is_some() {
            flags |= PASSWORD;
        }

        wire::write_string(dst, PROTOCOL_NAME)?;
        dst.put_u8(version.level());
        dst.put_u8(flags);
        dst.put_u16(self.keep_alive);
        if v5 {
            self.properties.encode(dst)?;
        }
        wire::write_string(dst, &self.client_id)?;
        if let Some(will) = &self.will {
            if v5 {
                will.properties.encode(dst)?;
            }
            wire::write_string(dst, &will.topic)?;
            wire::write_binary(dst, &will.payload)?;
        }
        if let Some(username) = &self.username {
            wire::write_string(dst, username)?;
        }
        if let Some(password) = &self.password {
            wire::write_binary(dst, password)?;
        }
        Ok(())
    }
}
