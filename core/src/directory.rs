//! The device directory of one app: each device's alias and tags, with the
//! indexes that turn an audience (an alias, a boolean tag expression) into
//! devices. Pure data; the router keeps one per app and replicates changes.

use crate::{ByteString, ClientId};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;

/// Longest tag, in bytes.
pub const MAX_TAG_BYTES: usize = 64;
/// Most tags one device may have.
pub const MAX_TAGS_PER_DEVICE: usize = 1000;
/// Longest alias, in bytes.
pub const MAX_ALIAS_BYTES: usize = 128;
/// Most devices one alias may name.
pub const MAX_DEVICES_PER_ALIAS: usize = 100;
/// Deepest tag expression (a lone tag is depth 1).
pub const MAX_EXPR_DEPTH: usize = 8;
/// Most tags named in one tag expression.
pub const MAX_EXPR_LEAVES: usize = 64;

/// An app's directory limits: the documented defaults, which an app may
/// change within [`DirectoryLimits::CEILING`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirectoryLimits {
    /// Most tags one device may have.
    pub tags_per_device: usize,
    /// Most devices one alias may name.
    pub devices_per_alias: usize,
    /// Deepest tag expression (a lone tag is depth 1).
    pub expr_depth: usize,
    /// Most tags named in one tag expression.
    pub expr_leaves: usize,
}

impl Default for DirectoryLimits {
    fn default() -> Self {
        DirectoryLimits {
            tags_per_device: MAX_TAGS_PER_DEVICE,
            devices_per_alias: MAX_DEVICES_PER_ALIAS,
            expr_depth: MAX_EXPR_DEPTH,
            expr_leaves: MAX_EXPR_LEAVES,
        }
    }
}

impl DirectoryLimits {
    /// The highest each limit may be set to: past these a directory or an
    /// expression costs more than one request should.
    pub const CEILING: DirectoryLimits = DirectoryLimits {
        tags_per_device: 10_000,
        devices_per_alias: 1_000,
        expr_depth: 16,
        expr_leaves: 256,
    };

    /// Whether every limit is at least 1 and at most its ceiling.
    pub fn within_ceiling(&self) -> bool {
        let c = DirectoryLimits::CEILING;
        [
            (self.tags_per_device, c.tags_per_device),
            (self.devices_per_alias, c.devices_per_alias),
            (self.expr_depth, c.expr_depth),
            (self.expr_leaves, c.expr_leaves),
        ]
        .iter()
        .all(|(value, ceiling)| (1..=*ceiling).contains(value))
    }
}

/// What is wrong with a tag, an alias or a tag expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DirectoryError {
    /// A tag is empty, too long or has characters outside `[a-z0-9:_-]`.
    #[error("a tag is 1 to {MAX_TAG_BYTES} characters of [a-z0-9:_-]")]
    InvalidTag,
    /// An alias is empty, too long or holds control characters.
    #[error("an alias is 1 to {MAX_ALIAS_BYTES} bytes without control characters")]
    InvalidAlias,
    /// An expression nests deeper than its limit (given).
    #[error("a tag expression nests at most {0} deep")]
    TooDeep(usize),
    /// An expression names more tags than its limit (given).
    #[error("a tag expression names at most {0} tags")]
    TooManyLeaves(usize),
    /// An `and` or `or` with no operand.
    #[error("and/or need at least one operand")]
    EmptyOperator,
}

/// A device tag: 1–64 characters of `[a-z0-9:_-]` (`city:bj`, `vip`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(ByteString);

impl Tag {
    /// Validates `tag`.
    pub fn new(tag: impl Into<ByteString>) -> Result<Tag, DirectoryError> {
        let tag = tag.into();
        let ok = !tag.is_empty()
            && tag.len() <= MAX_TAG_BYTES
            && tag.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-:".contains(&b));
        if ok { Ok(Tag(tag)) } else { Err(DirectoryError::InvalidTag) }
    }

    /// Returns the tag as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A device alias, typically the app's user id: several devices may share it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Alias(ByteString);

impl Alias {
    /// Validates `alias`: 1–128 bytes without control characters.
    pub fn new(alias: impl Into<ByteString>) -> Result<Alias, DirectoryError> {
        let alias = alias.into();
        let ok = !alias.is_empty() && alias.len() <= MAX_ALIAS_BYTES && !alias.chars().any(char::is_control);
        if ok { Ok(Alias(alias)) } else { Err(DirectoryError::InvalidAlias) }
    }

    /// Returns the alias as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! show_as_str {
    ($($name:ident),*) => {$(
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    )*};
}
show_as_str!(Tag, Alias);

/// A boolean expression over tags: which devices an audience reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagExpr {
    /// Devices with this tag.
    Tag(Tag),
    /// Devices matching every operand.
    And(Vec<TagExpr>),
    /// Devices matching any operand.
    Or(Vec<TagExpr>),
    /// Devices of the app not matching the operand.
    Not(Box<TagExpr>),
}

impl TagExpr {
    /// Checks the documented default bounds: depth, tags named, no empty
    /// operator.
    pub fn check(&self) -> Result<(), DirectoryError> {
        self.check_within(&DirectoryLimits::default())
    }

    /// Checks the bounds of `limits`: depth, tags named, no empty operator.
    pub fn check_within(&self, limits: &DirectoryLimits) -> Result<(), DirectoryError> {
        if self.depth() > limits.expr_depth {
            return Err(DirectoryError::TooDeep(limits.expr_depth));
        }
        if self.leaves() > limits.expr_leaves {
            return Err(DirectoryError::TooManyLeaves(limits.expr_leaves));
        }
        self.check_operands()
    }

    fn check_operands(&self) -> Result<(), DirectoryError> {
        match self {
            TagExpr::Tag(_) => Ok(()),
            TagExpr::And(xs) | TagExpr::Or(xs) if xs.is_empty() => Err(DirectoryError::EmptyOperator),
            TagExpr::And(xs) | TagExpr::Or(xs) => xs.iter().try_for_each(TagExpr::check_operands),
            TagExpr::Not(x) => x.check_operands(),
        }
    }

    /// Returns how deep the expression nests (a tag: 1).
    pub fn depth(&self) -> usize {
        match self {
            TagExpr::Tag(_) => 1,
            TagExpr::And(xs) | TagExpr::Or(xs) => 1 + xs.iter().map(TagExpr::depth).max().unwrap_or(0),
            TagExpr::Not(x) => 1 + x.depth(),
        }
    }

    /// Returns how many tags the expression names.
    pub fn leaves(&self) -> usize {
        match self {
            TagExpr::Tag(_) => 1,
            TagExpr::And(xs) | TagExpr::Or(xs) => xs.iter().map(TagExpr::leaves).sum(),
            TagExpr::Not(x) => x.leaves(),
        }
    }

    /// Returns whether a device with `tags` matches.
    pub fn matches(&self, tags: &BTreeSet<Tag>) -> bool {
        match self {
            TagExpr::Tag(tag) => tags.contains(tag),
            TagExpr::And(xs) => xs.iter().all(|x| x.matches(tags)),
            TagExpr::Or(xs) => xs.iter().any(|x| x.matches(tags)),
            TagExpr::Not(x) => !x.matches(tags),
        }
    }
}

/// One device's entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceEntry {
    /// Its alias, if any.
    pub alias: Option<Alias>,
    /// Its tags.
    pub tags: BTreeSet<Tag>,
}

/// The devices of one app, indexed by tag and by alias.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    devices: HashMap<ClientId, DeviceEntry>,
    by_tag: HashMap<Tag, HashSet<ClientId>>,
    by_alias: HashMap<Alias, BTreeSet<ClientId>>,
}

impl Directory {
    /// Returns the number of devices.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// Returns true when the app has no device.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// Returns a device's entry.
    pub fn get(&self, device: &ClientId) -> Option<&DeviceEntry> {
        self.devices.get(device)
    }

    /// Returns every device with its entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&ClientId, &DeviceEntry)> {
        self.devices.iter()
    }

    /// Returns how many devices `alias` names now.
    pub fn alias_len(&self, alias: &Alias) -> usize {
        self.by_alias.get(alias).map_or(0, BTreeSet::len)
    }

    /// Returns the devices `alias` names, in id order.
    pub fn alias(&self, alias: &Alias) -> impl Iterator<Item = &ClientId> {
        self.by_alias.get(alias).into_iter().flatten()
    }

    /// Sets a device's whole entry (creating the device).
    pub fn put(&mut self, device: ClientId, entry: DeviceEntry) {
        self.remove(&device);
        for tag in &entry.tags {
            self.by_tag.entry(tag.clone()).or_default().insert(device.clone());
        }
        if let Some(alias) = &entry.alias {
            self.by_alias.entry(alias.clone()).or_default().insert(device.clone());
        }
        self.devices.insert(device, entry);
    }

    /// Removes a device; returns its entry.
    pub fn remove(&mut self, device: &ClientId) -> Option<DeviceEntry> {
        let entry = self.devices.remove(device)?;
        for tag in &entry.tags {
            if let Some(devices) = self.by_tag.get_mut(tag) {
                devices.remove(device);
                if devices.is_empty() {
                    self.by_tag.remove(tag);
                }
            }
        }
        if let Some(alias) = &entry.alias
            && let Some(devices) = self.by_alias.get_mut(alias)
        {
            devices.remove(device);
            if devices.is_empty() {
                self.by_alias.remove(alias);
            }
        }
        Some(entry)
    }

    /// Returns the devices `expr` selects, by set algebra over the tag
    /// index (`Not` is relative to the app's devices).
    pub fn select(&self, expr: &TagExpr) -> HashSet<ClientId> {
        match expr {
            TagExpr::Tag(tag) => self.by_tag.get(tag).cloned().unwrap_or_default(),
            TagExpr::Or(xs) => {
                let mut all = HashSet::new();
                for x in xs {
                    all.extend(self.select(x));
                }
                all
            }
            TagExpr::And(xs) => {
                // Intersect the positive operands, then subtract the negated
                // ones: no complement of the whole app unless all are negated.
                let (negated, positive): (Vec<&TagExpr>, Vec<&TagExpr>) =
                    xs.iter().partition(|x| matches!(x, TagExpr::Not(_)));
                let mut set = match positive.split_first() {
                    Some((first, rest)) => {
                        let mut set = self.select(first);
                        for x in rest {
                            let other = self.select(x);
                            set.retain(|d| other.contains(d));
                        }
                        set
                    }
                    None => self.devices.keys().cloned().collect(),
                };
                for x in negated {
                    let TagExpr::Not(inner) = x else { continue };
                    for device in self.select(inner) {
                        set.remove(&device);
                    }
                }
                set
            }
            TagExpr::Not(x) => {
                let excluded = self.select(x);
                self.devices.keys().filter(|d| !excluded.contains(*d)).cloned().collect()
            }
        }
    }
}

#[cfg(test)]
mod tests;
