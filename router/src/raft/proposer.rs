//! Group commit in front of Raft.
//!
//! openraft appends one entry at a time and waits for its sync before it
//! takes the next (`../shared/reference/durable-writes.md` §3), so a router
//! that proposed one entry per batch would commit at most a few hundred
//! batches a second, however small they are: a thousand clients each
//! publishing a little would queue behind the disk. Here the facts of the
//! batches that arrive while entries are in flight wait, and go together
//! as one entry. At most [`IN_FLIGHT`] entries are proposed and not yet
//! committed; a batch that finds a free slot goes at once (no linger
//! timer): one batch per entry when idle, hundreds under load.

use super::{Command, TypeConfig};
use openraft::Raft;
use std::sync::Arc;
use tokio::sync::{Semaphore, mpsc, oneshot};

/// Entries proposed and not yet committed at most: one syncing while the
/// next fills.
const IN_FLIGHT: usize = 2;
/// Journal bytes one merged entry takes at most (a single larger batch
/// still goes, alone): entries stay well inside a gRPC message for
/// replication.
const MAX_ENTRY_BYTES: usize = 1024 * 1024;
/// Batches waiting for an entry at most; past it the router's batch loop
/// waits (backpressure up to the gateways' uplinks).
const QUEUE: usize = 4096;

/// What a proposal resolves to: committed, or why not.
pub(super) type Outcome = Result<(), String>;

/// One batch's journal, and who waits for its commit.
struct Proposal {
    journal: Vec<u8>,
    done: oneshot::Sender<Outcome>,
}

/// The queue in front of Raft.
pub(super) struct Proposer {
    queue: mpsc::Sender<Proposal>,
}

impl Proposer {
    /// Starts the task that proposes to `raft`.
    pub(super) fn start(raft: Raft<TypeConfig>) -> Proposer {
        let (queue, waiting) = mpsc::channel(QUEUE);
        tokio::spawn(run(raft, waiting));
        Proposer { queue }
    }

    /// Queues one batch's encoded journal (a `Journal` message), after
    /// every batch queued before; returns what resolves at its commit.
    pub(super) async fn propose(&self, journal: Vec<u8>) -> Result<oneshot::Receiver<Outcome>, String> {
        let (done, committed) = oneshot::channel();
        self.queue.send(Proposal { journal, done }).await.map_err(|_| "raft stopped".to_owned())?;
        Ok(committed)
    }
}

async fn run(raft: Raft<TypeConfig>, mut waiting: mpsc::Receiver<Proposal>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut held: Option<Proposal> = None;
    loop {
        let first = match held.take() {
            Some(proposal) => proposal,
            None => match waiting.recv().await {
                Some(proposal) => proposal,
                None => return,
            },
        };
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        // Whatever queued while the slot was taken joins this entry.
        let (journal, done, next) = gather(first, &mut waiting);
        held = next;
        let written = raft.client_write_ff(Command::Journal(journal)).await;
        tokio::spawn(async move {
            let outcome = match written {
                Ok(response) => match response.await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(error)) => Err(error.to_string()),
                    Err(_) => Err("raft stopped before the commit".to_owned()),
                },
                Err(error) => Err(error.to_string()),
            };
            for waiter in done {
                let _ = waiter.send(outcome.clone());
            }
            drop(slot);
        });
    }
}

/// One entry's journal: `first` and the proposals waiting behind it, up to
/// [`MAX_ENTRY_BYTES`], with who waits for each; a proposal that does not
/// fit is returned, to go first in the next entry. Encoded `Journal`
/// messages concatenate into one whose facts are all of theirs, in order
/// (a repeated field's elements append).
fn gather(
    first: Proposal,
    waiting: &mut mpsc::Receiver<Proposal>,
) -> (Vec<u8>, Vec<oneshot::Sender<Outcome>>, Option<Proposal>) {
    let mut journal = first.journal;
    let mut done = vec![first.done];
    while let Ok(next) = waiting.try_recv() {
        if journal.len() + next.journal.len() > MAX_ENTRY_BYTES {
            return (journal, done, Some(next));
        }
        journal.extend_from_slice(&next.journal);
        done.push(next.done);
    }
    (journal, done, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_core::NodeId;
    use herald_proto::journal::{Fact, decode, encode};

    fn proposal(journal: Vec<u8>) -> (Proposal, oneshot::Receiver<Outcome>) {
        let (done, committed) = oneshot::channel();
        (Proposal { journal, done }, committed)
    }

    #[test]
    fn batches_waiting_behind_an_entry_go_together_up_to_its_size() {
        let (queue, mut waiting) = mpsc::channel(8);
        let (first, _) = proposal(encode(&[Fact::GatewayLinked(NodeId(1))]));
        for n in 2..=3 {
            queue.try_send(proposal(encode(&[Fact::GatewayLinked(NodeId(n))])).0).expect("room");
        }
        let (journal, done, held) = gather(first, &mut waiting);
        let linked = (1..=3).map(|n| Fact::GatewayLinked(NodeId(n))).collect::<Vec<_>>();
        assert_eq!(decode(&journal).expect("one journal"), linked, "three batches, one entry, in order");
        assert_eq!((done.len(), held.is_none()), (3, true));

        // A batch that would take the entry past its size waits for the next.
        let (first, _) = proposal(encode(&[Fact::GatewayLinked(NodeId(4))]));
        queue.try_send(proposal(vec![0; MAX_ENTRY_BYTES]).0).expect("room");
        let (_, done, held) = gather(first, &mut waiting);
        assert_eq!((done.len(), held.map(|p| p.journal.len())), (1, Some(MAX_ENTRY_BYTES)));
    }

    #[test]
    fn concatenated_journals_decode_as_one_with_every_fact_in_order() {
        let first = [Fact::GatewayLinked(NodeId(1)), Fact::GatewayGone(NodeId(2))];
        let second = [Fact::GatewayLinked(NodeId(3))];
        let mut bytes = encode(&first);
        bytes.extend(encode(&second));
        let facts = decode(&bytes).expect("one journal");
        assert_eq!(facts, [first[0].clone(), first[1].clone(), second[0].clone()]);
    }
}
