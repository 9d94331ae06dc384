//! Each app's device directory (aliases and tags, ADR 0017): changed by
//! the push API, replicated as facts, read to turn an audience into devices.

use super::RouterState;
use crate::owner::Locations;
use herald_core::directory::{DeviceEntry, Directory, DirectoryLimits};
use herald_core::{AppId, ClientId, ErrorCode, SessionKey};
use herald_proto::journal::{DirectoryDevice, Fact};
use herald_proto::seam::{DeviceView, DirectoryAnswer, DirectoryOp, TagChange};

impl RouterState {
    /// Applies a directory request of `app`.
    pub(super) fn directory(
        &mut self,
        app: AppId,
        op: DirectoryOp,
        limits: &DirectoryLimits,
        located: Option<&Locations>,
        now: herald_core::UnixMillis,
        out: &mut Vec<super::Effect>,
    ) -> Result<DirectoryAnswer, ErrorCode> {
        match op {
            DirectoryOp::Keys(op) => self.key_op(app, op, out),
            DirectoryOp::Users(op) => self.user_op(app, op),
            DirectoryOp::Cancel { message } => {
                self.cancel(&app, message, now, out).map(DirectoryAnswer::Status)
            }
            DirectoryOp::Stats => Ok(DirectoryAnswer::Stats(self.app_stats(&app, located))),
            DirectoryOp::Status { message } => self
                .records
                .status(&app, message, now)
                .map(DirectoryAnswer::Status)
                .ok_or(ErrorCode::NotFound),
            DirectoryOp::Put { device, entry } => {
                self.set_device(&app, device.clone(), entry, limits)?;
                Ok(DirectoryAnswer::Device(self.view(&app, &device, located).ok_or(ErrorCode::Internal)?))
            }
            DirectoryOp::Patch { device, alias, tags } => {
                let mut entry = self.device(&app, &device).cloned().ok_or(ErrorCode::NotFound)?;
                if let Some(alias) = alias {
                    entry.alias = alias;
                }
                for change in tags {
                    match change {
                        TagChange::Add(tags) => entry.tags.extend(tags),
                        TagChange::Remove(tags) => tags.iter().for_each(|t| {
                            entry.tags.remove(t);
                        }),
                    }
                }
                self.set_device(&app, device.clone(), entry, limits)?;
                Ok(DirectoryAnswer::Device(self.view(&app, &device, located).ok_or(ErrorCode::Internal)?))
            }
            DirectoryOp::Get { device } => {
                self.view(&app, &device, located).map(DirectoryAnswer::Device).ok_or(ErrorCode::NotFound)
            }
            DirectoryOp::Delete { device } => {
                let removed = self.directories.get_mut(&app).and_then(|d| d.remove(&device));
                if removed.is_none() {
                    return Err(ErrorCode::NotFound);
                }
                self.journal.push(Fact::DeviceRemoved(SessionKey::new(app, device)));
                Ok(DirectoryAnswer::Done)
            }
            DirectoryOp::Alias { alias } => {
                let devices: Vec<ClientId> = self
                    .directories
                    .get(&app)
                    .map(|d| d.alias(&alias).cloned().collect())
                    .unwrap_or_default();
                Ok(DirectoryAnswer::Devices(
                    devices.iter().filter_map(|d| self.view(&app, d, located)).collect(),
                ))
            }
            DirectoryOp::Tag { tag, add, remove } => {
                let mut changed = Vec::with_capacity(add.len() + remove.len());
                for (device, adding) in
                    add.into_iter().map(|d| (d, true)).chain(remove.into_iter().map(|d| (d, false)))
                {
                    let mut entry = self.device(&app, &device).cloned().unwrap_or_default();
                    let change =
                        if adding { entry.tags.insert(tag.clone()) } else { entry.tags.remove(&tag) };
                    if change {
                        // Past a limit, this device is left as it was.
                        changed.push(self.set_device(&app, device, entry, limits).is_ok());
                    } else {
                        changed.push(false);
                    }
                }
                Ok(DirectoryAnswer::Changed(changed))
            }
            DirectoryOp::Count { expr } => {
                let count = self.directories.get(&app).map_or(0, |d| d.select(&expr).len());
                Ok(DirectoryAnswer::Count(count as u64))
            }
        }
    }

    fn device(&self, app: &AppId, device: &ClientId) -> Option<&DeviceEntry> {
        self.directories.get(app).and_then(|d| d.get(device))
    }

    /// Sets a device's entry within the limits, and journals it.
    fn set_device(
        &mut self,
        app: &AppId,
        device: ClientId,
        entry: DeviceEntry,
        limits: &DirectoryLimits,
    ) -> Result<(), ErrorCode> {
        if entry.tags.len() > limits.tags_per_device {
            return Err(ErrorCode::TooLarge);
        }
        let directory = self.directories.entry(app.clone()).or_default();
        if let Some(alias) = &entry.alias {
            let already = directory.get(&device).is_some_and(|e| e.alias.as_ref() == Some(alias));
            if !already && directory.alias_len(alias) >= limits.devices_per_alias {
                return Err(ErrorCode::QuotaExceeded);
            }
        }
        directory.put(device.clone(), entry.clone());
        let key = SessionKey::new(app.clone(), device);
        self.journal.push(Fact::DevicePut(Box::new(DirectoryDevice { device: key, entry })));
        Ok(())
    }

    /// Returns a device as the directory and the registry know it (where
    /// it is online as its shard's owner located it, if asked).
    fn view(&self, app: &AppId, device: &ClientId, located: Option<&Locations>) -> Option<DeviceView> {
        let entry = self.device(app, device)?.clone();
        let key = SessionKey::new(app.clone(), device.clone());
        let (online, since) = self.online_as_located(&key, located);
        Some(DeviceView { device: device.clone(), entry, online, since })
    }

    /// Counts `app`'s devices: online, offline with a persistent session,
    /// in the directory. (One pass over the sessions: for a stats call,
    /// not for every send.)
    fn app_stats(&self, app: &AppId, located: Option<&Locations>) -> herald_proto::seam::AppStats {
        let mut stats = herald_proto::seam::AppStats {
            directory_devices: self.directories.get(app).map_or(0, |d| d.len() as u64),
            ..Default::default()
        };
        // Online sessions as every shard's owner counted them, if they did.
        let counted = located.and_then(|located| located.everyone.get(app));
        if let Some(counted) = counted {
            stats.online = counted.values().sum();
        }
        for record in self.sessions.iter().filter(|(key, _)| key.app == *app).map(|(_, record)| record) {
            match record.owner {
                Some(_) if counted.is_none() => stats.online += 1,
                Some(_) => {}
                None if record.is_persistent() => stats.offline_persistent += 1,
                None => {}
            }
        }
        stats
    }

    /// Returns the directory of `app`, if it has devices.
    pub(super) fn directory_of(&self, app: &AppId) -> Option<&Directory> {
        self.directories.get(app)
    }

    /// Rebuilds the directories from an image.
    pub(super) fn restore_devices(&mut self, devices: Vec<DirectoryDevice>) {
        for DirectoryDevice { device, entry } in devices {
            self.directories.entry(device.app).or_default().put(device.client, entry);
        }
    }

    /// Adds every directory to `image`.
    pub(super) fn image_devices(&self, out: &mut Vec<DirectoryDevice>) {
        for (app, directory) in &self.directories {
            for (device, entry) in directory.iter() {
                let key = SessionKey::new(app.clone(), device.clone());
                out.push(DirectoryDevice { device: key, entry: entry.clone() });
            }
        }
    }
}
