//! Device users (ADR 0026): user names with the app their sessions belong
//! to and a salted hash of their password, set and removed through the
//! admin API, found by the gateway a device connects to. The router never
//! sees a password: gateways hash and check.

use super::RouterState;
use herald_core::{AppId, ErrorCode};
use herald_proto::journal::Fact;
use herald_proto::seam::DirectoryAnswer;
use herald_proto::users::{DeviceUser, MAX_DEVICE_USERS_PER_APP, UserOp};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Every device user, by name, with each app's names in order (for pages).
#[derive(Debug, Clone, Default)]
pub(super) struct UserTable {
    by_name: HashMap<String, DeviceUser>,
    by_app: BTreeMap<AppId, BTreeSet<String>>,
}

impl UserTable {
    /// Keeps `user`, replacing one with its name.
    pub(super) fn put(&mut self, user: DeviceUser) {
        if let Some(old) = self.by_name.get(&user.username)
            && old.app != user.app
        {
            let (app, name) = (old.app.clone(), old.username.clone());
            self.remove(&app, &name);
        }
        self.by_app.entry(user.app.clone()).or_default().insert(user.username.clone());
        self.by_name.insert(user.username.clone(), user);
    }

    /// Forgets the user `name` of `app`; whether there was one.
    pub(super) fn remove(&mut self, app: &AppId, name: &str) -> bool {
        if self.by_name.get(name).is_none_or(|user| user.app != *app) {
            return false;
        }
        self.by_name.remove(name);
        if let Some(names) = self.by_app.get_mut(app) {
            names.remove(name);
            if names.is_empty() {
                self.by_app.remove(app);
            }
        }
        true
    }

    /// The user `name`, in whatever app.
    pub(super) fn find(&self, name: &str) -> Option<&DeviceUser> {
        self.by_name.get(name)
    }

    /// How many users `app` has.
    pub(super) fn count(&self, app: &AppId) -> usize {
        self.by_app.get(app).map_or(0, BTreeSet::len)
    }

    /// Up to `limit` users of `app` in name order, after `after`.
    pub(super) fn page(&self, app: &AppId, after: Option<&str>, limit: usize) -> Vec<DeviceUser> {
        let Some(names) = self.by_app.get(app) else { return Vec::new() };
        let start = match after {
            Some(after) => std::ops::Bound::Excluded(after.to_owned()),
            None => std::ops::Bound::Unbounded,
        };
        names
            .range((start, std::ops::Bound::Unbounded))
            .take(limit)
            .filter_map(|name| self.by_name.get(name).cloned())
            .collect()
    }

    /// Every user.
    pub(super) fn all(&self) -> impl Iterator<Item = &DeviceUser> {
        self.by_name.values()
    }

    /// Whether there is none.
    pub(super) fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

impl RouterState {
    /// Sets, removes, reads, lists or finds device users of `app` (a
    /// `Find` looks in every app).
    pub(super) fn user_op(&mut self, app: AppId, op: UserOp) -> Result<DirectoryAnswer, ErrorCode> {
        match op {
            UserOp::Find { username } => self
                .users
                .find(&username)
                .map(|u| DirectoryAnswer::Users(vec![u.clone()]))
                .ok_or(ErrorCode::NotFound),
            UserOp::Get { username } => match self.users.find(&username) {
                Some(user) if user.app == app => Ok(DirectoryAnswer::Users(vec![user.clone()])),
                _ => Err(ErrorCode::NotFound),
            },
            UserOp::List { after, limit } => {
                Ok(DirectoryAnswer::Users(self.users.page(&app, after.as_deref(), limit as usize)))
            }
            UserOp::Put(user) => {
                if user.app != app || !user.password.is_well_formed() {
                    return Err(ErrorCode::Malformed);
                }
                match self.users.find(&user.username) {
                    Some(existing) if existing.app != app => return Err(ErrorCode::Conflict),
                    Some(_) => {}
                    None if self.users.count(&app) >= MAX_DEVICE_USERS_PER_APP => {
                        return Err(ErrorCode::QuotaExceeded);
                    }
                    None => {}
                }
                self.journal.push(Fact::DeviceUserPut(user.clone()));
                self.users.put((*user).clone());
                Ok(DirectoryAnswer::Users(vec![*user]))
            }
            UserOp::Remove { username } => {
                if !self.users.remove(&app, &username) {
                    return Err(ErrorCode::NotFound);
                }
                self.journal.push(Fact::DeviceUserRemoved { app, username });
                Ok(DirectoryAnswer::Done)
            }
        }
    }

    /// Rebuilds the users from an image.
    pub(super) fn restore_users(&mut self, users: Vec<DeviceUser>) {
        for user in users {
            self.users.put(user);
        }
    }

    /// Adds every user to `image`.
    pub(super) fn image_users(&self, out: &mut Vec<DeviceUser>) {
        out.extend(self.users.all().cloned());
    }
}
