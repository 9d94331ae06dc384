//! A router that starts with no data may have lost it. Raft's safety rests
//! on every voter remembering its log and its vote: a voter with an empty
//! log grants its vote to any candidate, and with it a stale router could
//! win an election and overwrite entries the cluster committed. So a
//! router with no data withholds its vote until it knows better (ADR
//! 0032):
//! - if a peer of its cluster answers that the cluster has never elected a
//!   leader, this is the cluster's first start: it votes;
//! - if a peer answers that the cluster has run, it votes for no one until
//!   a leader elected without it has brought it up to what that peer had
//!   applied;
//! - while no peer answers, it cannot tell, and waits.

use super::{TypeConfig, status};
use openraft::Raft;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Whether this node may answer vote requests. Shared by the node, which
/// lifts it, and its peer service, which reads it on every vote request.
#[derive(Debug, Default)]
pub struct VoteGate {
    withheld: AtomicBool,
}

impl VoteGate {
    /// A gate that withholds the node's vote when `withheld`.
    pub(super) fn new(withheld: bool) -> Arc<VoteGate> {
        Arc::new(VoteGate { withheld: AtomicBool::new(withheld) })
    }

    /// Whether the node withholds its vote now.
    pub fn is_withheld(&self) -> bool {
        self.withheld.load(Ordering::Acquire)
    }

    pub(super) fn lift(&self) {
        self.withheld.store(false, Ordering::Release);
    }
}

/// What one peer's status says about the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PeerView {
    /// Whether the peer knows a leader.
    pub leader: bool,
    /// The last entry it applied, if any.
    pub applied: Option<u64>,
}

/// What a node with no data may do, given what its peers answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// The cluster has never had a leader: its first start, vote.
    FirstStart,
    /// The cluster has run: vote only once caught up to `applied`.
    CatchUpTo(u64),
    /// No peer answered: withhold, and ask again.
    CannotTell,
}

/// Judges the answers of the peers that answered. One peer that has seen
/// the cluster run outweighs any number that have not: a node whose data
/// is lost must not take a peer that lost its data too for a cluster that
/// never ran.
pub(super) fn verdict(answers: &[PeerView]) -> Verdict {
    let ran: Vec<u64> =
        answers.iter().filter(|a| a.leader || a.applied.is_some()).map(|a| a.applied.unwrap_or(0)).collect();
    match ran.iter().max() {
        Some(applied) => Verdict::CatchUpTo(*applied),
        None if answers.is_empty() => Verdict::CannotTell,
        None => Verdict::FirstStart,
    }
}

/// Asks `peers` (not this node) until they tell, then lifts `gate` when the
/// verdict allows. `peers` empty: a router started to join a running
/// cluster, which votes once a leader has brought it up to date.
pub(super) async fn settle(
    raft: Raft<TypeConfig>,
    gate: Arc<VoteGate>,
    id: u64,
    cluster_id: String,
    peers: BTreeMap<u64, String>,
) {
    let target = if peers.is_empty() {
        0
    } else {
        loop {
            match verdict(&ask(&peers, &cluster_id).await) {
                Verdict::FirstStart => {
                    gate.lift();
                    tracing::info!(
                        "this router has no data and its cluster has never had a leader: it votes"
                    );
                    return;
                }
                Verdict::CatchUpTo(applied) => break applied,
                Verdict::CannotTell => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    };
    tracing::warn!(
        caught_up_to = target,
        "this router has no data and its cluster has run: it votes for no one until a leader has brought it \
         up to date (it may have lost its data, and an empty log would vote for a stale candidate)"
    );
    let mut metrics = raft.metrics();
    loop {
        let caught_up = {
            let m = metrics.borrow_and_update();
            m.current_leader.is_some_and(|leader| leader != id)
                && m.last_applied.is_some_and(|applied| applied.index >= target)
        };
        if caught_up {
            break;
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
    gate.lift();
    tracing::info!(caught_up_to = target, "this router has caught up with its leader: it votes again");
}

/// The views of the peers that answered in time, for this cluster.
async fn ask(peers: &BTreeMap<u64, String>, cluster_id: &str) -> Vec<PeerView> {
    let mut answers = Vec::new();
    for address in peers.values() {
        let asked = tokio::time::timeout(Duration::from_secs(1), status(address, true)).await;
        if let Ok(Ok(reply)) = asked
            && reply.cluster_id == cluster_id
        {
            answers.push(PeerView { leader: reply.leader.is_some(), applied: reply.applied_index });
        }
    }
    answers
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEVER_RAN: PeerView = PeerView { leader: false, applied: None };

    #[test]
    fn no_answer_cannot_tell() {
        assert_eq!(verdict(&[]), Verdict::CannotTell);
    }

    #[test]
    fn peers_that_never_had_a_leader_mean_a_first_start() {
        assert_eq!(verdict(&[NEVER_RAN]), Verdict::FirstStart);
        assert_eq!(verdict(&[NEVER_RAN, NEVER_RAN]), Verdict::FirstStart);
    }

    #[test]
    fn one_peer_that_saw_the_cluster_run_outweighs_the_rest() {
        let ran = PeerView { leader: false, applied: Some(40) };
        let leading = PeerView { leader: true, applied: Some(90) };
        assert_eq!(verdict(&[NEVER_RAN, ran]), Verdict::CatchUpTo(40));
        assert_eq!(verdict(&[ran, leading, NEVER_RAN]), Verdict::CatchUpTo(90));
        // A peer that knows a leader but applied nothing yet: the cluster ran.
        assert_eq!(verdict(&[PeerView { leader: true, applied: None }]), Verdict::CatchUpTo(0));
    }
}
