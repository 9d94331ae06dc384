//! The push API on a cluster: a send through one gateway reaches devices
//! online on another, and a device that was offline gets it when it comes
//! back through the other gateway.

use crate::cluster::Cluster;
use crate::push_client::{Body, Device, call, push_address};
use crate::raft_cluster::RaftCluster;
use serde_json::json;

const KEY: &str = "shop-key-0123456789abcdef";
const TOKEN_SECRET: &str = "device-token-secret-0123456789abcdef";
const OPERATOR: &str = "operator-token-0123456789abcdef-0123";

/// A router and two gateways serving the push API for app `shop`, whose
/// devices log in as `shop-device`.
fn push_cluster() -> (Cluster, usize, usize, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("gateway.toml");
    let text = format!(
        "[auth]\nallow_anonymous = false\n[auth.users.shop-device]\npassword = \"pw\"\napp = \"shop\"\n\
         [push]\nhttp = \"127.0.0.1:0\"\noperator_token = \"{OPERATOR}\"\n[push.apps.shop]\napi_keys = [\"{KEY}\"]\n\
         device_token_secret = \"{TOKEN_SECRET}\"\n"
    );
    std::fs::write(&config, text).expect("write the config");
    let mut cluster = Cluster::start(0);
    let config = config.to_str().expect("utf-8");
    // The gateways read the file at start only.
    let (a, b) =
        (cluster.add_gateway_with(&["--config", config]), cluster.add_gateway_with(&["--config", config]));
    (cluster, a, b, dir)
}

#[test]
fn a_send_through_one_gateway_reaches_devices_wherever_they_are() {
    let (cluster, a, b, _dir) = push_cluster();
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
    let (cluster, a, b, _dir) = push_cluster();
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

#[test]
fn every_audience_reaches_mqtt_and_web_devices_online_and_offline_across_gateways() {
    let (cluster, a, b, _dir) = push_cluster();
    let http_b = push_address(|| cluster.gateway_output(b));
    let api = |method: &str, path: &str, body: serde_json::Value| {
        call(http_b, method, &format!("/v1/apps/shop{path}"), Some(KEY), Body::Json(&body))
    };
    for (device, alias) in [("m1", "user:1"), ("m2", "user:2"), ("web-1", "user:3")] {
        let put = api("PUT", &format!("/devices/{device}"), json!({"alias": alias, "tags": ["vip"]}));
        assert_eq!(put.status, 200, "{put:?}");
    }
    // m2: persistent, subscribed through A, then offline. m1: online on A.
    // web-1: a page in headless Chromium streaming from B.
    let offline = ["--clean", "0", "--expiry", "300", "--subscribe", "$push/m2"];
    assert_eq!(Device::start(cluster.gateway(a), "m2", "shop-device", &offline).finish(), []);
    let m1 =
        Device::start(cluster.gateway(a), "m1", "shop-device", &["--subscribe", "$push/m1", "--expect", "4"]);
    let token = crate::push_client::device_token("shop", "web-1", TOKEN_SECRET, 120);
    let page = Device::page(&format!("http://{http_b}/v1/apps/shop/sse?token={token}"), 2);

    let content = json!({"data": {"hello": true}});
    let audiences = [
        json!({"device_ids": ["m1", "m2"]}),
        json!({"aliases": ["user:1", "user:2"]}),
        json!({"tags": {"and": ["vip", {"not": "churned"}]}}),
        json!({"all": true}),
    ];
    let mut ids = Vec::new();
    for audience in audiences {
        let reply = api("POST", "/messages", json!({"audience": audience, "content": content}));
        assert_eq!(reply.status, 202, "{reply:?}");
        ids.push(reply.body["message_id"].as_str().expect("id").to_owned());
    }
    let got = |deliveries: Vec<crate::push_client::Delivery>| {
        deliveries.into_iter().map(|d| d.message_id).collect::<Vec<_>>()
    };
    assert_eq!(got(m1.finish()), ids, "online MQTT device on A: all four");
    let web: Vec<String> =
        page.page_lines().iter().filter_map(|l| l.strip_prefix("push id=").map(str::to_owned)).collect();
    assert_eq!(web, ids[2..], "web device on B: the tag and the broadcast");
    let back = Device::start(
        cluster.gateway(b),
        "m2",
        "shop-device",
        &["--clean", "0", "--expiry", "300", "--expect", "4"],
    );
    assert_eq!(got(back.finish()), ids, "offline device, back through B: all four");
}

#[test]
fn a_key_made_through_one_gateway_works_on_every_gateway_and_its_revocation_reaches_them_all() {
    let (mut cluster, a, b, dir) = push_cluster();
    let (http_a, http_b) =
        (push_address(|| cluster.gateway_output(a)), push_address(|| cluster.gateway_output(b)));
    let made = call(
        http_a,
        "POST",
        "/v1/apps/shop/keys",
        Some(OPERATOR),
        Body::Json(&json!({"name": "backend", "scopes": ["send"]})),
    );
    assert_eq!(made.status, 201, "{made:?}");
    let key = made.body["key"].as_str().expect("key").to_owned();
    let id = made.body["id"].as_str().expect("id").to_owned();
    let body = json!({"audience": {"device_ids": ["d1"]}, "content": {"data": {}}});
    let send = |http| call(http, "POST", "/v1/apps/shop/messages", Some(&key), Body::Json(&body));
    // Committed before the 201: the other gateway has it already.
    assert_eq!(send(http_b).status, 202);
    // A gateway that links later gets every key when it links.
    let config = dir.path().join("gateway.toml");
    let c = cluster.add_gateway_with(&["--config", config.to_str().expect("utf-8")]);
    let http_c = push_address(|| cluster.gateway_output(c));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut status = send(http_c).status;
    while status == 503 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
        status = send(http_c).status;
    }
    assert_eq!(status, 202, "the key works on a gateway that linked after it was made");

    let revoked = call(http_b, "DELETE", &format!("/v1/apps/shop/keys/{id}"), Some(OPERATOR), Body::Text(""));
    assert_eq!(revoked.status, 204);
    assert_eq!(send(http_b).status, 401, "refused where it was revoked, at once");
    // The others got the change with the commit; allow for the downlink.
    for http in [http_a, http_c] {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut status = send(http).status;
        while status != 401 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
            status = send(http).status;
        }
        assert_eq!(status, 401, "{http}");
    }
}

/// Three routers, each owning a third of the registry shards: a send by
/// device id, alias or tag finds each transient device at its shard's
/// owner (the router serving the gateways asks the others), whichever
/// gateway holds it; a send to everyone goes to the gateways the owners
/// count online sessions on. The directory shows devices online, and the
/// app's statistics count them, as the owners say.
#[test]
fn on_three_routers_a_send_finds_each_device_at_its_shards_owner() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("gateway.toml");
    let text = format!(
        "[auth]\nallow_anonymous = false\n[auth.users.shop-device]\npassword = \"pw\"\napp = \"shop\"\n\
         [push]\nhttp = \"127.0.0.1:0\"\n[push.apps.shop]\napi_keys = [\"{KEY}\"]\n"
    );
    std::fs::write(&config, text).expect("write the config");
    let config = config.to_str().expect("utf-8");
    let mut cluster = RaftCluster::start_with(3, &[("HERALD_OPS", "127.0.0.1:0")]);
    let gateways = [cluster.start_gateway_with(&[1, 2, 3], &["--config", config]), {
        cluster.start_gateway_with(&[1, 2, 3], &["--config", config])
    }];
    cluster.wait_for_shards_over(&[1, 2, 3]);
    let http = push_address(|| cluster.gateway_output(0));
    let names: Vec<String> = (0..12).map(|n| format!("dev-{n}")).collect();
    // dev-0 to dev-3 are tagged "vip", dev-6 to dev-11 are "fans"; each
    // gets its sends by id or alias, by tag, and to everyone.
    for (n, name) in names.iter().enumerate() {
        let body = match n {
            0..4 => json!({"tags": ["vip"]}),
            4..6 => continue,
            _ => json!({"alias": "fans"}),
        };
        let put = call(http, "PUT", &format!("/v1/apps/shop/devices/{name}"), Some(KEY), Body::Json(&body));
        assert_eq!(put.status, 200, "{put:?}");
    }
    let devices: Vec<Device> = names
        .iter()
        .enumerate()
        .map(|(n, name)| {
            let topic = format!("$push/{name}");
            let expect = if n < 4 { "3" } else { "2" };
            let args = ["--subscribe", &topic, "--expect", expect];
            Device::start(gateways[n % 2], name, "shop-device", &args)
        })
        .collect();
    // The devices' sessions are spread over the routers' shards.
    let status = cluster.status();
    let holding = status
        .lines()
        .filter_map(|line| line.split_whitespace().find_map(|w| w.strip_prefix("registry=")))
        .filter(|counts| counts.split(',').any(|c| c.split_once('=').is_some_and(|(_, n)| n != "0")))
        .count();
    assert!(holding >= 2, "sessions on two routers' shards at least:\n{status}");
    // The directory shows each device online on its gateway (node id
    // index + 1), and the app's online devices, as the owners say.
    for (n, name) in names.iter().enumerate().skip(6).take(2) {
        let view = call(http, "GET", &format!("/v1/apps/shop/devices/{name}"), Some(KEY), Body::Text(""));
        assert_eq!((view.status, &view.body["online"]), (200, &json!(true)), "{view:?}");
        assert_eq!(view.body["gateway"], json!(n % 2 + 1), "{view:?}");
    }
    let stats = call(http, "GET", "/v1/apps/shop/stats", Some(KEY), Body::Text(""));
    assert_eq!((&stats.body["devices_online"], &stats.body["directory_devices"]), (&json!(12), &json!(10)));

    let by_id = json!({"audience": {"device_ids": names[..6]}, "content": {"data": {"n": 1}}});
    let by_alias = json!({"audience": {"aliases": ["fans"]}, "content": {"data": {"n": 1}}});
    for body in [by_id, by_alias] {
        let reply = call(http, "POST", "/v1/apps/shop/messages", Some(KEY), Body::Json(&body));
        assert_eq!(reply.status, 202, "{reply:?}");
        assert_eq!(reply.body["devices"], json!({"online": 6, "stored": 0, "unreachable": 0}), "{reply:?}");
    }
    let by_tag = json!({"audience": {"tags": {"or": ["vip"]}}, "content": {"data": {"n": 2}}});
    let to_all = json!({"audience": {"all": true}, "content": {"data": {"n": 3}}});
    for (body, online) in [(by_tag, 4), (to_all, 12)] {
        let reply = call(http, "POST", "/v1/apps/shop/messages", Some(KEY), Body::Json(&body));
        assert_eq!(reply.status, 202, "{reply:?}");
        assert_eq!(reply.body["devices"], json!({"online": online, "stored": 0}), "{reply:?}");
    }
    for (n, (device, name)) in devices.into_iter().zip(&names).enumerate() {
        let got = device.finish();
        let sends = if n < 4 { 3 } else { 2 };
        assert_eq!(
            got.iter().map(|d| d.topic.clone()).collect::<Vec<_>>(),
            vec![format!("$push/{name}"); sends]
        );
    }
    // The leader located them: some at its own shards, some at the others'.
    let leader = cluster.leader();
    let metric = router_metrics(&cluster, leader);
    let located = |at: &str| metric("herald_router_push_devices_located_total", "where", at);
    // 10 directory puts and 2 gets (each answers with the device's view),
    // 6 sends by id, 6 by alias, 4 by tag.
    assert_eq!(located("here") + located("elsewhere"), 28.0, "every device located at its owner");
    assert!(located("elsewhere") >= 1.0, "some at another router");
    assert_eq!(located("not_located"), 0.0);
    // The send to everyone and the stats went by the owners' counts.
    let by = |source: &str| metric("herald_router_push_everyone_counted_total", "by", source);
    assert_eq!((by("owners"), by("records")), (2.0, 0.0));
    // The two other routers answered those calls: each asked to count twice
    // (again if a shard was still being rebuilt), and to locate.
    let others: Vec<_> =
        (1..=3).filter(|node| *node != leader).map(|node| router_metrics(&cluster, node)).collect();
    let answered = |call: &str| -> f64 {
        others.iter().map(|m| m("herald_router_registry_calls_answered_total", "call", call)).sum()
    };
    let (locates, counts) = (answered("locate"), answered("count"));
    assert!(locates >= 1.0, "{locates} locates answered by the other routers");
    assert!(counts >= 4.0, "{counts} counts answered by the other routers");
}

/// Router `node`'s `/metrics`, read once, as a reader of a sample
/// `name{label="value"}`.
fn router_metrics(cluster: &RaftCluster, node: usize) -> impl Fn(&str, &str, &str) -> f64 {
    let ops = crate::ops_client::ops_address(&cluster.router_output(node));
    let (status, lines) = crate::ops_client::fetch(&ops, "/metrics");
    assert_eq!(status, 200);
    let samples = crate::ops_client::samples(&lines);
    move |name, label, value| {
        let name = format!("{name}{{{label}=\"{value}\"}}");
        samples.get(&name).copied().unwrap_or_else(|| panic!("no {name}"))
    }
}
