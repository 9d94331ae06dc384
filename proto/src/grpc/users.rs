//! The wire form of device users (ADR 0026): requests, answers, journal
//! facts and image entries.

use super::convert::{ConvertError, invalid, required};
use super::pb;
use crate::users::{DeviceUser, HashAlgorithm, MAX_USERS_PER_PAGE, PasswordHash, SaltPosition, UserOp};
use herald_core::{AppId, UnixMillis};

/// The protobuf form of a user request.
pub(super) fn op_to_pb(op: &UserOp) -> pb::directory_request::Op {
    use pb::directory_request::Op;
    match op {
        UserOp::Put(user) => Op::UserPut(user_to_pb(user)),
        UserOp::Remove { username } => Op::UserRemove(username.clone()),
        UserOp::Get { username } => Op::UserGet(username.clone()),
        UserOp::List { after, limit } => Op::UserList(pb::UserPage { after: after.clone(), limit: *limit }),
        UserOp::Find { username } => Op::UserFind(username.clone()),
    }
}

/// A user request from its protobuf form (`op` is one of the `user_*`
/// requests).
pub(super) fn op_from_pb(op: pb::directory_request::Op) -> Result<UserOp, ConvertError> {
    use pb::directory_request::Op;
    Ok(match op {
        Op::UserPut(user) => UserOp::Put(Box::new(user_from_pb(user)?)),
        Op::UserRemove(username) => UserOp::Remove { username: name(username, "directory.user_remove")? },
        Op::UserGet(username) => UserOp::Get { username: name(username, "directory.user_get")? },
        Op::UserFind(username) => UserOp::Find { username: name(username, "directory.user_find")? },
        Op::UserList(page) => {
            if page.limit == 0 || page.limit > MAX_USERS_PER_PAGE {
                return Err(invalid("directory.user_list.limit", "1 to 1000"));
            }
            let after = page.after.map(|a| name(a, "directory.user_list.after")).transpose()?;
            UserOp::List { after, limit: page.limit }
        }
        _ => return Err(invalid("directory.op", "not a user request")),
    })
}

fn name(username: String, field: &'static str) -> Result<String, ConvertError> {
    if crate::users::valid_username(&username) {
        Ok(username)
    } else {
        Err(invalid(field, "a user name is 1 to 256 bytes without control characters"))
    }
}

/// The protobuf form of a device user.
pub(crate) fn user_to_pb(user: &DeviceUser) -> pb::DeviceUser {
    let hash = &user.password;
    pb::DeviceUser {
        app: user.app.to_string(),
        username: user.username.clone(),
        password: Some(pb::PasswordHash {
            algorithm: hash.algorithm.name().to_owned(),
            salt_suffix: hash.salt_position == SaltPosition::Suffix,
            iterations: hash.iterations,
            salt: hash.salt.clone().into(),
            hash: hash.hash.clone().into(),
        }),
        updated_at_ms: user.updated_at.0,
    }
}

/// A device user from its protobuf form.
pub(crate) fn user_from_pb(user: pb::DeviceUser) -> Result<DeviceUser, ConvertError> {
    let hash = required(user.password, "device_user.password")?;
    let password = PasswordHash {
        algorithm: HashAlgorithm::from_name(&hash.algorithm)
            .ok_or_else(|| invalid("device_user.password.algorithm", "unknown algorithm"))?,
        salt_position: if hash.salt_suffix { SaltPosition::Suffix } else { SaltPosition::Prefix },
        iterations: hash.iterations,
        salt: hash.salt.to_vec(),
        hash: hash.hash.to_vec(),
    };
    if !password.is_well_formed() {
        return Err(invalid("device_user.password", "the hash does not fit its algorithm"));
    }
    Ok(DeviceUser {
        app: AppId::new(user.app).map_err(|_| invalid("device_user.app", "invalid app id"))?,
        username: name(user.username, "device_user.username")?,
        password,
        updated_at: UnixMillis(user.updated_at_ms),
    })
}

/// Device users from their protobuf form.
pub(crate) fn users_from_pb(users: Vec<pb::DeviceUser>) -> Result<Vec<DeviceUser>, ConvertError> {
    users.into_iter().map(user_from_pb).collect()
}
