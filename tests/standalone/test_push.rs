//! The push API end to end: an HTTP client sends, paho devices receive on
//! their per-device topics, online and offline; bad requests get problems
//! and send nothing.

use crate::push_client::{Body, Device, Reply, call, push_address, start};
use crate::support::Broker;
use serde_json::json;
use std::net::SocketAddr;

const SHOP_KEY: &str = "shop-key-0123456789abcdef";
const OTHER_KEY: &str = "other-key-0123456789abcdef";

/// A broker with two apps (a user and a key each) and the push API on.
fn broker(dir: &tempfile::TempDir) -> (Broker, SocketAddr) {
    let config = format!(
        "[auth]\nallow_anonymous = false\n\
         [auth.users.shop-device]\npassword = \"pw\"\napp = \"shop\"\n\
         [auth.users.other-device]\npassword = \"pw\"\napp = \"other\"\n\
         [push.apps.shop]\napi_keys = [\"{SHOP_KEY}\"]\n\
         [push.apps.other]\napi_keys = [\"{OTHER_KEY}\"]\n"
    );
    start(dir, &config)
}

fn send(http: SocketAddr, key: &str, body: &serde_json::Value) -> crate::push_client::Reply {
    call(http, "POST", "/v1/apps/shop/messages", Some(key), Body::Json(body))
}

#[test]
fn devices_get_pushes_online_and_after_reconnecting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, http) = broker(&dir);
    let mqtt = broker.addr();
    // dev2 has a persistent session subscribed to its topic, then leaves.
    let offline = ["--clean", "0", "--expiry", "300", "--subscribe", "$push/dev2"];
    assert_eq!(Device::start(mqtt, "dev2", "shop-device", &offline).finish(), []);
    // dev1 is online; a device of another app has the same client id.
    let online = Device::start(
        mqtt,
        "dev1",
        "shop-device",
        &["--subscribe", "$push/dev1", "--expect", "1", "--settle", "1"],
    );
    let stranger =
        Device::start(mqtt, "dev1", "other-device", &["--subscribe", "$push/dev1", "--settle", "2"]);

    let body = json!({
        "audience": {"device_ids": ["dev1", "dev2", "dev3"]},
        "content": {"notification": {"title": "Hi", "body": "Sale"}, "data": {"order": 42}},
        "options": {"ttl": 600, "qos": 1}
    });
    let reply = send(http, SHOP_KEY, &body);
    assert_eq!(reply.status, 202, "{reply:?}");
    assert_eq!(reply.content_type, "application/json");
    let id = reply.body["message_id"].as_str().expect("a message id").to_owned();
    assert_eq!(reply.location, format!("/v1/apps/shop/messages/{id}"));
    assert_eq!(reply.body["audience_estimate"], 3);
    assert_eq!(reply.body["devices"], json!({"online": 1, "stored": 1, "unreachable": 1}));
    assert_eq!(reply.body["unreachable"], json!(["dev3"]));

    let got = online.finish();
    assert_eq!(got.len(), 1, "exactly once: {got:?}");
    assert_eq!(
        (got[0].topic.as_str(), got[0].qos, got[0].message_id.as_str()),
        ("$push/dev1", 1, id.as_str())
    );
    assert_eq!(got[0].envelope["id"], id.as_str());
    assert_eq!(got[0].envelope["notification"], json!({"title": "Hi", "body": "Sale"}));
    assert_eq!(got[0].envelope["data"], json!({"order": 42}));
    assert_eq!(stranger.finish(), [], "another app's device with the same id gets nothing");

    // dev2 comes back and gets what was stored for it.
    let back =
        Device::start(mqtt, "dev2", "shop-device", &["--clean", "0", "--expiry", "300", "--expect", "1"]);
    let got = back.finish();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!((got[0].topic.as_str(), got[0].message_id.as_str()), ("$push/dev2", id.as_str()));
}

#[test]
fn a_device_may_subscribe_only_to_its_own_topic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, _) = broker(&dir);
    for filter in ["$push/dev2", "$push/+", "$push/#", "$share/g/$push/dev1"] {
        let device = Device::start(broker.addr(), "dev1", "shop-device", &["--subscribe", filter]);
        assert_eq!(device.granted(), Some(0x87), "{filter}: not authorized");
    }
    let own = Device::start(broker.addr(), "dev1", "shop-device", &["--subscribe", "$push/dev1"]);
    assert_eq!(own.granted(), Some(1));
}

#[test]
fn bad_requests_get_a_problem_and_send_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, http) = broker(&dir);
    let device =
        Device::start(broker.addr(), "dev1", "shop-device", &["--subscribe", "$push/dev1", "--settle", "2"]);
    let good = json!({"audience": {"device_ids": ["dev1"]}, "content": {"data": {"k": 1}}});
    let path = "/v1/apps/shop/messages";
    let cases: Vec<(&str, crate::push_client::Reply, u16, &str, Option<&str>)> = vec![
        ("no key", call(http, "POST", path, None, Body::Json(&good)), 401, "UNAUTHENTICATED", None),
        (
            "wrong key",
            call(http, "POST", path, Some("not-a-key-at-all-00"), Body::Json(&good)),
            401,
            "UNAUTHENTICATED",
            None,
        ),
        ("another app's key", send(http, OTHER_KEY, &good), 403, "FORBIDDEN", None),
        (
            "not JSON",
            call(http, "POST", path, Some(SHOP_KEY), Body::Text("{\"audience\":")),
            400,
            "INVALID_JSON",
            None,
        ),
        (
            "unknown field",
            send(
                http,
                SHOP_KEY,
                &json!({"audience": {"device_ids": ["dev1"]}, "content": {"data": {}}, "colapse": 1}),
            ),
            400,
            "INVALID_ARGUMENT",
            Some("/colapse"),
        ),
        (
            "empty audience",
            send(http, SHOP_KEY, &json!({"audience": {"device_ids": []}, "content": {"data": {}}})),
            422,
            "AUDIENCE_EMPTY",
            Some("/audience/device_ids"),
        ),
        (
            "bad device id",
            send(
                http,
                SHOP_KEY,
                &json!({"audience": {"device_ids": ["dev1", "a/b"]}, "content": {"data": {}}}),
            ),
            422,
            "DEVICE_ID_INVALID",
            Some("/audience/device_ids/1"),
        ),
        (
            "oversize body",
            call(http, "POST", path, Some(SHOP_KEY), Body::Bytes(70_000)),
            413,
            "BODY_TOO_LARGE",
            None,
        ),
    ];
    for (what, reply, status, code, pointer) in cases {
        assert_eq!(reply.status, status, "{what}: {reply:?}");
        assert_eq!(reply.content_type, "application/problem+json", "{what}");
        assert_eq!(reply.body["code"], code, "{what}: {reply:?}");
        assert_eq!(reply.body["status"], status, "{what}");
        assert_eq!(reply.body["errors"][0]["pointer"].as_str(), pointer, "{what}: {reply:?}");
    }
    // Validation does everything but send.
    let checked = call(http, "POST", "/v1/apps/shop/messages/validate", Some(SHOP_KEY), Body::Json(&good));
    assert_eq!((checked.status, &checked.body["valid"]), (200, &json!(true)), "{checked:?}");
    assert_eq!(device.finish(), [], "nothing was sent");
}

#[test]
fn the_device_directory_names_devices_by_alias_and_tag_and_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, http) = broker(&dir);
    let key = Some(SHOP_KEY);
    let device = |path: &str| format!("/v1/apps/shop/devices/{path}");
    let phone = Device::start(
        broker.addr(),
        "phone",
        "shop-device",
        &["--subscribe", "$push/phone", "--expect", "1"],
    );

    let put = call(
        http,
        "PUT",
        &device("phone"),
        key,
        Body::Json(&json!({"alias": "user:1", "tags": ["vip", "city:bj"]})),
    );
    assert_eq!(put.status, 200, "{put:?}");
    let mut view = put.body.clone();
    let since = view.as_object_mut().expect("an object").remove("since");
    assert!(since.as_ref().and_then(|s| s.as_str()).is_some_and(|s| s.ends_with('Z')), "since: {since:?}");
    assert_eq!(
        view,
        json!({"device_id": "phone", "alias": "user:1", "tags": ["city:bj", "vip"], "online": true, "gateway": 1})
    );
    let stats = call(http, "GET", "/v1/apps/shop/stats", key, Body::Text(""));
    assert_eq!(
        (&stats.body["devices_online"], &stats.body["directory_devices"]),
        (&json!(1), &json!(1)),
        "{stats:?}"
    );
    let patch = json!({"tags": {"add": ["beta"], "remove": ["vip"]}});
    let patched = call(http, "PATCH", &device("phone"), key, Body::Json(&patch));
    assert_eq!((patched.status, &patched.body["tags"]), (200, &json!(["beta", "city:bj"])), "{patched:?}");
    let missing = call(http, "PATCH", &device("nobody"), key, Body::Json(&patch));
    assert_eq!((missing.status, &missing.body["code"]), (404, &json!("NOT_FOUND")));

    let bulk = json!({"add": ["tablet", "phone"], "remove": ["ghost"]});
    let tagged = call(http, "POST", "/v1/apps/shop/tags/beta/devices", key, Body::Json(&bulk));
    assert_eq!(
        tagged.body["results"],
        json!([
            {"device_id": "tablet", "op": "add", "changed": true},
            {"device_id": "phone", "op": "add", "changed": false},
            {"device_id": "ghost", "op": "remove", "changed": false}
        ])
    );
    let count = |expr: serde_json::Value| {
        call(http, "POST", "/v1/apps/shop/audiences/count", key, Body::Json(&json!({"tags": expr})))
    };
    assert_eq!(count(json!("beta")).body, json!({"estimate": 2}));
    assert_eq!(count(json!({"and": ["beta", {"not": "city:bj"}]})).body, json!({"estimate": 1}));
    let bad = count(json!({"and": ["beta"], "or": ["vip"]}));
    assert_eq!((bad.status, bad.body["errors"][0]["pointer"].as_str()), (422, Some("/tags")), "{bad:?}");
    let bad = count(json!({"or": ["beta", "Not A Tag"]}));
    assert_eq!(
        (bad.status, bad.body["code"].as_str(), bad.body["errors"][0]["pointer"].as_str()),
        (422, Some("TAG_INVALID"), Some("/tags/or/1"))
    );

    let by_alias = call(http, "GET", "/v1/apps/shop/aliases/user:1", key, Body::Text(""));
    assert_eq!(by_alias.body["devices"][0]["device_id"], "phone", "{by_alias:?}");

    // A send to aliases reaches the alias's devices and names unknown aliases.
    let body = json!({"audience": {"aliases": ["user:1", "user:404"]}, "content": {"data": {"k": "v"}}});
    let sent = send(http, SHOP_KEY, &body);
    assert_eq!(sent.status, 202, "{sent:?}");
    assert_eq!(sent.body["devices"], json!({"online": 1, "stored": 0, "unreachable": 0}));
    assert_eq!(sent.body["unknown_aliases"], json!(["user:404"]));
    let got = phone.finish();
    assert_eq!(
        got.iter().map(|d| d.message_id.as_str()).collect::<Vec<_>>(),
        [sent.body["message_id"].as_str().expect("id")]
    );
    let nobody =
        send(http, SHOP_KEY, &json!({"audience": {"aliases": ["user:404"]}, "content": {"data": {}}}));
    assert_eq!((nobody.status, &nobody.body["code"]), (422, &json!("AUDIENCE_EMPTY")));

    // The directory is replicated state: it survives a restart.
    let deleted = call(http, "DELETE", &device("tablet"), key, Body::Text(""));
    assert_eq!(deleted.status, 204);
    let broker = broker.restart("KILL");
    let http = push_address(|| broker.log());
    let after = call(http, "GET", &device("phone"), key, Body::Text(""));
    assert_eq!(
        (after.status, &after.body["alias"], &after.body["online"]),
        (200, &json!("user:1"), &json!(false))
    );
    assert_eq!(call(http, "GET", &device("tablet"), key, Body::Text("")).status, 404);
}

#[test]
fn broadcasts_and_tag_sends_reach_online_devices_and_offline_ones_when_they_return() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, http) = broker(&dir);
    let key = Some(SHOP_KEY);
    let mqtt = broker.addr();
    let persistent = |client: &str| {
        ["--clean", "0", "--expiry", "300", "--subscribe", &format!("$push/{client}")].map(str::to_owned)
    };
    for client in ["away-vip", "away-plain"] {
        let args = persistent(client);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_eq!(Device::start(mqtt, client, "shop-device", &args).finish(), []);
    }
    let bulk = json!({"add": ["away-vip", "here-vip"]});
    assert_eq!(call(http, "POST", "/v1/apps/shop/tags/vip/devices", key, Body::Json(&bulk)).status, 200);
    let here_vip = Device::start(
        mqtt,
        "here-vip",
        "shop-device",
        &["--subscribe", "$push/here-vip", "--expect", "2", "--settle", "1"],
    );
    let here_plain = Device::start(
        mqtt,
        "here-plain",
        "shop-device",
        &["--subscribe", "$push/here-plain", "--expect", "1", "--settle", "1"],
    );

    let to_all = send(http, SHOP_KEY, &json!({"audience": {"all": true}, "content": {"data": {"n": "all"}}}));
    assert_eq!(to_all.status, 202, "{to_all:?}");
    assert_eq!(to_all.body["devices"], json!({"online": 2, "stored": 2}));
    let to_vip = send(
        http,
        SHOP_KEY,
        &json!({"audience": {"tags": {"or": ["vip"]}}, "content": {"data": {"n": "vip"}}}),
    );
    assert_eq!(to_vip.body["devices"], json!({"online": 1, "stored": 1}), "{to_vip:?}");
    let ids = |reply: &crate::push_client::Reply| reply.body["message_id"].as_str().expect("id").to_owned();
    let (all_id, vip_id) = (ids(&to_all), ids(&to_vip));

    let got =
        |device: Device| device.finish().into_iter().map(|d| (d.topic, d.message_id)).collect::<Vec<_>>();
    assert_eq!(
        got(here_vip),
        [("$push/here-vip".to_owned(), all_id.clone()), ("$push/here-vip".to_owned(), vip_id.clone())]
    );
    assert_eq!(got(here_plain), [("$push/here-plain".to_owned(), all_id.clone())]);
    let back = |client: &str, expect: &str| {
        Device::start(
            mqtt,
            client,
            "shop-device",
            &["--clean", "0", "--expiry", "300", "--expect", expect, "--settle", "1"],
        )
    };
    assert_eq!(
        got(back("away-vip", "2")),
        [("$push/away-vip".to_owned(), all_id.clone()), ("$push/away-vip".to_owned(), vip_id)]
    );
    assert_eq!(got(back("away-plain", "1")), [("$push/away-plain".to_owned(), all_id)]);
    // A device that was not there when they were sent gets neither.
    let new = Device::start(
        mqtt,
        "new",
        "shop-device",
        &["--clean", "0", "--expiry", "300", "--subscribe", "$push/new", "--settle", "1"],
    );
    assert_eq!(new.finish(), []);
}

#[test]
fn an_idempotency_key_makes_a_retried_send_answer_the_same_and_send_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, http) = broker(&dir);
    let device =
        Device::start(broker.addr(), "dev1", "shop-device", &["--subscribe", "$push/dev1", "--settle", "2"]);
    let body = json!({"audience": {"device_ids": ["dev1"]}, "content": {"data": {"n": 1}}});
    let keyed = |key: &str, body: &serde_json::Value| {
        crate::push_client::call_with(
            http,
            "POST",
            "/v1/apps/shop/messages",
            SHOP_KEY,
            &[("Idempotency-Key", key)],
            body,
        )
    };
    let first = keyed("order-1", &body);
    assert_eq!((first.status, first.replayed.as_str()), (202, "-"), "{first:?}");
    let again = keyed("order-1", &body);
    assert_eq!((again.status, again.replayed.as_str()), (202, "true"), "{again:?}");
    assert_eq!(again.body["message_id"], first.body["message_id"]);
    assert_eq!(again.body["devices"], first.body["devices"]);
    let other =
        keyed("order-1", &json!({"audience": {"device_ids": ["dev1"]}, "content": {"data": {"n": 2}}}));
    assert_eq!((other.status, &other.body["code"]), (409, &json!("IDEMPOTENCY_KEY_REUSED")), "{other:?}");
    let bad = keyed(&"k".repeat(65), &body);
    assert_eq!((bad.status, &bad.body["code"]), (400, &json!("IDEMPOTENCY_KEY_INVALID")));
    let got = device.finish();
    assert_eq!(got.len(), 1, "sent once: {got:?}");
    assert_eq!(got[0].message_id, first.body["message_id"].as_str().expect("id"));
}

#[test]
fn the_openapi_document_is_valid_and_lists_every_endpoint_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_broker, http) = broker(&dir);
    // The Python on PATH, which scripts/test.sh gives openapi-spec-validator.
    let output = std::process::Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/standalone/py/openapi_check.py"))
        .arg(format!("http://{http}/v1/openapi.json"))
        .output()
        .expect("run openapi_check.py (needs openapi-spec-validator)");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.starts_with("valid version=3.1.0"), "{stdout}");
    let operations: Vec<(&str, String)> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("operation "))
        .map(|l| {
            let (method, path) = l.split_once(' ').expect("METHOD PATH");
            (
                method,
                path.replace("{app}", "shop")
                    .replace("{device}", "d1")
                    .replace("{alias}", "a")
                    .replace("{tag}", "t"),
            )
        })
        .collect();
    assert!(operations.len() >= 9, "{operations:?}");
    for (method, path) in operations {
        // Served (behind the key check), not the 404 of an unknown path.
        let reply = call(http, method, &path, None, Body::Text("{}"));
        assert_eq!(reply.status, 401, "{method} {path}: {reply:?}");
    }
    assert_eq!(call(http, "GET", "/v1/apps/shop/nothing", Some(SHOP_KEY), Body::Text("")).status, 404);
}

#[test]
fn an_app_past_its_rate_gets_429_and_every_answer_says_where_it_stands() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = format!("[push.apps.shop]\napi_keys = [\"{SHOP_KEY}\"]\nrate_per_second = 1\n");
    let (_broker, http) = start(&dir, &config);
    let get = || call(http, "GET", "/v1/apps/shop/devices/d1", Some(SHOP_KEY), Body::Text(""));
    let replies: Vec<_> = (0..2).map(|_| get()).collect();
    let seen: Vec<(u16, &str)> = replies.iter().map(|r| (r.status, r.ratelimit.as_str())).collect();
    // The bucket holds one request and refills at 1/s: the second request,
    // a fraction of a second after the first, finds it empty.
    assert_eq!(seen[0], (404, "1/0/1"), "{replies:?}");
    assert_eq!(seen[1].0, 429, "{replies:?}");
    assert_eq!(replies[1].body["code"], "RATE_LIMITED");
    assert_eq!(replies[1].retry_after, "1");
    assert!(replies[1].ratelimit.starts_with("1/0/"), "{replies:?}");
}

/// Reads a message's funnel until `done` holds for it (reports come every
/// half second), or panics after a bounded wait.
fn funnel_until(http: SocketAddr, id: &str, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let reply =
            call(http, "GET", &format!("/v1/apps/shop/messages/{id}"), Some(SHOP_KEY), Body::Text(""));
        assert_eq!(reply.status, 200, "{reply:?}");
        if done(&reply.body) {
            return reply.body;
        }
        assert!(std::time::Instant::now() < deadline, "the funnel never got there: {}", reply.body);
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn a_message_funnel_follows_deliveries_and_acknowledgements_and_ends_final() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, http) = broker(&dir);
    let mqtt = broker.addr();
    let offline = ["--clean", "0", "--expiry", "300", "--subscribe", "$push/away"];
    assert_eq!(Device::start(mqtt, "away", "shop-device", &offline).finish(), []);
    let here = Device::start(mqtt, "here", "shop-device", &["--subscribe", "$push/here", "--expect", "1"]);
    let body = json!({
        "audience": {"device_ids": ["here", "away", "nobody"]},
        "content": {"data": {"n": 1}},
        "options": {"ttl": 4}
    });
    let sent = send(http, SHOP_KEY, &body);
    let id = sent.body["message_id"].as_str().expect("id").to_owned();
    assert_eq!(here.finish().len(), 1);

    let funnel = funnel_until(http, &id, |b| b["funnel"]["acknowledged"] == 1);
    assert_eq!(funnel["final"], false);
    assert_eq!(
        funnel["funnel"],
        json!({"targeted": 3, "online": 1, "stored_offline": 1, "unreachable": 1, "delivered_online": 1,
               "delivered_from_offline": 0, "acknowledged": 1, "cancelled": 0, "replaced": 0, "expired": 0, "pending": 1})
    );
    // The offline device comes back and acknowledges.
    let back =
        Device::start(mqtt, "away", "shop-device", &["--clean", "0", "--expiry", "300", "--expect", "1"]);
    assert_eq!(back.finish().len(), 1);
    let funnel = funnel_until(http, &id, |b| b["funnel"]["acknowledged"] == 2);
    assert_eq!(
        (&funnel["funnel"]["delivered_from_offline"], &funnel["funnel"]["pending"]),
        (&json!(1), &json!(0))
    );
    // After the ttl it is final, and every device is in one bucket.
    let funnel = funnel_until(http, &id, |b| b["final"] == true);
    let f = &funnel["funnel"];
    assert_eq!(
        (&f["acknowledged"], &f["unreachable"], &f["expired"], &f["pending"]),
        (&json!(2), &json!(1), &json!(0), &json!(0))
    );

    let unknown = call(
        http,
        "GET",
        "/v1/apps/shop/messages/0000000000000000000000000000abcd",
        Some(SHOP_KEY),
        Body::Text(""),
    );
    assert_eq!((unknown.status, &unknown.body["code"]), (404, &json!("NOT_FOUND")));
    let bad = call(http, "GET", "/v1/apps/shop/messages/xyz", Some(SHOP_KEY), Body::Text(""));
    assert_eq!((bad.status, &bad.body["code"]), (400, &json!("MESSAGE_ID_INVALID")));
}

#[test]
fn collapse_keys_replace_and_cancels_take_back_what_waits_for_an_offline_device() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, http) = broker(&dir);
    let mqtt = broker.addr();
    let offline = ["--clean", "0", "--expiry", "300", "--subscribe", "$push/away"];
    assert_eq!(Device::start(mqtt, "away", "shop-device", &offline).finish(), []);
    let to_away = |n: u32, collapse: Option<&str>| {
        let mut options = json!({"ttl": 600});
        if let Some(key) = collapse {
            options["collapse_key"] = json!(key);
        }
        let body =
            json!({"audience": {"device_ids": ["away"]}, "content": {"data": {"n": n}}, "options": options});
        let reply = send(http, SHOP_KEY, &body);
        assert_eq!(reply.status, 202, "{reply:?}");
        reply.body["message_id"].as_str().expect("id").to_owned()
    };
    let score_1 = to_away(1, Some("score"));
    let cancelled = to_away(2, None);
    let score_2 = to_away(3, Some("score"));
    let path = |id: &str, tail: &str| format!("/v1/apps/shop/messages/{id}{tail}");
    let cancel = call(http, "POST", &path(&cancelled, "/cancel"), Some(SHOP_KEY), Body::Text(""));
    assert_eq!((cancel.status, &cancel.body["funnel"]["cancelled"]), (200, &json!(1)), "{cancel:?}");
    let replaced = call(http, "GET", &path(&score_1, ""), Some(SHOP_KEY), Body::Text(""));
    assert_eq!(replaced.body["funnel"]["replaced"], 1, "{replaced:?}");

    let back = Device::start(
        mqtt,
        "away",
        "shop-device",
        &["--clean", "0", "--expiry", "300", "--expect", "1", "--settle", "1"],
    );
    let got = back.finish();
    assert_eq!(got.iter().map(|d| d.message_id.as_str()).collect::<Vec<_>>(), [score_2.as_str()]);
    assert_eq!(got[0].envelope["collapse_key"], "score");
    let bad = send(
        http,
        SHOP_KEY,
        &json!({"audience": {"device_ids": ["away"]}, "content": {"data": {}}, "options": {"collapse_key": ""}}),
    );
    assert_eq!((bad.status, &bad.body["code"]), (422, &json!("COLLAPSE_KEY_INVALID")));
}

const TOKEN_SECRET: &str = "device-token-secret-0123456789abcdef";

/// A broker whose app `shop` has an API key and a device-token secret,
/// with `extra` configuration first; and its push API address.
fn token_broker(dir: &tempfile::TempDir, extra: &str) -> (Broker, SocketAddr) {
    let config = format!(
        "{extra}[push.apps.shop]\napi_keys = [\"{SHOP_KEY}\"]\ndevice_token_secret = \"{TOKEN_SECRET}\"\n"
    );
    start(dir, &config)
}

#[test]
fn devices_connect_with_tokens_their_app_signs_and_leave_when_they_expire() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, http) = token_broker(&dir, "[auth]\nallow_anonymous = false\n");
    let token =
        |device: &str, seconds| crate::push_client::device_token("shop", device, TOKEN_SECRET, seconds);

    let good = token("dev1", 60);
    let device = Device::start_with_password(
        broker.addr(),
        "dev1",
        "dev1",
        &good,
        &["--subscribe", "$push/dev1", "--expect", "1"],
    );
    assert_eq!(device.connack(), Some(0));
    let sent = send(http, SHOP_KEY, &json!({"audience": {"device_ids": ["dev1"]}, "content": {"data": {}}}));
    assert_eq!(sent.body["devices"]["online"], 1, "{sent:?}");
    assert_eq!(device.finish().len(), 1, "a token device is a device of its app");

    for (client, password) in
        [("dev1", token("dev2", 60)), ("dev1", token("dev1", -5)), ("dev1", format!("{good}x"))]
    {
        let refused = Device::start_with_password(broker.addr(), client, "dev1", &password, &[]);
        assert_eq!(refused.connack(), Some(0x86), "{password}");
    }

    // A token that runs out on a live connection ends it: DISCONNECT 0x87.
    let mut short =
        Device::start_with_password(broker.addr(), "dev1", "dev1", &token("dev1", 2), &["--settle", "4"]);
    assert_eq!(short.connack(), Some(0));
    assert_eq!(short.disconnected(), Some(0x87));
}

/// Makes a key pair with openssl (`rsa` or `ec` for P-256) in `dir`:
/// the private key's file and the public key's.
fn key_pair(dir: &std::path::Path, name: &str, kind: &str) -> (String, String) {
    let private = dir.join(format!("{name}.pem"));
    let public = dir.join(format!("{name}.pub"));
    let options: &[&str] = match kind {
        "rsa" => &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        _ => &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    };
    let made = std::process::Command::new("openssl")
        .arg("genpkey")
        .args(options)
        .arg("-out")
        .arg(&private)
        .status()
        .expect("openssl genpkey");
    assert!(made.success());
    let made = std::process::Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&private)
        .arg("-out")
        .arg(&public)
        .status()
        .expect("openssl pkey");
    assert!(made.success());
    (private.display().to_string(), public.display().to_string())
}

#[test]
fn devices_connect_with_rs256_and_es256_tokens_checked_against_the_apps_public_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (rsa, rsa_public) = key_pair(dir.path(), "rsa", "rsa");
    let (ec, ec_public) = key_pair(dir.path(), "ec", "ec");
    let (stranger, _) = key_pair(dir.path(), "stranger", "ec");
    let ec_pem = std::fs::read_to_string(&ec_public).expect("pem");
    let config = format!(
        "[auth]\nallow_anonymous = false\n[push.apps.shop]\napi_keys = [\"{SHOP_KEY}\"]\n\
         [[push.apps.shop.device_token_keys]]\nkid = \"r1\"\npem_file = \"{rsa_public}\"\n\
         [[push.apps.shop.device_token_keys]]\npem = '''\n{ec_pem}'''\n"
    );
    let (broker, http) = start(&dir, &config);
    let token = |device: &str, key: &str, alg: &[&str]| {
        crate::push_client::signed_device_token("shop", device, key, 60, alg)
    };
    let mut devices = Vec::new();
    for (device, password) in
        [("rs", token("rs", &rsa, &["RS256", "r1"])), ("es", token("es", &ec, &["ES256"]))]
    {
        let topic = format!("$push/{device}");
        let started = Device::start_with_password(
            broker.addr(),
            device,
            device,
            &password,
            &["--subscribe", &topic, "--expect", "1"],
        );
        assert_eq!(started.connack(), Some(0), "{device}");
        devices.push(started);
    }
    let sent =
        send(http, SHOP_KEY, &json!({"audience": {"device_ids": ["rs", "es"]}, "content": {"data": {}}}));
    assert_eq!(sent.body["devices"]["online"], 2, "{sent:?}");
    for device in devices {
        assert_eq!(device.finish().len(), 1, "each token device got its push");
    }
    // Signed by a key the app does not have, under a kid it does not know,
    // or with the algorithm switched: refused.
    for password in [
        token("rs", &stranger, &["ES256"]),
        token("rs", &rsa, &["RS256", "r2"]),
        token("rs", &ec, &["RS256", "r1"]),
        crate::push_client::device_token(
            "shop",
            "rs",
            &std::fs::read_to_string(&rsa_public).expect("pem"),
            60,
        ),
    ] {
        let refused = Device::start_with_password(broker.addr(), "rs", "rs", &password, &[]);
        assert_eq!(refused.connack(), Some(0x86), "{password}");
    }
}

#[test]
fn a_web_page_gets_every_push_once_through_sse_across_cut_streams() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Streams end every second: the page reconnects with Last-Event-ID
    // while messages keep coming.
    let (_broker, http) = token_broker(&dir, "[push]\nsse_stream_secs = 1\n");
    let token = crate::push_client::device_token("shop", "web-1", TOKEN_SECRET, 120);
    let url = format!("http://{http}/v1/apps/shop/sse?token={token}");
    const SENDS: usize = 24;
    let page = Device::page(&url, SENDS);
    let mut sent = Vec::new();
    for n in 0..SENDS {
        let body = json!({"audience": {"device_ids": ["web-1"]}, "content": {"data": {"n": n}}});
        let reply = send(http, SHOP_KEY, &body);
        assert_eq!(reply.status, 202, "{reply:?}");
        sent.push(reply.body["message_id"].as_str().expect("id").to_owned());
        std::thread::sleep(std::time::Duration::from_millis(150));
    }
    let lines = page.page_lines();
    let mut got: Vec<&str> = lines.iter().filter_map(|l| l.strip_prefix("push id=")).collect();
    got.sort_unstable();
    let mut want: Vec<&str> = sent.iter().map(String::as_str).collect();
    want.sort_unstable();
    // Once each. (A message that reached the old stream after it ended goes
    // back and may come after one sent later.)
    assert_eq!(got, want, "every message once: {lines:#?}");
    assert_eq!(
        got,
        sent.iter().map(String::as_str).collect::<Vec<_>>(),
        "every message once, in order: {lines:#?}"
    );
    let opens = lines.iter().filter(|l| *l == "open").count();
    assert!(opens >= 3, "the stream was cut and resumed: {lines:#?}");
    assert!(!lines.iter().any(|l| l.starts_with("gap")), "{lines:#?}");

    // A position the server cannot honour (this device has no session)
    // gets an explicit gap event before live data.
    let other = crate::push_client::device_token("shop", "web-2", TOKEN_SECRET, 120);
    let output = std::process::Command::new("curl")
        .args(["-sN", "--max-time", "1", "-H", "Last-Event-ID: 0000000000000000000000000000abcd"])
        .arg(format!("http://{http}/v1/apps/shop/sse?token={other}"))
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("event: gap\ndata: {"), "{text}");
    let unauthorized = call(http, "GET", "/v1/apps/shop/sse?token=nope", None, Body::Text(""));
    assert_eq!(unauthorized.status, 401);
}

#[test]
fn a_scoped_key_calls_only_the_endpoints_its_scopes_allow() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = "[push.apps.shop]\n\
         [[push.apps.shop.scoped_keys]]\nkey = \"reader-0123456789abcdef\"\nscopes = [\"read\"]\n\
         [[push.apps.shop.scoped_keys]]\nkey = \"sender-0123456789abcdef\"\nscopes = [\"send\"]\n";
    let (_broker, http) = start(&dir, config);
    let (reader, sender) = ("reader-0123456789abcdef", "sender-0123456789abcdef");
    let message = json!({"audience": {"device_ids": ["d1"]}, "content": {"data": {}}});
    let device = json!({"tags": ["vip"]});
    let code =
        |reply: crate::push_client::Reply| (reply.status, reply.body["code"].as_str().map(str::to_owned));
    let forbidden = (403, Some("SCOPE_MISSING".to_owned()));
    assert_eq!(code(send(http, reader, &message)), forbidden);
    assert_eq!(send(http, sender, &message).status, 202);
    assert_eq!(
        code(call(http, "PUT", "/v1/apps/shop/devices/d1", Some(sender), Body::Json(&device))),
        forbidden
    );
    assert_eq!(code(call(http, "GET", "/v1/apps/shop/stats", Some(sender), Body::Text(""))), forbidden);
    assert_eq!(call(http, "GET", "/v1/apps/shop/stats", Some(reader), Body::Text("")).status, 200);
}

const OPERATOR: &str = "operator-token-0123456789abcdef-0123";

fn keys_call(
    http: SocketAddr,
    method: &str,
    path: &str,
    key: &str,
    body: Option<serde_json::Value>,
) -> Reply {
    match body {
        Some(body) => call(http, method, path, Some(key), Body::Json(&body)),
        None => call(http, method, path, Some(key), Body::Text("")),
    }
}

#[test]
fn the_admin_api_makes_scoped_keys_that_work_at_once_and_stop_when_revoked_across_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = format!(
        "[push]\noperator_token = \"{OPERATOR}\"\n[push.apps.shop]\nscoped_keys = [{{ key = \"{SHOP_KEY}\", scopes = [\"send\"] }}]\n"
    );
    let (broker, http) = start(&dir, &config);
    let message = json!({"audience": {"device_ids": ["d1"]}, "content": {"data": {}}});

    // The operator token makes a key of any app; it is shown once.
    let made = keys_call(
        http,
        "POST",
        "/v1/apps/shop/keys",
        OPERATOR,
        Some(json!({"name": "ci", "scopes": ["send", "read"]})),
    );
    assert_eq!(made.status, 201, "{made:?}");
    let key = made.body["key"].as_str().expect("the key").to_owned();
    let id = made.body["id"].as_str().expect("its id").to_owned();
    assert!(key.starts_with("hk_") && key.len() > 40, "{key}");
    assert_eq!(made.body["scopes"], json!(["send", "read"]));
    assert_eq!(made.location, format!("/v1/apps/shop/keys/{id}"));
    assert_eq!(send(http, &key, &message).status, 202, "the new key sends at once");
    let read = call(http, "GET", "/v1/apps/shop/devices/d1", Some(&key), Body::Text(""));
    assert_eq!(read.status, 404, "read scope: the device is unknown, not forbidden");
    let tag = call(http, "PUT", "/v1/apps/shop/devices/d1", Some(&key), Body::Json(&json!({"tags": []})));
    assert_eq!((tag.status, &tag.body["code"]), (403, &json!("SCOPE_MISSING")));

    // A list shows the key, never the secret; another app has none.
    let list = keys_call(http, "GET", "/v1/apps/shop/keys", OPERATOR, None);
    assert_eq!(list.status, 200);
    assert_eq!(list.body["keys"].as_array().map(Vec::len), Some(1));
    assert_eq!(list.body["keys"][0]["id"], json!(id));
    assert!(!list.body.to_string().contains(&key), "{list:?}");
    let other = keys_call(http, "GET", "/v1/apps/other/keys", OPERATOR, None);
    assert_eq!(other.body, json!({"keys": []}));
    // The new key belongs to shop only.
    let elsewhere = call(http, "POST", "/v1/apps/other/messages", Some(&key), Body::Json(&message));
    assert_eq!(elsewhere.status, 403);

    // Who may manage keys: the operator token and admin keys, no one else;
    // the operator token does nothing but manage keys.
    for (caller, status, code) in [
        (SHOP_KEY, 403, "SCOPE_MISSING"),
        (key.as_str(), 403, "SCOPE_MISSING"),
        ("operator-token-but-not-the-right-one", 401, "UNAUTHENTICATED"),
    ] {
        let refused = keys_call(http, "GET", "/v1/apps/shop/keys", caller, None);
        assert_eq!((refused.status, &refused.body["code"]), (status, &json!(code)), "{caller}");
    }
    let operator_send = send(http, OPERATOR, &message);
    assert_eq!(
        (operator_send.status, &operator_send.body["code"]),
        (403, &json!("OPERATOR_TOKEN_ONLY_MANAGES_KEYS"))
    );
    let admin = keys_call(
        http,
        "POST",
        "/v1/apps/shop/keys",
        OPERATOR,
        Some(json!({"name": "admin", "scopes": ["admin"]})),
    );
    let admin = admin.body["key"].as_str().expect("an admin key").to_owned();
    let by_admin = keys_call(http, "GET", "/v1/apps/shop/keys", &admin, None);
    assert_eq!(by_admin.body["keys"].as_array().map(Vec::len), Some(2));

    // Bad requests name the field; nothing is made.
    for (body, pointer, code) in [
        (json!({"name": "x"}), "/scopes", "SCOPES_REQUIRED"),
        (json!({"name": "x", "scopes": []}), "/scopes", "SCOPES_REQUIRED"),
        (json!({"name": "x", "scopes": ["root"]}), "/scopes/0", "SCOPE_UNKNOWN"),
        (json!({"name": "", "scopes": ["send"]}), "/name", "NAME_INVALID"),
        (json!({"name": "x", "scopes": ["send"], "ttl": 3}), "/ttl", "INVALID_ARGUMENT"),
    ] {
        let refused = keys_call(http, "POST", "/v1/apps/shop/keys", OPERATOR, Some(body.clone()));
        assert_eq!(refused.body["code"], json!(code), "{body}: {refused:?}");
        assert_eq!(refused.body["errors"][0]["pointer"], json!(pointer), "{body}: {refused:?}");
    }
    let list = keys_call(http, "GET", "/v1/apps/shop/keys", OPERATOR, None);
    assert_eq!(list.body["keys"].as_array().map(Vec::len), Some(2), "nothing made by a bad request");

    // Keys are replicated state: they outlive a crash.
    let broker = broker.restart("KILL");
    let http = push_address(|| broker.log());
    assert_eq!(send(http, &key, &message).status, 202, "the key works after a restart");

    // Revoked: refused at once, and after a restart.
    let revoked = keys_call(http, "DELETE", &format!("/v1/apps/shop/keys/{id}"), &admin, None);
    assert_eq!(revoked.status, 204, "{revoked:?}");
    let after = send(http, &key, &message);
    assert_eq!((after.status, &after.body["code"]), (401, &json!("UNAUTHENTICATED")));
    let again = keys_call(http, "DELETE", &format!("/v1/apps/shop/keys/{id}"), OPERATOR, None);
    assert_eq!(again.status, 404);
    let broker = broker.restart("KILL");
    let http = push_address(|| broker.log());
    assert_eq!(send(http, &key, &message).status, 401, "still revoked after a restart");
    assert_eq!(keys_call(http, "GET", "/v1/apps/shop/keys", &admin, None).status, 200);
}

#[test]
fn each_app_keeps_its_own_limits_at_the_gateway_and_at_the_router() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = format!(
        "[push.apps.shop]\napi_keys = [\"{SHOP_KEY}\"]\n\
         [push.apps.shop.limits]\nmax_audience = 2\nmax_tags_per_device = 2\nmax_expression_depth = 2\n\
         max_idempotency_key_chars = 8\nmax_body_bytes = 512\n\
         [push.apps.other]\napi_keys = [\"{OTHER_KEY}\"]\n"
    );
    let (_broker, http) = start(&dir, &config);
    let three = json!({"audience": {"device_ids": ["a", "b", "c"]}, "content": {"data": {}}});
    let deep = json!({"tags": {"not": {"not": "vip"}}});
    for (app, key, limited) in [("shop", SHOP_KEY, true), ("other", OTHER_KEY, false)] {
        let path = |rest: &str| format!("/v1/apps/{app}{rest}");
        let sent = call(http, "POST", &path("/messages"), Some(key), Body::Json(&three));
        let put =
            call(http, "PUT", &path("/devices/d1"), Some(key), Body::Json(&json!({"tags": ["x", "y", "z"]})));
        let count = call(http, "POST", &path("/audiences/count"), Some(key), Body::Json(&deep));
        let keyed = crate::push_client::call_with(
            http,
            "POST",
            &path("/messages"),
            key,
            &[("Idempotency-Key", "nine-char")],
            &json!({"audience": {"device_ids": ["a"]}, "content": {"data": {}}}),
        );
        let big = call(http, "POST", &path("/messages"), Some(key), Body::Bytes(600));
        let seen = [
            (sent.status, sent.body["code"].clone()),
            (put.status, put.body["code"].clone()),
            (count.status, count.body["code"].clone()),
            (keyed.status, keyed.body["code"].clone()),
            (big.status, big.body["code"].clone()),
        ];
        if limited {
            assert_eq!(
                seen,
                [
                    (422, json!("AUDIENCE_TOO_LARGE")),
                    (422, json!("TAG_LIMIT_EXCEEDED")),
                    (422, json!("TAG_EXPRESSION_INVALID")),
                    (400, json!("IDEMPOTENCY_KEY_INVALID")),
                    (413, json!("BODY_TOO_LARGE")),
                ],
                "{app}"
            );
        } else {
            // The defaults: all of it is within them (the body is not
            // JSON, so only its size passes).
            assert_eq!(seen.clone().map(|(status, _)| status), [202, 200, 200, 202, 400], "{app}: {seen:?}");
        }
    }
    // Tags added one by one: the router holds the device to the app's limit.
    let patch = |tag: &str| {
        let body = json!({"tags": {"add": [tag]}});
        call(http, "PATCH", "/v1/apps/shop/devices/d2", Some(SHOP_KEY), Body::Json(&body))
    };
    let put =
        call(http, "PUT", "/v1/apps/shop/devices/d2", Some(SHOP_KEY), Body::Json(&json!({"tags": ["x"]})));
    assert_eq!(put.status, 200);
    assert_eq!(patch("y").status, 200);
    let third = patch("z");
    assert_eq!((third.status, &third.body["code"]), (422, &json!("TAG_LIMIT_EXCEEDED")), "{third:?}");
    let device = call(http, "GET", "/v1/apps/shop/devices/d2", Some(SHOP_KEY), Body::Text(""));
    assert_eq!(device.body["tags"], json!(["x", "y"]), "nothing changed");
}

/// A v5 CONNECT for `client` as the user `shop-device` (password `pw`), with a receive
/// maximum of 1: the device takes one QoS 1 message at a time.
fn connect_one_at_a_time(client: &str) -> Vec<u8> {
    let mut body = vec![0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0xC2, 0x00, 0x3C];
    body.extend([0x03, 0x21, 0x00, 0x01]); // properties: Receive Maximum 1
    for text in [client, "shop-device", "pw"] {
        body.extend((text.len() as u16).to_be_bytes());
        body.extend(text.as_bytes());
    }
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend(body);
    packet
}

/// A raw v5 device `client` of app shop, with a receive maximum of 1 and a
/// QoS 1 subscription to its own topic.
fn one_at_a_time_device(broker: &Broker, client: &str) -> crate::support::RawConnection {
    let mut device = crate::support::RawConnection::open(broker);
    device.send(&connect_one_at_a_time(client));
    assert_eq!(device.expect_packet().body[1], 0x00, "CONNACK");
    let topic = format!("$push/{client}");
    let mut subscribe =
        vec![0x82, (2 + 1 + 2 + topic.len() + 1) as u8, 0x00, 0x01, 0x00, 0x00, topic.len() as u8];
    subscribe.extend(topic.as_bytes());
    subscribe.push(0x01);
    device.send(&subscribe);
    assert_eq!(device.expect_packet().first_byte, 0x90, "SUBACK");
    device
}

/// Acknowledges the QoS 1 PUBLISH `publish` (PUBACK with its packet id).
fn acknowledge(device: &mut crate::support::RawConnection, publish: &crate::support::Packet) {
    let topic_len = usize::from(u16::from_be_bytes([publish.body[0], publish.body[1]]));
    device.send(&[0x40, 0x02, publish.body[2 + topic_len], publish.body[3 + topic_len]]);
}

#[test]
fn a_cancel_takes_back_copies_waiting_on_the_gateway_and_the_funnel_says_so() {
    use crate::support::Incoming;
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, http) = broker(&dir);
    let mut device = one_at_a_time_device(&broker, "dev-w");

    let ids: Vec<String> = (0..3)
        .map(|n| {
            let body = json!({"audience": {"device_ids": ["dev-w"]}, "content": {"data": {"n": n}}, "options": {"qos": 1}});
            let sent = send(http, SHOP_KEY, &body);
            assert_eq!(sent.status, 202, "{sent:?}");
            sent.body["message_id"].as_str().expect("id").to_owned()
        })
        .collect();
    // The first is written; the other two wait on the gateway behind the window.
    let first = device.expect_packet();
    assert_eq!(first.first_byte & 0xF0, 0x30, "{first:?}");
    let cancelled = call(
        http,
        "POST",
        &format!("/v1/apps/shop/messages/{}/cancel", ids[2]),
        Some(SHOP_KEY),
        Body::Text(""),
    );
    assert_eq!(cancelled.status, 200, "{cancelled:?}");
    // The gateway reports the copy it took back.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let status =
            call(http, "GET", &format!("/v1/apps/shop/messages/{}", ids[2]), Some(SHOP_KEY), Body::Text(""));
        if status.body["funnel"]["cancelled"] == 1 {
            assert_eq!(status.body["funnel"]["pending"], 0, "{status:?}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never counted: {status:?}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // Acknowledging the first lets the second through, and nothing after it.
    acknowledge(&mut device, &first);
    let second = device.expect_packet();
    assert_eq!(second.first_byte & 0xF0, 0x30, "{second:?}");
    assert!(String::from_utf8_lossy(&second.body).contains(&ids[1]), "the second message comes next");
    acknowledge(&mut device, &second);
    assert!(
        matches!(device.receive(std::time::Duration::from_millis(800)), Incoming::Silent),
        "the cancelled one never comes"
    );
}

#[test]
fn a_newer_message_with_a_collapse_key_replaces_the_older_one_waiting_on_the_gateway() {
    use crate::support::Incoming;
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, http) = broker(&dir);
    let mut device = one_at_a_time_device(&broker, "dev-c");
    let push = |collapse: Option<&str>| {
        let mut options = json!({"qos": 1});
        if let Some(key) = collapse {
            options["collapse_key"] = json!(key);
        }
        let body =
            json!({"audience": {"device_ids": ["dev-c"]}, "content": {"data": {}}, "options": options});
        let sent = send(http, SHOP_KEY, &body);
        assert_eq!(sent.status, 202, "{sent:?}");
        sent.body["message_id"].as_str().expect("id").to_owned()
    };
    let _first = push(None);
    let held = device.expect_packet();
    let older = push(Some("score"));
    let newer = push(Some("score"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let status =
            call(http, "GET", &format!("/v1/apps/shop/messages/{older}"), Some(SHOP_KEY), Body::Text(""));
        if status.body["funnel"]["replaced"] == 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never counted as replaced: {status:?}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    acknowledge(&mut device, &held);
    let next = device.expect_packet();
    let text = String::from_utf8_lossy(&next.body).into_owned();
    assert!(text.contains(&newer) && !text.contains(&older), "the newer one comes, the older never: {text}");
    acknowledge(&mut device, &next);
    assert!(matches!(device.receive(std::time::Duration::from_millis(800)), Incoming::Silent));
}

#[test]
fn push_api_requests_are_counted_by_operation_and_status_with_their_latency() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("herald.toml");
    std::fs::write(&path, format!("[push.apps.shop]\napi_keys = [\"{SHOP_KEY}\"]\nrate_per_second = 3\n"))
        .expect("config");
    let broker = Broker::start_with(
        &["--config", path.to_str().expect("utf-8")],
        &[("HERALD_PUSH_HTTP", "127.0.0.1:0"), ("HERALD_OPS", "127.0.0.1:0")],
    );
    let http = push_address(|| broker.log());
    // At once: one after the other, each call's own start-up under load
    // could outlast the third of a second that refills a token.
    let mut statuses: Vec<u16> = std::thread::scope(|scope| {
        let calls: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    call(http, "GET", "/v1/apps/shop/devices/d1", Some(SHOP_KEY), Body::Text("")).status
                })
            })
            .collect();
        calls.into_iter().map(|c| c.join().expect("a call")).collect()
    });
    statuses.sort_unstable();
    assert_eq!(statuses, [404, 404, 404, 429]);
    let (_, lines) = crate::ops_client::fetch(&crate::ops_client::ops_address(&broker.log()), "/metrics");
    let metrics = crate::ops_client::samples(&lines);
    let get = |name: &str| metrics.get(name).copied();
    assert_eq!(
        get("herald_push_requests_total{operation=\"getDevice\",status=\"404\"}"),
        Some(3.0),
        "{metrics:?}"
    );
    assert_eq!(get("herald_push_requests_total{operation=\"getDevice\",status=\"429\"}"), Some(1.0));
    assert_eq!(get("herald_push_request_duration_seconds_count{operation=\"getDevice\"}"), Some(4.0));
    assert_eq!(
        get("herald_push_request_duration_seconds_bucket{le=\"+Inf\",operation=\"getDevice\"}"),
        Some(4.0)
    );
    assert_eq!(get("herald_push_rate_limited_total{}"), Some(1.0));
}
