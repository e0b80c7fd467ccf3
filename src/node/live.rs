//! Live views for subscriptions, built from this node's own applied log (the store's bus), so every
//! node of a cluster — a follower too — serves them: per-broadcast stats with the join and refusal
//! rates of the last [`WINDOW_SECS`] seconds, a broadcast's stage events, and a viewer's own seat
//! (its `assignment`), which keeps the session alive while it is open.
//!
//! One task reads the bus and keeps the rolling rates, per-broadcast change counters that stats
//! streams watch (so a stream wakes only when its broadcast changed), and the open assignments by
//! session id (so a session's end reaches its subscriber without every subscriber reading every
//! event).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::Stream;
use futures_util::stream;
use tokio::sync::watch;

use crate::clock::now_ms;
use crate::fleet::event::{Change, StageStep};
use crate::fleet::stats::{self, Stats};
use crate::fleet::{Millis, Stage, StageState};
use crate::state::{Applied, Store, Subscription};

/// Joins per second and refusals are counted over this many seconds.
pub const WINDOW_SECS: i64 = 10;

pub type BoxStream<T> = Pin<Box<dyn Stream<Item = T> + Send>>;

/// One broadcast's numbers as a subscriber sees them.
#[derive(Clone, Debug, PartialEq)]
pub struct LiveStats {
    pub broadcast_id: String,
    pub stats: Stats,
    /// Admitted joins per second over the last [`WINDOW_SECS`] seconds.
    pub joins_per_second: f64,
    /// Refused joins over the last [`WINDOW_SECS`] seconds, by reason (a refusal's label).
    pub refusals: BTreeMap<&'static str, u64>,
    /// The applied log index these numbers are of, and when its last change to this broadcast
    /// was made (proposer's clock): subscribers measure delivery delay against it.
    pub applied_index: u64,
    pub changed_at_ms: Millis,
}

impl LiveStats {
    /// Whether a subscriber would see the same numbers: the applied index and the time of the
    /// last change move with entries that change nothing shown (renewals, a reclaimed intent),
    /// and a message for those alone would cost every subscriber a frame for nothing.
    pub fn looks_the_same(&self, other: &LiveStats) -> bool {
        self.broadcast_id == other.broadcast_id
            && self.stats == other.stats
            && self.joins_per_second == other.joins_per_second
            && self.refusals == other.refusals
    }
}

/// A stage's step, as `stageEvents` sends it. The first messages are the stages as they are
/// (`current: true`), then each change as it is applied.
#[derive(Clone, Debug)]
pub struct StageEvent {
    pub index: u64,
    pub at_ms: Millis,
    pub stage_id: String,
    pub step: StageStep,
    /// The stage as it is after the step (absent once deleted).
    pub stage: Option<Stage>,
    pub current: bool,
}

#[derive(Default)]
struct Window {
    /// (second, joins, refusals by reason), oldest first.
    seconds: VecDeque<(i64, u64, BTreeMap<&'static str, u64>)>,
    changed_at_ms: Millis,
}

impl Window {
    fn slot(&mut self, at_ms: Millis) -> &mut (i64, u64, BTreeMap<&'static str, u64>) {
        let sec = at_ms.div_euclid(1000);
        if self.seconds.back().is_none_or(|s| s.0 < sec) {
            self.seconds.push_back((sec, 0, BTreeMap::new()));
        }
        // A late entry (clocks of two proposers) counts in the newest second.
        self.seconds.back_mut().expect("pushed above")
    }

    fn prune(&mut self, now_ms: Millis) {
        let oldest = now_ms.div_euclid(1000) - WINDOW_SECS;
        while self.seconds.front().is_some_and(|s| s.0 <= oldest) {
            self.seconds.pop_front();
        }
    }

    fn rates(&mut self, now_ms: Millis) -> (f64, BTreeMap<&'static str, u64>) {
        self.prune(now_ms);
        let joins: u64 = self.seconds.iter().map(|s| s.1).sum();
        let mut refusals = BTreeMap::new();
        for (reason, n) in self.seconds.iter().flat_map(|s| s.2.iter()) {
            *refusals.entry(*reason).or_default() += n;
        }
        (joins as f64 / WINDOW_SECS as f64, refusals)
    }
}

#[derive(Default)]
struct Inner {
    windows: HashMap<String, Window>,
    /// Per broadcast, bumped on every change to it; only broadcasts someone watches have one.
    versions: HashMap<String, watch::Sender<u64>>,
    /// Open assignment subscriptions by session id.
    assignments: HashMap<String, Vec<Arc<Notices>>>,
}

pub struct Live {
    store: Arc<Store>,
    inner: Mutex<Inner>,
}

impl Live {
    pub fn new(store: Arc<Store>) -> Arc<Self> {
        let live = Arc::new(Live {
            store: store.clone(),
            inner: Mutex::default(),
        });
        let bus = store.subscribe();
        tokio::spawn(run(Arc::downgrade(&live), bus));
        live
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("live state lock")
    }

    /// Session ids whose assignment subscription is open here: they are renewed like heartbeats.
    pub fn open_sessions(&self) -> Vec<String> {
        self.inner().assignments.keys().cloned().collect()
    }

    fn watch(&self, broadcast_id: &str) -> watch::Receiver<u64> {
        self.inner()
            .versions
            .entry(broadcast_id.to_string())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// One broadcast's stats now.
    pub fn stats(&self, broadcast_id: &str) -> LiveStats {
        let view = self.store.view();
        let now = now_ms();
        let (joins_per_second, refusals, changed_at_ms) = {
            let mut inner = self.inner();
            match inner.windows.get_mut(broadcast_id) {
                Some(w) => {
                    let (j, r) = w.rates(now);
                    (j, r, w.changed_at_ms)
                }
                None => (0.0, BTreeMap::new(), 0),
            }
        };
        LiveStats {
            broadcast_id: broadcast_id.to_string(),
            stats: stats::of(&view.fleet, Some(broadcast_id)),
            joins_per_second,
            refusals,
            applied_index: view.last_applied.map_or(0, |l| l.index),
            changed_at_ms,
        }
    }

    /// `stats(broadcastId)`: the current value at once, then each change as soon as it is
    /// applied, paced by [`Pacer`] to one message per `every` on average; only values a
    /// subscriber would see as different are sent. The rates also move with the clock alone (a
    /// 10 s window): while they do and nothing else changes, they are looked at again once
    /// 1.5 × `every` has passed without a message.
    pub fn stats_stream(self: &Arc<Self>, broadcast_id: &str, every: Duration) -> BoxStream<LiveStats> {
        let changes = self.watch(broadcast_id);
        let state = (
            self.clone(),
            broadcast_id.to_string(),
            changes,
            Pacer::new(broadcast_id, every),
            None::<LiveStats>,
        );
        Box::pin(stream::unfold(
            state,
            move |(live, id, mut changes, mut pacer, last)| async move {
                let Some(sent) = last else {
                    let now = live.stats(&id);
                    pacer.sent(now_ms(), true);
                    pacer.saw_change(now_ms());
                    return Some((now.clone(), (live, id, changes, pacer, Some(now))));
                };
                loop {
                    let moving = sent.joins_per_second != 0.0 || !sent.refusals.is_empty();
                    let woken_by_change = tokio::select! {
                        r = changes.changed() => { r.ok()?; true }
                        () = sleep_until_ms(pacer.next_look()), if moving => false,
                    };
                    // A change (even one that came with the look at the rates) waits for its
                    // window. (`changed()` marks what it saw as seen: `has_changed` tells only
                    // of a change that came after it.)
                    let real = woken_by_change || changes.has_changed().unwrap_or(true);
                    let mut noticed = None;
                    if real {
                        let at = now_ms();
                        sleep_until_ms(pacer.release(at)).await;
                        // More changes came while it waited: the last one is about as old as
                        // `changedAtMs` says (clamped: in a cluster that is another node's clock).
                        let more = changes.has_changed().unwrap_or(false);
                        changes.borrow_and_update();
                        noticed = Some((at, more));
                    }
                    let now = live.stats(&id);
                    if sent.looks_the_same(&now) {
                        // Nothing a subscriber would see (a renewal batch, say): not a change.
                        pacer.nothing_new(now_ms());
                        continue;
                    }
                    if let Some((at, more)) = noticed {
                        pacer.saw_change(if more {
                            now.changed_at_ms.clamp(at, now_ms())
                        } else {
                            at
                        });
                    }
                    pacer.sent(now_ms(), real);
                    return Some((now.clone(), (live, id, changes, pacer, Some(now))));
                }
            },
        ))
    }

    /// `broadcast(id)`: the broadcast now, then again whenever it changed, at most once per
    /// window of `every` (as `stats`); ends when the broadcast is forgotten.
    pub fn broadcast_stream(self: &Arc<Self>, id: &str, every: Duration) -> BoxStream<crate::fleet::Broadcast> {
        let every_ms = (every.as_millis() as i64).max(1);
        let changes = self.watch(id);
        // What a subscriber can see: the broadcast and its stages (lifecycle, seats, media). A
        // stage created, deleted or filling up changes the message even when the broadcast's own
        // record does not.
        type Seen = (crate::fleet::Broadcast, Vec<crate::fleet::Stage>);
        let state = (self.clone(), id.to_string(), changes, None::<(Seen, i64)>);
        Box::pin(stream::unfold(state, move |(live, id, mut changes, last)| async move {
            loop {
                if let Some((_, window)) = &last {
                    changes.changed().await.ok()?;
                    sleep_until_ms((window + 1) * every_ms).await;
                }
                changes.borrow_and_update();
                let view = live.store.view();
                let broadcast = view.fleet.broadcasts.get(&id).cloned()?;
                let mut stages: Vec<_> = view.fleet.stages_of(&id).cloned().collect();
                stages.sort_by_key(|s| s.slot);
                let now = (broadcast, stages);
                if last.as_ref().is_none_or(|(seen, _)| *seen != now) {
                    let window = now_ms().div_euclid(every_ms);
                    return Some((now.0.clone(), (live, id, changes, Some((now, window)))));
                }
            }
        }))
    }

    /// `stageEvents(broadcastId)`: the broadcast's stages as they are, then every step of every
    /// stage as it is applied. A subscriber that falls behind the bus gets the stages as they are
    /// again (marked `current`).
    pub fn stage_events(self: &Arc<Self>, broadcast_id: &str) -> BoxStream<StageEvent> {
        let bus = self.store.subscribe();
        let first = self.current_stages(broadcast_id);
        let state = (self.clone(), broadcast_id.to_string(), bus, VecDeque::from(first));
        Box::pin(stream::unfold(state, |(live, id, mut bus, mut queue)| async move {
            loop {
                if let Some(e) = queue.pop_front() {
                    return Some((e, (live, id, bus, queue)));
                }
                match bus.recv().await? {
                    Applied::Reset { .. } => queue.extend(live.current_stages(&id)),
                    Applied::Changes(events) => {
                        let view = live.store.view();
                        for e in events.iter() {
                            if let Change::Stage {
                                id: stage_id,
                                broadcast_id,
                                step,
                            } = &e.change
                                && *broadcast_id == id
                            {
                                queue.push_back(StageEvent {
                                    index: e.index,
                                    at_ms: e.at_ms,
                                    stage_id: stage_id.clone(),
                                    step: step.clone(),
                                    stage: view.fleet.stages.get(stage_id).cloned(),
                                    current: false,
                                });
                            }
                        }
                    }
                }
            }
        }))
    }

    fn current_stages(&self, broadcast_id: &str) -> Vec<StageEvent> {
        let view = self.store.view();
        let index = view.last_applied.map_or(0, |l| l.index);
        let mut stages: Vec<&Stage> = view.fleet.stages_of(broadcast_id).collect();
        stages.sort_by_key(|s| s.slot);
        stages
            .into_iter()
            .map(|s| StageEvent {
                index,
                at_ms: now_ms(),
                stage_id: s.id.clone(),
                step: match s.state {
                    StageState::Creating => StageStep::Creating,
                    StageState::Active => StageStep::Ready,
                    StageState::Deleting => StageStep::Deleting,
                },
                stage: Some(s.clone()),
                current: true,
            })
            .collect()
    }

    /// Register an open assignment for `session_id`; it hears the session's end, and is
    /// deregistered when dropped.
    fn open_assignment(self: &Arc<Self>, session_id: &str) -> OpenAssignment {
        let notices = Arc::new(Notices::default());
        self.inner()
            .assignments
            .entry(session_id.to_string())
            .or_default()
            .push(notices.clone());
        OpenAssignment {
            notices,
            live: self.clone(),
            session_id: session_id.to_string(),
        }
    }

    fn close_assignment(&self, session_id: &str) {
        let mut inner = self.inner();
        if let Some(v) = inner.assignments.get_mut(session_id) {
            v.retain(|tx| !tx.is_closed());
            if v.is_empty() {
                inner.assignments.remove(session_id);
            }
        }
    }

    fn apply(&self, applied: Applied) {
        let mut inner = self.inner();
        match applied {
            Applied::Reset { .. } => {
                for v in inner.versions.values() {
                    v.send_modify(|n| *n += 1);
                }
                // What ended while this node did not see it: the sessions that are gone.
                let view = self.store.view();
                let gone: Vec<String> = inner
                    .assignments
                    .keys()
                    .filter(|id| view.session(id).is_none())
                    .cloned()
                    .collect();
                for id in gone {
                    for n in inner.assignments.remove(&id).unwrap_or_default() {
                        n.end(None);
                    }
                }
                // The others may have been moved meanwhile: each looks again.
                for n in inner.assignments.values().flatten() {
                    n.moved();
                }
            }
            Applied::Changes(events) => {
                let mut touched: Vec<&str> = Vec::new();
                for e in events.iter() {
                    let broadcast = match &e.change {
                        Change::Seated {
                            broadcast_id, count, ..
                        } => {
                            let w = inner.windows.entry(broadcast_id.clone()).or_default();
                            w.slot(e.at_ms).1 += u64::from(*count);
                            w.changed_at_ms = e.at_ms;
                            broadcast_id
                        }
                        Change::Refused {
                            broadcast_id,
                            reason,
                            count,
                        } => {
                            let w = inner.windows.entry(broadcast_id.clone()).or_default();
                            *w.slot(e.at_ms).2.entry(reason).or_default() += u64::from(*count);
                            w.changed_at_ms = e.at_ms;
                            broadcast_id
                        }
                        Change::SessionEnded {
                            session_id,
                            broadcast_id,
                            reason,
                            ..
                        } => {
                            for n in inner.assignments.remove(session_id).unwrap_or_default() {
                                n.end(Some(*reason));
                            }
                            inner.windows.entry(broadcast_id.clone()).or_default().changed_at_ms = e.at_ms;
                            broadcast_id
                        }
                        Change::Broadcast { id, .. } | Change::Stage { broadcast_id: id, .. } => {
                            inner.windows.entry(id.clone()).or_default().changed_at_ms = e.at_ms;
                            id
                        }
                        Change::SessionMoved {
                            session_id,
                            broadcast_id,
                            ..
                        } => {
                            for n in inner.assignments.get(session_id).into_iter().flatten() {
                                n.moved();
                            }
                            inner.windows.entry(broadcast_id.clone()).or_default().changed_at_ms = e.at_ms;
                            broadcast_id
                        }
                        Change::Publishers { broadcast_id, .. } => broadcast_id,
                        Change::HostAdded { broadcast_id, .. } => broadcast_id,
                        Change::Renewed { .. } | Change::Meta => continue,
                    };
                    if touched.last() != Some(&broadcast.as_str()) {
                        touched.push(broadcast);
                    }
                }
                touched.sort_unstable();
                touched.dedup();
                let mut unwatched = Vec::new();
                for b in touched {
                    if let Some(v) = inner.versions.get(b) {
                        if v.receiver_count() == 0 {
                            unwatched.push(b.to_string());
                        } else {
                            v.send_modify(|n| *n += 1);
                        }
                    }
                }
                for b in unwatched {
                    inner.versions.remove(&b);
                }
                // Windows of broadcasts that are gone and quiet are dropped.
                let now = now_ms();
                inner.windows.retain(|_, w| {
                    w.prune(now);
                    !w.seconds.is_empty() || now - w.changed_at_ms < WINDOW_SECS * 1000
                });
            }
        }
    }
}

/// Sleep until the wall clock reads `ms` (at once if it already does).
async fn sleep_until_ms(ms: Millis) {
    let left = ms - now_ms();
    if left > 0 {
        tokio::time::sleep(Duration::from_millis(left as u64)).await;
    }
}

async fn run(live: std::sync::Weak<Live>, mut bus: Subscription) {
    while let Some(applied) = bus.recv().await {
        let Some(live) = live.upgrade() else { return };
        live.apply(applied);
    }
}

mod assignment;
mod pacer;

pub use assignment::AssignmentUpdate;
use assignment::{Notices, OpenAssignment};
use pacer::Pacer;

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::assignment::Notice;
    use super::*;
    use crate::fleet::event::EndReason;
    use crate::state::{Event, StoreConfig};

    async fn store() -> (tempfile::TempDir, Arc<Store>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreConfig {
            data_dir: dir.path().to_path_buf(),
            node_id: 1,
            advertise_addr: "127.0.0.1:0".into(),
            sled_cache_bytes: 1 << 20,
            snapshot_every: 1_000,
            cluster: None,
        })
        .await
        .unwrap();
        (dir, Arc::new(store))
    }

    fn ended(session: &str, reason: EndReason) -> Applied {
        Applied::Changes(
            vec![Event {
                index: 9,
                at_ms: 1_000,
                change: Change::SessionEnded {
                    session_id: session.into(),
                    broadcast_id: "b".into(),
                    stage_id: "b:0".into(),
                    reason,
                },
            }]
            .into(),
        )
    }

    #[tokio::test]
    async fn a_session_end_reaches_its_open_assignments_only_with_its_reason() {
        let (_dir, store) = store().await;
        let live = Live::new(store.clone());
        let mut a = live.open_assignment("s1");
        let mut again = live.open_assignment("s1");
        let other = live.open_assignment("s2");
        assert_eq!(
            live.open_sessions().len(),
            2,
            "open assignments are renewed, once per session"
        );

        live.apply(ended("s1", EndReason::Expired));
        for open in [&mut a, &mut again] {
            let got = open.notices.recv().await;
            assert_eq!(
                got,
                Notice::Ended(Some(EndReason::Expired)),
                "both subscribers of s1 hear why"
            );
        }
        assert!(
            other.notices.try_recv().is_none(),
            "another session's subscriber hears nothing"
        );
        assert_eq!(live.open_sessions(), vec!["s2".to_string()], "s1 is no longer renewed");
        drop(other);
        assert!(live.open_sessions().is_empty(), "a closed assignment stops renewing");
        store.shutdown().await;
    }

    #[tokio::test]
    async fn a_stats_change_right_after_the_last_message_waits_its_turn() {
        use futures_util::{FutureExt, StreamExt};
        let (_dir, store) = store().await;
        let live = Live::new(store.clone());
        let mut stats = live.stats_stream("b", Duration::from_secs(3_600));
        let first = stats.next().await.expect("the current value at once");
        assert_eq!(first.joins_per_second, 0.0);
        live.apply(Applied::Changes(
            vec![Event {
                index: 2,
                at_ms: now_ms(),
                change: Change::Seated {
                    broadcast_id: "b".into(),
                    stage_id: "b:0".into(),
                    count: 5,
                },
            }]
            .into(),
        ));
        assert!(!live.stats("b").looks_the_same(&first), "a change is there to send");
        assert!(
            stats.next().now_or_never().is_none(),
            "one message per hour: the change right after the first waits its turn"
        );
        store.shutdown().await;
    }

    #[tokio::test]
    async fn moves_coalesce_and_an_end_behind_them_is_never_lost() {
        let n = Notices::default();
        n.moved();
        n.moved();
        n.end(Some(EndReason::Left));
        n.end(None);
        assert_eq!(
            n.recv().await,
            Notice::Ended(Some(EndReason::Left)),
            "the first reason told"
        );
        let m = Notices::default();
        m.moved();
        m.moved();
        assert_eq!(m.recv().await, Notice::Moved);
        assert_eq!(
            m.try_recv(),
            None,
            "many moves read as one: each reads the session anew"
        );
    }

    #[test]
    fn rates_count_the_last_ten_seconds_only() {
        let mut w = Window::default();
        w.slot(1_000).1 += 20;
        *w.slot(5_500).2.entry("capacity_exhausted").or_default() += 3;
        let (jps, refused) = w.rates(5_900);
        assert_eq!(jps, 2.0, "20 joins over a 10 s window");
        assert_eq!(refused.get("capacity_exhausted"), Some(&3));
        let (jps, refused) = w.rates(11_100);
        assert_eq!(jps, 0.0, "second 1 left the window at 11 s");
        assert_eq!(refused.get("capacity_exhausted"), Some(&3));
        let (_, refused) = w.rates(16_000);
        assert!(refused.is_empty());
    }
}
