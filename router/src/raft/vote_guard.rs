//! A router that starts on an empty data directory grants no vote to a
//! candidate of an established cluster until it has caught up.
//!
//! Raft's election safety rests on voters remembering what they
//! acknowledged. A voter whose volume was lost comes back with an empty
//! log, and an empty log finds every candidate's log up to date: with its
//! vote, a candidate that lacks entries committed through the lost copy
//! could win and drop them (a 3-router cluster: the leader and the lost
//! voter commit X while the third is behind; the leader dies; the third
//! asks the wiped voter, and X is gone). Such a node cannot tell itself
//! apart from a brand-new member, so the rule is about what it has seen:
//!
//! - starting on an empty directory (no log, no vote, no snapshot), it is
//!   *unproven*;
//! - unproven, it votes only for candidates whose log is that of a cluster
//!   being formed (nothing past the initial membership entry), so a new
//!   cluster of new routers still elects its first leader;
//! - it is proven once its log reaches the commit index a leader announced
//!   in the first entries or snapshot it sent: everything committed then,
//!   including what the lost copy acknowledged, is in its log.
//!
//! The unproven state is kept in a marker file (`<raft dir>/unproven`,
//! written durably before the node takes part): a node that restarts
//! before it has caught up stays unproven, though its log is no longer
//! empty. Even the node that forms a new cluster is unproven until a
//! leader other than itself has caught it up: a router that lost its data
//! and found no peer answering in time forms a cluster it should not have,
//! and must not then vote for a stale candidate. One added as a learner is
//! proven before it becomes a voter (it catches up first). A router
//! restarted on its own data is proven from the start.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The last log index of a cluster being formed: its initial membership.
const FORMING: u64 = 1;
/// No leader has announced a commit index to this node yet.
const UNKNOWN: u64 = u64::MAX;

/// Whether this node may vote, and what it waits for until it may.
#[derive(Debug)]
pub(super) struct VoteGuard {
    unproven: AtomicBool,
    /// The commit index the first leader to reach this node announced.
    catch_up_to: AtomicU64,
    /// The marker file that keeps the unproven state across restarts.
    marker: PathBuf,
}

impl VoteGuard {
    /// The guard of the node whose Raft files are in `dir`: unproven if
    /// they are `blank` (an empty data directory) or the marker says so.
    pub(super) fn open(dir: &Path, blank: bool) -> Result<VoteGuard, herald_store::StoreError> {
        let marker = dir.join("unproven");
        let unproven = blank || marker.exists();
        if blank && !marker.exists() {
            herald_store::small_file::write_durably(&marker, b"unproven")?;
        }
        Ok(VoteGuard { unproven: AtomicBool::new(unproven), catch_up_to: AtomicU64::new(UNKNOWN), marker })
    }

    /// Proves the node: it caught up.
    fn prove(&self) {
        if self.unproven.swap(false, Ordering::AcqRel) {
            // Failing to remove it only keeps the node careful after a restart.
            let _ = std::fs::remove_file(&self.marker);
        }
    }

    /// Whether this node may consider a candidate whose log ends at
    /// `candidate_last` (Raft's own checks follow).
    pub(super) fn may_vote(&self, candidate_last: Option<u64>) -> bool {
        !self.unproven.load(Ordering::Acquire) || candidate_last.is_none_or(|last| last <= FORMING)
    }

    /// A leader's entries or snapshot were taken: it announced commit index
    /// `leader_commit`, and this node's log now ends at `last`. Returns true
    /// when that proves the node (it votes from now on).
    pub(super) fn heard_from_leader(&self, leader_commit: Option<u64>, last: Option<u64>) -> bool {
        if !self.unproven.load(Ordering::Acquire) {
            return false;
        }
        let announced = leader_commit.unwrap_or(0);
        let _ = self.catch_up_to.compare_exchange(UNKNOWN, announced, Ordering::AcqRel, Ordering::Acquire);
        let target = self.catch_up_to.load(Ordering::Acquire);
        if last.unwrap_or(0) >= target && last.is_some() {
            self.prove();
            return true;
        }
        false
    }

    /// Whether the node still waits to catch up before it votes.
    pub(super) fn is_unproven(&self) -> bool {
        self.unproven.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_on_its_own_data_votes_for_anyone_raft_allows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let guard = VoteGuard::open(dir.path(), false).expect("open");
        assert!(guard.may_vote(Some(1_000)));
        assert!(!guard.heard_from_leader(Some(5), Some(1)), "already proven");
    }

    #[test]
    fn a_node_on_an_empty_directory_votes_only_for_a_forming_cluster_until_it_caught_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let guard = VoteGuard::open(dir.path(), true).expect("open");
        assert!(
            guard.may_vote(None) && guard.may_vote(Some(0)) && guard.may_vote(Some(1)),
            "a forming cluster"
        );
        assert!(!guard.may_vote(Some(42)), "an established one's candidate");
        // The first leader to reach it announces commit index 40.
        assert!(!guard.heard_from_leader(Some(40), Some(10)));
        assert!(!guard.may_vote(Some(42)));
        // A later, higher announcement does not move the bar it must reach.
        assert!(!guard.heard_from_leader(Some(45), Some(39)));
        assert!(guard.heard_from_leader(Some(45), Some(40)), "caught up to what was committed then");
        assert!(guard.may_vote(Some(42)) && !guard.is_unproven());
        let again = VoteGuard::open(dir.path(), false).expect("reopen");
        assert!(!again.is_unproven(), "proven for good");
    }

    #[test]
    fn a_restart_before_catching_up_stays_unproven() {
        let dir = tempfile::tempdir().expect("tempdir");
        let guard = VoteGuard::open(dir.path(), true).expect("open");
        assert!(!guard.heard_from_leader(Some(40), Some(10)));
        // Restarted with part of the log: no longer blank, still unproven.
        let again = VoteGuard::open(dir.path(), false).expect("reopen");
        assert!(again.is_unproven() && !again.may_vote(Some(42)));
    }
}
