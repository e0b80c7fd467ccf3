//! Simulcast: a publisher may send its video as several layers (rids, e.g. `low`, `mid`, `hi`);
//! each subscriber gets exactly one, the lowest one currently arriving — the SDK subscribes with
//! `X-Stages-Initial-Layer-Pref: lowest` and this emulator has no layer switching API.
//!
//! A subscriber only starts a layer on a key frame (the decoder cannot start mid-GOP); until then
//! it keeps the layer it had. RTP timestamps are rebased on a switch, since each layer's stream
//! has its own timestamp origin and the subscriber sees a single stream.
//! A non-simulcast publisher is one layer with no rid.

use std::time::{Duration, Instant};

use str0m::media::{MediaTime, Rid};

/// A layer that sent nothing for this long is not offered to subscribers that pick a layer.
const STALE: Duration = Duration::from_secs(1);
/// More than any browser sends; rids beyond it are ignored rather than tracked.
const MAX_LAYERS: usize = 8;
/// One frame at 30 fps in the 90 kHz video clock: the gap put between layers on a switch.
const FRAME_90K: u64 = 3000;

/// `None` is the single layer of a non-simulcast publisher.
pub(super) type Layer = Option<Rid>;

/// The layers a publisher is sending.
pub(super) struct Layers {
    /// Declared rids, lowest first: the order of the offer's `a=rid` lines (the SDK lists low,
    /// mid, hi). Rids not declared rank after these.
    order: Vec<Rid>,
    seen: Vec<(Layer, Instant)>,
}

impl Layers {
    pub fn new(order: Vec<Rid>) -> Self {
        Layers {
            order,
            seen: Vec::new(),
        }
    }

    pub fn saw(&mut self, layer: Layer, now: Instant) {
        if let Some(entry) = self.seen.iter_mut().find(|(l, _)| *l == layer) {
            entry.1 = now;
        } else if self.seen.len() < MAX_LAYERS {
            self.seen.push((layer, now));
        }
    }

    /// The lowest layer that arrived within the last second; None when nothing did.
    pub fn lowest_active(&self, now: Instant) -> Option<Layer> {
        self.seen
            .iter()
            .filter(|(_, at)| now.saturating_duration_since(*at) < STALE)
            .map(|(layer, _)| *layer)
            .min_by_key(|layer| self.rank(*layer))
    }

    /// Every layer that has arrived at least once.
    pub fn known(&self) -> impl Iterator<Item = Layer> + '_ {
        self.seen.iter().map(|(layer, _)| *layer)
    }

    fn rank(&self, layer: Layer) -> usize {
        layer
            .and_then(|rid| self.order.iter().position(|r| *r == rid))
            .unwrap_or(self.order.len())
    }
}

#[derive(Debug, PartialEq)]
pub(super) enum Admit {
    /// Write the frame with this (rebased) timestamp.
    Forward(MediaTime),
    /// A frame of the wanted layer that cannot start it: not a key frame.
    WaitKeyframe,
    /// Another layer's frame.
    Skip,
}

/// One subscriber's view of its publisher's video.
#[derive(Default)]
pub(super) struct Follower {
    /// The layer being forwarded, once started on a key frame.
    current: Option<Layer>,
    /// The layer wanted: the lowest active one.
    target: Option<Layer>,
    /// Added (wrapping) to incoming timestamps of the current layer.
    offset: u64,
    last_out: Option<u64>,
}

impl Follower {
    /// What to do with a video frame of `layer`, given the publisher's lowest active layer, and
    /// the layer to ask a key frame for when the target changed.
    pub fn admit(
        &mut self,
        layer: Layer,
        keyframe: bool,
        lowest: Option<Layer>,
        time: MediaTime,
    ) -> (Admit, Option<Layer>) {
        let mut ask = None;
        if lowest.is_some() && lowest != self.target {
            self.target = lowest;
            ask = lowest;
        }
        if keyframe && Some(layer) == self.target && self.current != self.target {
            if let Some(last) = self.last_out {
                self.offset = last.wrapping_add(FRAME_90K).wrapping_sub(time.numer());
            }
            self.current = self.target;
        }
        if Some(layer) != self.current {
            let admit = if Some(layer) == self.target {
                Admit::WaitKeyframe
            } else {
                Admit::Skip
            };
            return (admit, ask);
        }
        let out = time.numer().wrapping_add(self.offset);
        self.last_out = Some(out);
        (Admit::Forward(MediaTime::new(out, time.frequency())), ask)
    }

    /// Starts over on a new publisher: nothing is forwarded until its first key frame, whose
    /// timestamp is rebased to follow the last one sent.
    pub fn restart(&mut self) {
        self.current = None;
        self.target = None;
    }

    /// The layer wanted, once the publisher's video has been seen.
    pub fn target(&self) -> Option<Layer> {
        self.target
    }

    /// The layer a key frame is still awaited for, if any.
    pub fn awaiting(&self) -> Option<Layer> {
        self.target.filter(|_| self.current != self.target)
    }
}

#[cfg(test)]
mod tests {
    use str0m::media::Frequency;

    use super::*;

    fn t90(v: u64) -> MediaTime {
        MediaTime::new(v, Frequency::NINETY_KHZ)
    }

    fn rid(s: &str) -> Layer {
        Some(Rid::from(s))
    }

    #[test]
    fn the_lowest_declared_layer_that_is_arriving_wins() {
        let now = Instant::now();
        let mut layers = Layers::new(vec![Rid::from("low"), Rid::from("mid"), Rid::from("hi")]);
        assert_eq!(layers.lowest_active(now), None);
        layers.saw(rid("hi"), now);
        layers.saw(rid("mid"), now);
        assert_eq!(layers.lowest_active(now), Some(rid("mid")));
        layers.saw(rid("low"), now);
        assert_eq!(layers.lowest_active(now), Some(rid("low")));
        // low stops: a second later mid is the lowest arriving.
        let later = now + STALE;
        layers.saw(rid("mid"), later);
        assert_eq!(layers.lowest_active(later), Some(rid("mid")));
    }

    #[test]
    fn a_subscriber_starts_on_a_key_frame_and_asks_for_one() {
        let mut f = Follower::default();
        let (admit, ask) = f.admit(None, false, Some(None), t90(100));
        assert_eq!((admit, ask), (Admit::WaitKeyframe, Some(None)));
        assert_eq!(f.awaiting(), Some(None));
        assert_eq!(
            f.admit(None, true, Some(None), t90(3100)),
            (Admit::Forward(t90(3100)), None)
        );
        assert_eq!(
            f.admit(None, false, Some(None), t90(6100)),
            (Admit::Forward(t90(6100)), None)
        );
        assert_eq!(f.awaiting(), None);
    }

    #[test]
    fn switching_down_keeps_the_old_layer_until_the_new_one_has_a_key_frame() {
        let mut f = Follower::default();
        f.admit(rid("hi"), true, Some(rid("hi")), t90(1000));
        // low appears: it becomes the target, hi keeps flowing meanwhile.
        assert_eq!(
            f.admit(rid("low"), false, Some(rid("low")), t90(50)),
            (Admit::WaitKeyframe, Some(rid("low")))
        );
        assert_eq!(
            f.admit(rid("hi"), false, Some(rid("low")), t90(4000)),
            (Admit::Forward(t90(4000)), None)
        );
        // low's key frame: switch, and continue one frame after the last timestamp sent.
        assert_eq!(
            f.admit(rid("low"), true, Some(rid("low")), t90(3050)),
            (Admit::Forward(t90(7000)), None)
        );
        assert_eq!(
            f.admit(rid("hi"), false, Some(rid("low")), t90(7000)),
            (Admit::Skip, None)
        );
        assert_eq!(
            f.admit(rid("low"), false, Some(rid("low")), t90(6050)),
            (Admit::Forward(t90(10000)), None)
        );
    }
}
