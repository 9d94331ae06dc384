//! API keys made at run time through the push API's admin endpoints. The
//! router keeps each key's SHA-256 digest, never the key, in replicated
//! state; every gateway gets the keys it must accept when it links and
//! again, per app, after each change, so a revoked key stops working on
//! every gateway once its revocation is committed.

use super::{Effect, RouterState};
use herald_core::{AppId, ErrorCode, NodeId};
use herald_proto::journal::Fact;
use herald_proto::seam::{ApiKeyRecord, DirectoryAnswer, Downlink, KeyOp};
use std::collections::BTreeMap;

pub use herald_proto::seam::MAX_API_KEYS_PER_APP;

/// Every app's keys made at run time, by id.
#[derive(Debug, Clone, Default)]
pub(super) struct ApiKeyTable {
    by_app: BTreeMap<AppId, BTreeMap<String, ApiKeyRecord>>,
}

impl ApiKeyTable {
    /// Keeps `key`, replacing one with its id.
    pub(super) fn put(&mut self, key: ApiKeyRecord) {
        self.by_app.entry(key.app.clone()).or_default().insert(key.id.clone(), key);
    }

    /// Forgets the key `id` of `app`; whether there was one.
    pub(super) fn revoke(&mut self, app: &AppId, id: &str) -> bool {
        let Some(keys) = self.by_app.get_mut(app) else { return false };
        let had = keys.remove(id).is_some();
        if keys.is_empty() {
            self.by_app.remove(app);
        }
        had
    }

    /// The keys of `app`, by id.
    pub(super) fn of(&self, app: &AppId) -> Vec<ApiKeyRecord> {
        self.by_app.get(app).map(|keys| keys.values().cloned().collect()).unwrap_or_default()
    }

    /// Every key.
    pub(super) fn all(&self) -> impl Iterator<Item = &ApiKeyRecord> {
        self.by_app.values().flat_map(BTreeMap::values)
    }
}

impl RouterState {
    /// Creates, revokes or lists `app`'s keys; a change is journaled and
    /// sent to every gateway ahead of the answer.
    pub(super) fn key_op(
        &mut self,
        app: AppId,
        op: KeyOp,
        out: &mut Vec<Effect>,
    ) -> Result<DirectoryAnswer, ErrorCode> {
        match op {
            KeyOp::List => Ok(DirectoryAnswer::Keys(self.api_keys.of(&app))),
            KeyOp::Create(key) => {
                if key.app != app {
                    return Err(ErrorCode::Malformed);
                }
                let keys = self.api_keys.by_app.get(&app);
                if keys.is_some_and(|keys| keys.contains_key(&key.id))
                    || self.api_keys.all().any(|k| k.digest == key.digest)
                {
                    return Err(ErrorCode::Conflict);
                }
                if keys.map_or(0, BTreeMap::len) >= MAX_API_KEYS_PER_APP {
                    return Err(ErrorCode::QuotaExceeded);
                }
                self.journal.push(Fact::ApiKeyPut(Box::new(key.clone())));
                self.api_keys.put(key.clone());
                self.send_keys_of(&app, out);
                Ok(DirectoryAnswer::Keys(vec![key]))
            }
            KeyOp::Revoke { id } => {
                if !self.api_keys.revoke(&app, &id) {
                    return Err(ErrorCode::NotFound);
                }
                self.journal.push(Fact::ApiKeyRevoked { app: app.clone(), id });
                self.send_keys_of(&app, out);
                Ok(DirectoryAnswer::Done)
            }
        }
    }

    /// Sends `app`'s keys to every gateway known.
    fn send_keys_of(&self, app: &AppId, out: &mut Vec<Effect>) {
        let keys = self.api_keys.of(app);
        for gateway in &self.known_gateways {
            out.push((*gateway, Downlink::ApiKeys { app: Some(app.clone()), keys: keys.clone() }));
        }
    }

    /// Sends every key to `gateway`, which just linked.
    pub fn send_api_keys(&self, gateway: NodeId, out: &mut Vec<Effect>) {
        let keys = self.api_keys.all().cloned().collect();
        out.push((gateway, Downlink::ApiKeys { app: None, keys }));
    }

    /// Rebuilds the keys from an image.
    pub(super) fn restore_api_keys(&mut self, keys: Vec<ApiKeyRecord>) {
        for key in keys {
            self.api_keys.put(key);
        }
    }

    /// Adds every key to `image`.
    pub(super) fn image_api_keys(&self, out: &mut Vec<ApiKeyRecord>) {
        out.extend(self.api_keys.all().cloned());
    }
}
