//! Who may join, and input rules every entry point applies before anything is proposed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::model::{Broadcast, BroadcastState, Fleet, Refusal, Session};
use super::placement::{self, Placement};

/// IVS limits that shape input (ivs-realtime.md §1.3).
pub const MAX_USER_ID_CHARS: usize = 128;
pub const MAX_ATTRIBUTES_BYTES: usize = 1024;
pub const MAX_ID_CHARS: usize = 64;
pub const MAX_NAME_CHARS: usize = 128;
/// Publishers per IVS stage; hosts of a broadcast publish to every origin stage.
pub const MAX_HOSTS: u32 = 12;
/// Highest per-client seat cap a broadcast may set (far above any honest household or office).
pub const MAX_SEATS_PER_CLIENT: u32 = 1_000_000;

/// Replicated policy: every node decides with the same numbers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetPolicy {
    pub placement: Placement,
    pub seats_per_stage: u32,
    pub max_stages: u32,
    pub session_lease_ms: i64,
    /// Seats one client network may hold in a broadcast that sets no cap of its own; 0 = no cap.
    /// Absent in records written before the cap existed.
    #[serde(default)]
    pub max_seats_per_client: u32,
    /// Publisher-to-viewer connections the IVS region allows at once (IVS default 20,000; accounts
    /// raise it). Joins past it are refused with `RegionFull` rather than handed tokens IVS would
    /// refuse; 0 = no limit. Absent in records written before it existed.
    #[serde(default = "default_region_subscriptions")]
    pub region_subscription_quota: u64,
}

fn default_region_subscriptions() -> u64 {
    FleetPolicy::DEFAULT.region_subscription_quota
}

/// Subscriptions the fleet's seated viewers use now: each viewer one per host stream of its stage.
pub fn subscriptions_in_use(fleet: &Fleet) -> u64 {
    fleet.stages.values().map(|s| u64::from(s.viewers) * s.streams()).sum()
}

impl FleetPolicy {
    /// The one source of the policy's defaults (the config's defaults are these).
    pub const DEFAULT: FleetPolicy = FleetPolicy {
        placement: Placement::Pack,
        seats_per_stage: 10_000,
        max_stages: 1_000,
        session_lease_ms: 90_000,
        max_seats_per_client: 0,
        region_subscription_quota: 20_000,
    };
}

impl Default for FleetPolicy {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A change to some of the policy's fields; the rest stay as they are when it applies, so two
/// operators changing different fields at once both get their change.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seats_per_stage: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_stages: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_lease_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_seats_per_client: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region_subscription_quota: Option<u64>,
}

impl PolicyPatch {
    pub fn apply(&self, p: &FleetPolicy) -> FleetPolicy {
        FleetPolicy {
            placement: self.placement.unwrap_or(p.placement),
            seats_per_stage: self.seats_per_stage.unwrap_or(p.seats_per_stage),
            max_stages: self.max_stages.unwrap_or(p.max_stages),
            session_lease_ms: self.session_lease_ms.unwrap_or(p.session_lease_ms),
            max_seats_per_client: self.max_seats_per_client.unwrap_or(p.max_seats_per_client),
            region_subscription_quota: self.region_subscription_quota.unwrap_or(p.region_subscription_quota),
        }
    }
}

/// Most seats per stage a policy may set (IVS itself seats about 10,000 viewers per stage; more
/// is for benchmarks against the emulator).
pub const MAX_SEATS_PER_STAGE: u32 = 1_000_000;
/// Most stages a policy may allow (IVS's default regional quota is far lower).
pub const MAX_STAGES: u32 = 100_000;
/// Longest session lease a policy may set: one day.
pub const MAX_SESSION_LEASE_MS: i64 = 86_400_000;

/// The rules every policy keeps, whoever sets it. `min_lease_ms` is the node's own floor (twice
/// its renewal interval, so a live viewer is never expired between two renewals).
pub fn validate_policy(p: &FleetPolicy, min_lease_ms: i64) -> Result<(), InputError> {
    let range = |field, value: i64, min: i64, max: i64| {
        if (min..=max).contains(&value) {
            Ok(())
        } else {
            Err(InputError::OutOfRange { field, value, min, max })
        }
    };
    range("seatsPerStage", p.seats_per_stage.into(), 1, MAX_SEATS_PER_STAGE.into())?;
    range("maxStages", p.max_stages.into(), 1, MAX_STAGES.into())?;
    range(
        "sessionLeaseSecs",
        p.session_lease_ms / 1000,
        (min_lease_ms + 999) / 1000,
        MAX_SESSION_LEASE_MS / 1000,
    )?;
    range(
        "maxSeatsPerClient",
        p.max_seats_per_client.into(),
        0,
        MAX_SEATS_PER_CLIENT.into(),
    )?;
    range(
        "regionSubscriptionQuota",
        i64::try_from(p.region_subscription_quota).unwrap_or(i64::MAX),
        0,
        MAX_REGION_SUBSCRIPTIONS,
    )
}

/// Highest region subscription quota a policy may set (0 = no limit).
pub const MAX_REGION_SUBSCRIPTIONS: i64 = 100_000_000;

/// The seat cap per client network in force for `broadcast` (0 = no cap).
pub fn client_seat_cap(broadcast: &Broadcast, policy: &FleetPolicy) -> u32 {
    broadcast.max_seats_per_client.unwrap_or(policy.max_seats_per_client)
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("{field} must not be empty")]
    Empty { field: &'static str },
    #[error("{field} is {len} characters; the limit is {max}")]
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{field} may contain only A-Z a-z 0-9 _ - (got {value:?})")]
    BadCharacters { field: &'static str, value: String },
    #[error("attributes take {len} bytes; IVS allows {max} in total")]
    AttributesTooLarge { len: usize, max: usize },
    #[error("duplicate attribute key {0:?}")]
    DuplicateAttribute(String),
    #[error("{field} contains a control character (U+{code:04X}); ids and names are printable text")]
    ControlCharacter { field: &'static str, code: u32 },
    #[error("{field} starts or ends with whitespace; send it trimmed")]
    SurroundingWhitespace { field: &'static str },
    #[error("{field} must be between {min} and {max} (got {value})")]
    OutOfRange {
        field: &'static str,
        value: i64,
        min: i64,
        max: i64,
    },
}

/// No C0 or C1 control character (newline, BEL, NUL, ESC, …): user ids end up in tokens every
/// participant sees, and names in logs and pages.
fn printable(field: &'static str, s: &str) -> Result<(), InputError> {
    match s.chars().find(|c| c.is_control()) {
        Some(c) => Err(InputError::ControlCharacter { field, code: c as u32 }),
        None => Ok(()),
    }
}

/// A user id is printable, not empty, at most 128 characters, and has no leading or trailing
/// whitespace: it is refused rather than trimmed, so "bob" and "bob " never become one viewer
/// by accident of the server.
pub fn validate_user_id(user_id: &str) -> Result<(), InputError> {
    let len = user_id.chars().count();
    if user_id.trim().is_empty() {
        return Err(InputError::Empty { field: "userId" });
    }
    printable("userId", user_id)?;
    if user_id.trim() != user_id {
        return Err(InputError::SurroundingWhitespace { field: "userId" });
    }
    if len > MAX_USER_ID_CHARS {
        return Err(InputError::TooLong {
            field: "userId",
            len,
            max: MAX_USER_ID_CHARS,
        });
    }
    Ok(())
}

/// Ids we accept from clients (broadcast ids) follow IVS's participant-id alphabet.
pub fn validate_id(field: &'static str, id: &str) -> Result<(), InputError> {
    if id.is_empty() {
        return Err(InputError::Empty { field });
    }
    if id.len() > MAX_ID_CHARS {
        return Err(InputError::TooLong {
            field,
            len: id.len(),
            max: MAX_ID_CHARS,
        });
    }
    if !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        return Err(InputError::BadCharacters {
            field,
            value: id.to_string(),
        });
    }
    Ok(())
}

pub fn validate_name(name: &str) -> Result<(), InputError> {
    printable("name", name)?;
    let len = name.chars().count();
    if len > MAX_NAME_CHARS {
        return Err(InputError::TooLong {
            field: "name",
            len,
            max: MAX_NAME_CHARS,
        });
    }
    Ok(())
}

/// A per-broadcast seat cap as a client sends it: 0 (no cap) to [`MAX_SEATS_PER_CLIENT`].
pub fn validate_seat_cap(field: &'static str, value: i64) -> Result<u32, InputError> {
    let max = i64::from(MAX_SEATS_PER_CLIENT);
    match u32::try_from(value) {
        Ok(v) if value <= max => Ok(v),
        _ => Err(InputError::OutOfRange {
            field,
            value,
            min: 0,
            max,
        }),
    }
}

/// Attributes as IVS counts them: the bytes of every key and value together.
pub fn validate_attributes(pairs: &[(String, String)]) -> Result<BTreeMap<String, String>, InputError> {
    let len: usize = pairs.iter().map(|(k, v)| k.len() + v.len()).sum();
    if len > MAX_ATTRIBUTES_BYTES {
        return Err(InputError::AttributesTooLarge {
            len,
            max: MAX_ATTRIBUTES_BYTES,
        });
    }
    let mut map = BTreeMap::new();
    for (k, v) in pairs {
        if k.is_empty() {
            return Err(InputError::Empty { field: "attribute key" });
        }
        if map.insert(k.clone(), v.clone()).is_some() {
            return Err(InputError::DuplicateAttribute(k.clone()));
        }
    }
    Ok(map)
}

/// Where a join lands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// The user already holds a seat: give the same one back.
    Rejoin,
    /// Seat the user on this stage.
    Seat(String),
}

/// Decide one join against the current state. `existing` is the user's session in this
/// broadcast, if any; `client_seats` the seats the asking client network holds in it already,
/// when the request names its client (it does whenever the broadcast's cap is on).
pub fn admit(
    fleet: &Fleet,
    policy: &FleetPolicy,
    broadcast_id: &str,
    existing: Option<&Session>,
    client_seats: Option<u32>,
) -> Result<Admission, Refusal> {
    let broadcast = fleet
        .broadcasts
        .get(broadcast_id)
        .ok_or_else(|| Refusal::UnknownBroadcast(broadcast_id.to_string()))?;
    if broadcast.state != BroadcastState::Live {
        return Err(Refusal::BroadcastNotLive(broadcast_id.to_string()));
    }
    if existing.is_some() {
        return Ok(Admission::Rejoin);
    }
    let cap = client_seat_cap(broadcast, policy);
    if cap > 0 && client_seats.is_some_and(|held| held >= cap) {
        return Err(Refusal::ClientSeatLimit(broadcast_id.to_string(), cap));
    }
    placement::choose(fleet.stages_of(broadcast_id), policy.placement)
        .map(|s| Admission::Seat(s.id.clone()))
        .ok_or_else(|| Refusal::CapacityExhausted(broadcast_id.to_string()))
}

/// May the fleet take on one more stage (per-region quota)?
pub fn can_add_stage(fleet: &Fleet, policy: &FleetPolicy) -> Result<(), Refusal> {
    if fleet.managed_stage_count() >= policy.max_stages as usize {
        return Err(Refusal::StageQuotaExceeded(policy.max_stages));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_must_be_present_and_at_most_128_characters() {
        assert!(validate_user_id("alice").is_ok());
        assert_eq!(validate_user_id(""), Err(InputError::Empty { field: "userId" }));
        assert_eq!(validate_user_id("   "), Err(InputError::Empty { field: "userId" }));
        assert!(
            validate_user_id(&"é".repeat(128)).is_ok(),
            "the limit counts characters, not bytes"
        );
        assert!(matches!(
            validate_user_id(&"x".repeat(129)),
            Err(InputError::TooLong { len: 129, .. })
        ));
    }

    #[test]
    fn user_ids_with_control_characters_or_surrounding_whitespace_are_refused() {
        for (bad, code) in [
            ("a\nb", 0x0a),
            ("bell\u{7}", 0x07),
            ("nul\0", 0),
            ("c1\u{85}", 0x85),
            ("del\u{7f}", 0x7f),
        ] {
            assert_eq!(
                validate_user_id(bad),
                Err(InputError::ControlCharacter { field: "userId", code }),
                "{bad:?}"
            );
        }
        for bad in [" alice", "alice ", "\u{a0}alice"] {
            assert_eq!(
                validate_user_id(bad),
                Err(InputError::SurroundingWhitespace { field: "userId" }),
                "{bad:?}"
            );
        }
        assert!(validate_user_id("alice smith").is_ok(), "inner spaces are fine");
        assert!(validate_user_id("zoë 🎥").is_ok());
        assert!(matches!(
            validate_name("a\u{1b}[31m"),
            Err(InputError::ControlCharacter { .. })
        ));
    }

    #[test]
    fn attributes_over_one_kilobyte_in_total_are_refused() {
        let ok = vec![("k".to_string(), "v".repeat(1023))];
        assert_eq!(validate_attributes(&ok).unwrap().len(), 1);
        let big = vec![("k".to_string(), "v".repeat(1024))];
        assert_eq!(
            validate_attributes(&big),
            Err(InputError::AttributesTooLarge { len: 1025, max: 1024 })
        );
        let dup = vec![("a".to_string(), "1".to_string()), ("a".to_string(), "2".to_string())];
        assert_eq!(
            validate_attributes(&dup),
            Err(InputError::DuplicateAttribute("a".into()))
        );
    }

    #[test]
    fn a_seat_cap_is_between_zero_and_one_million() {
        assert_eq!(validate_seat_cap("maxSeatsPerClient", 0), Ok(0));
        assert_eq!(validate_seat_cap("maxSeatsPerClient", 1_000_000), Ok(1_000_000));
        for bad in [-1, 1_000_001, i64::from(u32::MAX) + 1, i64::MIN] {
            assert_eq!(
                validate_seat_cap("maxSeatsPerClient", bad),
                Err(InputError::OutOfRange {
                    field: "maxSeatsPerClient",
                    value: bad,
                    min: 0,
                    max: 1_000_000
                })
            );
        }
    }

    #[test]
    fn ids_use_the_ivs_participant_alphabet() {
        assert!(validate_id("broadcastId", "show-2026_11").is_ok());
        assert!(matches!(
            validate_id("broadcastId", "a b"),
            Err(InputError::BadCharacters { .. })
        ));
        assert!(matches!(
            validate_id("broadcastId", &"a".repeat(65)),
            Err(InputError::TooLong { .. })
        ));
    }
}
