//! Tests of API keys made at run time: kept as digests, journaled, sent to
//! every gateway on each change and to a gateway when it links.

use super::*;
use herald_proto::journal::Fact;
use herald_proto::seam::{ApiKeyRecord, DirectoryAnswer, DirectoryOp, KeyOp};

fn record(id: &str, digest: u8) -> ApiKeyRecord {
    ApiKeyRecord {
        app: app(),
        id: id.to_owned(),
        name: format!("name of {id}"),
        scopes: 1,
        digest: [digest; 32],
        created_at: T0,
    }
}

fn keys(h: &mut Harness, app: AppId, op: KeyOp) -> (Result<DirectoryAnswer, ErrorCode>, Vec<Effect>) {
    let mut effects = h.apply(
        GW1,
        Uplink::Directory { limits: Default::default(), request: 5, app, op: DirectoryOp::Keys(op) },
        T0,
    );
    let at = effects.iter().position(|(_, e)| matches!(e, Downlink::DirectoryDone { .. })).expect("answered");
    match effects.remove(at) {
        (GW1, Downlink::DirectoryDone { result, .. }) => (result, effects),
        other => panic!("{other:?}"),
    }
}

/// The keys each gateway was sent, in order.
fn sent(effects: &[Effect]) -> Vec<(NodeId, Option<AppId>, Vec<String>)> {
    effects
        .iter()
        .filter_map(|(gateway, e)| match e {
            Downlink::ApiKeys { app, keys } => {
                Some((*gateway, app.clone(), keys.iter().map(|k| k.id.clone()).collect()))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_key_made_or_revoked_is_journaled_and_sent_to_every_gateway() {
    let mut h = Harness::new();
    h.state.gateway_linked(GW1, true);
    h.state.gateway_linked(GW2, true);
    h.state.take_journal();
    let (made, effects) = keys(&mut h, app(), KeyOp::Create(record("k1", 1)));
    assert_eq!(made, Ok(DirectoryAnswer::Keys(vec![record("k1", 1)])));
    let mut to = sent(&effects);
    to.sort();
    assert_eq!(to, [(GW1, Some(app()), vec!["k1".to_owned()]), (GW2, Some(app()), vec!["k1".to_owned()])]);
    assert_eq!(h.state.take_journal(), [Fact::ApiKeyPut(Box::new(record("k1", 1)))]);

    keys(&mut h, app(), KeyOp::Create(record("k2", 2))).0.expect("made");
    let (list, _) = keys(&mut h, app(), KeyOp::List);
    assert_eq!(list, Ok(DirectoryAnswer::Keys(vec![record("k1", 1), record("k2", 2)])));
    // Another app sees none of them.
    let (other, _) = keys(&mut h, app_named("other"), KeyOp::List);
    assert_eq!(other, Ok(DirectoryAnswer::Keys(Vec::new())));

    let (revoked, effects) = keys(&mut h, app(), KeyOp::Revoke { id: "k1".to_owned() });
    assert_eq!(revoked, Ok(DirectoryAnswer::Done));
    assert!(sent(&effects).contains(&(GW2, Some(app()), vec!["k2".to_owned()])), "{effects:?}");
    h.state.take_journal();
    let (again, effects) = keys(&mut h, app(), KeyOp::Revoke { id: "k1".to_owned() });
    assert_eq!((again, sent(&effects)), (Err(ErrorCode::NotFound), Vec::new()));
    assert_eq!(h.state.take_journal(), []);

    // A gateway that links gets every key of every app.
    let mut out = Vec::new();
    h.state.send_api_keys(GW3, &mut out);
    assert_eq!(sent(&out), [(GW3, None, vec!["k2".to_owned()])]);
}

#[test]
fn a_key_is_refused_when_its_id_or_digest_is_taken_its_app_differs_or_the_app_is_full() {
    let mut h = Harness::new();
    keys(&mut h, app(), KeyOp::Create(record("k1", 1))).0.expect("made");
    let mut refused = |app, key| keys(&mut h, app, KeyOp::Create(key)).0;
    assert_eq!(refused(app(), record("k1", 2)), Err(ErrorCode::Conflict), "same id");
    assert_eq!(refused(app(), record("k9", 1)), Err(ErrorCode::Conflict), "same digest");
    assert_eq!(refused(app_named("other"), record("k3", 3)), Err(ErrorCode::Malformed), "another app's");
    for n in 1..crate::state::MAX_API_KEYS_PER_APP {
        let mut key = record(&format!("n{n}"), 0);
        key.digest[..8].copy_from_slice(&(n as u64).to_be_bytes());
        assert!(refused(app(), key).is_ok(), "{n}");
    }
    assert_eq!(refused(app(), record("last", 200)), Err(ErrorCode::QuotaExceeded));
}

#[test]
fn keys_survive_a_restart_through_the_journal_and_images() {
    let mut h = Harness::new();
    keys(&mut h, app(), KeyOp::Create(record("k1", 1))).0.expect("made");
    keys(&mut h, app(), KeyOp::Create(record("k2", 2))).0.expect("made");
    keys(&mut h, app(), KeyOp::Revoke { id: "k1".to_owned() }).0.expect("revoked");
    let mut durable = crate::state::DurableState::default();
    for fact in h.state.take_journal() {
        durable.apply(fact);
    }
    assert_eq!(durable.image().api_keys, [record("k2", 2)]);
    assert_eq!(h.state.durable_image().api_keys, [record("k2", 2)]);
    let mut after = Harness::new();
    after.state.restore(crate::state::DurableState::from_image(durable.image()).image(), T0);
    let (list, _) = keys(&mut after, app(), KeyOp::List);
    assert_eq!(list, Ok(DirectoryAnswer::Keys(vec![record("k2", 2)])));
}
