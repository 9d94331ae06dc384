//! Entries kept per app until a time, at most `CAP` per app: what
//! idempotency keys and message records share. Past the cap an app's
//! entry that ends first is forgotten (policy: forget oldest); expiry
//! forgets every app's entries whose time is over. Every operation is
//! logarithmic, also at the cap. Every replica runs the same rules.

use herald_core::{AppId, UnixMillis};
use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;

/// Per-app entries with an end time and a cap.
#[derive(Debug, Clone)]
pub(super) struct Expiring<K, V, const CAP: usize> {
    entries: HashMap<(AppId, K), (UnixMillis, V)>,
    /// Every entry by end time, for expiry.
    order: BTreeSet<(UnixMillis, AppId, K)>,
    /// Each app's entries by end time, for its cap.
    per_app: HashMap<AppId, BTreeSet<(UnixMillis, K)>>,
}

impl<K, V, const CAP: usize> Default for Expiring<K, V, CAP> {
    fn default() -> Self {
        Expiring { entries: HashMap::new(), order: BTreeSet::new(), per_app: HashMap::new() }
    }
}

impl<K: Clone + Eq + Hash + Ord, V, const CAP: usize> Expiring<K, V, CAP> {
    /// Keeps `value` under `(app, key)` until `until`, replacing what was
    /// there; past the app's cap its entry that ends first goes.
    pub(super) fn insert(&mut self, app: AppId, key: K, until: UnixMillis, value: V) {
        self.remove(&app, &key);
        self.order.insert((until, app.clone(), key.clone()));
        let mine = self.per_app.entry(app.clone()).or_default();
        mine.insert((until, key.clone()));
        let evict = (mine.len() > CAP).then(|| mine.first().cloned()).flatten();
        self.entries.insert((app.clone(), key), (until, value));
        if let Some((_, oldest)) = evict {
            self.remove(&app, &oldest);
        }
    }

    /// Forgets `(app, key)`; returns its value.
    pub(super) fn remove(&mut self, app: &AppId, key: &K) -> Option<V> {
        let (until, value) = self.entries.remove(&(app.clone(), key.clone()))?;
        self.order.remove(&(until, app.clone(), key.clone()));
        if let Some(mine) = self.per_app.get_mut(app) {
            mine.remove(&(until, key.clone()));
            if mine.is_empty() {
                self.per_app.remove(app);
            }
        }
        Some(value)
    }

    /// The value under `(app, key)`.
    pub(super) fn get(&self, app: &AppId, key: &K) -> Option<&V> {
        self.entries.get(&(app.clone(), key.clone())).map(|(_, value)| value)
    }

    /// The value under `(app, key)`, to change (not its end time).
    pub(super) fn get_mut(&mut self, app: &AppId, key: &K) -> Option<&mut V> {
        self.entries.get_mut(&(app.clone(), key.clone())).map(|(_, value)| value)
    }

    /// Forgets every entry that ends before `before`; whether any did.
    pub(super) fn expire(&mut self, before: UnixMillis) -> bool {
        let mut any = false;
        while let Some((until, app, key)) = self.order.first().cloned() {
            if until >= before {
                break;
            }
            self.remove(&app, &key);
            any = true;
        }
        any
    }

    /// Every value.
    pub(super) fn values(&self) -> impl Iterator<Item = &V> {
        self.entries.values().map(|(_, value)| value)
    }

    /// How many entries `app` has.
    #[cfg(test)]
    pub(super) fn count(&self, app: &AppId) -> usize {
        self.per_app.get(app).map_or(0, BTreeSet::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(name: &str) -> AppId {
        AppId::new(name).expect("app")
    }

    #[test]
    fn each_app_keeps_its_newest_entries_up_to_the_cap_and_expiry_forgets_the_old() {
        let mut kept: Expiring<u32, &str, 2> = Expiring::default();
        kept.insert(app("a"), 1, UnixMillis(10), "a1");
        kept.insert(app("b"), 1, UnixMillis(5), "b1");
        kept.insert(app("a"), 2, UnixMillis(20), "a2");
        kept.insert(app("a"), 3, UnixMillis(30), "a3");
        // a's first-ending entry went; b's, which ends sooner, stays.
        assert_eq!((kept.get(&app("a"), &1), kept.get(&app("b"), &1)), (None, Some(&"b1")));
        assert_eq!((kept.count(&app("a")), kept.count(&app("b"))), (2, 1));
        // Replacing keeps one entry under the key, with the new end time.
        kept.insert(app("a"), 2, UnixMillis(40), "a2'");
        assert_eq!(kept.count(&app("a")), 2);
        if let Some(value) = kept.get_mut(&app("a"), &3) {
            *value = "a3'";
        }
        assert!(kept.expire(UnixMillis(31)));
        let mut left: Vec<&str> = kept.values().copied().collect();
        left.sort();
        assert_eq!(left, ["a2'"]);
        assert!(!kept.expire(UnixMillis(31)), "nothing more to forget");
        assert_eq!(kept.remove(&app("a"), &2), Some("a2'"));
        assert_eq!((kept.count(&app("a")), kept.values().count()), (0, 0));
    }
}
