//! Device users end to end (ADR 0026): made through the admin API and kept
//! by the router as salted hashes, or kept in a real `redis-server` in
//! EMQX's layout; mosquitto clients connect with their passwords.

use crate::push_client::{Body, Reply, call, start};
use crate::support::{Broker, Version, publisher, subscriber};
use herald_testkit::redis::RedisServer;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;

const OPERATOR: &str = "operator-token-0123456789abcdef-0123";

fn admin(http: SocketAddr, method: &str, path: &str, body: Option<serde_json::Value>) -> Reply {
    match body {
        Some(body) => call(http, method, path, Some(OPERATOR), Body::Json(&body)),
        None => call(http, method, path, Some(OPERATOR), Body::Text("")),
    }
}

/// Whether a client with `user` and `password` may publish (QoS 1, acknowledged).
fn connects(broker: &Broker, version: Version, user: &str, password: &str) -> bool {
    publisher(broker, version, "meters/up").user(user, password).qos(1).message("x").try_run()
}

/// Every file under `dir`, read whole.
fn files(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read the data directory").flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push((path, bytes));
        }
    }
    out
}

#[test]
fn users_made_through_the_admin_api_connect_with_their_password_which_is_never_stored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = format!(
        "[auth]\nallow_anonymous = false\n[push]\noperator_token = \"{OPERATOR}\"\n\
         [push.apps.shop]\napi_keys = [\"shop-key-0123456789abcdef\"]\n\
         scoped_keys = [{{ key = \"sender-0123456789abcdef\", scopes = [\"send\"] }}]\n"
    );
    let (broker, http) = start(&dir, &config);
    const ONE: &str = "meter-one-secret";
    const TWO: &str = "meter-two-secret";

    let made = admin(http, "PUT", "/v1/apps/shop/users/meter-1", Some(json!({"password": ONE})));
    assert_eq!(made.status, 200, "{made:?}");
    assert_eq!((&made.body["username"], &made.body["algorithm"]), (&json!("meter-1"), &json!("sha256")));
    assert!(made.body.get("password_hash").is_none() && !made.body.to_string().contains(ONE), "{made:?}");
    let body = json!({"password": TWO, "algorithm": "pbkdf2", "iterations": 2000});
    assert_eq!(admin(http, "PUT", "/v1/apps/shop/users/meter-2", Some(body)).status, 200);
    // A name belongs to one app.
    let taken = admin(http, "PUT", "/v1/apps/other/users/meter-1", Some(json!({"password": ONE})));
    assert_eq!((taken.status, &taken.body["code"]), (409, &json!("USERNAME_TAKEN")));
    let short = admin(http, "PUT", "/v1/apps/shop/users/meter-3", Some(json!({"password": "short"})));
    assert_eq!((short.status, &short.body["code"]), (422, &json!("PASSWORD_INVALID")));
    // Only the operator token and admin keys manage users.
    let by_sender =
        call(http, "GET", "/v1/apps/shop/users", Some("shop-key-0123456789abcdef"), Body::Text(""));
    assert_eq!(by_sender.status, 200, "the configured key has every scope: {by_sender:?}");
    let nobody = call(http, "GET", "/v1/apps/shop/users", Some("not-a-key-0123456789abcdef"), Body::Text(""));
    assert_eq!(nobody.status, 401);
    let sender = call(http, "GET", "/v1/apps/shop/users", Some("sender-0123456789abcdef"), Body::Text(""));
    assert_eq!((sender.status, &sender.body["code"]), (403, &json!("SCOPE_MISSING")), "a key without admin");

    for version in [Version::V311, Version::V5] {
        assert!(connects(&broker, version, "meter-1", ONE), "{version:?}");
        assert!(connects(&broker, version, "meter-2", TWO), "{version:?}: a PBKDF2 hash");
        let refused = publisher(&broker, version, "t").user("meter-1", TWO).message("x").run_refused();
        assert!(refused.to_lowercase().contains("password"), "a wrong password: {refused}");
        let refused = publisher(&broker, version, "t").user("meter-9", ONE).message("x").run_refused();
        assert!(refused.to_lowercase().contains("password"), "an unknown user: {refused}");
    }
    // Both are in their app: one hears what the other publishes.
    let mut listener = subscriber(&broker, Version::V5).user("meter-2", TWO).topic("meters/#").qos(1).start();
    publisher(&broker, Version::V5, "meters/1").user("meter-1", ONE).qos(1).message("reading").run();
    assert_eq!(listener.expect_messages(1)[0].payload, "reading");

    // Pages in name order.
    let page = admin(http, "GET", "/v1/apps/shop/users?limit=1", None);
    assert_eq!(
        (&page.body["users"][0]["username"], &page.body["next"]),
        (&json!("meter-1"), &json!("meter-1"))
    );
    let rest = admin(http, "GET", "/v1/apps/shop/users?after=meter-1", None);
    assert_eq!(rest.body["users"].as_array().map(Vec::len), Some(1), "{rest:?}");
    assert_eq!((&rest.body["users"][0]["username"], &rest.body["next"]), (&json!("meter-2"), &json!(null)));
    assert_eq!(admin(http, "GET", "/v1/apps/other/users", None).body["users"], json!([]));

    // Removed: refused at once; kept users outlive a crash.
    assert_eq!(admin(http, "DELETE", "/v1/apps/shop/users/meter-1", None).status, 204);
    assert_eq!(admin(http, "GET", "/v1/apps/shop/users/meter-1", None).status, 404);
    assert!(!connects(&broker, Version::V5, "meter-1", ONE), "a removed user");
    drop(listener);
    let broker = broker.restart("KILL");
    assert!(connects(&broker, Version::V5, "meter-2", TWO), "after a crash");
    assert!(!connects(&broker, Version::V5, "meter-1", ONE), "still removed after a crash");

    // Neither password is anywhere on disk.
    for (path, bytes) in files(broker.data_path()) {
        for secret in [ONE, TWO] {
            let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
            assert!(!found, "{secret} is stored in {}", path.display());
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn users_kept_in_redis_connect_with_emqx_hashes_and_a_redis_outage_is_server_unavailable() {
    let mut redis = RedisServer::start();
    // EMQX's layout: hex(sha256(salt ‖ password)), the salt beside it.
    let hash = hex(&Sha256::digest(b"pepper:sensor-secret"));
    assert_eq!(redis.cli(&["HSET", "mqtt_user:sensor-1", "password_hash", &hash, "salt", "pepper:"]), "2");
    let other = hex(&Sha256::digest(b"nosaltother-secret"));
    let fields = ["HSET", "mqtt_user:sensor-2", "password_hash", &other, "salt", "nosalt", "app", "shop"];
    assert_eq!(redis.cli(&fields), "3");

    let dir = tempfile::tempdir().expect("tempdir");
    let config = format!(
        "[auth]\nallow_anonymous = false\nlookup_timeout_ms = 1000\n\
         [auth.users.local]\npassword = \"local-pw\"\n\
         [auth.redis]\nurl = \"{}\"\n",
        redis.url()
    );
    let path = dir.path().join("herald.toml");
    std::fs::write(&path, config).expect("write the config");
    let broker = Broker::start_with(&["--config", path.to_str().expect("utf-8")], &[]);

    for version in [Version::V311, Version::V5] {
        assert!(connects(&broker, version, "sensor-1", "sensor-secret"), "{version:?}");
        assert!(
            connects(&broker, version, "sensor-2", "other-secret"),
            "{version:?}: its hash names its app"
        );
        let refused =
            publisher(&broker, version, "t").user("sensor-1", "sensor-secre").message("x").run_refused();
        assert!(refused.to_lowercase().contains("password"), "a wrong password: {refused}");
        let refused = publisher(&broker, version, "t").user("sensor-9", "x").message("x").run_refused();
        assert!(refused.to_lowercase().contains("password"), "no such hash: {refused}");
    }
    // A hash that cannot be read lets nobody in as its user.
    let fields = ["HSET", "mqtt_user:sensor-3", "password_hash", "not-hex", "salt", "x"];
    assert_eq!(redis.cli(&fields), "2");
    let refused =
        publisher(&broker, Version::V5, "t").user("sensor-3", "anything").message("x").run_refused();
    assert!(refused.to_lowercase().contains("password"), "a malformed hash: {refused}");
    // A user removed from Redis is refused at once (nothing is cached).
    assert_eq!(redis.cli(&["DEL", "mqtt_user:sensor-2"]), "1");
    assert!(!connects(&broker, Version::V5, "sensor-2", "other-secret"));

    // Redis gone: its users get "server unavailable", not "bad password";
    // users from the file still connect.
    redis.stop();
    for (version, expected) in [(Version::V5, "server unavailable"), (Version::V311, "unavailable")] {
        let refused =
            publisher(&broker, version, "t").user("sensor-1", "sensor-secret").message("x").run_refused();
        assert!(refused.to_lowercase().contains(expected), "{version:?}: {refused}");
    }
    assert!(connects(&broker, Version::V5, "local", "local-pw"), "the file's users need no Redis");
}
