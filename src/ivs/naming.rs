//! How stagefleet names and tags what it creates in IVS, written once. IVS names allow
//! `[a-zA-Z0-9-_]`; the tags are how a restarted node or a new leader finds its own stages (and
//! never another fleet's) with ListStages.

use std::collections::BTreeMap;

/// The fleet a stage or key belongs to (`fleet_id`).
pub const TAG_FLEET: &str = "stagefleet:fleet";
/// The broadcast a stage serves.
pub const TAG_BROADCAST: &str = "stagefleet:broadcast";
/// The stage's slot in its broadcast (never reused within a broadcast).
pub const TAG_SLOT: &str = "stagefleet:slot";

/// `s` in IVS's name alphabet (anything else becomes `-`), at most 64 characters.
pub fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect()
}

/// The IVS name of a broadcast's stage in `slot`.
pub fn stage_name(broadcast_id: &str, slot: u32) -> String {
    format!("sf-{}-{}", sanitize(broadcast_id), slot)
}

/// The tags every managed stage carries.
pub fn stage_tags(fleet_id: &str, broadcast_id: &str, slot: u32) -> BTreeMap<String, String> {
    BTreeMap::from([
        (TAG_FLEET.to_string(), fleet_id.to_string()),
        (TAG_BROADCAST.to_string(), broadcast_id.to_string()),
        (TAG_SLOT.to_string(), slot.to_string()),
    ])
}

/// The IVS name and tags of the public key a fleet imports at `now_secs`.
pub fn public_key(fleet_id: &str, now_secs: i64) -> (String, BTreeMap<String, String>) {
    let name = format!("stagefleet-{}-{}", sanitize(fleet_id), now_secs);
    (name, BTreeMap::from([(TAG_FLEET.to_string(), fleet_id.to_string())]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_use_the_ivs_alphabet_and_tags_name_fleet_broadcast_and_slot() {
        assert_eq!(stage_name("launch day/2026", 3), "sf-launch-day-2026-3");
        assert_eq!(sanitize(&"é".repeat(100)).len(), 64);
        let tags = stage_tags("prod", "launch", 7);
        assert_eq!(tags[TAG_FLEET], "prod");
        assert_eq!(tags[TAG_BROADCAST], "launch");
        assert_eq!(tags[TAG_SLOT], "7");
        let (name, tags) = public_key("my fleet", 1_800_000_000);
        assert_eq!(name, "stagefleet-my-fleet-1800000000");
        assert_eq!(tags[TAG_FLEET], "my fleet");
    }
}
