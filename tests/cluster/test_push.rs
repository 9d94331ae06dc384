//! The push API on a cluster: a send through one gateway reaches devices
//! online on another, and a device that was offline gets it when it comes
//! back through the other gateway.

use crate::cluster::Cluster;
use crate::push_client::{Body, Device, call, push_address};
use serde_json::json;

const KEY: &str = "shop-key-0123456789abcdef";

/// A router and two gateways serving the push API for app `shop`, whose
/// devices log in as `shop-device`.
fn push_cluster() -> (Cluster, usize, usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("gateway.toml");
    let text = format!(
        "[auth]\nallow_anonymous = false\n[auth.users.shop-device]\npassword = \"pw\"\napp = \"shop\"\n\
         [push]\nhttp = \"127.0.0.1:0\"\n[push.apps.shop]\napi_keys = [\"{KEY}\"]\n"
    );
    std::fs::write(&config, text).expect("write the config");
    let mut cluster = Cluster::start(0);
    let config = config.to_str().expect("utf-8");
    // The gateways read the file at start only.
    let (a, b) =
        (cluster.add_gateway_with(&["--config", config]), cluster.add_gateway_with(&["--config", config]));
    (cluster, a, b)
}

#[test]
fn a_send_through_one_gateway_reaches_devices_wherever_they_are() {
    let (cluster, a, b) = push_cluster();
    let http_a = push_address(|| cluster.gateway_output(a));

    // dev2 subscribes persistently through A and leaves; dev1 is online on B.
    let offline = ["--clean", "0", "--expiry", "300", "--subscribe", "$push/dev2"];
    assert_eq!(Device::start(cluster.gateway(a), "dev2", "shop-device", &offline).finish(), []);
    let online = Device::start(
        cluster.gateway(b),
        "dev1",
        "shop-device",
        &["--subscribe", "$push/dev1", "--expect", "1", "--settle", "1"],
    );

    let body = json!({"audience": {"device_ids": ["dev1", "dev2"]}, "content": {"data": {"n": 1}}});
    let reply = call(http_a, "POST", "/v1/apps/shop/messages", Some(KEY), Body::Json(&body));
    assert_eq!(reply.status, 202, "{reply:?}");
    assert_eq!(reply.body["devices"], json!({"online": 1, "stored": 1, "unreachable": 0}));
    let id = reply.body["message_id"].as_str().expect("id").to_owned();

    let got = online.finish();
    assert_eq!(
        got.iter().map(|d| (d.topic.as_str(), d.message_id.as_str())).collect::<Vec<_>>(),
        [("$push/dev1", id.as_str())]
    );
    let back = Device::start(
        cluster.gateway(b),
        "dev2",
        "shop-device",
        &["--clean", "0", "--expiry", "300", "--expect", "1"],
    );
    let got = back.finish();
    assert_eq!(
        got.iter().map(|d| (d.topic.as_str(), d.message_id.as_str())).collect::<Vec<_>>(),
        [("$push/dev2", id.as_str())]
    );
    assert_eq!(got[0].envelope["data"], json!({"n": 1}));
}

#[test]
fn a_broadcast_reaches_devices_on_every_gateway() {
    let (cluster, a, b) = push_cluster();
    let http_b = push_address(|| cluster.gateway_output(b));
    let on_a = Device::start(
        cluster.gateway(a),
        "on-a",
        "shop-device",
        &["--subscribe", "$push/on-a", "--expect", "1"],
    );
    let on_b = Device::start(
        cluster.gateway(b),
        "on-b",
        "shop-device",
        &["--subscribe", "$push/on-b", "--expect", "1"],
    );
    let body = json!({"audience": {"all": true}, "content": {"notification": {"title": "Hello"}}});
    let reply = call(http_b, "POST", "/v1/apps/shop/messages", Some(KEY), Body::Json(&body));
    assert_eq!((reply.status, &reply.body["devices"]["online"]), (202, &json!(2)), "{reply:?}");
    for (device, topic) in [(on_a, "$push/on-a"), (on_b, "$push/on-b")] {
        let got = device.finish();
        assert_eq!(got.iter().map(|d| d.topic.as_str()).collect::<Vec<_>>(), [topic]);
        assert_eq!(got[0].envelope["notification"]["title"], "Hello");
    }
}
