//! No leaks under repetition: 10,000 rounds of connections that work,
//! break the protocol, vanish without DISCONNECT or never send CONNECT
//! leave the broker with the descriptors it had and, by its allocator's
//! count of live bytes (`herald_heap_bytes`; resident memory would also
//! count what the allocator keeps for reuse), within a stated bound.

use crate::ops_client::{fetch, ops_address, samples};
use crate::support::{Broker, Incoming, RawConnection, STEP_TIMEOUT, assert_still_serving, connect_v5};
use std::time::{Duration, Instant};

/// Rounds after the warm-up.
const ROUNDS: usize = 10_000;
/// Clients at once.
const THREADS: usize = 4;
/// Live heap growth allowed after the rounds: room for buffers and maps
/// that keep the capacity of the busiest moment (a few clients at once);
/// 27 bytes left behind per round would pass it, a connection's or a
/// session's state would not. Measured: under 100 bytes in all.
const HEAP_BOUND: f64 = 256.0 * 1024.0;

fn utf8(text: &str) -> Vec<u8> {
    [&(text.len() as u16).to_be_bytes()[..], text.as_bytes()].concat()
}

fn packet(first_byte: u8, body: &[u8]) -> Vec<u8> {
    assert!(body.len() < 128, "one length byte");
    [&[first_byte, body.len() as u8][..], body].concat()
}

/// One round of kind `round % 4` with client id `client`.
fn round(broker: &Broker, round: usize, client: &str) {
    let mut connection = RawConnection::open(broker);
    match round % 4 {
        // Works: subscribe, publish at QoS 1 to itself, acknowledge, leave.
        0 => {
            connection.send(&connect_v5(client, 0, true, None));
            assert_eq!(connection.expect_packet().first_byte, 0x20, "CONNACK");
            let topic = format!("leak/{client}");
            let subscribe = [&[0x00, 0x01, 0x00][..], &utf8(&topic), &[0x01]].concat();
            connection.send(&packet(0x82, &subscribe));
            assert_eq!(connection.expect_packet().first_byte, 0x90, "SUBACK");
            let publish = [&utf8(&topic)[..], &[0x00, 0x02, 0x00], b"payload"].concat();
            connection.send(&packet(0x32, &publish));
            let mut delivered = None;
            let mut acknowledged = false;
            while delivered.is_none() || !acknowledged {
                let got = connection.expect_packet();
                match got.first_byte & 0xF0 {
                    0x30 => {
                        let at = 2 + usize::from(u16::from_be_bytes([got.body[0], got.body[1]]));
                        delivered = Some([got.body[at], got.body[at + 1]]);
                    }
                    0x40 => acknowledged = true,
                    other => panic!("unexpected packet type 0x{other:02X}"),
                }
            }
            let id = delivered.expect("delivered");
            connection.send(&[0x40, 0x02, id[0], id[1]]);
            connection.send(&[0xE0, 0x00]);
            assert!(matches!(connection.receive(STEP_TIMEOUT), Incoming::Closed));
        }
        // Breaks the protocol: a PUBLISH with QoS 3 after CONNECT.
        1 => {
            let connect = [&utf8("MQTT")[..], &[0x04, 0x02, 0x00, 0x3C], &utf8(client)].concat();
            connection.send(&packet(0x10, &connect));
            assert_eq!(connection.expect_packet().first_byte, 0x20, "CONNACK");
            connection.send(&[0x36, 0x06, 0x00, 0x01, b't', 0x00, 0x01, b'x']);
            connection.expect_closed();
        }
        // Vanishes without DISCONNECT.
        2 => {
            connection.send(&connect_v5(client, 0, true, None));
            assert_eq!(connection.expect_packet().first_byte, 0x20, "CONNACK");
        }
        // Never sends CONNECT.
        _ => {}
    }
}

/// The broker's live heap bytes, from its metrics.
fn heap(ops: &str) -> f64 {
    let (_, lines) = fetch(ops, "/metrics");
    samples(&lines).get("herald_heap_bytes{}").copied().expect("herald_heap_bytes")
}

/// Waits until the broker holds at most `limit` descriptors; returns how many it holds.
/// The broker's descriptor count once two reads 200 ms apart agree (at
/// most 10 s): the warm-up's sockets have closed.
fn stable_files(broker: &Broker) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = broker.open_files();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let now = broker.open_files();
        if now == last || Instant::now() >= deadline {
            return now;
        }
        last = now;
    }
}

fn settle_files(broker: &Broker, limit: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    while broker.open_files() > limit && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    broker.open_files()
}

fn rounds(broker: &Broker, count: usize, tag: &str) {
    std::thread::scope(|scope| {
        for thread in 0..THREADS {
            scope.spawn(move || {
                for n in (thread..count).step_by(THREADS) {
                    round(broker, n, &format!("{tag}-{n}"));
                }
            });
        }
    });
}

#[test]
fn ten_thousand_rounds_of_good_and_bad_clients_leak_no_descriptors_and_no_heap() {
    let broker = Broker::start_with(&[], &[("HERALD_OPS", "127.0.0.1:0")]);
    let ops = ops_address(&broker.log());
    // Warm-up: pools, maps and buffers reach their working size.
    rounds(&broker, 1_000, "warm");
    let files = stable_files(&broker);
    std::thread::sleep(Duration::from_millis(500));
    let before = heap(&ops);

    rounds(&broker, ROUNDS, "round");
    let after_files = settle_files(&broker, files);
    assert!(after_files <= files, "{after_files} descriptors after {ROUNDS} rounds, {files} before");
    // Connections that vanished end when their sockets close; give the last ones a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut after = heap(&ops);
    while after - before > HEAP_BOUND && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        after = heap(&ops);
    }
    eprintln!("live heap: {before} bytes before, {after} after {ROUNDS} rounds");
    assert!(
        after - before <= HEAP_BOUND,
        "live heap grew by {} bytes over {ROUNDS} rounds ({before} before, {after} after)",
        after - before
    );
    let (_, lines) = fetch(&ops, "/metrics");
    let connections = samples(&lines).get("herald_connections{}").copied();
    assert_eq!(connections, Some(0.0), "no connection left open");
    assert_still_serving(&broker);
}
