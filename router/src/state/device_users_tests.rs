//! Tests of device users: journaled, one app per name, paged in name
//! order, found across apps, and kept through the journal and images.

use super::*;
use herald_proto::journal::Fact;
use herald_proto::seam::{DirectoryAnswer, DirectoryOp};
use herald_proto::users::{DeviceUser, HashAlgorithm, PasswordHash, SaltPosition, UserOp};

fn user(app: AppId, name: &str, hash: u8) -> DeviceUser {
    DeviceUser {
        app,
        username: name.to_owned(),
        password: PasswordHash {
            algorithm: HashAlgorithm::Sha256,
            salt_position: SaltPosition::Prefix,
            iterations: 0,
            salt: b"salt".to_vec(),
            hash: vec![hash; 32],
        },
        updated_at: T0,
    }
}

fn users(h: &mut Harness, app: AppId, op: UserOp) -> Result<DirectoryAnswer, ErrorCode> {
    let effects = h.apply(
        GW1,
        Uplink::Directory { limits: Default::default(), request: 5, app, op: DirectoryOp::Users(op) },
        T0,
    );
    effects
        .into_iter()
        .find_map(|(_, e)| match e {
            Downlink::DirectoryDone { result, .. } => Some(result),
            _ => None,
        })
        .expect("answered")
}

fn names(answer: Result<DirectoryAnswer, ErrorCode>) -> Vec<String> {
    match answer {
        Ok(DirectoryAnswer::Users(users)) => users.into_iter().map(|u| u.username).collect(),
        other => panic!("{other:?}"),
    }
}

fn put(h: &mut Harness, app: AppId, name: &str, hash: u8) -> Result<DirectoryAnswer, ErrorCode> {
    users(h, app.clone(), UserOp::Put(Box::new(user(app, name, hash))))
}

#[test]
fn a_user_is_journaled_replaced_in_place_and_removed() {
    let mut h = Harness::new();
    h.state.take_journal();
    assert_eq!(put(&mut h, app(), "meter-1", 1), Ok(DirectoryAnswer::Users(vec![user(app(), "meter-1", 1)])));
    assert_eq!(h.state.take_journal(), [Fact::DeviceUserPut(Box::new(user(app(), "meter-1", 1)))]);
    // A new password replaces the old one.
    put(&mut h, app(), "meter-1", 2).expect("replaced");
    let found = users(&mut h, app_named("other"), UserOp::Find { username: "meter-1".into() });
    assert_eq!(found, Ok(DirectoryAnswer::Users(vec![user(app(), "meter-1", 2)])), "found from any app");
    // Get is scoped to the app asking.
    let get = |h: &mut Harness, app| users(h, app, UserOp::Get { username: "meter-1".into() });
    assert_eq!(get(&mut h, app_named("other")), Err(ErrorCode::NotFound));
    assert_eq!(get(&mut h, app()), Ok(DirectoryAnswer::Users(vec![user(app(), "meter-1", 2)])));
    h.state.take_journal();

    let remove = |h: &mut Harness, app| users(h, app, UserOp::Remove { username: "meter-1".into() });
    assert_eq!(remove(&mut h, app_named("other")), Err(ErrorCode::NotFound), "not another app's to remove");
    assert_eq!(remove(&mut h, app()), Ok(DirectoryAnswer::Done));
    assert_eq!(h.state.take_journal(), [Fact::DeviceUserRemoved { app: app(), username: "meter-1".into() }]);
    assert_eq!(remove(&mut h, app()), Err(ErrorCode::NotFound));
    assert_eq!(users(&mut h, app(), UserOp::Find { username: "meter-1".into() }), Err(ErrorCode::NotFound));
}

#[test]
fn a_name_belongs_to_one_app_and_a_user_must_be_of_the_app_asking() {
    let mut h = Harness::new();
    put(&mut h, app(), "meter-1", 1).expect("set");
    assert_eq!(put(&mut h, app_named("other"), "meter-1", 1), Err(ErrorCode::Conflict));
    let foreign = UserOp::Put(Box::new(user(app_named("other"), "meter-2", 1)));
    assert_eq!(users(&mut h, app(), foreign), Err(ErrorCode::Malformed));
    let mut short = user(app(), "meter-3", 1);
    short.password.hash.truncate(8);
    assert_eq!(users(&mut h, app(), UserOp::Put(Box::new(short))), Err(ErrorCode::Malformed));
}

#[test]
fn pages_run_in_name_order_within_the_app() {
    let mut h = Harness::new();
    for name in ["d", "a", "c", "b", "e"] {
        put(&mut h, app(), name, 1).expect("set");
    }
    put(&mut h, app_named("other"), "aa", 1).expect("set");
    let page = |h: &mut Harness, after: Option<&str>| {
        names(users(h, app(), UserOp::List { after: after.map(str::to_owned), limit: 2 }))
    };
    assert_eq!(page(&mut h, None), ["a", "b"]);
    assert_eq!(page(&mut h, Some("b")), ["c", "d"]);
    assert_eq!(page(&mut h, Some("d")), ["e"]);
    assert!(page(&mut h, Some("e")).is_empty());
}

#[test]
fn users_survive_a_restart_through_the_journal_and_images() {
    let mut h = Harness::new();
    put(&mut h, app(), "meter-1", 1).expect("set");
    put(&mut h, app(), "meter-2", 2).expect("set");
    users(&mut h, app(), UserOp::Remove { username: "meter-1".into() }).expect("removed");
    let mut durable = crate::state::DurableState::default();
    for fact in h.state.take_journal() {
        durable.apply(fact);
    }
    assert_eq!(durable.image().device_users, [user(app(), "meter-2", 2)]);
    assert!(durable.holds_data(), "users are data: an empty router must not bootstrap over them");
    assert_eq!(h.state.durable_image().device_users, [user(app(), "meter-2", 2)]);
    let mut after = Harness::new();
    after.state.restore(crate::state::DurableState::from_image(durable.image()).image(), T0);
    let found = users(&mut after, app(), UserOp::Find { username: "meter-2".into() });
    assert_eq!(found, Ok(DirectoryAnswer::Users(vec![user(app(), "meter-2", 2)])));
}
