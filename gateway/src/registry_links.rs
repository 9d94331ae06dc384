//! The gateway's registry links (ADR 0033): one `Registry.Link` stream to
//! every router, leader or not, each telling the gateway the shard table
//! as that router's copy has it.
//!
//! ```text
//!   configured routers ∪ routers the tables name ──▶ one link task each
//!        link task: open ──▶ hello ──▶ tables ──▶ (ends) ──▶ wait, open again
//!   tables ──▶ the newest kept (per shard, generations only grow)
//! ```
//!
//! Routers apply the same log at different speeds, so their tables differ
//! only by age: a table is newer when its generations sum higher, or, at
//! the same generations, when it was read at a later log index. The
//! gateway keeps the newest, and links to every router the tables name,
//! so a router added later is linked too. Claims and releases go to the
//! shard's owner over these links.
//!
//! The owners rebuild their shards from the gateways: when a link opens,
//! the gateway lists to that router every session it holds of the shards
//! the table gives it; when a newer table moves or restarts shards, it
//! lists their sessions to their new owner (an empty list too: the owner
//! waits for every gateway). A transient session's will goes to its owner
//! with the claim and the lists; the owner is told whether the leader
//! accepted the connection (`settled`), since only an accepted
//! connection's will is published. A revocation from an owner (a newer
//! claim took the session, or the listing was stale) ends the connection
//! of a transient session at once; a persistent session's waits for the
//! leader's, which hands its inbox over (ADR 0030, ADR 0033 slice 3).

use herald_core::{Epoch, NodeId, REGISTRY_SHARDS, SessionKey, ShardId};
use herald_proto::grpc::pb::registry_client::RegistryClient;
use herald_proto::grpc::pb::{self, registry_claimed, registry_down, registry_up};
use herald_proto::grpc::{CONTRACT_VERSION, epoch_from_pb, epoch_to_pb, session_to_pb, will_to_pb};
use herald_proto::seam::Will;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{info, warn};

/// Waits between attempts to link to a router, doubling up to the second.
const RETRY: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(2));
/// Items waiting for one router's registry link: claims wait for room,
/// releases past it are dropped (the owner learns of them from the
/// gateway's next listing, or its lease).
const UPLINK: usize = 1024;
/// A claim sent and not answered: the router it went to, its session,
/// and who waits for the answer.
type Pending = (u64, pb::SessionKey, tokio::sync::oneshot::Sender<registry_claimed::Result>);

/// Settlings kept for a router whose link is down, sent first when it
/// opens again; beyond, the oldest are forgotten (the owner's patience
/// settles them).
const UNSENT: usize = 4096;
/// Claims given up before their answer, remembered.
const ABANDONED: usize = 65_536;
/// How long opening a link may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);
/// Sessions per listing item, at most, and bytes of wills (about: a single
/// larger will goes alone).
const LIST_CHUNK: usize = 512;
const LIST_CHUNK_BYTES: usize = 16 << 20;

/// One session a connection of this gateway holds.
#[derive(Debug, Clone)]
pub struct HeldSession {
    /// The session.
    pub session: Arc<SessionKey>,
    /// The epoch its connection holds.
    pub epoch: Epoch,
    /// Its expiry (0: transient).
    pub expiry_seconds: u32,
    /// A transient session's will: its owner holds it.
    pub will: Option<Box<Will>>,
}

/// The gateway's sessions, as the registry links list them to owners.
pub trait SessionHolder: Send + Sync {
    /// Every session held now.
    fn held(&self) -> Vec<HeldSession>;
    /// Ends the connections holding transient `session` at `epoch` or an
    /// older one: its owner granted it to a newer connection.
    fn revoke_transient(&self, session: &SessionKey, epoch: Epoch);
}

/// What a connection claims its session with.
#[derive(Debug, Clone, Copy)]
pub struct ClaimTerms<'a> {
    /// The session.
    pub session: &'a SessionKey,
    /// CONNECT's clean start.
    pub clean_start: bool,
    /// Its session expiry (0: transient).
    pub expiry_seconds: u32,
    /// Its will.
    pub will: Option<&'a Will>,
    /// This gateway's number for the connection.
    pub connection: u64,
}

/// The shard table as the gateway knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KnownTable {
    /// Per shard, its owner (0: none); empty before any table.
    pub owners: Vec<u64>,
    /// Per shard, its generation.
    pub generations: Vec<u64>,
    /// The routers, by node id, with their `host:port`.
    pub routers: BTreeMap<u64, String>,
    /// The log index the table was read at.
    pub applied_index: u64,
}

impl KnownTable {
    /// How new the table is: its generations' sum, then the index.
    fn age(&self) -> (u128, u64) {
        (self.generations.iter().map(|&g| u128::from(g)).sum(), self.applied_index)
    }

    /// The owner of `shard`, if the table names one.
    pub fn owner(&self, shard: ShardId) -> Option<u64> {
        self.owners.get(shard.index()).copied().filter(|&owner| owner != 0)
    }
}

/// How a claim at a shard's owner ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerClaim {
    /// The owner granted `epoch`; `persistent`: the session is attached at
    /// the leader too.
    Granted {
        /// The session's new epoch.
        epoch: Epoch,
        /// Whether the session is persistent, or ends a persistent one.
        persistent: bool,
        /// Whether the owner holds a transient session's will (it was sent
        /// with the claim): the leader is not sent it.
        holds_will: bool,
        /// The router that granted it.
        owner: u64,
    },
    /// The cluster has no shard table: the leader grants the epoch.
    NoShardTable,
    /// No owner answered in time.
    NotGranted,
}

/// How a claim sent to an owner ended.
enum Answer {
    Granted(pb::RegistryGrant),
    /// The router does not own the shard (any more).
    NotOwner,
    /// The link ended, or the shard moved: ask (the new owner) again.
    AskAgain,
    /// The patience ran out.
    TimedOut,
    /// The claim could not be sent: the link is gone.
    NotSent,
}

/// The gateway's registry links.
pub struct RegistryLinks {
    inner: Arc<Inner>,
}

struct Inner {
    gateway: NodeId,
    cluster_id: Option<String>,
    table: Mutex<KnownTable>,
    /// Routers linked to, by address (`host:port`).
    started: Mutex<HashSet<String>>,
    /// Routers linked now, by node id: a second address of a router linked
    /// already (a name and an IP) is given up.
    linked: Mutex<HashSet<u64>>,
    /// Links open now.
    open: AtomicU64,
    /// Each linked router's uplink, by node id.
    uplinks: Mutex<HashMap<u64, tokio::sync::mpsc::Sender<pb::RegistryUp>>>,
    /// Claims sent and not answered: the router they went to, and who waits.
    pending: Mutex<HashMap<u64, Pending>>,
    /// Claims given up before their answer came, with their sessions: a
    /// grant that comes late is settled as given up at once (at most
    /// [`ABANDONED`]; beyond, forgotten, and the owner's patience settles
    /// them).
    abandoned: Mutex<HashMap<u64, pb::SessionKey>>,
    /// Settlings for routers whose link was down, by router.
    unsent: Mutex<HashMap<u64, std::collections::VecDeque<pb::RegistryAccepted>>>,
    next_request: AtomicU64,
    /// Told when the table or the links change.
    changed: tokio::sync::Notify,
    /// Tables taken (newer than the one kept).
    tables: AtomicU64,
    /// Claims at owners, by how they ended: granted, no shard table, not
    /// granted in time.
    claims: [AtomicU64; 3],
    /// The gateway's sessions, listed to owners.
    holder: std::sync::OnceLock<Arc<dyn SessionHolder>>,
    /// Sessions listed to owners.
    listed: AtomicU64,
    /// Revocations received from owners.
    revocations: AtomicU64,
}

impl RegistryLinks {
    /// Starts linking gateway `gateway` to each router of `addresses`
    /// (`http://host:port` or `host:port`), and to every router their
    /// tables name. Links end when the returned value is dropped.
    pub fn start(gateway: NodeId, cluster_id: Option<String>, addresses: &[String]) -> RegistryLinks {
        let inner = Arc::new(Inner {
            gateway,
            cluster_id,
            table: Mutex::default(),
            started: Mutex::default(),
            linked: Mutex::default(),
            open: AtomicU64::new(0),
            uplinks: Mutex::default(),
            pending: Mutex::default(),
            abandoned: Mutex::default(),
            unsent: Mutex::default(),
            next_request: AtomicU64::new(1),
            changed: tokio::sync::Notify::new(),
            tables: AtomicU64::new(0),
            claims: Default::default(),
            holder: std::sync::OnceLock::new(),
            listed: AtomicU64::new(0),
            revocations: AtomicU64::new(0),
        });
        for address in addresses {
            Inner::link(&inner, address);
        }
        RegistryLinks { inner }
    }

    /// Lists `holder`'s sessions to their shards' owners from now on.
    pub fn hold(&self, holder: Arc<dyn SessionHolder>) {
        let _ = self.inner.holder.set(holder);
    }

    /// Sessions listed to owners, and revocations received from them.
    pub fn listings(&self) -> (u64, u64) {
        (self.inner.listed.load(Ordering::Relaxed), self.inner.revocations.load(Ordering::Relaxed))
    }

    /// The newest shard table received.
    pub fn table(&self) -> KnownTable {
        self.inner.table.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// How many routers it is linked to now.
    pub fn open(&self) -> u64 {
        self.inner.open.load(Ordering::Relaxed)
    }

    /// Claims `session` at its shard's owner. Waits, up to `patience`, for
    /// a first table and for the owner to be known and linked (a shard
    /// moving after a router's loss), and follows a `not owner` answer to
    /// the newer table.
    /// A transient claim carries its `will`, for the owner to hold.
    pub async fn claim(&self, terms: &ClaimTerms<'_>, stale_refusals: u32, patience: Duration) -> OwnerClaim {
        let claim = pb::RegistryClaim {
            request: 0,
            session: Some(session_to_pb(terms.session)),
            clean_start: terms.clean_start,
            expiry_seconds: terms.expiry_seconds,
            stale_refusals,
            will: terms.will.filter(|_| terms.expiry_seconds == 0).map(will_to_pb),
            connection: terms.connection,
        };
        let outcome = self.ask_owner(ShardId::of(terms.session), claim, patience).await;
        let counter = match outcome {
            OwnerClaim::Granted { .. } => 0,
            OwnerClaim::NoShardTable => 1,
            OwnerClaim::NotGranted => 2,
        };
        self.inner.claims[counter].fetch_add(1, Ordering::Relaxed);
        outcome
    }

    /// Claims at owners so far: granted, answered "no shard table", not
    /// granted in time.
    pub fn claims(&self) -> [u64; 3] {
        self.inner.claims.each_ref().map(|c| c.load(Ordering::Relaxed))
    }

    /// Sends `claim` (its request id set here) to the owner of `shard`
    /// until one answers with a grant, or `patience` runs out.
    async fn ask_owner(&self, shard: ShardId, claim: pb::RegistryClaim, patience: Duration) -> OwnerClaim {
        let deadline = tokio::time::Instant::now() + patience;
        let inner = &self.inner;
        loop {
            let changed = inner.changed.notified();
            let table = self.table();
            if !table.routers.is_empty() && table.owners.is_empty() {
                // A cluster without a shard table (a router predates it):
                // the leader grants epochs, as before.
                return OwnerClaim::NoShardTable;
            }
            let owner = table.owner(shard);
            let uplink = owner.and_then(|owner| Some((owner, inner.lock_uplinks().get(&owner)?.clone())));
            if let Some((owner, uplink)) = uplink {
                let request = inner.next_request.fetch_add(1, Ordering::Relaxed);
                let (answer, answered) = tokio::sync::oneshot::channel();
                let session = claim.session.clone().unwrap_or_default();
                inner.lock_pending().insert(request, (owner, session, answer));
                let item = registry_up::Item::Claim(pb::RegistryClaim { request, ..claim.clone() });
                let sent = uplink.send(pb::RegistryUp { item: Some(item) }).await;
                let answer = if sent.is_ok() {
                    self.answer(shard, owner, answered, deadline).await
                } else {
                    Answer::NotSent
                };
                // Answers leave the pending claims as they come; the rest
                // here. One given up is remembered, in the same turn, for a
                // grant that comes late.
                {
                    let mut pending = inner.lock_pending();
                    if let Some((_, session, _)) = pending.remove(&request)
                        && matches!(answer, Answer::TimedOut)
                    {
                        let mut abandoned = inner.lock_abandoned();
                        if abandoned.len() >= ABANDONED {
                            abandoned.clear();
                        }
                        abandoned.insert(request, session);
                    }
                }
                match answer {
                    Answer::Granted(grant) => {
                        let Ok(epoch) = epoch_from_pb(grant.epoch, "claimed.epoch") else {
                            return OwnerClaim::NotGranted;
                        };
                        return OwnerClaim::Granted {
                            epoch,
                            persistent: grant.persistent,
                            holds_will: grant.holds_will,
                            owner,
                        };
                    }
                    Answer::TimedOut => return OwnerClaim::NotGranted,
                    Answer::AskAgain => continue,
                    // Not the owner (any more), or its link is gone: a newer
                    // table, or the link again, is coming.
                    Answer::NotOwner | Answer::NotSent => {}
                }
            }
            tokio::select! {
                () = changed => {}
                () = tokio::time::sleep(RETRY.0) => {}
                () = tokio::time::sleep_until(deadline) => return OwnerClaim::NotGranted,
            }
        }
    }

    /// Waits for `owner`'s answer to a claim for `shard`, until `deadline`,
    /// or until a newer table gives the shard to another owner (a frozen
    /// router keeps its link up until its keep-alive fails).
    async fn answer(
        &self,
        shard: ShardId,
        owner: u64,
        mut answered: tokio::sync::oneshot::Receiver<registry_claimed::Result>,
        deadline: tokio::time::Instant,
    ) -> Answer {
        loop {
            let moved = self.inner.changed.notified();
            tokio::select! {
                answer = &mut answered => return match answer {
                    Ok(registry_claimed::Result::Granted(grant)) => Answer::Granted(grant),
                    Ok(registry_claimed::Result::NotOwner(_)) => Answer::NotOwner,
                    // The link ended before the answer.
                    Err(_) => Answer::AskAgain,
                },
                () = moved => if self.table().owner(shard) != Some(owner) {
                    return Answer::AskAgain;
                },
                () = tokio::time::sleep_until(deadline) => return Answer::TimedOut,
            }
        }
    }

    /// Tells `session`'s shard owner that the connection holding it at
    /// `epoch` ended. Not waited for: a full or missing link drops it, and
    /// the owner learns of the session's end when the gateway lists what
    /// it holds, or at the end of its lease.
    pub fn release(&self, session: &SessionKey, epoch: Epoch, expiry_seconds: u32, publish_will: bool) {
        let Some(owner) = self.table().owner(ShardId::of(session)) else { return };
        let Some(uplink) = self.inner.lock_uplinks().get(&owner).cloned() else { return };
        let release = pb::RegistryRelease {
            request: self.inner.next_request.fetch_add(1, Ordering::Relaxed),
            session: Some(session_to_pb(session)),
            epoch: Some(epoch_to_pb(epoch)),
            expiry_seconds,
            publish_will,
        };
        let _ = uplink.try_send(pb::RegistryUp { item: Some(registry_up::Item::Release(release)) });
    }

    /// Tells `owner`, the router that granted the claim of `session` at
    /// `epoch` (its shard may have moved since), what became of it: its
    /// connection was `accepted` (CONNACK), or the claim was given up.
    /// Waits for room on the link, as a claim does; if the link is gone, a
    /// will waiting for it there is published after a while
    /// (`PENDING_WILL_PATIENCE_MS` at the owner).
    pub async fn settled(&self, owner: u64, session: &SessionKey, epoch: Epoch, accepted: bool) {
        let settled = pb::RegistryAccepted {
            session: Some(session_to_pb(session)),
            epoch: Some(epoch_to_pb(epoch)),
            accepted,
        };
        let uplink = self.inner.lock_uplinks().get(&owner).cloned();
        let Some(uplink) = uplink else { return self.inner.keep_unsent(owner, settled) };
        if let Err(unsent) =
            uplink.send(pb::RegistryUp { item: Some(registry_up::Item::Accepted(settled)) }).await
            && let Some(registry_up::Item::Accepted(settled)) = unsent.0.item
        {
            // The link ended meanwhile: sent when it opens again.
            self.inner.keep_unsent(owner, settled);
        }
    }

    /// How many shards each router owns, as the newest table says.
    pub fn shards_per_owner(&self) -> BTreeMap<u64, u64> {
        let table = self.table();
        let mut owned = BTreeMap::new();
        for shard in ShardId::all() {
            if let Some(owner) = table.owner(shard) {
                *owned.entry(owner).or_insert(0) += 1;
            }
        }
        owned
    }
}

impl Inner {
    fn lock_linked(&self) -> std::sync::MutexGuard<'_, HashSet<u64>> {
        self.linked.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock_uplinks(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<u64, tokio::sync::mpsc::Sender<pb::RegistryUp>>> {
        self.uplinks.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock_abandoned(&self) -> std::sync::MutexGuard<'_, HashMap<u64, pb::SessionKey>> {
        self.abandoned.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Pending>> {
        self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    #[allow(clippy::type_complexity)]
    fn lock_unsent(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<u64, std::collections::VecDeque<pb::RegistryAccepted>>> {
        self.unsent.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Keeps `settled` for `router` until its link opens again.
    fn keep_unsent(&self, router: u64, settled: pb::RegistryAccepted) {
        let mut unsent = self.lock_unsent();
        let queue = unsent.entry(router).or_default();
        if queue.len() >= UNSENT {
            queue.pop_front();
        }
        queue.push_back(settled);
    }

    /// The link to router `router` ended: its uplink goes, and the claims
    /// sent on it are asked again.
    fn unlinked(&self, router: u64) {
        self.lock_linked().remove(&router);
        self.lock_uplinks().remove(&router);
        self.lock_pending().retain(|_, (to, _, _)| *to != router);
        self.open.fetch_sub(1, Ordering::Relaxed);
        self.changed.notify_waiters();
    }

    /// Starts the link task for `address` unless one runs.
    fn link(inner: &Arc<Inner>, address: &str) {
        let authority = herald_proto::grpc::tls::authority(address);
        let fresh = inner
            .started
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(authority.to_owned());
        if fresh {
            tokio::spawn(keep_linked(Arc::downgrade(inner), authority.to_owned()));
        }
    }

    /// Keeps `table` if it is newer than the one kept, and links to the
    /// routers it names.
    fn take(inner: &Arc<Inner>, table: pb::ShardTable) {
        let routers: BTreeMap<u64, String> = table
            .routers
            .iter()
            .filter_map(|entry| entry.split_once('='))
            .filter_map(|(id, address)| Some((id.parse().ok()?, address.to_owned())))
            .collect();
        let whole = table.owners.len() == usize::from(REGISTRY_SHARDS)
            && table.generations.len() == table.owners.len();
        let known = KnownTable {
            owners: if whole { table.owners } else { Vec::new() },
            generations: if whole { table.generations } else { Vec::new() },
            routers,
            applied_index: table.applied_index,
        };
        for address in known.routers.values() {
            Inner::link(inner, address);
        }
        let mut kept = inner.table.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if known.age() > kept.age() || (known.age() == kept.age() && known.routers != kept.routers) {
            *kept = known;
            inner.tables.fetch_add(1, Ordering::Relaxed);
            drop(kept);
            inner.changed.notify_waiters();
        }
    }

    /// An owner's revocation: the connection holding a transient session
    /// at that epoch (or an older one) ends, DISCONNECT 0x8E. A persistent
    /// session's connection is left to the leader's revocation, which comes
    /// with the takeover of its inbox (ADR 0030).
    fn revoked(inner: &Arc<Inner>, revoked: pb::RegistryRevoked) {
        let Some(holder) = inner.holder.get() else { return };
        let session = herald_proto::grpc::session_from_pb(revoked.session, "revoked.session");
        let epoch = epoch_from_pb(revoked.epoch, "revoked.epoch");
        match (session, epoch) {
            (Ok(session), Ok(epoch)) => holder.revoke_transient(&session, epoch),
            (Err(error), _) | (_, Err(error)) => warn!(%error, "a malformed revocation: ignored"),
        }
    }

    /// Lists to router `router`, if linked, the sessions held of `shards`,
    /// then ends the list. Not waited for.
    fn list_to(inner: &Arc<Inner>, router: u64, shards: &HashSet<usize>) {
        let Some(holder) = inner.holder.get() else { return };
        let Some(uplink) = inner.lock_uplinks().get(&router).cloned() else { return };
        let sessions: Vec<pb::ListedSession> = holder
            .held()
            .into_iter()
            .filter(|held| shards.contains(&ShardId::of(&held.session).index()))
            .map(|held| pb::ListedSession {
                session: Some(session_to_pb(&held.session)),
                epoch: Some(epoch_to_pb(held.epoch)),
                expiry_seconds: held.expiry_seconds,
                will: held.will.as_deref().filter(|_| held.expiry_seconds == 0).map(will_to_pb),
            })
            .collect();
        inner.listed.fetch_add(sessions.len() as u64, Ordering::Relaxed);
        tokio::spawn(async move {
            let mut chunks = list_chunks(sessions).into_iter().peekable();
            loop {
                let sessions = chunks.next().unwrap_or_default();
                let last = chunks.peek().is_none();
                let list = pb::RegistryList { sessions, last };
                if uplink.send(pb::RegistryUp { item: Some(registry_up::Item::List(list)) }).await.is_err()
                    || last
                {
                    // A link that ended lists again when it opens.
                    return;
                }
            }
        });
    }
}

/// `sessions` cut into listing items of [`LIST_CHUNK`] sessions and about
/// [`LIST_CHUNK_BYTES`] of wills at most (wills can be large: a list item
/// must stay well within a gRPC message).
fn list_chunks(sessions: Vec<pb::ListedSession>) -> Vec<Vec<pb::ListedSession>> {
    let mut chunks: Vec<Vec<pb::ListedSession>> = Vec::new();
    let mut bytes = 0;
    for session in sessions {
        let size = session.will.as_ref().and_then(|w| w.message.as_ref()).map_or(0, |m| m.payload.len());
        match chunks.last_mut() {
            Some(chunk) if chunk.len() < LIST_CHUNK && bytes + size <= LIST_CHUNK_BYTES => {
                bytes += size;
                chunk.push(session);
            }
            _ => {
                bytes = size;
                chunks.push(vec![session]);
            }
        }
    }
    chunks
}

/// Links to the router at `address` for as long as the gateway lives,
/// opening the link again whenever it ends.
async fn keep_linked(inner: Weak<Inner>, address: String) {
    let mut wait = RETRY.0;
    loop {
        let Some(strong) = inner.upgrade() else { return };
        let (gateway, cluster_id) = (strong.gateway, strong.cluster_id.clone());
        drop(strong);
        match tokio::time::timeout(OPEN_TIMEOUT, open(&address, gateway, cluster_id)).await {
            // The uplink stays open while `_uplink` lives, for the items to come.
            Ok(Ok((uplink, mut inbound))) => {
                wait = RETRY.0;
                let mut router = None;
                // Per shard, the generation this router was listed its
                // sessions at, on this link (0: not yet).
                let mut listed = vec![0u64; usize::from(REGISTRY_SHARDS)];
                loop {
                    let item = inbound.message().await;
                    let Some(strong) = inner.upgrade() else { return };
                    match item {
                        Ok(Some(pb::RegistryDown { item: Some(registry_down::Item::Table(table)) })) => {
                            if router.is_none() {
                                if !strong.lock_linked().insert(table.router) {
                                    info!(router = %address, id = table.router, "a router linked already under another address");
                                    return;
                                }
                                router = Some(table.router);
                                strong.open.fetch_add(1, Ordering::Relaxed);
                                strong.lock_uplinks().insert(table.router, uplink.clone());
                                // What could not be settled while it was
                                // down goes first, before any list.
                                let unsent = strong.lock_unsent().remove(&table.router).unwrap_or_default();
                                for settled in unsent {
                                    let item = registry_up::Item::Accepted(settled);
                                    let _ = uplink.try_send(pb::RegistryUp { item: Some(item) });
                                }
                                info!(router = %address, id = table.router, "registry link open");
                            }
                            // The shards this router's copy says it took
                            // (on a new link: all it owns) wait for a list;
                            // its copy is the one it checks listings by.
                            let taken: HashSet<usize> = (0..listed.len())
                                .filter(|&shard| {
                                    table.owners.get(shard) == Some(&table.router)
                                        && table.generations.get(shard).is_some_and(|g| *g != listed[shard])
                                })
                                .collect();
                            for &shard in &taken {
                                listed[shard] = table.generations[shard];
                            }
                            let id = table.router;
                            Inner::take(&strong, table);
                            if !taken.is_empty() {
                                Inner::list_to(&strong, id, &taken);
                            }
                            strong.changed.notify_waiters();
                        }
                        Ok(Some(pb::RegistryDown { item: Some(registry_down::Item::Revoked(revoked)) })) => {
                            strong.revocations.fetch_add(1, Ordering::Relaxed);
                            Inner::revoked(&strong, revoked);
                        }
                        Ok(Some(pb::RegistryDown { item: Some(registry_down::Item::Claimed(claimed)) })) => {
                            let waiting = strong.lock_pending().remove(&claimed.request);
                            let abandoned = strong.lock_abandoned().remove(&claimed.request);
                            // A grant for a claim given up (before it came, or
                            // as it came) is settled so at once.
                            let given_up = match (waiting, claimed.result) {
                                (Some((_, session, waiting)), Some(result)) => match waiting.send(result) {
                                    Err(registry_claimed::Result::Granted(grant)) => Some((session, grant)),
                                    _ => None,
                                },
                                (None, Some(registry_claimed::Result::Granted(grant))) => {
                                    abandoned.map(|session| (session, grant))
                                }
                                _ => None,
                            };
                            if let Some((session, grant)) = given_up {
                                let settled = pb::RegistryAccepted {
                                    session: Some(session),
                                    epoch: grant.epoch,
                                    accepted: false,
                                };
                                let item = registry_up::Item::Accepted(settled);
                                let _ = uplink.try_send(pb::RegistryUp { item: Some(item) });
                            }
                        }
                        Ok(Some(_)) => {}
                        Ok(None) | Err(_) => {
                            if let Some(id) = router {
                                strong.unlinked(id);
                                info!(router = %address, "registry link lost: opening it again");
                            }
                            break;
                        }
                    }
                }
            }
            Ok(Err(status)) if status.code() == tonic::Code::FailedPrecondition => {
                warn!(router = %address, reason = status.message(), "registry link refused");
            }
            Ok(Err(_)) | Err(_) => {}
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(RETRY.1);
    }
}

/// Opens the link to `address` and says hello.
async fn open(
    address: &str,
    gateway: NodeId,
    cluster_id: Option<String>,
) -> Result<(tokio::sync::mpsc::Sender<pb::RegistryUp>, tonic::Streaming<pb::RegistryDown>), tonic::Status> {
    let endpoint = crate::router_client::router_endpoint(address).map_err(tonic::Status::invalid_argument)?;
    let channel = endpoint.connect().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let (outbound, items) = tokio::sync::mpsc::channel(UPLINK);
    let hello = pb::RegistryUp {
        item: Some(registry_up::Item::Hello(pb::RegistryHello {
            contract_version: CONTRACT_VERSION,
            cluster_id: cluster_id.unwrap_or_default(),
            gateway: gateway.0,
        })),
    };
    outbound.send(hello).await.map_err(|_| tonic::Status::cancelled("closed"))?;
    let response = RegistryClient::new(channel)
        .max_decoding_message_size(herald_proto::grpc::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(herald_proto::grpc::MAX_MESSAGE_BYTES)
        .link(ReceiverStream::new(items))
        .await?;
    Ok((outbound, response.into_inner()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(generation: u64, owner: u64, applied_index: u64, routers: &[&str]) -> pb::ShardTable {
        pb::ShardTable {
            router: 1,
            cluster_id: "c".to_owned(),
            owners: vec![owner; usize::from(REGISTRY_SHARDS)],
            generations: vec![generation; usize::from(REGISTRY_SHARDS)],
            routers: routers.iter().map(|r| (*r).to_owned()).collect(),
            applied_index,
        }
    }

    #[tokio::test]
    async fn the_newest_table_is_kept_whichever_router_sends_it_and_its_routers_are_linked() {
        let links = RegistryLinks::start(NodeId(1), None, &[]);
        let inner = &links.inner;
        Inner::take(inner, table(2, 7, 10, &["7=127.0.0.1:1"]));
        assert_eq!(links.shards_per_owner(), BTreeMap::from([(7, 64)]));
        // A router that lags sends an older table: it is not taken.
        Inner::take(inner, table(1, 8, 20, &["7=127.0.0.1:1"]));
        assert_eq!(links.shards_per_owner(), BTreeMap::from([(7, 64)]));
        // The same generations read later, with a router added: taken, and
        // the new router is linked to.
        Inner::take(inner, table(2, 7, 30, &["7=127.0.0.1:1", "9=127.0.0.1:2"]));
        assert_eq!(links.table().routers.len(), 2);
        let started = inner.started.lock().expect("unpoisoned").clone();
        assert_eq!(started, HashSet::from(["127.0.0.1:1".to_owned(), "127.0.0.1:2".to_owned()]));
        // A table of a cluster without a shard table names no owner.
        let mut empty = table(3, 7, 40, &[]);
        empty.owners.clear();
        empty.generations.clear();
        Inner::take(inner, empty);
        assert_eq!(links.shards_per_owner(), BTreeMap::from([(7, 64)]), "older than what is kept");
        assert_eq!(links.table().owner(ShardId(0)), Some(7));
    }

    /// Listing items hold 512 sessions at most, and about 16 MiB of wills:
    /// a will alone may be larger.
    #[test]
    fn listing_items_are_cut_by_sessions_and_by_the_bytes_of_their_wills() {
        let listed = |will_bytes: usize| pb::ListedSession {
            will: (will_bytes > 0).then(|| pb::Will {
                message: Some(pb::Message { payload: vec![0; will_bytes].into(), ..Default::default() }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let sizes = |chunks: Vec<Vec<pb::ListedSession>>| chunks.iter().map(Vec::len).collect::<Vec<_>>();
        assert_eq!(sizes(list_chunks((0..600).map(|_| listed(0)).collect())), [512, 88]);
        let mib = 1 << 20;
        let large = vec![listed(10 * mib), listed(10 * mib), listed(20 * mib), listed(1), listed(1)];
        assert_eq!(sizes(list_chunks(large)), [1, 1, 1, 2]);
        assert!(list_chunks(Vec::new()).is_empty(), "an empty list is sent as one empty item");
    }
}
