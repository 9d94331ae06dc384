//! Delivery by client id in a router cluster (ADR 0033): the router that
//! serves the gateways finds each device's connection at its registry
//! shard's owner, which knows which gateway holds it and at what epoch.
//!
//! ```text
//!   push (devices or aliases) ──▶ serving router ──Locate──▶ each shard owner
//!                                    │ ◀── online on gateway G at epoch E ──┘
//!                                    └──Deliver──▶ G
//! ```
//!
//! One call per owner and push (its sessions in chunks of
//! [`LOCATE_CHUNK`]); this router's own shards are read in place. A shard
//! being rebuilt, an owner that does not answer, or one that says another
//! router owns the shard now, is asked again every [`RETRY`] for at most
//! [`LOCATE_PATIENCE`]; a device still not located then is reported
//! unreachable, never silently dropped. Admission: the router serving
//! the gateways runs at most `LOCATING` batches' lookups at once; the
//! pushes of a batch that finds them all taken are refused as busy (the
//! gateway answers 503, to be sent again).

use crate::owner::{AppOnline, Located};
use crate::raft::shards::TableView;
use crate::registry_link::RegistryService;
use herald_core::{AppId, NodeId, SessionKey, ShardId};
use herald_proto::grpc::pb::registry_client::RegistryClient;
use herald_proto::grpc::pb::{self, session_location::Where};
use herald_proto::grpc::{CONTRACT_VERSION, epoch_from_pb, epoch_to_pb, session_to_pb};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// Sessions asked of one owner in one call, at most.
pub const LOCATE_CHUNK: usize = 4096;
/// How long a push looks for its devices before reporting the ones not
/// found unreachable: past an owner's move (3 s by default) or a shard's
/// rebuild.
pub const LOCATE_PATIENCE: Duration = Duration::from_secs(5);
/// Between two rounds of asking.
const RETRY: Duration = Duration::from_millis(100);
/// One call to an owner, at most.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Finds sessions at their shards' owners.
#[derive(Clone)]
pub struct Locator {
    inner: Arc<Inner>,
}

struct Inner {
    /// Sessions located here, located at another router, and not located
    /// in time.
    counts: [std::sync::atomic::AtomicU64; 3],
    /// Pushes to everyone counted at every owner, and not.
    everyone: [std::sync::atomic::AtomicU64; 2],
    node: u64,
    cluster_id: String,
    local: RegistryService,
    table: watch::Receiver<TableView>,
    clients: Mutex<HashMap<u64, (String, RegistryClient<tonic::transport::Channel>)>>,
}

impl Locator {
    /// A locator of router `node`, whose own shards `local` serves, reading
    /// owners and their addresses from `table`.
    pub fn new(
        node: u64,
        cluster_id: String,
        local: RegistryService,
        table: watch::Receiver<TableView>,
    ) -> Locator {
        let (counts, everyone) = Default::default();
        let clients = Mutex::default();
        Locator { inner: Arc::new(Inner { counts, everyone, node, cluster_id, local, table, clients }) }
    }

    /// Sessions located at this router's own shards, at another router's,
    /// and not located in time (reported unreachable).
    pub fn counts(&self) -> [u64; 3] {
        self.inner.counts.each_ref().map(|c| c.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Pushes to everyone counted at every shard's owner, and those the
    /// serving router's records answered (not counted in time, or an owner
    /// predates counting).
    pub fn everyone_counts(&self) -> [u64; 2] {
        self.inner.everyone.each_ref().map(|c| c.load(std::sync::atomic::Ordering::Relaxed))
    }

    fn count(&self, which: usize, n: usize) {
        self.inner.counts[which].fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// Locates `sessions`: every one is answered (`Located::Rebuilding`:
    /// not located within [`LOCATE_PATIENCE`]) but those of an owner that
    /// predates locating.
    pub async fn locate(&self, sessions: Vec<SessionKey>) -> HashMap<SessionKey, Located> {
        let deadline = tokio::time::Instant::now() + LOCATE_PATIENCE;
        let mut found = HashMap::with_capacity(sessions.len());
        // The owner to ask next, when one answered that another owns it.
        let mut hints: HashMap<SessionKey, u64> = HashMap::new();
        let mut pending = sessions;
        pending.sort_unstable_by(|a, b| (&a.app, &a.client).cmp(&(&b.app, &b.client)));
        pending.dedup();
        loop {
            let mut by_owner: HashMap<u64, Vec<SessionKey>> = HashMap::new();
            {
                let table = self.inner.table.borrow();
                let owners = table.table.as_ref().map(|t| t.owners.as_slice()).unwrap_or_default();
                for session in pending.drain(..) {
                    let owner = hints
                        .get(&session)
                        .copied()
                        .or_else(|| owners.get(ShardId::of(&session).index()).copied())
                        .unwrap_or(0);
                    by_owner.entry(owner).or_default().push(session);
                }
            }
            let mut asked = tokio::task::JoinSet::new();
            for (owner, sessions) in by_owner {
                for chunk in sessions.chunks(LOCATE_CHUNK) {
                    let (locator, chunk) = (self.clone(), chunk.to_vec());
                    asked.spawn(async move {
                        let answers = locator.ask(owner, &chunk).await;
                        (owner, chunk, answers)
                    });
                }
            }
            while let Some(done) = asked.join_next().await {
                let Ok((owner, chunk, answers)) = done else { continue };
                let which = usize::from(owner != self.inner.node);
                match answers {
                    // Left out: the serving router's records answer.
                    Ok(None) => {}
                    Ok(Some(answers)) => {
                        for (session, located) in chunk.into_iter().zip(answers) {
                            match located {
                                Located::NotOwner { owner } => {
                                    // Asked next at the owner it names (the
                                    // routers' copies of the table differ
                                    // for a moment while a shard moves).
                                    if owner == 0 {
                                        hints.remove(&session);
                                    } else {
                                        hints.insert(session.clone(), owner);
                                    }
                                    pending.push(session);
                                }
                                Located::Rebuilding => pending.push(session),
                                answer => {
                                    self.count(which, 1);
                                    found.insert(session, answer);
                                }
                            }
                        }
                    }
                    Err(error) => {
                        tracing::debug!(%error, sessions = chunk.len(), "an owner did not locate: asking again");
                        pending.extend(chunk);
                    }
                }
            }
            if pending.is_empty() {
                return found;
            }
            if tokio::time::Instant::now() + RETRY >= deadline {
                tracing::warn!(
                    sessions = pending.len(),
                    "sessions not located in time: reported unreachable"
                );
                self.count(2, pending.len());
                found.extend(pending.into_iter().map(|session| (session, Located::Rebuilding)));
                return found;
            }
            tokio::time::sleep(RETRY).await;
        }
    }

    /// How many online sessions of `app` each gateway holds, over every
    /// shard, as their owners count them (for a push to everyone); `None`
    /// when some shard was not counted within [`LOCATE_PATIENCE`] or its
    /// owner predates counting: the serving router's records answer then.
    pub async fn count_online(&self, app: &AppId) -> Option<HashMap<NodeId, u64>> {
        let counted = self.count_everywhere(app).await;
        let which = usize::from(counted.is_none());
        self.inner.everyone[which].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        counted
    }

    /// Each owner's latest answer is kept: one that now counts a shard it
    /// was rebuilding replaces its earlier, narrower one. An answer naming a
    /// shard another owner's answer named (the shard moved between the
    /// two) drops that other answer, whose shards are asked again.
    async fn count_everywhere(&self, app: &AppId) -> Option<HashMap<NodeId, u64>> {
        let deadline = tokio::time::Instant::now() + LOCATE_PATIENCE;
        let mut answers: HashMap<u64, AppOnline> = HashMap::new();
        let mut missing: BTreeSet<ShardId> = ShardId::all().collect();
        loop {
            let owners: BTreeSet<u64> = {
                let table = self.inner.table.borrow();
                let owners = table.table.as_ref().map(|t| t.owners.as_slice()).unwrap_or_default();
                missing.iter().filter_map(|shard| owners.get(shard.index()).copied()).collect()
            };
            let mut asked = tokio::task::JoinSet::new();
            for owner in owners.into_iter().filter(|owner| *owner != 0) {
                let (locator, app) = (self.clone(), app.clone());
                asked.spawn(async move { (owner, locator.count_at(owner, &app).await) });
            }
            while let Some(done) = asked.join_next().await {
                match done {
                    Ok((owner, Ok(Some(counted)))) => {
                        answers.retain(|other, earlier| {
                            *other == owner
                                || !earlier.shards.iter().any(|shard| counted.shards.contains(shard))
                        });
                        answers.insert(owner, counted);
                    }
                    Ok((_, Ok(None))) => return None,
                    Ok((_, Err(error))) => tracing::debug!(%error, "an owner did not count: asking again"),
                    Err(_) => {}
                }
            }
            missing = ShardId::all().collect();
            for answer in answers.values() {
                for shard in &answer.shards {
                    missing.remove(shard);
                }
            }
            if missing.is_empty() {
                let mut per_gateway: HashMap<NodeId, u64> = HashMap::new();
                for (gateway, sessions) in answers.into_values().flat_map(|answer| answer.per_gateway) {
                    *per_gateway.entry(gateway).or_default() += sessions;
                }
                return Some(per_gateway);
            }
            if tokio::time::Instant::now() + RETRY >= deadline {
                tracing::warn!(
                    shards = missing.len(),
                    %app,
                    "shards not counted in time: a push to everyone goes by this router's records"
                );
                return None;
            }
            tokio::time::sleep(RETRY).await;
        }
    }

    /// Asks router `owner` to count `app`'s online sessions; `None`: it
    /// cannot (it predates counting).
    async fn count_at(&self, owner: u64, app: &AppId) -> Result<Option<AppOnline>, String> {
        if owner == self.inner.node {
            return Ok(Some(self.inner.local.online_of_app(app)));
        }
        let mut client = self.client(owner)?;
        let request = pb::CountOnlineQuery {
            contract_version: CONTRACT_VERSION,
            cluster_id: self.inner.cluster_id.clone(),
            app: app.to_string(),
        };
        match client.count_online(request).await {
            Ok(reply) => online_from_pb(reply.into_inner()).map(Some),
            Err(status) => self.failed(owner, &status),
        }
    }

    /// A call to router `owner` failed: `None` from a router of an earlier
    /// version (a rolling upgrade; the serving router's own records answer
    /// for its shards), else an error, its client dropped (connected again
    /// on next use).
    fn failed<T>(&self, owner: u64, status: &tonic::Status) -> Result<Option<T>, String> {
        if status.code() == tonic::Code::Unimplemented {
            return Ok(None);
        }
        self.inner.clients.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&owner);
        Err(format!("router {owner}: {}", status.message()))
    }

    /// Asks router `owner` (0: none yet) where `sessions` are; `None`: it
    /// cannot say (it predates locating).
    async fn ask(&self, owner: u64, sessions: &[SessionKey]) -> Result<Option<Vec<Located>>, String> {
        if owner == 0 {
            return Err("the shard has no owner yet".to_owned());
        }
        if owner == self.inner.node {
            return Ok(Some(sessions.iter().map(|session| self.inner.local.locate(session)).collect()));
        }
        let mut client = self.client(owner)?;
        let request = pb::LocateSessions {
            contract_version: CONTRACT_VERSION,
            cluster_id: self.inner.cluster_id.clone(),
            sessions: sessions.iter().map(session_to_pb).collect(),
        };
        let reply = match client.locate(request).await {
            Ok(reply) => reply.into_inner(),
            Err(status) => return self.failed(owner, &status),
        };
        if reply.located.len() != sessions.len() {
            return Err(format!(
                "router {owner} answered {} of {} sessions",
                reply.located.len(),
                sessions.len()
            ));
        }
        reply.located.into_iter().map(located_from_pb).collect::<Result<_, _>>().map(Some)
    }

    /// The client for router `owner`, at the address the table gives it.
    fn client(&self, owner: u64) -> Result<RegistryClient<tonic::transport::Channel>, String> {
        let address = self
            .inner
            .table
            .borrow()
            .routers
            .get(&owner)
            .cloned()
            .ok_or_else(|| format!("router {owner}'s address is unknown"))?;
        let mut clients = self.inner.clients.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((known, client)) = clients.get(&owner)
            && *known == address
        {
            return Ok(client.clone());
        }
        let client = crate::registry_link::registry_client(&address, CALL_TIMEOUT)?;
        clients.insert(owner, (address, client.clone()));
        Ok(client)
    }
}

/// Online counts on the wire.
pub(crate) fn online_to_pb(online: AppOnline) -> pb::OnlineCounted {
    pb::OnlineCounted {
        gateways: online
            .per_gateway
            .into_iter()
            .map(|(gateway, sessions)| pb::GatewaySessions { gateway: gateway.0, sessions })
            .collect(),
        shards: online.shards.into_iter().map(|shard| u32::from(shard.0)).collect(),
    }
}

fn online_from_pb(pb: pb::OnlineCounted) -> Result<AppOnline, String> {
    let shards = pb
        .shards
        .into_iter()
        .map(|shard| {
            u16::try_from(shard)
                .ok()
                .filter(|id| *id < herald_core::REGISTRY_SHARDS)
                .map(ShardId)
                .ok_or_else(|| format!("shard {shard} out of range"))
        })
        .collect::<Result<_, _>>()?;
    let per_gateway = pb.gateways.into_iter().map(|g| (NodeId(g.gateway), g.sessions)).collect();
    Ok(AppOnline { per_gateway, shards })
}

/// A location on the wire.
pub(crate) fn located_to_pb(located: Located) -> pb::SessionLocation {
    let mut pb = pb::SessionLocation::default();
    match located {
        Located::Online { gateway, epoch, since } => {
            pb.set_where(Where::Online);
            pb.gateway = gateway.0;
            pb.epoch = Some(epoch_to_pb(epoch));
            pb.since_ms = since.0;
        }
        Located::Offline => pb.set_where(Where::Offline),
        Located::Unknown => pb.set_where(Where::Unknown),
        Located::Rebuilding => pb.set_where(Where::Rebuilding),
        Located::NotOwner { owner } => {
            pb.set_where(Where::NotOwner);
            pb.owner = owner;
        }
    }
    pb
}

fn located_from_pb(pb: pb::SessionLocation) -> Result<Located, String> {
    Ok(match Where::try_from(pb.r#where).map_err(|_| format!("location {}", pb.r#where))? {
        Where::Online => Located::Online {
            gateway: NodeId(pb.gateway),
            epoch: epoch_from_pb(pb.epoch, "located.epoch").map_err(|e| e.to_string())?,
            since: herald_core::UnixMillis(pb.since_ms),
        },
        Where::Offline => Located::Offline,
        Where::Unknown => Located::Unknown,
        Where::Rebuilding => Located::Rebuilding,
        Where::NotOwner => Located::NotOwner { owner: pb.owner },
    })
}

#[cfg(test)]
#[path = "locate_tests.rs"]
mod tests;
