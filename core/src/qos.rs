//! Quality of service levels (MQTT 5.0 §4.3).

/// A delivery guarantee level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[repr(u8)]
pub enum QoS {
    /// At most once: fire and forget.
    #[default]
    AtMostOnce = 0,
    /// At least once: PUBLISH / PUBACK.
    AtLeastOnce = 1,
    /// Exactly once: PUBLISH / PUBREC / PUBREL / PUBCOMP.
    ExactlyOnce = 2,
}

impl QoS {
    /// Returns the level for 0, 1 or 2, `None` for 3 (malformed on the wire).
    pub fn from_u8(value: u8) -> Option<QoS> {
        match value {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }

    /// Returns the wire value.
    pub fn as_u8(self) -> u8 {
        self as u8
    }
}
