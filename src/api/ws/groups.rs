//! One execution per distinct subscription, shared by every subscriber of it. Thousands of viewers
//! watching `stats(broadcastId: "b")` cost one resolver stream and one serialization per update:
//! the payload is serialized once and framed per subscriber by concatenation (the way Hasura
//! multiplexes identical live queries). A late subscriber gets the latest payload at once.
//!
//! Only subscriptions that may be shared run here (a socket polls its other operations itself).
//! A subscriber whose socket queue is full is dropped from its groups and its socket is closed,
//! never buffered without limit.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use axum::extract::ws::Message;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use super::frames;
use crate::metrics::Metrics;

/// Where a socket's frames go, and how the socket learns that it fell behind or that one of its
/// operations ended. Every clone is a sender: the socket's writer sees the end of its queue once
/// the last one is dropped.
pub struct Outbox {
    signals: Arc<Signals>,
}

/// One socket's queue of frames for its writer and what the groups tell the socket besides:
/// its queue was found full, or operations ended. One small struct per socket: a tokio channel
/// per socket (its padded state and a first block of 32 slots) and one for the ended ids cost
/// ~3 KiB a subscriber, most of it while nothing is queued.
#[derive(Default)]
pub struct Signals {
    queue: Mutex<std::collections::VecDeque<Message>>,
    capacity: usize,
    queued: Notify,
    senders: AtomicUsize,
    writer_gone: AtomicBool,
    tripped: AtomicBool,
    notify: Notify,
    ended: Mutex<Vec<String>>,
    ended_notify: Notify,
}

impl Signals {
    /// Resolves once the socket's queue was found full.
    pub async fn tripped(&self) {
        loop {
            let notified = self.notify.notified();
            if self.tripped.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }

    /// The ids of operations that ended since the last call (waits for at least one).
    pub async fn ended(&self) -> Vec<String> {
        loop {
            let notified = self.ended_notify.notified();
            let ids = std::mem::take(&mut *self.ended.lock().expect("ended lock"));
            if !ids.is_empty() {
                return ids;
            }
            notified.await;
        }
    }

    fn end(&self, op_id: String) {
        self.ended.lock().expect("ended lock").push(op_id);
        self.ended_notify.notify_one();
    }
}

/// The writer's end of a socket's queue.
pub struct Inbox {
    signals: Arc<Signals>,
}

impl Inbox {
    /// The next frame; `None` once every `Outbox` is gone and the queue is empty.
    pub async fn recv(&mut self) -> Option<Message> {
        loop {
            let notified = self.signals.queued.notified();
            {
                let mut queue = self.signals.queue.lock().expect("queue lock");
                if let Some(m) = queue.pop_front() {
                    // A burst's room is given back once it is written.
                    if queue.is_empty() && queue.capacity() > 16 {
                        queue.shrink_to(4);
                    }
                    return Some(m);
                }
            }
            if self.signals.senders.load(Ordering::Acquire) == 0 {
                return None;
            }
            notified.await;
        }
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        self.signals.writer_gone.store(true, Ordering::Release);
    }
}

impl Clone for Outbox {
    fn clone(&self) -> Self {
        self.signals.senders.fetch_add(1, Ordering::AcqRel);
        Outbox {
            signals: self.signals.clone(),
        }
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        if self.signals.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.signals.queued.notify_one();
        }
    }
}

impl Outbox {
    /// A socket's queue of at most `capacity` frames: the senders' end, the writer's end, and the
    /// signals the socket watches.
    pub fn new(capacity: usize) -> (Self, Inbox, Arc<Signals>) {
        let signals = Arc::new(Signals {
            capacity,
            senders: AtomicUsize::new(1),
            ..Signals::default()
        });
        (
            Outbox {
                signals: signals.clone(),
            },
            Inbox {
                signals: signals.clone(),
            },
            signals,
        )
    }

    /// Queue `frame` without waiting; false when the socket is gone or its queue is full (then
    /// the socket is told it fell behind).
    pub fn offer(&self, frame: String) -> bool {
        let s = &self.signals;
        if s.writer_gone.load(Ordering::Acquire) {
            return false;
        }
        let mut queue = s.queue.lock().expect("queue lock");
        if queue.len() >= s.capacity {
            drop(queue);
            s.tripped.store(true, Ordering::Release);
            s.notify.notify_one();
            return false;
        }
        queue.push_back(Message::Text(frame.into()));
        drop(queue);
        s.queued.notify_one();
        true
    }
}

struct Member {
    op_id: String,
    id_json: String,
    out: Outbox,
}

#[derive(Default)]
struct Members {
    next: u64,
    list: HashMap<u64, Member>,
    /// The latest payload, for a subscriber that joins a running shared group.
    last: Option<Arc<str>>,
    ended: bool,
}

struct Group {
    key: String,
    members: Mutex<Members>,
    task: Mutex<Option<AbortHandle>>,
}

impl Group {
    fn members(&self) -> std::sync::MutexGuard<'_, Members> {
        self.members.lock().expect("group members lock")
    }
}

pub struct Groups {
    map: Mutex<HashMap<String, Arc<Group>>>,
    metrics: Arc<Metrics>,
}

/// A subscriber's place in a group; leaving (drop) ends the execution when it was the last.
pub struct Membership {
    groups: Weak<Groups>,
    group: Arc<Group>,
    member: u64,
}

impl Drop for Membership {
    fn drop(&mut self) {
        let Some(groups) = self.groups.upgrade() else { return };
        let mut map = groups.map();
        let mut members = self.group.members();
        members.list.remove(&self.member);
        if members.list.is_empty() && !members.ended {
            members.ended = true;
            if map.get(&self.group.key).is_some_and(|g| Arc::ptr_eq(g, &self.group)) {
                map.remove(&self.group.key);
            }
            if let Some(task) = self.group.task.lock().expect("group task lock").take() {
                task.abort();
            }
        }
    }
}

impl Groups {
    pub fn new(metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Groups {
            map: Mutex::default(),
            metrics,
        })
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Group>>> {
        self.map.lock().expect("groups lock")
    }

    /// Join the group `key` as operation `op_id` of the socket behind `out`; `start` runs the
    /// execution when this subscriber is the first.
    pub fn join(
        self: &Arc<Self>,
        key: String,
        op_id: &str,
        out: Outbox,
        start: impl FnOnce() -> BoxStream<'static, async_graphql::Response>,
    ) -> Membership {
        let mut map = self.map();
        let group = match map.get(&key) {
            Some(g) if !g.members().ended => g.clone(),
            _ => {
                let group = Arc::new(Group {
                    key: key.clone(),
                    members: Mutex::default(),
                    task: Mutex::default(),
                });
                let task = tokio::spawn(run(Arc::downgrade(self), group.clone(), start()));
                *group.task.lock().expect("group task lock") = Some(task.abort_handle());
                map.insert(key, group.clone());
                group
            }
        };
        let mut members = group.members();
        let n = members.next;
        members.next += 1;
        let id_json = frames::id_json(op_id);
        if let Some(last) = &members.last
            && out.offer(frames::next(&id_json, last))
        {
            self.metrics.subscription_frames.inc();
        }
        members.list.insert(
            n,
            Member {
                op_id: op_id.to_string(),
                id_json,
                out,
            },
        );
        drop(members);
        Membership {
            groups: Arc::downgrade(self),
            group,
            member: n,
        }
    }
}

/// One response as the JSON payload of a `next` frame, with the library's errors coded; counted
/// as one payload built (however many subscribers it is framed for).
pub fn payload(metrics: &Metrics, mut response: async_graphql::Response) -> String {
    crate::api::error::code_library_errors(&mut response.errors);
    metrics.subscription_payloads.inc();
    serde_json::to_string(&response).expect("responses serialize")
}

async fn run(groups: Weak<Groups>, group: Arc<Group>, mut stream: BoxStream<'static, async_graphql::Response>) {
    let metrics = match groups.upgrade() {
        Some(g) => g.metrics.clone(),
        None => return,
    };
    while let Some(response) = stream.next().await {
        let payload: Arc<str> = payload(&metrics, response).into();
        let mut members = group.members();
        let mut sent = 0;
        members.list.retain(|_, m| {
            let ok = m.out.offer(frames::next(&m.id_json, &payload));
            sent += u64::from(ok);
            ok
        });
        members.last = Some(payload);
        drop(members);
        metrics.subscription_frames.inc_by(sent);
    }
    // The execution ended: every subscriber gets `complete`, and its socket forgets the id.
    let groups = groups.upgrade();
    let mut map = groups.as_ref().map(|g| g.map());
    let mut members = group.members();
    members.ended = true;
    if let Some(map) = map.as_mut()
        && map.get(&group.key).is_some_and(|g| Arc::ptr_eq(g, &group))
    {
        map.remove(&group.key);
    }
    for m in members.list.values() {
        m.out.offer(frames::complete(&m.id_json));
        m.out.signals.end(m.op_id.clone());
    }
    members.list.clear();
}

#[cfg(test)]
mod queue_tests {
    use super::*;

    fn text(m: Option<Message>) -> String {
        match m {
            Some(Message::Text(t)) => t.to_string(),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn frames_come_out_in_order_and_the_end_comes_when_the_last_sender_goes() {
        let (out, mut inbox, signals) = Outbox::new(2);
        let other = out.clone();
        assert!(out.offer("a".into()));
        assert!(other.offer("b".into()));
        // full: refused, and the socket is told it fell behind
        assert!(!out.offer("c".into()));
        tokio::time::timeout(std::time::Duration::from_secs(1), signals.tripped())
            .await
            .expect("tripped");
        assert_eq!(text(inbox.recv().await), "a");
        assert_eq!(text(inbox.recv().await), "b");
        drop(out);
        assert!(other.offer("d".into()), "room again once written");
        drop(other);
        assert_eq!(text(inbox.recv().await), "d", "what was queued is still written");
        assert!(inbox.recv().await.is_none(), "then the end");
    }

    #[tokio::test]
    async fn a_writer_that_is_gone_takes_nothing_more() {
        let (out, inbox, _signals) = Outbox::new(4);
        drop(inbox);
        assert!(!out.offer("x".into()));
    }

    #[tokio::test]
    async fn a_waiting_writer_wakes_for_a_frame_and_for_the_end() {
        let (out, mut inbox, _signals) = Outbox::new(4);
        let writer = tokio::spawn(async move {
            let first = inbox.recv().await.map(|_| ());
            let end = inbox.recv().await.map(|_| ());
            (first, end)
        });
        tokio::task::yield_now().await;
        assert!(out.offer("x".into()));
        drop(out);
        let (first, end) = tokio::time::timeout(std::time::Duration::from_secs(1), writer)
            .await
            .expect("woken")
            .unwrap();
        assert_eq!((first, end), (Some(()), None));
    }
}
