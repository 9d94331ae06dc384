//! Backups: `herald ctl snapshot save` from a running cluster, `restore` into a new one.

use crate::cluster::{Cluster, expect_state_kept, leave_state_to_keep, run_herald};

#[test]
fn a_cluster_restored_from_a_backup_has_the_sessions_queues_and_retained_messages_of_the_old() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("herald.backup");
    let file = file.to_str().expect("UTF-8 path");
    {
        let source = Cluster::start(1);
        leave_state_to_keep(&source.gateway(0));
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
    expect_state_kept(&target.gateway(index));

    // The cluster holds data now: a second restore would overwrite it, and is refused.
    let (status, output) = run_herald(&restore);
    assert!(!status.success());
    assert!(output.contains("already holds"), "{output}");
}
