//! The one writer of room events, and what the room service keeps in memory about rooms.
//!
//! Every event built by [`super::Rooms`] is committed here. Events queued while one
//! transaction commits go into the next (group commit: concurrent senders in different rooms
//! share one sync to disk instead of waiting for one each). After a commit and before the
//! stream position advances (which wakes `/sync` and the XMPP pump), the writer updates what
//! the service caches about the rooms written: readers woken by the advance never see a
//! cache older than the events they are told about.
//!
//! A job carries its room's lock and hands it back with the answer. If the caller has gone
//! (a client hung up), the lock is released only once the event is committed and the caches
//! are current, so the next event of that room is never built on a state the store has
//! moved past.
//!
//! An event that changes nothing but the room's extremities (a message: no state, no
//! redaction, no relation) may be queued *ahead* of its commit instead
//! ([`Writer::queue_ahead`]): the extremities in memory take it at once and the room's lock is
//! released, so the room's next event is built on it while it commits, and both can share a
//! transaction. Jobs commit in the order they were queued. If one fails, every queued event
//! built on it fails too (the writer remembers the failed IDs), so nothing is stored with a
//! prev event the store does not have.

use crate::Locked;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use estuary_store::{NewEvent, NewRoom, StateUpdate, Store, StoreError, StoredEvent};
use tokio::sync::{OwnedMutexGuard, mpsc, oneshot};

use super::sent_txns::SentTxns;
use crate::CoreError;
use crate::streams::{Rows, Streams};

/// A room's members: user ID -> (membership, their member event).
pub type Members = Arc<BTreeMap<String, (String, StoredEvent)>>;

/// A room's current state as cached: the member events by user, and every other state event
/// by (type, state key).
pub struct RoomState {
    pub members: Members,
    others: HashMap<(String, String), StoredEvent>,
    /// The stream position of the newest state event: the room's state at any position from
    /// here on is this one.
    newest: i64,
    /// The stored state group that is this state, and its chain length (see
    /// `super::state`); None when none is known (the room has several extremities, or its
    /// events predate state groups): the next event then starts a full group.
    pub(super) group: Option<(String, i64)>,
}

impl RoomState {
    pub fn from_current(current: Vec<StoredEvent>) -> Self {
        let mut state = Self {
            members: Arc::default(),
            others: HashMap::new(),
            newest: 0,
            group: None,
        };
        for e in current {
            state.insert(e);
        }
        state
    }

    /// Put `e` (a state event) in, replacing the event of its type and key.
    pub fn insert(&mut self, e: StoredEvent) {
        let Some(key) = e.state_key.clone() else { return };
        self.newest = self.newest.max(e.stream_ordering);
        if e.kind == "m.room.member" {
            let membership = super::content_field(&e.pdu, "membership");
            Arc::make_mut(&mut self.members).insert(key, (membership, e));
        } else {
            self.others.insert((e.kind.clone(), key), e);
        }
    }

    /// After `e` (built on this state, and put in with [`RoomState::insert`]): the group that
    /// holds the state now.
    pub(super) fn follow(&mut self, e: &NewEvent) {
        self.group = Some(match &e.new_group {
            Some(g) => (g.id.clone(), g.chain),
            None => (e.state_group.clone(), self.group.as_ref().map_or(0, |g| g.1)),
        });
    }

    /// The state as (type, state key) -> event ID.
    pub fn ids(&self) -> super::state::StateIds {
        let members = self
            .members
            .iter()
            .map(|(user, (_, e))| (("m.room.member".to_owned(), user.clone()), e.event_id.clone()));
        let others = self.others.iter().map(|(k, e)| (k.clone(), e.event_id.clone()));
        members.chain(others).collect()
    }

    /// The state changed at `position` without a state event there (a state reset).
    pub(super) fn changed_at(&mut self, position: i64) {
        self.newest = self.newest.max(position);
    }

    /// Whether this is also the room's state at stream position `at`.
    pub fn is_state_at(&self, at: i64) -> bool {
        self.newest <= at
    }

    /// Every state event, in stream order.
    pub fn events(&self) -> Vec<StoredEvent> {
        let mut all: Vec<StoredEvent> = self
            .members
            .values()
            .map(|(_, e)| e.clone())
            .chain(self.others.values().cloned())
            .collect();
        all.sort_by_key(|e| e.stream_ordering);
        all
    }

    /// The current state event of this type and key.
    pub fn get(&self, kind: &str, state_key: &str) -> Option<&StoredEvent> {
        if kind == "m.room.member" {
            self.members.get(state_key).map(|(_, e)| e)
        } else {
            self.others.get(&(kind.to_owned(), state_key.to_owned()))
        }
    }
}

/// The transaction IDs of recent client sends, shown to the sending device as
/// `unsigned.transaction_id` so it can match its local echo. Memory only, bounded.
#[derive(Default)]
struct RecentTxns {
    by_event: HashMap<String, (String, String)>,
    order: VecDeque<String>,
}

const RECENT_TXNS: usize = 10_000;

/// The newest events of a room written since start: every event of the room after `floor`,
/// oldest first, at most [`RECENT_PER_ROOM`]. A `/sync` woken by a new event reads the event
/// here rather than from the store.
struct Recent {
    floor: i64,
    events: VecDeque<StoredEvent>,
}

/// Events kept per room in [`Recent`]: a timeline of the default limit (10) and the one more
/// that tells whether it is limited, and one to spare.
const RECENT_PER_ROOM: usize = 12;
/// Rooms with [`Recent`] events kept (emptied when full, as the other caches).
const RECENT_ROOMS: usize = 1_000;

/// What the room service keeps in memory. Only the writer changes what a commit changed;
/// readers fill in what is missing.
#[derive(Default)]
pub(super) struct Memo {
    state: Mutex<HashMap<String, Arc<RoomState>>>,
    /// Bumped by every change of cached state, so a read that raced one is not cached.
    epoch: AtomicU64,
    /// Forward extremities (event ID, depth) of rooms written since start.
    extremities: Mutex<HashMap<String, Vec<(String, i64)>>>,
    recent_txns: Mutex<RecentTxns>,
    recent: Mutex<HashMap<String, Recent>>,
    /// The transactions of events queued ahead and not committed yet.
    pending_txns: Mutex<HashSet<(String, String, String)>>,
    /// Each device's committed transactions, complete once read (see `sent_txns`).
    pub(super) sent_txns: SentTxns,
    /// The newest state reset (migration 0019) of each room that has had one. Complete once
    /// `Rooms` has loaded what the store holds; the writer adds each new one before the stream
    /// advances.
    pub(super) resets: Mutex<HashMap<String, i64>>,
}

impl Memo {
    /// The room's cached state, else None and the epoch to pass to [`Memo::keep_state`]
    /// once it has been read.
    pub(super) fn state(&self, room_id: &str) -> Result<Arc<RoomState>, u64> {
        match self.state.locked().get(room_id) {
            Some(s) => Ok(s.clone()),
            None => Err(self.epoch.load(Ordering::SeqCst)),
        }
    }

    /// Cache a state read that began at `epoch`, unless a change happened since.
    pub(super) fn keep_state(&self, room_id: &str, epoch: u64, state: &Arc<RoomState>) {
        let mut cache = self.state.locked();
        if self.epoch.load(Ordering::SeqCst) == epoch {
            crate::bounded_insert(&mut cache, room_id.to_owned(), state.clone());
        }
    }

    /// The room's state changed (a state event, or a redaction).
    pub(super) fn forget_state(&self, room_id: &str) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.state.locked().remove(room_id);
    }

    pub(super) fn extremities(&self, room_id: &str) -> Option<Vec<(String, i64)>> {
        self.extremities.locked().get(room_id).cloned()
    }

    /// Extremities read from the store while holding the room's lock.
    pub(super) fn keep_extremities(&self, room_id: &str, extremities: Vec<(String, i64)>) {
        crate::bounded_insert(&mut self.extremities.locked(), room_id.to_owned(), extremities);
    }

    /// `e` is queued ahead of its commit: it replaces its prev_events among the room's
    /// extremities now. Call with the room's lock held.
    pub(super) fn queued(&self, e: &NewEvent) {
        self.extend(e);
        if let Some(txn) = &e.txn {
            self.pending_txns.locked().insert(txn.clone());
        }
    }

    /// Whether an event of this transaction is queued ahead and not committed yet.
    pub(super) fn txn_pending(&self, txn: &(String, String, String)) -> bool {
        self.pending_txns.locked().contains(txn)
    }

    /// An event queued ahead is committed, or has failed.
    fn settled(&self, e: &NewEvent) {
        if let Some(txn) = &e.txn {
            self.pending_txns.locked().remove(txn);
        }
    }

    /// `e` replaces its prev_events among the room's extremities (if they are kept).
    fn extend(&self, e: &NewEvent) {
        if let Some(ext) = self.extremities.locked().get_mut(&e.room_id) {
            let prev: HashSet<&str> = e.prev_events.iter().map(String::as_str).collect();
            ext.retain(|(id, _)| !prev.contains(id.as_str()));
            ext.push((e.event_id.clone(), e.depth));
        }
    }

    /// The room's newest events with from < stream position <= to, at most `limit`, oldest
    /// first, if memory holds them all; None when the store must be asked.
    pub(super) fn recent_events(&self, room_id: &str, from: i64, to: i64, limit: usize) -> Option<Vec<StoredEvent>> {
        let recent = self.recent.locked();
        let room = recent.get(room_id)?;
        let window: Vec<&StoredEvent> = room
            .events
            .iter()
            .filter(|e| e.stream_ordering > from && e.stream_ordering <= to)
            .collect();
        // Complete when nothing of the window is older than what is kept, or when the newest
        // `limit` are kept anyway.
        if room.floor > from && window.len() < limit {
            return None;
        }
        Some(
            window[window.len().saturating_sub(limit)..]
                .iter()
                .map(|e| (*e).clone())
                .collect(),
        )
    }

    /// `e` is committed at `position`; `before`, the room's newest position before it.
    fn keep_recent(&self, e: &NewEvent, position: i64, before: i64) {
        let mut recent = self.recent.locked();
        // A redaction changes an event kept here: start again from it.
        if e.redaction.is_some() {
            recent.remove(&e.room_id);
        }
        if !recent.contains_key(&e.room_id) {
            let new = Recent {
                floor: before,
                events: VecDeque::new(),
            };
            crate::insert_capped(&mut recent, RECENT_ROOMS, e.room_id.clone(), new);
        }
        let Some(room) = recent.get_mut(&e.room_id) else {
            return;
        };
        room.events.push_back(e.stored_at(position));
        while room.events.len() > RECENT_PER_ROOM {
            if let Some(old) = room.events.pop_front() {
                room.floor = old.stream_ordering;
            }
        }
    }

    /// `e` is committed at `position` (its extremities taken already if it was queued ahead).
    fn appended(&self, e: &NewEvent, position: i64, ahead: bool) {
        if e.resets().next().is_some() {
            self.reset_at(&e.room_id, position);
        }
        // A redaction may have redacted a state event; state resolution may change any
        // entry; a new group is the state's new name.
        if e.state_key.is_some()
            || e.redaction.is_some()
            || e.new_group.is_some()
            || matches!(e.state_update, StateUpdate::Resolved(_))
        {
            self.forget_state(&e.room_id);
        }
        if !ahead {
            self.extend(e);
        }
        if let Some((localpart, device, txn)) = &e.txn {
            self.sent_txns.committed(localpart, device, txn);
            let mut r = self.recent_txns.locked();
            r.by_event
                .insert(e.event_id.clone(), (format!("{localpart}\u{0}{device}"), txn.clone()));
            r.order.push_back(e.event_id.clone());
            while r.order.len() > RECENT_TXNS {
                if let Some(old) = r.order.pop_front() {
                    r.by_event.remove(&old);
                }
            }
        }
    }

    /// The room's state was reset at `position` (see `resets`).
    pub(super) fn reset_at(&self, room_id: &str, position: i64) {
        let mut resets = self.resets.locked();
        let last = resets.entry(room_id.to_owned()).or_default();
        *last = (*last).max(position);
    }

    /// `e` could not be committed: what is cached of its room may be wrong now.
    fn failed(&self, e: &NewEvent) {
        self.forget_state(&e.room_id);
        self.extremities.locked().remove(&e.room_id);
    }

    /// The transaction ID under which this device sent the event, if it did (recently).
    pub(super) fn txn_of(&self, event_id: &str, localpart: &str, device_id: &str) -> Option<String> {
        let r = self.recent_txns.locked();
        let (who, txn) = r.by_event.get(event_id)?;
        (who == &format!("{localpart}\u{0}{device_id}")).then(|| txn.clone())
    }
}

/// The room lock a job holds while it is built and committed.
pub(super) type RoomGuard = OwnedMutexGuard<()>;

type Answer = (Result<Vec<i64>, CoreError>, Option<RoomGuard>);

/// What one caller commits: a room to create (with its alias) and events, all or none.
pub(super) struct Job {
    room: Option<NewRoom>,
    events: Vec<NewEvent>,
    /// The room's lock, held until the commit; None for a job queued ahead of its commit.
    guard: Option<RoomGuard>,
    reply: oneshot::Sender<Answer>,
}

/// An event queued ahead of its commit ([`Writer::queue_ahead`]): its stream position once
/// committed.
pub struct Ahead(oneshot::Receiver<Answer>);

impl Ahead {
    pub async fn committed(self) -> Result<i64, CoreError> {
        let (result, _) = self.0.await.map_err(|_| stopped())?;
        result?.last().copied().ok_or_else(no_position)
    }
}

/// Event IDs whose commit failed, remembered for the events queued after them.
const FAILED_REMEMBERED: usize = 4096;

/// Most jobs in one transaction.
const BATCH: usize = 256;

/// The longest the writer holds a smaller batch back for the senders of the last one.
const MOST_GATHERING: Duration = Duration::from_millis(2);

#[derive(Clone)]
pub(super) struct Writer {
    jobs: mpsc::Sender<Job>,
    /// Events queued ahead and not answered yet.
    ahead: Arc<AtomicUsize>,
}

impl Writer {
    pub(super) fn start(store: Arc<dyn Store>, streams: Arc<Streams>, memo: Arc<Memo>) -> Self {
        let (jobs, mut queue) = mpsc::channel::<Job>(BATCH * 4);
        let ahead = Arc::new(AtomicUsize::new(0));
        let in_flight = ahead.clone();
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH);
            let mut failed = HashSet::new();
            let (mut last_size, mut last_took) = (0, Duration::ZERO);
            while queue.recv_many(&mut batch, BATCH).await > 0 {
                gather(&mut queue, &mut batch, last_size, (last_took / 2).min(MOST_GATHERING)).await;
                let answered = batch.iter().filter(|j| j.guard.is_none()).count();
                let started = Instant::now();
                last_size = batch.len();
                commit(&*store, &streams, &memo, &mut batch, &mut failed).await;
                last_took = started.elapsed();
                in_flight.fetch_sub(answered, Ordering::SeqCst);
            }
        });
        Self { jobs, ahead }
    }

    /// Commit `event`: its stream position, and the room's lock back.
    pub(super) async fn append(&self, event: NewEvent, guard: RoomGuard) -> Result<(i64, RoomGuard), CoreError> {
        let (positions, guard) = self.submit(None, vec![event], guard).await?;
        let last = positions.last().copied();
        Ok((last.ok_or_else(no_position)?, guard))
    }

    /// Queue `event` ahead of its commit: the caller releases the room's lock once this
    /// returns (see the module's documentation). Only for an event that changes nothing but
    /// the room's extremities.
    pub(super) async fn queue_ahead(&self, event: NewEvent) -> Result<Ahead, CoreError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            room: None,
            events: vec![event],
            guard: None,
            reply,
        };
        self.ahead.fetch_add(1, Ordering::SeqCst);
        if self.jobs.send(job).await.is_err() {
            self.ahead.fetch_sub(1, Ordering::SeqCst);
            return Err(stopped());
        }
        Ok(Ahead(answer))
    }

    /// Create a room with its initial events, all or none: their stream positions.
    pub(super) async fn create(
        &self,
        room: NewRoom,
        events: Vec<NewEvent>,
        guard: RoomGuard,
    ) -> Result<(Vec<i64>, RoomGuard), CoreError> {
        self.submit(Some(room), events, guard).await
    }

    /// Wait until every event queued ahead so far is answered: an empty job, answered with
    /// its batch. At once when none is.
    pub(super) async fn settle(&self) -> Result<(), CoreError> {
        if self.ahead.load(Ordering::SeqCst) == 0 {
            return Ok(());
        }
        self.ahead.fetch_add(1, Ordering::SeqCst);
        let (reply, answer) = oneshot::channel();
        let job = Job {
            room: None,
            events: vec![],
            guard: None,
            reply,
        };
        if self.jobs.send(job).await.is_err() {
            self.ahead.fetch_sub(1, Ordering::SeqCst);
            return Err(stopped());
        }
        answer.await.map_err(|_| stopped())?.0.map(|_| ())
    }

    /// Hand a job to the writer task and wait for its answer.
    async fn submit(
        &self,
        room: Option<NewRoom>,
        events: Vec<NewEvent>,
        guard: RoomGuard,
    ) -> Result<(Vec<i64>, RoomGuard), CoreError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            room,
            events,
            guard: Some(guard),
            reply,
        };
        self.jobs.send(job).await.map_err(|_| stopped())?;
        let (result, guard) = answer.await.map_err(|_| stopped())?;
        Ok((result?, guard.ok_or_else(stopped)?))
    }
}

fn stopped() -> CoreError {
    CoreError::Internal("the event writer has stopped".into())
}

fn no_position() -> CoreError {
    CoreError::Internal("the store gave no position for an event".into())
}

/// Group commit across a pause: when the last batch had more jobs than this one, its senders
/// are most likely about to send again, a fraction of a millisecond after their answers. The
/// batch waits for them, at most `within` (the writer gives half the last commit's time, so
/// that waiting costs less than the commit it saves, and never more than [`MOST_GATHERING`]).
/// Without the wait, a saturated writer alternates a commit of the one job that came early
/// with one of all the rest, which waited for it: in the benchmark's saturated Matrix workload
/// (10 senders) a third of the commits held one event, and none after. Like PostgreSQL's
/// `commit_delay`, but only while there were siblings a moment ago.
async fn gather<T>(queue: &mut mpsc::Receiver<T>, batch: &mut Vec<T>, last_size: usize, within: Duration) {
    let until = tokio::time::Instant::now() + within;
    while batch.len() < last_size.min(BATCH) {
        let room = BATCH - batch.len();
        match tokio::time::timeout_at(until, queue.recv_many(batch, room)).await {
            Ok(n) if n > 0 => {}
            // Time is up, or the service is stopping.
            _ => break,
        }
    }
}

/// Commit the jobs' rooms and events in one store transaction.
async fn store_jobs(store: &dyn Store, jobs: &[&Job]) -> Result<Vec<i64>, StoreError> {
    let rooms: Vec<&NewRoom> = jobs.iter().filter_map(|j| j.room.as_ref()).collect();
    let events: Vec<&NewEvent> = jobs.iter().flat_map(|j| &j.events).collect();
    if rooms.is_empty() && events.is_empty() {
        // Only `Writer::settle`'s empty jobs: nothing to write.
        return Ok(vec![]);
    }
    store.append_events(&rooms, &events).await
}

/// One transaction for the whole batch; if it fails, each job alone, so that one bad job
/// fails only itself and the queued events built on it. `failed` holds the IDs of events
/// whose commit failed, for jobs queued ahead on them.
async fn commit(store: &dyn Store, streams: &Streams, memo: &Memo, batch: &mut Vec<Job>, failed: &mut HashSet<String>) {
    let expected = |jobs: &[&Job]| jobs.iter().map(|j| j.events.len()).sum::<usize>();
    let mut results: Vec<Option<Result<Vec<i64>, CoreError>>> = batch.iter().map(|_| None).collect();
    for (job, result) in batch.iter().zip(&mut results) {
        if built_on_failed(job, failed) {
            *result = Some(Err(orphaned()));
            remember_failed(job, failed);
        }
    }
    let todo: Vec<usize> = (0..batch.len()).filter(|&i| results[i].is_none()).collect();
    let jobs: Vec<&Job> = todo.iter().map(|&i| &batch[i]).collect();
    match store_jobs(store, &jobs).await {
        Ok(mut positions) if positions.len() == expected(&jobs) => {
            for (&i, job) in todo.iter().zip(&jobs) {
                results[i] = Some(Ok(positions.drain(..job.events.len()).collect()));
            }
        }
        all if jobs.len() == 1 => {
            results[todo[0]] = Some(match all {
                Ok(_) => Err(no_position()),
                Err(e) => Err(e.into()),
            });
        }
        _ => {
            for &i in &todo {
                let job = &batch[i];
                results[i] = Some(if built_on_failed(job, failed) {
                    Err(orphaned())
                } else {
                    match store_jobs(store, &[job]).await {
                        Ok(p) if p.len() == job.events.len() => Ok(p),
                        Ok(_) => Err(no_position()),
                        Err(e) => Err(e.into()),
                    }
                });
                if matches!(results[i], Some(Err(_))) {
                    remember_failed(job, failed);
                }
            }
        }
    }
    let results: Vec<Result<Vec<i64>, CoreError>> = results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(no_position())))
        .collect();
    let mut highest = None;
    for (job, result) in batch.iter().zip(&results) {
        let ahead = job.guard.is_none();
        match result {
            Ok(p) => {
                for (e, &p) in job.events.iter().zip(p) {
                    memo.appended(e, p, ahead);
                    let before = match streams.room_events.rows(&e.room_id) {
                        Rows::UpTo(q) => q,
                        Rows::Nothing => 0,
                        Rows::Unknown => p - 1,
                    };
                    memo.keep_recent(e, p, before);
                    streams.room_events.note(e.room_id.clone(), p);
                    if e.state_key.is_some() || e.kind == "m.room.redaction" {
                        streams.room_state.note(e.room_id.clone(), p);
                    }
                    if e.relation.is_some() {
                        streams.room_relations.note(e.room_id.clone(), p);
                    }
                    e.members_changed()
                        .for_each(|user| streams.user_memberships.bump(user.to_owned()));
                }
                highest = highest.max(p.last().copied());
            }
            Err(_) => {
                remember_failed(job, failed);
                job.events.iter().for_each(|e| memo.failed(e));
            }
        }
        // Only now: a committed transaction is in `sent_txns` before it stops being pending,
        // so a repeat of it is never taken for new in between.
        if ahead {
            job.events.iter().for_each(|e| memo.settled(e));
        }
    }
    if let Some(p) = highest {
        streams.advance(|s| s.events = s.events.max(p));
    }
    for (job, result) in batch.drain(..).zip(results) {
        // A caller that has gone drops the answer, and with it the room's lock.
        let _ = job.reply.send((result, job.guard));
    }
}

/// Whether a job names as a prev event an event whose commit failed.
fn built_on_failed(job: &Job, failed: &HashSet<String>) -> bool {
    !failed.is_empty()
        && job
            .events
            .iter()
            .any(|e| e.prev_events.iter().any(|p| failed.contains(p)))
}

fn remember_failed(job: &Job, failed: &mut HashSet<String>) {
    if failed.len() >= FAILED_REMEMBERED {
        failed.clear();
    }
    failed.extend(job.events.iter().map(|e| e.event_id.clone()));
}

fn orphaned() -> CoreError {
    CoreError::Internal("an event this one was built on could not be committed".into())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use estuary_store::Redaction;

    fn message(room: &str, n: i64) -> NewEvent {
        NewEvent {
            event_id: format!("$e{n}"),
            room_id: room.to_owned(),
            depth: n,
            sender: "@a:x".into(),
            kind: "m.room.message".into(),
            state_key: None,
            origin_server_ts: n,
            pdu: format!("{{\"n\":{n}}}"),
            membership: None,
            prev_events: vec![],
            txn: None,
            replaces_state: None,
            relation: None,
            redaction: None,
            state_group: "g".into(),
            new_group: None,
            state_update: StateUpdate::Own,
        }
    }

    fn positions(events: Option<Vec<StoredEvent>>) -> Option<Vec<i64>> {
        events.map(|e| e.iter().map(|e| e.stream_ordering).collect())
    }

    #[test]
    fn recent_events_answer_only_what_memory_holds_whole() {
        let memo = Memo::default();
        assert_eq!(memo.recent_events("!r", 0, 100, 10), None, "nothing kept yet");
        // The room's newest event before these was at 10; other rooms' events sit between.
        memo.keep_recent(&message("!r", 12), 12, 10);
        memo.keep_recent(&message("!r", 15), 15, 12);
        memo.keep_recent(&message("!o", 16), 16, 0);
        assert_eq!(positions(memo.recent_events("!r", 10, 100, 10)), Some(vec![12, 15]));
        assert_eq!(
            positions(memo.recent_events("!r", 12, 14, 10)),
            Some(vec![]),
            "a quiet window"
        );
        assert_eq!(
            positions(memo.recent_events("!r", 11, 15, 1)),
            Some(vec![15]),
            "the newest of a limit"
        );
        assert_eq!(
            memo.recent_events("!r", 9, 100, 10),
            None,
            "the event at 10 is not kept"
        );
        assert_eq!(
            positions(memo.recent_events("!r", 0, 100, 2)),
            Some(vec![12, 15]),
            "the newest two are kept"
        );
        assert_eq!(positions(memo.recent_events("!o", 0, 100, 5)), Some(vec![16]));

        // Past RECENT_PER_ROOM the oldest go, and the floor moves up to them.
        for n in 20..20 + RECENT_PER_ROOM as i64 {
            memo.keep_recent(&message("!r", n), n, n - 1);
        }
        assert_eq!(memo.recent_events("!r", 10, 100, 100), None);
        let newest = memo.recent_events("!r", 15, 100, 100).unwrap();
        assert_eq!(newest.len(), RECENT_PER_ROOM);
        assert_eq!(newest[0].event_id, "$e20");
        assert_eq!(newest[0].pdu, "{\"n\":20}");

        // A redaction changes a kept event: only what follows it is kept.
        let mut redaction = message("!r", 50);
        redaction.redaction = Some(Redaction {
            target: "$e30".into(),
            pdu: "{}".into(),
            because: "{}".into(),
        });
        memo.keep_recent(&redaction, 50, 35);
        assert_eq!(memo.recent_events("!r", 34, 100, 100), None);
        assert_eq!(positions(memo.recent_events("!r", 35, 100, 100)), Some(vec![50]));
    }

    #[tokio::test]
    async fn a_smaller_batch_waits_for_the_last_ones_senders() {
        let (tx, mut rx) = mpsc::channel(16);
        let mut batch = vec![0];
        // The last batch had three: the two still to come are waited for (the window here is
        // long so that the test does not race it)...
        let late = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            tx.send(1).await.unwrap();
            tx.send(2).await.unwrap();
            tx
        });
        gather(&mut rx, &mut batch, 3, Duration::from_secs(60)).await;
        assert_eq!(batch, [0, 1, 2]);
        // ...a batch as large as the last is not held back, and leaves the queue alone...
        let tx = late.await.unwrap();
        tx.send(3).await.unwrap();
        gather(&mut rx, &mut batch, 3, Duration::from_secs(60)).await;
        assert_eq!(batch, [0, 1, 2]);
        // ...and a window with nothing more coming, or a closed queue, ends the wait.
        let mut batch = Vec::new();
        gather(&mut rx, &mut batch, 10, Duration::from_millis(5)).await;
        assert_eq!(batch, [3]);
        drop(tx);
        gather(&mut rx, &mut batch, 10, Duration::from_secs(60)).await;
        assert_eq!(batch, [3]);
    }
}
