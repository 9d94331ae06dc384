//! Items the router serving the gateways applies only once the registry
//! shards' owners said where their sessions are (ADR 0033): push-API sends
//! and the directory answers that show whether a device is online. A
//! persistent session is found in this router's records, which hold its
//! inbox; a transient one at its shard's owner.

use super::{Effect, RouterState};
use crate::owner::{Located, Locations};
use herald_core::{AppId, ClientId, NodeId, SessionKey, UnixMillis};
use herald_proto::seam::{Audience, DirectoryOp, Downlink, Push, Uplink};
use std::sync::Arc;

/// What an item asks of the registry shards' owners before it is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToLocate {
    /// Where these sessions are (none: nothing to ask).
    Sessions(Vec<SessionKey>),
    /// How many online sessions of the app each gateway holds.
    Everyone(AppId),
}

/// Whether `item` is of a kind that may ask the owners (see
/// [`RouterState::to_locate`]): what a batch without any needs no lock
/// of the state to learn.
pub fn may_locate(item: &Uplink) -> bool {
    match item {
        Uplink::Push(_) => true,
        Uplink::Directory { op, .. } => matches!(
            op,
            DirectoryOp::Get { .. }
                | DirectoryOp::Put { .. }
                | DirectoryOp::Patch { .. }
                | DirectoryOp::Alias { .. }
                | DirectoryOp::Stats
        ),
        _ => false,
    }
}

impl RouterState {
    /// What to ask the registry shards' owners before applying `item`;
    /// `None`: nothing (it is applied at once).
    pub fn to_locate(&self, item: &Uplink) -> Option<ToLocate> {
        let asked = |to_locate: ToLocate| match to_locate {
            ToLocate::Sessions(sessions) if sessions.is_empty() => None,
            to_locate => Some(to_locate),
        };
        let (app, devices): (&AppId, Vec<ClientId>) = match item {
            Uplink::Push(push) => return asked(self.sessions_to_locate(push)),
            Uplink::Directory { app, op, .. } => match op {
                DirectoryOp::Get { device }
                | DirectoryOp::Put { device, .. }
                | DirectoryOp::Patch { device, .. } => (app, vec![device.clone()]),
                DirectoryOp::Alias { alias } => (app, self.alias_members(app, std::slice::from_ref(alias))),
                DirectoryOp::Stats => return Some(ToLocate::Everyone(app.clone())),
                _ => return None,
            },
            _ => return None,
        };
        asked(self.not_persistent(app, devices))
    }

    /// What to ask the registry shards' owners before applying `push`:
    /// the sessions it names (its devices, its aliases' or its tags'),
    /// other than persistent ones, or, for a push to everyone, its app's
    /// online sessions per gateway.
    pub(super) fn sessions_to_locate(&self, push: &Push) -> ToLocate {
        let app = &push.message.app;
        let devices: Vec<ClientId> = match &push.audience {
            Audience::Devices(devices) => devices.clone(),
            Audience::Aliases(aliases) => self.alias_members(app, aliases),
            Audience::Tags(expr) => {
                self.directory_of(app).map(|d| d.select(expr)).unwrap_or_default().into_iter().collect()
            }
            Audience::All => return ToLocate::Everyone(app.clone()),
        };
        self.not_persistent(app, devices)
    }

    /// The devices `aliases` of `app` name (a device named twice, twice).
    fn alias_members(&self, app: &AppId, aliases: &[herald_core::directory::Alias]) -> Vec<ClientId> {
        let directory = self.directory_of(app);
        aliases.iter().flat_map(|alias| directory.into_iter().flat_map(|d| d.alias(alias))).cloned().collect()
    }

    /// `app`'s `devices` but those with a persistent session here.
    fn not_persistent(&self, app: &AppId, devices: Vec<ClientId>) -> ToLocate {
        let keys = devices.into_iter().map(|device| SessionKey::new(app.clone(), device));
        ToLocate::Sessions(
            keys.filter(|key| !self.sessions.get(key).is_some_and(|r| r.is_persistent())).collect(),
        )
    }

    /// What `located` says of `key`, unless a persistent session here holds
    /// it (its record, which holds the inbox, answers for it).
    pub(super) fn owner_says<'a>(
        &self,
        key: &SessionKey,
        located: Option<&'a Locations>,
    ) -> Option<&'a Located> {
        let persistent = self.sessions.get(key).is_some_and(|r| r.is_persistent());
        located.and_then(|located| located.sessions.get(key)).filter(|_| !persistent)
    }

    /// Applies `item` from `gateway` with what the shards' owners said
    /// (`located`; see [`RouterState::to_locate`]).
    pub fn apply_located(
        &mut self,
        gateway: NodeId,
        item: Uplink,
        located: Option<Arc<Locations>>,
        now: UnixMillis,
        out: &mut Vec<Effect>,
    ) {
        match item {
            Uplink::Push(push) => self.apply_push(gateway, push, located, now, out),
            Uplink::Directory { request, app, op, limits } => {
                let result = self.directory(app, op, &limits, located.as_deref(), now, out);
                out.push((gateway, Downlink::DirectoryDone { request, result }));
            }
            item => self.apply(gateway, item, now, out),
        }
    }

    /// Where `key` is online and since when: as its shard's owner said, for
    /// a session not persistent here that it located, else by the record.
    pub(super) fn online_as_located(
        &self,
        key: &SessionKey,
        located: Option<&Locations>,
    ) -> (Option<NodeId>, Option<UnixMillis>) {
        let record = self.sessions.get(key);
        match self.owner_says(key, located) {
            Some(Located::Online { gateway, since, .. }) => {
                // An owner of an earlier version does not say since when.
                let since = Some(*since).filter(|since| since.0 > 0).or_else(|| record.map(|r| r.since));
                (Some(*gateway), since)
            }
            Some(_) => (None, None),
            None => record.map_or((None, None), |r| (r.owner, Some(r.since))),
        }
    }
}
