//! The publish bitrate cap: incoming bytes per one-second window, and how many windows in a row
//! went over the cap. A single key-frame burst or a slow start is tolerated; a publisher that
//! stays over the cap for [`STRIKES`] windows is over it.

use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(1);
/// Consecutive windows over the cap before a publisher is closed.
pub(super) const STRIKES: u32 = 3;

pub(super) struct RateMeter {
    cap_bps: u64,
    window_start: Instant,
    bytes: u64,
    strikes: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Window {
    pub bps: u64,
    /// Over the cap for [`STRIKES`] windows in a row.
    pub exceeded: bool,
}

impl RateMeter {
    /// `cap_bps` 0 never exceeds.
    pub fn new(cap_bps: u64, now: Instant) -> Self {
        RateMeter {
            cap_bps,
            window_start: now,
            bytes: 0,
            strikes: 0,
        }
    }

    pub fn add(&mut self, bytes: usize) {
        self.bytes = self.bytes.saturating_add(bytes as u64);
    }

    /// Closes the window once it is a second old (a late tick measures over the longer span).
    pub fn tick(&mut self, now: Instant) -> Option<Window> {
        let span = now.saturating_duration_since(self.window_start);
        if span < WINDOW {
            return None;
        }
        let bps = (self.bytes.saturating_mul(8) as u128 * 1000 / span.as_millis().max(1)) as u64;
        let over = self.cap_bps > 0 && bps > self.cap_bps;
        self.strikes = if over { self.strikes + 1 } else { 0 };
        self.window_start = now;
        self.bytes = 0;
        Some(Window {
            bps,
            exceeded: self.strikes >= STRIKES,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `bps` for one window and returns its verdict.
    fn second(m: &mut RateMeter, t: &mut Instant, bps: u64) -> Window {
        m.add((bps / 8) as usize);
        *t += WINDOW;
        m.tick(*t).expect("a full window")
    }

    #[test]
    fn three_seconds_over_the_cap_in_a_row_exceed_it() {
        let mut t = Instant::now();
        let mut m = RateMeter::new(1_000_000, t);
        assert_eq!(
            second(&mut m, &mut t, 2_000_000),
            Window {
                bps: 2_000_000,
                exceeded: false
            }
        );
        assert!(!second(&mut m, &mut t, 2_000_000).exceeded);
        assert!(second(&mut m, &mut t, 2_000_000).exceeded);
    }

    #[test]
    fn a_burst_followed_by_a_quiet_second_starts_over() {
        let mut t = Instant::now();
        let mut m = RateMeter::new(1_000_000, t);
        for _ in 0..2 {
            second(&mut m, &mut t, 5_000_000);
        }
        assert!(!second(&mut m, &mut t, 500_000).exceeded);
        assert!(!second(&mut m, &mut t, 5_000_000).exceeded);
    }

    #[test]
    fn windows_close_only_after_a_second_and_cap_zero_is_off() {
        let t = Instant::now();
        let mut m = RateMeter::new(0, t);
        m.add(10_000_000);
        assert_eq!(m.tick(t + Duration::from_millis(999)), None);
        let w = m.tick(t + Duration::from_secs(2)).unwrap();
        assert_eq!(
            w,
            Window {
                bps: 40_000_000,
                exceeded: false
            }
        );
    }
}
