//! Runs a group of loops exactly while this node leads: started when it becomes leader for a
//! term, cancelled (every task aborted and awaited) when it loses leadership, when a new term
//! begins, or when the process shuts down. A group whose loop ends on its own is restarted.

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::state::{Leadership, NodeId};

/// How long a group whose loop ended waits before it is started again.
const RESTART_AFTER: Duration = Duration::from_secs(1);

pub struct Supervisor {
    stop: watch::Sender<bool>,
    running: watch::Receiver<Option<u64>>,
    task: JoinHandle<()>,
}

impl Supervisor {
    /// Watch `leadership` and run `start(term)`'s group while `me` leads in `term`.
    pub fn spawn<F>(me: NodeId, mut leadership: watch::Receiver<Leadership>, mut start: F) -> Self
    where
        F: FnMut(u64) -> JoinSet<()> + Send + 'static,
    {
        let (stop, mut stopped) = watch::channel(false);
        let (running_tx, running) = watch::channel(None);
        let task = tokio::spawn(async move {
            let mut group: Option<(u64, JoinSet<()>)> = None;
            loop {
                let now = *leadership.borrow_and_update();
                let want = (now.leader == Some(me)).then_some(now.term);
                if group.as_ref().map(|g| g.0) != want {
                    if let Some((term, set)) = group.take() {
                        cancel(set).await;
                        tracing::info!(term, "control loops stopped (leadership changed)");
                    }
                    if let Some(term) = want {
                        group = Some((term, start(term)));
                        tracing::info!(term, "leading: control loops started");
                    }
                    running_tx.send_replace(want);
                }
                tokio::select! {
                    changed = leadership.changed() => if changed.is_err() { break },
                    _ = stopped.changed() => break,
                    Some(ended) = next_end(&mut group) => {
                        let (term, set) = group.take().expect("a group ended");
                        match ended {
                            Err(e) if e.is_panic() => tracing::error!(term, error = %e, "a control loop panicked; restarting the group"),
                            _ => tracing::error!(term, "a control loop ended; restarting the group"),
                        }
                        cancel(set).await;
                        running_tx.send_replace(None);
                        tokio::select! {
                            _ = tokio::time::sleep(RESTART_AFTER) => {}
                            _ = stopped.changed() => break,
                        }
                    }
                }
            }
            if let Some((term, set)) = group.take() {
                cancel(set).await;
                tracing::info!(term, "control loops stopped (shutdown)");
            }
            running_tx.send_replace(None);
        });
        Self { stop, running, task }
    }

    /// The term whose group runs now (`None`: none runs).
    pub fn running(&self) -> watch::Receiver<Option<u64>> {
        self.running.clone()
    }

    /// Cancel the group and stop watching; returns once every loop has ended.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn next_end(group: &mut Option<(u64, JoinSet<()>)>) -> Option<Result<(), tokio::task::JoinError>> {
    match group {
        Some((_, set)) if !set.is_empty() => set.join_next().await,
        _ => std::future::pending().await,
    }
}

async fn cancel(mut set: JoinSet<()>) {
    set.abort_all();
    while set.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    const DEADLINE: Duration = Duration::from_secs(5);

    /// Counts live loops: one more while a loop runs, one less when it is dropped (cancelled).
    struct Alive(Arc<AtomicUsize>, watch::Sender<usize>);

    impl Alive {
        fn new(count: &Arc<AtomicUsize>, tx: &watch::Sender<usize>) -> Self {
            tx.send_replace(count.fetch_add(1, Ordering::SeqCst) + 1);
            Alive(count.clone(), tx.clone())
        }
    }

    impl Drop for Alive {
        fn drop(&mut self) {
            self.1.send_replace(self.0.fetch_sub(1, Ordering::SeqCst) - 1);
        }
    }

    async fn until(rx: &mut watch::Receiver<usize>, want: usize) {
        let reached = tokio::time::timeout(DEADLINE, rx.wait_for(|n| *n == want))
            .await
            .is_ok();
        assert!(reached, "{want} loops alive within {DEADLINE:?}; {} are", *rx.borrow());
    }

    fn lead(leader: Option<NodeId>, term: u64) -> Leadership {
        Leadership { leader, term }
    }

    #[tokio::test]
    async fn loops_run_exactly_while_this_node_leads() {
        let (leadership, rx) = watch::channel(lead(None, 0));
        let count = Arc::new(AtomicUsize::new(0));
        let (alive_tx, mut alive) = watch::channel(0);
        let started = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (c, t, s) = (count.clone(), alive_tx.clone(), started.clone());
        let sup = Supervisor::spawn(1, rx, move |term| {
            s.lock().unwrap().push(term);
            let mut set = JoinSet::new();
            for _ in 0..2 {
                let guard = Alive::new(&c, &t);
                set.spawn(async move {
                    let _guard = guard;
                    std::future::pending::<()>().await
                });
            }
            set
        });
        let mut running = sup.running();

        // Another node leads: nothing runs.
        leadership.send_replace(lead(Some(2), 1));
        tokio::task::yield_now().await;
        assert_eq!(*alive.borrow(), 0);

        // This node wins term 2: both loops start.
        leadership.send_replace(lead(Some(1), 2));
        until(&mut alive, 2).await;
        tokio::time::timeout(DEADLINE, running.wait_for(|t| *t == Some(2)))
            .await
            .unwrap()
            .unwrap();

        // It loses leadership: both stop.
        leadership.send_replace(lead(Some(3), 3));
        until(&mut alive, 0).await;
        tokio::time::timeout(DEADLINE, running.wait_for(|t| t.is_none()))
            .await
            .unwrap()
            .unwrap();

        // Leads again in a later term: a fresh group for that term.
        leadership.send_replace(lead(Some(1), 5));
        until(&mut alive, 2).await;

        // A new term led by this node again (re-elected): the old group ends, a new one starts.
        leadership.send_replace(lead(Some(1), 6));
        tokio::time::timeout(DEADLINE, running.wait_for(|t| *t == Some(6)))
            .await
            .unwrap()
            .unwrap();
        until(&mut alive, 2).await;
        assert_eq!(*started.lock().unwrap(), vec![2, 5, 6]);

        // Shutdown cancels the group and returns only once every loop ended.
        sup.stop().await;
        assert_eq!(count.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_group_whose_loop_ends_is_restarted() {
        let (_leadership, rx) = watch::channel(lead(Some(1), 4));
        let (starts_tx, mut starts) = watch::channel(0usize);
        let sup = Supervisor::spawn(1, rx, move |_| {
            starts_tx.send_modify(|n| *n += 1);
            let mut set = JoinSet::new();
            let first = *starts_tx.borrow() == 1;
            set.spawn(async move {
                if !first {
                    std::future::pending::<()>().await
                }
            });
            set
        });
        tokio::time::timeout(DEADLINE, starts.wait_for(|n| *n == 2))
            .await
            .expect("the group is started again after its loop ended")
            .unwrap();
        sup.stop().await;
    }
}
