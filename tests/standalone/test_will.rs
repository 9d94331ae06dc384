//! Will messages: published when a connection ends without DISCONNECT, dropped after a normal
//! DISCONNECT.

use crate::support::{Broker, Message, SILENCE, Version, publisher, subscriber};

#[test]
fn will_is_published_when_a_client_vanishes() {
    let broker = Broker::start();
    let mut watcher = subscriber(&broker, Version::V5).topic("will/#").qos(1).start();
    for version in Version::ALL {
        let topic = format!("will/vanished/{version}");
        let doomed = subscriber(&broker, version)
            .client_id(&format!("doomed-{version}"))
            .topic("idle/#")
            .will(&topic, "gone without a word")
            .start();
        // SIGKILL: the kernel closes the socket, no DISCONNECT is sent.
        doomed.kill_abruptly();
        assert_eq!(
            watcher.expect_messages(1),
            [Message::new(&topic, "gone without a word", 1, false)],
            "will of a v{version} client"
        );
    }
}

#[test]
fn will_is_dropped_after_a_normal_disconnect() {
    let broker = Broker::start();
    let mut watcher = subscriber(&broker, Version::V5).topic("will/#").qos(1).start();
    for version in Version::ALL {
        // Sends DISCONNECT (reason 0x00 for v5) once subscribed, then exits.
        subscriber(&broker, version)
            .client_id(&format!("polite-{version}"))
            .topic("idle/#")
            .will(&format!("will/polite/{version}"), "should never be seen")
            .exit_after_subscribe()
            .start();
    }
    watcher.expect_silence(SILENCE);
    publisher(&broker, Version::V311, "will/marker").qos(1).message("marker").run();
    assert_eq!(watcher.expect_messages(1), [Message::new("will/marker", "marker", 1, false)]);
}
