//! Node ids: a number, or derived from the host name where an orchestrator
//! names hosts. `ordinal` takes a StatefulSet pod's `NAME-N` to N + 1 (a
//! router's id, stable across restarts); `hostname` hashes the name to a
//! 63-bit id (a gateway's, unique per pod: a Deployment names each pod
//! anew).

use serde::{Deserialize, Deserializer};

/// Parses a node id setting; `hostname` supplies the host name when the
/// setting asks for it.
pub(crate) fn parse(value: &str, hostname: impl FnOnce() -> Option<String>) -> anyhow::Result<u64> {
    let value = value.trim();
    let id = match value {
        "ordinal" => {
            let name = hostname().ok_or_else(|| anyhow::anyhow!("node_id = \"ordinal\": no host name"))?;
            let ordinal =
                name.rsplit_once('-').and_then(|(_, n)| n.parse::<u64>().ok()).ok_or_else(|| {
                    anyhow::anyhow!(
                        "node_id = \"ordinal\": host name {name:?} does not end in -N (a StatefulSet pod's)"
                    )
                })?;
            ordinal.checked_add(1).ok_or_else(|| anyhow::anyhow!("node_id: ordinal {ordinal} too large"))?
        }
        "hostname" => {
            let name = hostname().ok_or_else(|| anyhow::anyhow!("node_id = \"hostname\": no host name"))?;
            anyhow::ensure!(!name.is_empty(), "node_id = \"hostname\": the host name is empty");
            hash(&name)
        }
        number => number.parse::<u64>().map_err(|_| {
            anyhow::anyhow!("node_id: {number:?} is not a number, \"ordinal\" or \"hostname\"")
        })?,
    };
    at_least_one(id)
}

fn at_least_one(id: u64) -> anyhow::Result<u64> {
    anyhow::ensure!(id > 0, "node_id: must be at least 1");
    Ok(id)
}

/// This host's name: `HOSTNAME` (Kubernetes sets it to the pod's name),
/// else the kernel's.
pub(crate) fn hostname() -> Option<String> {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
}

/// FNV-1a over the name, kept to 63 bits and never 0.
fn hash(name: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash >> 1).max(1)
}

/// A node id in a configuration file or variable: a number or a string.
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    deserialize_optional(deserializer)?.ok_or_else(|| serde::de::Error::custom("node_id: required"))
}

/// Like [`deserialize`], for settings that may be absent.
pub(crate) fn deserialize_optional<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form {
        Number(u64),
        Text(String),
    }
    match Option::<Form>::deserialize(deserializer)? {
        None => Ok(None),
        Some(Form::Number(id)) => at_least_one(id).map(Some),
        Some(Form::Text(text)) => parse(&text, hostname).map(Some),
    }
    .map_err(|e| serde::de::Error::custom(format!("{e:#}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(name: &str) -> impl FnOnce() -> Option<String> + '_ {
        move || Some(name.to_owned())
    }

    #[test]
    fn numbers_ordinals_and_host_names() {
        assert_eq!(parse("7", || None).expect("number"), 7);
        assert_eq!(parse("ordinal", named("herald-router-0")).expect("first pod"), 1);
        assert_eq!(parse("ordinal", named("herald-router-2")).expect("third pod"), 3);
        let a = parse("hostname", named("herald-gateway-7d9f-abcde")).expect("hash");
        let b = parse("hostname", named("herald-gateway-7d9f-fghij")).expect("hash");
        assert_ne!(a, b, "two pods, two ids");
        assert_eq!(a, parse("hostname", named("herald-gateway-7d9f-abcde")).expect("hash"), "stable");
        assert!(a > 0 && a < 1 << 63);
    }

    #[test]
    fn bad_settings_say_what_is_wrong() {
        let error = parse("ordinal", named("router")).expect_err("no ordinal").to_string();
        assert!(error.contains("does not end in -N"), "{error}");
        let error = parse("0", || None).expect_err("zero").to_string();
        assert!(error.contains("at least 1"), "{error}");
        let error = parse("first", || None).expect_err("word").to_string();
        assert!(error.contains("\"ordinal\" or \"hostname\""), "{error}");
        assert!(parse("hostname", || None).is_err());
    }
}
