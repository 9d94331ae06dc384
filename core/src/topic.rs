//! Topic names, topic filters and the matching rule between them
//! (MQTT 5.0 §4.7, shared subscriptions §4.8.2).
//!
//! Validation lives in the constructors, so a [`Topic`] or [`TopicFilter`]
//! that exists is valid. Both wrap a [`ByteString`], a UTF-8 view of a
//! `Bytes` buffer: topics decoded off the wire stay slices of the read buffer.

use bytestring::ByteString;
use std::fmt;

/// The longest topic name or filter the protocol can carry (a two-byte
/// length prefix).
pub const MAX_TOPIC_BYTES: usize = 65_535;

/// The most levels a topic name or filter may have. The protocol sets no
/// limit (65,536 levels fit in its length); Herald refuses deeper topics so
/// that no client can make matching or indexing work grow with a hostile
/// depth (a documented deviation, `docs/mqtt5.md`).
pub const MAX_TOPIC_LEVELS: usize = 128;

/// Why a topic name or filter was refused. Messages cite the normative
/// statement they enforce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// The name or filter is empty.
    #[error("[MQTT-4.7.3-1] topic names and filters must be at least one character long")]
    Empty,
    /// The name or filter is longer than 65,535 bytes.
    #[error("[MQTT-1.5.4-1] topic is longer than 65535 bytes")]
    TooLong,
    /// The string holds U+0000.
    #[error("[MQTT-4.7.3-2] topic contains the null character U+0000")]
    NullCharacter,
    /// A topic name holds `+` or `#`.
    #[error("[MQTT-3.3.2-2] topic name contains a wildcard character")]
    WildcardInName,
    /// `#` is not alone in the last level of a filter.
    #[error("[MQTT-4.7.1-2] multi-level wildcard must be the last character, alone in its level")]
    MisplacedMultiLevelWildcard,
    /// `+` does not fill a whole level of a filter.
    #[error("[MQTT-4.7.1-3] single-level wildcard must occupy an entire level")]
    MisplacedSingleLevelWildcard,
    /// A `$share/` filter has an empty share name or one with `/`, `+` or `#`.
    #[error("[MQTT-4.8.2-1] shared subscription share name must be non-empty without '/', '+' or '#'")]
    InvalidShareName,
    /// The name or filter has more than [`MAX_TOPIC_LEVELS`] levels.
    #[error("topic has more than 128 levels (an implementation limit)")]
    TooManyLevels,
    /// A `$share/{name}` filter has no topic filter after the share name.
    #[error("[MQTT-4.8.2-2] shared subscription must have a topic filter after the share name")]
    MissingSharedFilter,
}

/// Checks the rules every topic name obeys: non-empty, at most 65,535
/// bytes, no U+0000, no wildcard characters.
pub fn validate_topic_name(name: &str) -> Result<(), TopicError> {
    check_common(name)?;
    if name.bytes().any(|b| b == b'+' || b == b'#') {
        return Err(TopicError::WildcardInName);
    }
    Ok(())
}

/// Checks the rules every topic filter obeys, including the shape of a
/// `$share/{name}/{filter}` shared subscription.
pub fn validate_topic_filter(filter: &str) -> Result<(), TopicError> {
    check_common(filter)?;
    match split_shared(filter) {
        Some(Ok((_, inner))) => check_filter_levels(inner),
        Some(Err(err)) => Err(err),
        None => check_filter_levels(filter),
    }
}

fn check_common(s: &str) -> Result<(), TopicError> {
    if s.is_empty() {
        return Err(TopicError::Empty);
    }
    if s.len() > MAX_TOPIC_BYTES {
        return Err(TopicError::TooLong);
    }
    // One pass over the bytes; too many levels is reported before a NUL.
    let (separators, nul) = s
        .bytes()
        .fold((0, false), |(separators, nul), b| (separators + usize::from(b == b'/'), nul || b == 0));
    if separators >= MAX_TOPIC_LEVELS {
        return Err(TopicError::TooManyLevels);
    }
    if nul {
        return Err(TopicError::NullCharacter);
    }
    Ok(())
}

fn check_filter_levels(filter: &str) -> Result<(), TopicError> {
    if filter.is_empty() {
        return Err(TopicError::MissingSharedFilter);
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') && (level != "#" || levels.peek().is_some()) {
            return Err(TopicError::MisplacedMultiLevelWildcard);
        }
        if level.contains('+') && level != "+" {
            return Err(TopicError::MisplacedSingleLevelWildcard);
        }
    }
    Ok(())
}

/// Splits `$share/{name}/{filter}` into its share name and filter. Returns
/// `None` when the filter is not a shared subscription.
fn split_shared(filter: &str) -> Option<Result<(&str, &str), TopicError>> {
    let rest = filter.strip_prefix("$share/")?;
    let Some((name, inner)) = rest.split_once('/') else {
        return Some(Err(if rest.is_empty() || rest.contains(['+', '#']) {
            TopicError::InvalidShareName
        } else {
            TopicError::MissingSharedFilter
        }));
    };
    if name.is_empty() || name.contains(['+', '#']) {
        return Some(Err(TopicError::InvalidShareName));
    }
    if inner.is_empty() {
        return Some(Err(TopicError::MissingSharedFilter));
    }
    Some(Ok((name, inner)))
}

/// Returns true when `filter` (not a `$share/` filter) matches `topic`.
///
/// Wildcards at the first level never match a topic starting with `$`
/// [MQTT-4.7.2-1]; `#` also matches its parent level (`a/#` matches `a`).
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut filter_levels = filter.split('/');
    let mut topic_levels = topic.split('/');
    loop {
        match (filter_levels.next(), topic_levels.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(f), Some(t)) if f == t => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Returns true when `outer` (not a `$share/` filter) matches every topic
/// `inner` matches: a subscription to `inner` receives nothing `outer`
/// would not. `+` covers any one level (a `+` included), `#` covers the
/// rest (and the parent level); a literal covers only itself.
pub fn covers(outer: &str, inner: &str) -> bool {
    if inner.starts_with('$') && (outer.starts_with('+') || outer.starts_with('#')) {
        return false;
    }
    let mut outer_levels = outer.split('/');
    let mut inner_levels = inner.split('/');
    loop {
        match (outer_levels.next(), inner_levels.next()) {
            (Some("#"), _) => return true,
            (Some(_), Some("#")) => return false,
            (Some("+"), Some(_)) => {}
            (Some(o), Some(i)) if o == i => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// A valid topic name: what a PUBLISH is addressed to.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic(ByteString);

impl Topic {
    /// Validates `name` as a topic name.
    pub fn new(name: impl Into<ByteString>) -> Result<Topic, TopicError> {
        let name = name.into();
        validate_topic_name(&name)?;
        Ok(Topic(name))
    }

    /// Returns the name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Returns the underlying shared string.
    pub fn as_byte_string(&self) -> &ByteString {
        &self.0
    }

    /// Returns true for topics starting with `$`, which wildcards at the first
    /// level do not match and clients may not publish to.
    pub fn is_system(&self) -> bool {
        self.0.starts_with('$')
    }
}

impl fmt::Debug for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A valid topic filter: what a SUBSCRIBE asks for, possibly a
/// `$share/{group}/{filter}` shared subscription.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicFilter(ByteString);

impl TopicFilter {
    /// Validates `filter` as a topic filter.
    pub fn new(filter: impl Into<ByteString>) -> Result<TopicFilter, TopicError> {
        let filter = filter.into();
        validate_topic_filter(&filter)?;
        Ok(TopicFilter(filter))
    }

    /// Returns the filter exactly as subscribed (with any `$share/` prefix).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Returns the share group name of a `$share/` filter.
    pub fn share_group(&self) -> Option<&str> {
        split_shared(&self.0).and_then(Result::ok).map(|(name, _)| name)
    }

    /// Returns the filter that topics are matched against: the part after the
    /// share name for a shared subscription, the whole filter otherwise.
    pub fn match_filter(&self) -> &str {
        match split_shared(&self.0) {
            Some(Ok((_, inner))) => inner,
            _ => &self.0,
        }
    }

    /// Returns true when the matching part holds `+` or `#`.
    pub fn has_wildcards(&self) -> bool {
        self.match_filter().contains(['+', '#'])
    }

    /// Returns true when this filter matches `topic`.
    pub fn matches(&self, topic: &Topic) -> bool {
        matches(self.match_filter(), topic.as_str())
    }
}

/// The prefix of the per-device topic: `$push/{client id}` is where a
/// device receives what the push API sends it. Only that device may
/// subscribe to it, nobody may publish to it, and it has no route entry:
/// the router finds the device through the session registry.
pub const PUSH_PREFIX: &str = "$push/";

impl Topic {
    /// Returns the per-device topic of `client`.
    pub fn push(client: &crate::ClientId) -> Topic {
        Topic(ByteString::from(format!("{PUSH_PREFIX}{client}")))
    }
}

impl TopicFilter {
    /// Returns the client id a per-device filter names, `Some("")` for any
    /// other filter in the reserved `$push/` space (wildcards, more levels,
    /// a shared subscription of it), and `None` outside it.
    pub fn push_client(&self) -> Option<&str> {
        let inner = self.match_filter();
        let client = inner.strip_prefix(PUSH_PREFIX).or_else(|| (inner == "$push").then_some(""))?;
        let exact = self.share_group().is_none() && !client.is_empty() && !client.contains(['/', '+', '#']);
        Some(if exact { client } else { "" })
    }
}

impl fmt::Debug for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_covers_another_only_when_it_matches_every_topic_the_other_does() {
        let yes = [
            ("#", "a/+/c"),
            ("a/#", "a"),
            ("a/#", "a/#"),
            ("a/+", "a/+"),
            ("a/+/c", "a/b/c"),
            ("+/+", "x/+"),
        ];
        let no =
            [("a/+", "a/#"), ("a/b", "a/+"), ("a/+", "a"), ("#", "$SYS/x"), ("a/+/c", "a/b/d"), ("a", "a/b")];
        for (outer, inner) in yes {
            assert!(covers(outer, inner), "{outer} covers {inner}");
        }
        for (outer, inner) in no {
            assert!(!covers(outer, inner), "{outer} does not cover {inner}");
        }
        // Checked against `matches` over every short topic of a small alphabet.
        let levels = ["a", "b", "+", "#"];
        let filters: Vec<String> = (1..=3)
            .flat_map(|n| {
                (0..levels.len().pow(n as u32)).map(move |mut i| {
                    (0..n)
                        .map(|_| {
                            let l = levels[i % 4];
                            i /= 4;
                            l
                        })
                        .collect::<Vec<_>>()
                        .join("/")
                })
            })
            .filter(|f| validate_topic_filter(f).is_ok())
            .collect();
        let topics: Vec<String> = (1..=4)
            .flat_map(|n| {
                (0..1usize << n).map(move |i| {
                    (0..n).map(|b| if i >> b & 1 == 1 { "a" } else { "b" }).collect::<Vec<_>>().join("/")
                })
            })
            .collect();
        for outer in &filters {
            for inner in &filters {
                if covers(outer, inner) {
                    for topic in &topics {
                        assert!(
                            !matches(inner, topic) || matches(outer, topic),
                            "{outer} ⊇ {inner} but not for {topic}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn topic_names_follow_section_4_7() {
        let cases: &[(&str, Result<(), TopicError>)] = &[
            ("a/b", Ok(())),
            ("/", Ok(())),
            ("$SYS/x", Ok(())),
            ("", Err(TopicError::Empty)),
            ("a/+", Err(TopicError::WildcardInName)),
            ("a#", Err(TopicError::WildcardInName)),
            ("a\0b", Err(TopicError::NullCharacter)),
        ];
        for (name, want) in cases {
            assert_eq!(validate_topic_name(name), *want, "{name:?}");
        }
        assert_eq!(validate_topic_name(&"a".repeat(65_536)), Err(TopicError::TooLong));
        assert_eq!(validate_topic_name(&"/".repeat(127)), Ok(()), "128 levels");
        assert_eq!(validate_topic_name(&"/".repeat(128)), Err(TopicError::TooManyLevels));
        assert_eq!(validate_topic_filter(&"+/".repeat(200)), Err(TopicError::TooManyLevels));
    }

    #[test]
    fn topic_filters_follow_section_4_7_and_4_8() {
        use TopicError::*;
        let cases: &[(&str, Result<(), TopicError>)] = &[
            ("#", Ok(())),
            ("+", Ok(())),
            ("sport/tennis/#", Ok(())),
            ("+/tennis/#", Ok(())),
            ("sport/+/player1", Ok(())),
            ("$share/g/a/+", Ok(())),
            ("$share/g/#", Ok(())),
            ("sport/tennis#", Err(MisplacedMultiLevelWildcard)),
            ("sport/tennis/#/ranking", Err(MisplacedMultiLevelWildcard)),
            ("sport+", Err(MisplacedSingleLevelWildcard)),
            ("$share//a", Err(InvalidShareName)),
            ("$share/g+/a", Err(InvalidShareName)),
            ("$share/g", Err(MissingSharedFilter)),
            ("$share/g/", Err(MissingSharedFilter)),
            ("$share/", Err(InvalidShareName)),
            ("", Err(Empty)),
        ];
        for (filter, want) in cases {
            assert_eq!(validate_topic_filter(filter), *want, "{filter:?}");
        }
    }

    #[test]
    fn matching_follows_the_spec_examples() {
        let cases = [
            ("sport/tennis/player1/#", "sport/tennis/player1", true),
            ("sport/tennis/player1/#", "sport/tennis/player1/ranking", true),
            ("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", true),
            ("sport/#", "sport", true),
            ("#", "a/b/c", true),
            ("sport/tennis/+", "sport/tennis/player1", true),
            ("sport/tennis/+", "sport/tennis/player1/ranking", false),
            ("sport/+", "sport", false),
            ("sport/+", "sport/", true),
            ("+/+", "/finance", true),
            ("/+", "/finance", true),
            ("+", "/finance", false),
            ("#", "$SYS/x", false),
            ("+/monitor/Clients", "$SYS/monitor/Clients", false),
            ("$SYS/#", "$SYS/monitor/Clients", true),
            ("$SYS/monitor/+", "$SYS/monitor/Clients", true),
            ("a/b", "a/b", true),
            ("a/b", "a/c", false),
        ];
        for (filter, topic, want) in cases {
            assert_eq!(matches(filter, topic), want, "{filter} vs {topic}");
        }
    }

    #[test]
    fn shared_filters_expose_group_and_inner_filter() {
        let f = TopicFilter::new("$share/workers/jobs/+").expect("valid");
        assert_eq!(f.share_group(), Some("workers"));
        assert_eq!(f.match_filter(), "jobs/+");
        assert!(f.matches(&Topic::new("jobs/1").expect("valid")));
        let plain = TopicFilter::new("jobs/#").expect("valid");
        assert_eq!(plain.share_group(), None);
        assert!(plain.has_wildcards());
    }

    #[test]
    fn the_per_device_space_names_one_client_or_none() {
        let client = |f: &str| TopicFilter::new(f).expect("valid").push_client().map(str::to_owned);
        assert_eq!(client("$push/dev-1").as_deref(), Some("dev-1"));
        for reserved in ["$push", "$push/+", "$push/#", "$push/dev-1/x", "$share/g/$push/dev-1"] {
            assert_eq!(client(reserved).as_deref(), Some(""), "{reserved}");
        }
        for outside in ["push/dev-1", "#", "+/dev-1", "$pushy/dev-1"] {
            assert_eq!(client(outside), None, "{outside}");
        }
        let topic = Topic::push(&crate::ClientId::new("dev-1").expect("valid"));
        assert_eq!(topic.as_str(), "$push/dev-1");
        assert!(!TopicFilter::new("#").expect("valid").matches(&topic), "wildcards skip $-topics");
    }
}
