//! A router that starts with no data may have lost it. Raft's safety rests
//! on every voter remembering its log and its vote: a voter with an empty
//! log grants its vote to any candidate, and with it a stale router could
//! win an election and overwrite entries the cluster committed. So a
//! router with no data withholds its vote until it knows better (ADR
//! 0032):
//! - if a peer of its cluster answers that the cluster has never elected a
//!   leader, this is the cluster's first start: it votes;
//! - if a peer answers that the cluster has run, it votes for no one until
//!   it holds the whole log of a leader elected without it, in a term at
//!   least the latest its peers reported;
//! - while no peer answers, it cannot tell, and waits.

use super::{StatusClients, TypeConfig, leader_address, peer_statuses, status};
use herald_proto::grpc::pb::StatusReply;
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
    /// Its current term.
    pub term: u64,
}

impl From<&StatusReply> for PeerView {
    fn from(reply: &StatusReply) -> PeerView {
        PeerView { leader: reply.leader.is_some(), applied: reply.applied_index, term: reply.term }
    }
}

/// What a node with no data may do, given what its peers answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// The cluster has never had a leader: its first start, vote.
    FirstStart,
    /// The cluster has run: vote only once it holds the log of a leader of
    /// at least this term.
    CatchUp {
        /// The latest term a peer reported.
        term: u64,
    },
    /// No peer answered: withhold, and ask again.
    CannotTell,
}

/// Judges the answers of the peers that answered. One peer that has seen
/// the cluster run outweighs any number that have not: a node whose data
/// is lost must not take a peer that lost its data too for a cluster that
/// never ran.
pub(super) fn verdict(answers: &[PeerView]) -> Verdict {
    let ran = answers.iter().any(|a| a.leader || a.applied.is_some());
    match (ran, answers.is_empty()) {
        (true, _) => Verdict::CatchUp { term: answers.iter().map(|a| a.term).max().unwrap_or(0) },
        (false, true) => Verdict::CannotTell,
        (false, false) => Verdict::FirstStart,
    }
}

/// Judges `first`, what `peers` (not this node) answered at start, then
/// asks them again until they tell, and lifts `gate` when the verdict
/// allows. `peers` empty: a router started to join a running cluster,
/// which votes once it holds a leader's log.
pub(super) async fn settle(
    raft: Raft<TypeConfig>,
    gate: Arc<VoteGate>,
    id: u64,
    cluster_id: String,
    peers: BTreeMap<u64, String>,
    first: Vec<PeerView>,
) {
    let mut answers = first;
    let mut clients = StatusClients::default();
    let term = if peers.is_empty() {
        0
    } else {
        loop {
            match verdict(&answers) {
                Verdict::FirstStart => {
                    gate.lift();
                    tracing::info!(
                        "this router has no data and its cluster has never had a leader: it votes"
                    );
                    return;
                }
                Verdict::CatchUp { term } => break term,
                Verdict::CannotTell => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    let asked =
                        peer_statuses(&peers, &cluster_id, Duration::from_secs(1), &mut clients).await;
                    answers = asked.iter().map(PeerView::from).collect();
                }
            }
        }
    };
    tracing::warn!(
        term,
        "this router has no data and its cluster has run: it votes for no one until a leader has brought it \
         up to date (it may have lost its data, and an empty log would vote for a stale candidate)"
    );
    while !holds_a_leaders_log(&raft, id, term).await {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    gate.lift();
    tracing::info!("this router has caught up with its leader: it votes again");
}

/// Whether this node holds the whole log of the leader it follows, as that
/// leader reports it now, in a term of at least `term`. A leader's log holds
/// every entry committed before its term (Raft's leader completeness); the
/// term bound keeps a deposed leader that does not know it yet from
/// counting.
async fn holds_a_leaders_log(raft: &Raft<TypeConfig>, id: u64, term: u64) -> bool {
    let Some((leader, address)) =
        leader_address(&raft.metrics().borrow()).filter(|(leader, _)| *leader != id)
    else {
        return false;
    };
    let Ok(Ok(reply)) = tokio::time::timeout(Duration::from_secs(1), status(&address, true)).await else {
        return false;
    };
    if reply.leader != Some(leader) || reply.term < term {
        return false;
    }
    let target = reply.last_log_index.unwrap_or(0);
    // Entries it had then reach this node within a few heartbeats.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    let mut watched = raft.metrics();
    loop {
        let (held, same_leader) = {
            let m = watched.borrow_and_update();
            (m.last_log_index.unwrap_or(0) >= target, m.current_leader == Some(leader))
        };
        if !same_leader {
            return false;
        }
        if held {
            return true;
        }
        if tokio::time::timeout_at(deadline, watched.changed()).await.is_err() {
            return false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEVER_RAN: PeerView = PeerView { leader: false, applied: None, term: 1 };

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
        let ran = PeerView { leader: false, applied: Some(40), term: 7 };
        let leading = PeerView { leader: true, applied: Some(90), term: 5 };
        assert_eq!(verdict(&[NEVER_RAN, ran]), Verdict::CatchUp { term: 7 });
        // The latest term any peer saw bounds the leader to catch up with.
        assert_eq!(verdict(&[ran, leading, NEVER_RAN]), Verdict::CatchUp { term: 7 });
        // A peer that knows a leader but applied nothing yet: the cluster ran.
        assert_eq!(
            verdict(&[PeerView { leader: true, applied: None, term: 1 }]),
            Verdict::CatchUp { term: 1 }
        );
    }
}
