//! The session registry kept in Redis (ADR 0029): one hash per session,
//! written after each batch that changed who holds it, fenced by the
//! writer's generation of the session's registry shard (ADR 0033) so that
//! a router of an older generation of that shard never overwrites what a
//! newer one wrote.
//!
//! The router that decides ownership (the one that serves, standalone; each
//! registry shard's owner, in a router cluster) decides it in its memory,
//! where claims are serialised; Redis holds the registry for everyone else
//! (operators' presence lookups, dashboards, the next router) and is
//! rebuilt from that memory whenever the two may differ: at start, after
//! Redis was unreachable, after the queue of changes overflowed, and (an
//! owner) when shards were taken or restarted there, once their sessions
//! were listed again. Redis being down never holds a connect back.

use crate::state::RegistryEntry;
use herald_core::{AppId, ClientId, SessionKey, ShardGenerations, ShardId};
use herald_redis::{Redis, RedisAddress, RedisError, Reply};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;

/// Batches of changes waiting for the writer; past it, the changes are
/// dropped and the whole registry is written again (policy: resync).
const QUEUE: usize = 1024;
/// Commands per round trip.
const PIPELINE: usize = 512;
/// How long one round trip may take.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Waits between attempts while Redis is unreachable, doubling up to the
/// second.
const RETRY: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(5));
/// How often an idle writer checks that Redis still has the registry (a
/// Redis restarted without persistence, or flushed, has lost it).
const CHECK: Duration = Duration::from_secs(2);
/// Keys asked for per `SCAN`.
const SCAN_COUNT: &str = "256";

/// Writes an entry unless a router of a later generation of its shard
/// wrote it. Within a generation one writer writes in order, so its last
/// write wins; the session's own epoch is data (a session given back on a
/// new link keeps an epoch of an earlier generation). KEYS[1]: the
/// session's hash; ARGV: the writer's generation of the session's shard,
/// the epoch, gateway (empty when offline), since (ms), expiry (s).
/// Returns 1 if written.
const UPSERT: &str = r"
local w = tonumber(redis.call('HGET', KEYS[1], 'writer') or '0')
if tonumber(ARGV[1]) < w then return 0 end
redis.call('HSET', KEYS[1], 'gateway', ARGV[3], 'epoch', ARGV[2], 'since', ARGV[4],
  'expiry', ARGV[5], 'writer', ARGV[1])
return 1
";

/// Deletes an entry unless a router of a later generation of its shard
/// wrote it. KEYS[1]: the session's hash; ARGV[1]: the writer's generation
/// of the session's shard. Returns 0 if fenced.
const REMOVE: &str = r"
local w = tonumber(redis.call('HGET', KEYS[1], 'writer') or '0')
if w > tonumber(ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1])
return 1
";

/// Raises the registry's generation (the highest shard generation of any
/// writer) to ARGV[1]; returns the one stored before.
const GENERATION: &str = r"
local g = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > g then redis.call('SET', KEYS[1], ARGV[1]) end
return g
";

/// Where the registry is kept.
#[derive(Debug, Clone)]
pub struct RedisRegistryConfig {
    /// The Redis server.
    pub address: RedisAddress,
    /// What every key starts with (several clusters may share a Redis).
    pub prefix: String,
}

/// What the writer did, for metrics.
#[derive(Debug, Default)]
pub struct RegistryStats {
    /// Entries written or deleted.
    pub written: AtomicU64,
    /// Entries Redis refused to change because a newer generation wrote
    /// them.
    pub fenced: AtomicU64,
    /// Times the whole registry was written again.
    pub resyncs: AtomicU64,
    /// Batches of changes dropped by a full queue (each causes a resync).
    pub overflowed: AtomicU64,
    /// Round trips that failed (Redis unreachable or refusing).
    pub errors: AtomicU64,
    /// Whether the last round trip succeeded.
    pub up: AtomicBool,
}

/// The router's side of the writer: where changes are offered.
pub(crate) struct Mirror {
    changes: mpsc::Sender<Vec<RegistryEntry>>,
    resync: AtomicBool,
    pub(crate) stats: std::sync::Arc<RegistryStats>,
}

impl Mirror {
    /// Asks for the whole registry to be written again (shards were taken
    /// or restarted here, changes were lost to a full queue or a failed
    /// write).
    pub(crate) fn resync(&self) {
        self.resync.store(true, Ordering::Release);
    }

    /// Offers one batch's changes, never waiting; a full queue drops them
    /// and asks for a resync.
    pub(crate) fn offer(&self, changes: Vec<RegistryEntry>) {
        if changes.is_empty() {
            return;
        }
        if self.changes.try_send(changes).is_err() {
            self.stats.overflowed.fetch_add(1, Ordering::Relaxed);
            self.resync();
        }
    }
}

/// The registry as its writer has it now.
pub(crate) enum Snapshot {
    /// Each shard's generation (0: a shard this writer does not write) and
    /// every session of the shards it writes.
    Ready(ShardGenerations, Vec<RegistryEntry>),
    /// Not whole yet (a shard is being rebuilt): asked again shortly; the
    /// changes meanwhile are written at these generations.
    NotYet(ShardGenerations),
    /// The writer's router is gone.
    Gone,
}

/// Reads the registry as the router has it now, draining the changes
/// queued so far (the snapshot covers them).
pub(crate) trait Snapshots: Send + 'static {
    fn snapshot(&self, queued: &mut mpsc::Receiver<Vec<RegistryEntry>>) -> Snapshot;
}

/// Returns the mirror and the writer task's future.
pub(crate) fn start(
    config: RedisRegistryConfig,
    snapshots: impl Snapshots,
    stats: std::sync::Arc<RegistryStats>,
) -> (std::sync::Arc<Mirror>, impl Future<Output = ()> + Send + 'static) {
    let (sender, receiver) = mpsc::channel(QUEUE);
    let mirror = std::sync::Arc::new(Mirror { changes: sender, resync: AtomicBool::new(true), stats });
    let writer = Writer {
        redis: Redis::new(config.address, TIMEOUT),
        prefix: config.prefix,
        scripts: None,
        generations: ShardGenerations::default(),
        stats: mirror.stats.clone(),
    };
    let task = writer.run(std::sync::Arc::downgrade(&mirror), receiver, snapshots);
    (mirror, task)
}

/// The script hashes Redis knows.
#[derive(Clone)]
struct Scripts {
    upsert: Vec<u8>,
    remove: Vec<u8>,
}

struct Writer {
    redis: Redis,
    prefix: String,
    scripts: Option<Scripts>,
    /// This writer's generation of each shard: the fence of its writes.
    generations: ShardGenerations,
    stats: std::sync::Arc<RegistryStats>,
}

impl Writer {
    async fn run(
        mut self,
        mirror: std::sync::Weak<Mirror>,
        mut changes: mpsc::Receiver<Vec<RegistryEntry>>,
        snapshots: impl Snapshots,
    ) {
        let mut wait = RETRY.0;
        loop {
            let Some(resync) = mirror.upgrade().map(|m| m.resync.swap(false, Ordering::AcqRel)) else {
                return;
            };
            // A snapshot not whole yet: changes are written meanwhile (at
            // the generations it gave), and it is asked for again shortly.
            let mut waiting = false;
            if resync {
                match snapshots.snapshot(&mut changes) {
                    Snapshot::Ready(generations, entries) => {
                        self.generations = generations;
                        let outcome = self.resync(entries).await;
                        wait = self.after(outcome, &mirror, wait).await;
                        continue;
                    }
                    Snapshot::NotYet(generations) => {
                        self.generations = generations;
                        waiting = true;
                        if let Some(mirror) = mirror.upgrade() {
                            mirror.resync();
                        }
                    }
                    Snapshot::Gone => return,
                }
            }
            let outcome = {
                let patience = if waiting { RETRY.0 } else { CHECK };
                let first = match tokio::time::timeout(patience, changes.recv()).await {
                    Ok(Some(first)) => first,
                    Ok(None) => return,
                    Err(_) => {
                        if !waiting
                            && let Some(mirror) = mirror.upgrade()
                            && let Ok(false) | Err(_) = self.still_there().await
                        {
                            mirror.resync();
                        }
                        continue;
                    }
                };
                let mut entries = first;
                while entries.len() < PIPELINE
                    && let Ok(more) = changes.try_recv()
                {
                    entries.extend(more);
                }
                self.write(entries).await
            };
            wait = self.after(outcome, &mirror, wait).await;
        }
    }

    /// Counts a round's `outcome`; after a failure, asks for everything to
    /// be written again and waits `wait`. Returns the next failure's wait.
    async fn after(
        &self,
        outcome: Result<(), RedisError>,
        mirror: &std::sync::Weak<Mirror>,
        wait: Duration,
    ) -> Duration {
        match outcome {
            Ok(()) => {
                self.stats.up.store(true, Ordering::Relaxed);
                RETRY.0
            }
            Err(error) => {
                // What was written is unknown: write everything again.
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                if self.stats.up.swap(false, Ordering::Relaxed) {
                    tracing::warn!(%error, "the session registry in Redis lags: retrying");
                }
                if let Some(mirror) = mirror.upgrade() {
                    mirror.resync();
                }
                tokio::time::sleep(wait).await;
                (wait * 2).min(RETRY.1)
            }
        }
    }

    /// Whether Redis still holds the registry this writer wrote: its
    /// generation key is there, at least at this writer's highest.
    async fn still_there(&self) -> Result<bool, RedisError> {
        let stored = match self.redis.command(&[b"GET", &self.generation_key()]).await? {
            Reply::Bulk(bytes) => std::str::from_utf8(&bytes).ok().and_then(|g| g.parse::<u64>().ok()),
            _ => None,
        };
        Ok(stored.is_some_and(|stored| stored >= self.generations.high_water()))
    }

    fn generation_key(&self) -> Vec<u8> {
        format!("{}registry:generation", self.prefix).into_bytes()
    }

    fn key(&self, session: &SessionKey) -> Vec<u8> {
        format!("{}session:{}/{}", self.prefix, session.app, session.client).into_bytes()
    }

    /// The session a key names, if it is one of this registry's.
    fn session_of(&self, key: &[u8]) -> Option<SessionKey> {
        let name = std::str::from_utf8(key).ok()?.strip_prefix(&self.prefix)?.strip_prefix("session:")?;
        let (app, client) = name.split_once('/')?;
        Some(SessionKey::new(AppId::new(app.to_owned()).ok()?, ClientId::new(client.to_owned()).ok()?))
    }

    /// This writer's generation of `session`'s shard, as Redis takes it.
    fn fence(&self, session: &SessionKey) -> Vec<u8> {
        self.generations.get(ShardId::of(session)).to_string().into_bytes()
    }

    /// Writes the whole registry: raises the generation, deletes what the
    /// router does not know, then writes every entry.
    async fn resync(&mut self, entries: Vec<RegistryEntry>) -> Result<(), RedisError> {
        self.stats.resyncs.fetch_add(1, Ordering::Relaxed);
        let highest = self.generations.high_water();
        let generation = highest.to_string();
        let raise: [&[u8]; 5] =
            [b"EVAL", GENERATION.as_bytes(), b"1", &self.generation_key(), generation.as_bytes()];
        if let Reply::Integer(stored) = self.redis.command(&raise).await?
            && stored as u64 > highest
        {
            tracing::warn!(
                stored,
                generation = highest,
                "a router of later shard generations writes this registry: those of its shards are fenced"
            );
        }
        let writes: Vec<_> = entries.into_iter().map(|e| (self.key(&e.session), e.session, e.held)).collect();
        let known: HashSet<&[u8]> = writes.iter().map(|(key, _, _)| key.as_slice()).collect();
        let pattern = format!("{}session:*", self.prefix).into_bytes();
        let mut cursor = b"0".to_vec();
        loop {
            let scan: [&[u8]; 6] = [b"SCAN", &cursor, b"MATCH", &pattern, b"COUNT", SCAN_COUNT.as_bytes()];
            let reply = self.redis.command(&scan).await?;
            let Reply::Array(mut parts) = reply else { return Err(RedisError::Protocol("a SCAN reply")) };
            let (Some(Reply::Array(keys)), Some(Reply::Bulk(next))) = (parts.pop(), parts.pop()) else {
                return Err(RedisError::Protocol("a SCAN reply"));
            };
            // A key that names no valid session is not this registry's, nor
            // one of a shard this writer does not write.
            let removals: Vec<_> = keys
                .into_iter()
                .filter_map(|k| match k {
                    Reply::Bulk(key) if !known.contains(key.as_slice()) => {
                        self.session_of(&key).map(|session| (key, session, None))
                    }
                    _ => None,
                })
                .filter(|(_, session, _)| self.generations.get(ShardId::of(session)) > 0)
                .collect();
            self.apply(removals).await?;
            if next == b"0" {
                break;
            }
            cursor = next;
        }
        drop(known);
        self.apply(writes).await
    }

    /// Writes the entries changed: the newest of each session (a later
    /// entry of a session replaces an earlier one).
    async fn write(&mut self, entries: Vec<RegistryEntry>) -> Result<(), RedisError> {
        let newest: HashMap<Vec<u8>, _> =
            entries.into_iter().map(|e| (self.key(&e.session), (e.session, e.held))).collect();
        self.apply(newest.into_iter().map(|(key, (session, held))| (key, session, held)).collect()).await
    }

    /// Runs the fenced write (or delete, for `None`) of each session's key,
    /// in pipelines.
    async fn apply(
        &mut self,
        writes: Vec<(Vec<u8>, SessionKey, Option<crate::state::Holder>)>,
    ) -> Result<(), RedisError> {
        for chunk in writes.chunks(PIPELINE) {
            let scripts = self.scripts().await?;
            let commands: Vec<Vec<Vec<u8>>> = chunk
                .iter()
                .map(|(key, session, held)| match held {
                    Some(h) => vec![
                        b"EVALSHA".to_vec(),
                        scripts.upsert.clone(),
                        b"1".to_vec(),
                        key.clone(),
                        self.fence(session),
                        format!("{}.{}", h.epoch.generation, h.epoch.counter).into_bytes(),
                        h.gateway.map(|g| g.0.to_string()).unwrap_or_default().into_bytes(),
                        h.since.0.to_string().into_bytes(),
                        h.expiry_seconds.to_string().into_bytes(),
                    ],
                    None => vec![
                        b"EVALSHA".to_vec(),
                        scripts.remove.clone(),
                        b"1".to_vec(),
                        key.clone(),
                        self.fence(session),
                    ],
                })
                .collect();
            for reply in self.redis.pipeline(&commands).await? {
                match reply {
                    Ok(Reply::Integer(0)) => {
                        self.stats.fenced.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {
                        self.stats.written.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(RedisError::Refused(reason)) if reason.starts_with("NOSCRIPT") => {
                        // Redis restarted without its scripts: load them
                        // and write everything again.
                        self.scripts = None;
                        return Err(RedisError::Refused(reason));
                    }
                    Err(error) => return Err(error),
                }
            }
        }
        Ok(())
    }

    async fn scripts(&mut self) -> Result<Scripts, RedisError> {
        if let Some(scripts) = &self.scripts {
            return Ok(scripts.clone());
        }
        let load = |script: &str| vec![b"SCRIPT".to_vec(), b"LOAD".to_vec(), script.as_bytes().to_vec()];
        let mut replies = self.redis.pipeline(&[load(UPSERT), load(REMOVE)]).await?.into_iter();
        let mut sha = || match replies.next() {
            Some(Ok(Reply::Bulk(sha))) => Ok(sha),
            Some(Err(error)) => Err(error),
            _ => Err(RedisError::Protocol("a SCRIPT LOAD reply")),
        };
        let scripts = Scripts { upsert: sha()?, remove: sha()? };
        self.scripts = Some(scripts.clone());
        Ok(scripts)
    }
}

#[cfg(test)]
#[path = "registry_redis_tests.rs"]
mod tests;
