//! How the `stats` subscription paces its messages (see [`Pacer`]), kept apart from the stream
//! that drives it so that it can be tested over simulated time.

use std::time::Duration;

use crate::fleet::Millis;

/// How `stats` paces its messages:
/// - a change that comes after a quiet spell (no change seen for 0.9 × `every`) goes at once: a
///   broadcast changing about once per `every` gets each change without delay, whatever its
///   phase (the first one after a storm may wait `every / 2`, below);
/// - otherwise at most one message carrying changes per wall-clock window of `every` (offset per
///   broadcast by a hash of its id, so that many broadcasts' fan-outs do not start on the same
///   millisecond): under a storm of changes, exactly one message per window, at its start;
/// - the rates alone (they decay with the clock) are looked at once 1.5 × `every` passed without
///   a message;
/// - never are two messages carrying changes closer than `every / 2` (a look at the rates alone
///   comes only after 1.5 × `every` without a message, and does not hold the next change back).
///
/// Tried before, each measured with 10,000 subscribers: spacing messages `every` from the
/// previous send (or a token bucket) settles into holding each of a once-a-second change for
/// almost an interval (0.75–0.83 s) once a burst has emptied it; spacing them from the change the
/// previous message carried let two out per interval under a storm (twice the fan-out); windows
/// alone locked a once-a-second change into waiting for the next window once one message had
/// gone at a window's start.
#[derive(Clone, Copy, Debug)]
pub(super) struct Pacer {
    every: Millis,
    offset: Millis,
    /// The window of the last message that carried a change.
    marked: i64,
    /// When a change was last seen.
    last_change: Millis,
    /// When to look at the rates alone next.
    look: Millis,
    /// When the last message carrying a change went.
    last_sent: Millis,
}

impl Pacer {
    pub(super) fn new(broadcast_id: &str, every: Duration) -> Self {
        let every = (every.as_millis() as Millis).max(20);
        // FNV-1a: the same on every node and after restarts.
        let hash = broadcast_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        Pacer {
            every,
            offset: (hash % every as u64) as Millis,
            marked: i64::MIN / 2,
            last_change: Millis::MIN / 2,
            look: 0,
            last_sent: Millis::MIN / 2,
        }
    }

    /// The window `t` falls in.
    fn window(&self, t: Millis) -> i64 {
        (t - self.offset).div_euclid(self.every)
    }

    fn start(&self, window: i64) -> Millis {
        window * self.every + self.offset
    }

    /// When a change seen at `now` may go.
    pub(super) fn release(&self, now: Millis) -> Millis {
        let soonest = now.max(self.last_sent + self.every / 2);
        if now - self.last_change >= self.every * 9 / 10 {
            return soonest;
        }
        soonest.max(self.start(self.marked + 1))
    }

    /// When the rates alone are worth a look.
    pub(super) fn next_look(&self) -> Millis {
        self.look
    }

    /// The last change taken in happened at `t` (as far as the stream can tell: when it noticed
    /// it, or when it took changes in that came while it waited).
    pub(super) fn saw_change(&mut self, t: Millis) {
        self.last_change = t;
    }

    /// A message went at `t`; `changed`: it carried a change, not only the rates.
    pub(super) fn sent(&mut self, t: Millis, changed: bool) {
        if changed {
            self.marked = self.window(t);
            self.last_sent = t;
        }
        self.look = t + self.every * 3 / 2;
    }

    /// Looked at `t` and found nothing to send.
    pub(super) fn nothing_new(&mut self, t: Millis) {
        self.look = self.look.max(t + self.every / 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stats stream's loop over simulated time, as `Live::stats_stream` drives its
    /// [`Pacer`]: `changes` are when changes are applied; the rates move while a change is less
    /// than 10 s old (and then differ at every look); each message takes `work` ms. Answers each
    /// message after the first: when it went, and the first change it carried (`None`: the rates
    /// alone).
    fn paced(p: &mut Pacer, changes: &[Millis], work: Millis) -> Vec<(Millis, Option<Millis>)> {
        p.sent(0, true);
        p.saw_change(0);
        let (mut looked, mut out) = (0, Vec::new());
        loop {
            let change = changes.iter().copied().find(|&c| c > looked);
            let moving = changes.iter().any(|&c| c <= looked && looked - c < 10_000);
            let wake = match (change, moving) {
                (Some(c), true) => c.min(p.next_look().max(looked)),
                (Some(c), false) => c,
                (None, true) => p.next_look().max(looked),
                (None, false) => return out,
            };
            let real = change.is_some_and(|c| c <= wake);
            let at = if real { p.release(wake) } else { wake };
            if real {
                // The stream reads the last change's time from the stats (`changedAtMs`).
                let last = changes.iter().copied().filter(|&c| c > wake && c <= at).max();
                p.saw_change(last.unwrap_or(wake));
            }
            looked = at;
            let sent = at + work;
            p.sent(sent, real);
            out.push((sent, change.filter(|_| real)));
        }
    }

    /// No two messages carrying changes closer than half an interval, and at most `n + 1`
    /// messages in any `n` intervals.
    fn assert_paced(sent: &[(Millis, Option<Millis>)], every: Millis, what: &str) {
        let changes: Vec<Millis> = sent.iter().filter(|(_, c)| c.is_some()).map(|(t, _)| *t).collect();
        for pair in changes.windows(2) {
            assert!(pair[1] - pair[0] >= every / 2, "{what}: two messages {pair:?} ms");
        }
        let times: Vec<Millis> = std::iter::once(0).chain(sent.iter().map(|(t, _)| *t)).collect();
        for (i, &from) in times.iter().enumerate() {
            for n in 1..=30 {
                let within = times[i..].iter().take_while(|&&t| t < from + n * every).count() as i64;
                assert!(
                    within <= n + 1,
                    "{what}: {within} messages in {n} intervals from {from} ms"
                );
            }
        }
    }

    #[test]
    fn a_broadcast_changing_all_the_time_gets_one_stats_message_per_interval() {
        let mut p = Pacer::new("b", Duration::from_millis(1_000));
        let changes: Vec<Millis> = (1..=1_430).map(|k| k * 7).collect(); // 10 s of applies
        let sent = paced(&mut p, &changes, 3);
        let during = sent.iter().filter(|(t, _)| *t <= 10_010).count();
        assert!(
            (9..=11).contains(&during),
            "10 s of changes: about ten messages, not {during}: {sent:?}"
        );
        let carrying: Vec<_> = sent.iter().filter(|(t, c)| *t <= 10_010 && c.is_some()).collect();
        for pair in carrying.windows(2) {
            assert!(
                p.window(pair[0].0) < p.window(pair[1].0),
                "two messages in one window: {pair:?}"
            );
        }
        assert_paced(&sent, 1_000, "a storm");
    }

    #[test]
    fn a_broadcast_changing_once_per_interval_gets_each_change_at_once_whatever_its_phase() {
        for phase in [0, 1, 250, 500, 998, 999] {
            let mut p = Pacer::new("b", Duration::from_millis(1_000));
            // A join a second, give or take a few ms, for a minute.
            let changes: Vec<Millis> = (1..=60)
                .map(|k| k * 1_000 + phase + [0, 3, -2, 1][k as usize % 4])
                .collect();
            let sent = paced(&mut p, &changes, 2);
            let carried: Vec<_> = sent.iter().filter_map(|(t, c)| c.map(|c| t - c)).collect();
            assert_eq!(carried.len(), 60, "phase {phase}: one message per change");
            let worst = carried.iter().max().unwrap();
            assert!(
                *worst <= 10,
                "phase {phase}: a change waited {worst} ms for its message"
            );
            assert_paced(&sent, 1_000, &format!("a join a second, phase {phase}"));
            // ... and the same after a 5 s storm (the case that had locked into waiting).
            let mut stormy: Vec<Millis> = (1..=700).map(|k| k * 7).collect();
            stormy.extend(changes.iter().map(|c| c + 5_000));
            let after_storm = paced(&mut Pacer::new("b", Duration::from_millis(1_000)), &stormy, 2);
            let late: Vec<_> = after_storm
                .iter()
                .filter_map(|(t, c)| c.filter(|&c| c > 5_000 + 1_000).map(|c| t - c))
                .collect();
            assert_eq!(late.len(), 60, "phase {phase}: after the storm, one message per change");
            assert!(
                late[0] <= 510,
                "phase {phase}: the first change after the storm waits half an interval at most"
            );
            assert!(
                late[1..].iter().all(|&d| d <= 10),
                "phase {phase}: after the storm, delays {late:?}"
            );
            assert_paced(
                &after_storm,
                1_000,
                &format!("a storm then a join a second, phase {phase}"),
            );
        }
    }

    #[test]
    fn a_look_at_the_rates_alone_does_not_hold_the_next_change_back() {
        let every = Duration::from_millis(1_000);
        // One change, then the rates decay: when does the first look at them alone go?
        let alone = paced(&mut Pacer::new("b", every), &[100], 2);
        let look = alone
            .iter()
            .find(|(_, c)| c.is_none())
            .expect("the rates are looked at")
            .0;
        // A change right after that look goes at once.
        let sent = paced(&mut Pacer::new("b", every), &[100, look + 3], 2);
        let delay = sent
            .iter()
            .find_map(|(t, c)| c.filter(|&c| c == look + 3).map(|c| t - c));
        assert_eq!(delay, Some(2), "{sent:?}");
        assert_paced(&sent, 1_000, "a change after a look at the rates");
    }
}
