//! Backups: `herald ctl snapshot save` from a running cluster, `restore` into a new one.

use crate::cluster::{Cluster, run_herald};
use crate::support::{Message, Version, publisher, subscriber};

#[test]
fn a_cluster_restored_from_a_backup_has_the_sessions_queues_and_retained_messages_of_the_old() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("herald.backup");
    let file = file.to_str().expect("UTF-8 path");
    {
        let source = Cluster::start(1);
        let gateway = source.gateway(0);
        subscriber(&gateway, Version::V5)
            .client_id("keeper")
            .persistent()
            .topic("kept/#")
            .qos(1)
            .exit_after_subscribe()
            .start();
        publisher(&gateway, Version::V5, "kept/status").qos(1).retain().message("ready").run();
        publisher(&gateway, Version::V311, "kept/1").qos(1).message("one").run();
        let router = source.router_address();
        let (status, output) = run_herald(&[
            "ctl",
            "snapshot",
            "save",
            "--routers",
            &router,
            "--cluster-id",
            source.cluster_id(),
            file,
        ]);
        assert!(status.success(), "{output}");
        assert!(output.contains(&format!("cluster={}", source.cluster_id())), "{output}");
        // The whole source cluster stops here, data and all.
    }

    let mut target = Cluster::start(0);
    let (router, cluster_id) = (target.router_address(), target.cluster_id().to_owned());
    let restore = ["ctl", "snapshot", "restore", "--routers", &router, "--cluster-id", &cluster_id, file];
    let (status, output) = run_herald(&restore);
    assert!(status.success(), "{output}");
    let index = target.add_gateway();
    let gateway = target.gateway(index);
    let mut back =
        subscriber(&gateway, Version::V5).client_id("keeper").persistent().topic("kept/#").qos(1).start();
    let got = back.expect_messages(2);
    assert!(got.contains(&Message::new("kept/1", "one", 1, false)), "queued message restored: {got:?}");
    assert!(got.contains(&Message::new("kept/status", "ready", 1, false)), "{got:?}");
    let mut fresh = subscriber(&gateway, Version::V5).topic("kept/status").qos(1).start();
    assert_eq!(fresh.expect_messages(1), [Message::new("kept/status", "ready", 1, true)]);

    // The cluster holds data now: a second restore would overwrite it, and is refused.
    let (status, output) = run_herald(&restore);
    assert!(!status.success());
    assert!(output.contains("already holds"), "{output}");
}
