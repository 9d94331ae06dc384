//! A subscription index: topic filters in a trie, matched against topic
//! names. Used by the router (filter → routes) and by each gateway (filter →
//! local subscribers).
//!
//! Hot path: `for_each_match` runs once per published message.

use std::collections::HashMap;
use std::hash::Hash;

/// Maps topic filters to entries `(K, V)`: at most one entry per key `K`
/// under each filter, so re-subscribing replaces the value.
#[derive(Debug)]
pub struct TopicTree<K, V> {
    root: Node<K, V>,
    len: usize,
}

#[derive(Debug)]
struct Node<K, V> {
    /// Literal child levels.
    children: HashMap<Box<str>, Node<K, V>>,
    /// The `+` child.
    single: Option<Box<Node<K, V>>>,
    /// Entries of filters ending in `#` at this level.
    multi: Vec<(K, V)>,
    /// Entries of filters ending exactly here.
    exact: Vec<(K, V)>,
}

impl<K, V> Default for Node<K, V> {
    fn default() -> Self {
        Node { children: HashMap::new(), single: None, multi: Vec::new(), exact: Vec::new() }
    }
}

impl<K, V> Node<K, V> {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.single.is_none() && self.multi.is_empty() && self.exact.is_empty()
    }
}

impl<K, V> Default for TopicTree<K, V> {
    fn default() -> Self {
        TopicTree { root: Node::default(), len: 0 }
    }
}

impl<K: Eq + Hash + Clone, V> TopicTree<K, V> {
    /// Returns an empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Returns the number of entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Returns true when the index holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds or replaces `key`'s entry under `filter` (the matching part of a
    /// filter, without any `$share/` prefix). Returns the replaced value.
    pub fn insert(&mut self, filter: &str, key: K, value: V) -> Option<V> {
        let mut node = &mut self.root;
        let mut levels = filter.split('/').peekable();
        let mut slot_multi = false;
        while let Some(level) = levels.next() {
            if level == "#" && levels.peek().is_none() {
                slot_multi = true;
                break;
            }
            node = if level == "+" {
                node.single.get_or_insert_with(Box::default)
            } else {
                node.children.entry(level.into()).or_default()
            };
        }
        let entries = if slot_multi { &mut node.multi } else { &mut node.exact };
        if let Some(entry) = entries.iter_mut().find(|(k, _)| *k == key) {
            return Some(std::mem::replace(&mut entry.1, value));
        }
        entries.push((key, value));
        self.len += 1;
        None
    }

    /// Removes `key`'s entry under `filter`, returning its value.
    pub fn remove(&mut self, filter: &str, key: &K) -> Option<V> {
        let levels: Vec<&str> = filter.split('/').collect();
        let removed = remove_at(&mut self.root, &levels, key);
        if removed.is_some() {
            self.len -= 1;
        }
        removed
    }

    /// Returns `key`'s value under `filter`.
    pub fn get(&self, filter: &str, key: &K) -> Option<&V> {
        let mut node = &self.root;
        let mut levels = filter.split('/').peekable();
        while let Some(level) = levels.next() {
            if level == "#" && levels.peek().is_none() {
                return node.multi.iter().find(|(k, _)| k == key).map(|(_, v)| v);
            }
            node = if level == "+" { node.single.as_deref()? } else { node.children.get(level)? };
        }
        node.exact.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Calls `visit` for every entry whose filter matches `topic`. An entry
    /// subscribed under several matching filters is visited once per filter.
    pub fn for_each_match(&self, topic: &str, mut visit: impl FnMut(&K, &V)) {
        let system = topic.starts_with('$');
        let levels: Vec<&str> = topic.split('/').collect();
        walk(&self.root, &levels, system, &mut visit);
    }
}

fn walk<K, V>(node: &Node<K, V>, levels: &[&str], first_is_system: bool, visit: &mut impl FnMut(&K, &V)) {
    // [MQTT-4.7.2-1]: wildcards at the first level never match `$` topics.
    if !first_is_system {
        for (k, v) in &node.multi {
            visit(k, v);
        }
    }
    let Some((level, rest)) = levels.split_first() else {
        for (k, v) in &node.exact {
            visit(k, v);
        }
        return;
    };
    if let Some(child) = node.children.get(*level) {
        walk(child, rest, false, visit);
    }
    if let Some(single) = node.single.as_deref().filter(|_| !first_is_system) {
        walk(single, rest, false, visit);
    }
}

fn remove_at<K: Eq, V>(node: &mut Node<K, V>, levels: &[&str], key: &K) -> Option<V> {
    let take = |entries: &mut Vec<(K, V)>| {
        let index = entries.iter().position(|(k, _)| k == key)?;
        Some(entries.swap_remove(index).1)
    };
    match levels {
        [] => take(&mut node.exact),
        ["#"] => take(&mut node.multi),
        [level, rest @ ..] => {
            if *level == "+" {
                let child = node.single.as_deref_mut()?;
                let removed = remove_at(child, rest, key);
                if child.is_empty() {
                    node.single = None;
                }
                removed
            } else {
                let child = node.children.get_mut(*level)?;
                let removed = remove_at(child, rest, key);
                if child.is_empty() {
                    node.children.remove(*level);
                }
                removed
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic::matches as filter_matches;
    use proptest::prelude::*;

    fn matched(tree: &TopicTree<u32, ()>, topic: &str) -> Vec<u32> {
        let mut out = Vec::new();
        tree.for_each_match(topic, |k, _| out.push(*k));
        out.sort_unstable();
        out
    }

    #[test]
    fn finds_exact_single_and_multi_level_subscriptions() {
        let mut tree = TopicTree::new();
        tree.insert("a/b", 1, ());
        tree.insert("a/+", 2, ());
        tree.insert("a/#", 3, ());
        tree.insert("#", 4, ());
        tree.insert("+/b/#", 5, ());
        tree.insert("$SYS/#", 6, ());
        assert_eq!(matched(&tree, "a/b"), vec![1, 2, 3, 4, 5]);
        assert_eq!(matched(&tree, "a"), vec![3, 4]);
        assert_eq!(matched(&tree, "x/b"), vec![4, 5]);
        assert_eq!(matched(&tree, "$SYS/load"), vec![6]);
        assert_eq!(tree.len(), 6);
    }

    #[test]
    fn insert_replaces_and_remove_prunes() {
        let mut tree = TopicTree::new();
        assert_eq!(tree.insert("a/+/c", 1, 'x'), None);
        assert_eq!(tree.insert("a/+/c", 1, 'y'), Some('x'));
        assert_eq!(tree.get("a/+/c", &1), Some(&'y'));
        assert_eq!(tree.remove("a/+/c", &2), None);
        assert_eq!(tree.remove("a/+/c", &1), Some('y'));
        assert!(tree.is_empty());
        assert!(tree.root.is_empty(), "empty branches are pruned");
    }

    fn level() -> impl Strategy<Value = String> {
        prop_oneof![Just("a".to_string()), Just("b".to_string()), Just("$s".to_string()), Just(String::new())]
    }

    fn topic_strategy() -> impl Strategy<Value = String> {
        prop::collection::vec(level(), 1..5).prop_map(|l| l.join("/"))
    }

    fn filter_strategy() -> impl Strategy<Value = String> {
        let lvl = prop_oneof![4 => level(), 1 => Just("+".to_string())];
        (prop::collection::vec(lvl, 1..5), any::<bool>()).prop_map(|(mut l, hash)| {
            if hash {
                l.push("#".to_string());
            }
            l.join("/")
        })
    }

    proptest! {
        /// The trie agrees with the plain matching rule on random filters and topics.
        #[test]
        fn agrees_with_the_naive_oracle(filters in prop::collection::vec(filter_strategy(), 1..30),
                                        topics in prop::collection::vec(topic_strategy(), 1..30)) {
            let mut tree = TopicTree::new();
            for (i, f) in filters.iter().enumerate() {
                tree.insert(f, i, ());
            }
            for t in &topics {
                let mut got = Vec::new();
                tree.for_each_match(t, |k, _| got.push(*k));
                got.sort_unstable();
                let want: Vec<usize> = filters.iter().enumerate()
                    .filter(|(_, f)| filter_matches(f, t)).map(|(i, _)| i).collect();
                prop_assert_eq!(got, want, "topic {}", t);
            }
        }
    }
}
