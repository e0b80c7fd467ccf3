//! Unit tests of the `subscribers` scenario's pieces and summary.

use super::*;
use crate::driver::histogram;

#[test]
fn sources_spread_by_range_from_127_0_0_2() {
    assert_eq!(source_addr(0, 20_000), Some(Ipv4Addr::new(127, 0, 0, 2)));
    assert_eq!(source_addr(19_999, 20_000), Some(Ipv4Addr::new(127, 0, 0, 2)));
    assert_eq!(source_addr(20_000, 20_000), Some(Ipv4Addr::new(127, 0, 0, 3)));
    assert_eq!(source_addr(29_999, 20_000), Some(Ipv4Addr::new(127, 0, 0, 3)));
    // Across an octet, and 0 per source counts as 1.
    assert_eq!(source_addr(254, 1), Some(Ipv4Addr::new(127, 0, 1, 0)));
    assert_eq!(source_addr(3, 0), Some(Ipv4Addr::new(127, 0, 0, 5)));
    // The last usable address is 127.255.255.254; no further.
    let last = u64::from(u32::from(Ipv4Addr::new(127, 255, 255, 254)) - u32::from(FIRST_SOURCE));
    assert_eq!(source_addr(last, 1), Some(Ipv4Addr::new(127, 255, 255, 254)));
    assert_eq!(source_addr(last + 1, 1), None);
    assert_eq!(source_addr(u64::MAX, 1), None);
    assert_eq!(sources_needed(30_000, 20_000), 2);
    assert_eq!(sources_needed(20_000, 20_000), 1);
    assert_eq!(sources_needed(0, 20_000), 0);
}

#[test]
fn stats_assignment_and_protocol_messages_are_told_apart() {
    let stats = r#"{"id":"s","type":"next","payload":{"data":{"stats":{"viewers":12,"admittedTotal":15,
        "joinsPerSecond":1.5,"appliedIndex":99,"changedAtMs":1764645000123}}}}"#;
    assert_eq!(
        parse_server_message(stats),
        ServerMsg::Stats(StatsMsg {
            viewers: 12,
            admitted_total: 15,
            joins_per_second: 1.5,
            applied_index: 99,
            changed_at_ms: 1_764_645_000_123,
        })
    );
    let seated = r#"{"id":"a","type":"next","payload":{"data":{"assignment":{"kind":"SEATED","reason":null,
        "token":"x.y.z","session":{"id":"S1","stageId":"b:0"}}}}}"#;
    assert_eq!(parse_server_message(seated), ServerMsg::Seated);
    let ended = r#"{"id":"a","type":"next","payload":{"data":{"assignment":{"kind":"ENDED","reason":"BROADCAST_ENDED",
        "token":null,"session":{"id":"S1","stageId":"b:0"}}}}}"#;
    assert_eq!(parse_server_message(ended), ServerMsg::Ended("BROADCAST_ENDED".into()));
    let refused = r#"{"id":"s","type":"next","payload":{"data":null,"errors":[{"message":"no",
        "extensions":{"code":"BROADCAST_NOT_FOUND"}}]}}"#;
    assert_eq!(
        parse_server_message(refused),
        ServerMsg::Failed {
            id: "s".into(),
            code: "BROADCAST_NOT_FOUND".into()
        }
    );
    assert_eq!(
        parse_server_message(r#"{"id":"a","type":"error","payload":[{"message":"bad"}]}"#),
        ServerMsg::Failed {
            id: "a".into(),
            code: "NO_CODE".into()
        }
    );
    assert_eq!(parse_server_message(r#"{"type":"ping"}"#), ServerMsg::Ping);
    assert_eq!(parse_server_message(r#"{"type":"pong"}"#), ServerMsg::Pong);
    assert_eq!(parse_server_message(r#"{"type":"connection_ack"}"#), ServerMsg::Ack);
    assert_eq!(
        parse_server_message(r#"{"id":"s","type":"complete"}"#),
        ServerMsg::Complete { id: "s".into() }
    );
    // A stats message missing a field asked for, or text that is not JSON, is not stats.
    let partial = r#"{"id":"s","type":"next","payload":{"data":{"stats":{"viewers":1}}}}"#;
    assert_eq!(parse_server_message(partial), ServerMsg::Other);
    assert_eq!(parse_server_message("not json"), ServerMsg::Other);
    // Stats that come with errors are a failure, not an update.
    let with_errors = r#"{"id":"s","type":"next","payload":{"data":{"stats":{"viewers":12,"admittedTotal":15,
        "joinsPerSecond":1.5,"appliedIndex":99,"changedAtMs":1}},"errors":[{"message":"no",
        "extensions":{"code":"FORBIDDEN"}}]}}"#;
    assert_eq!(
        parse_server_message(with_errors),
        ServerMsg::Failed {
            id: "s".into(),
            code: "FORBIDDEN".into()
        }
    );
}

fn stats(changed_at_ms: i64, jps: f64) -> StatsMsg {
    StatsMsg {
        viewers: 1,
        admitted_total: 1,
        joins_per_second: jps,
        applied_index: 1,
        changed_at_ms,
    }
}

#[test]
fn only_a_new_change_after_the_first_message_is_a_delivery() {
    let mut seen = StatsSeen::default();
    // The value at subscription may be old: not a delivery, whatever its age.
    assert_eq!(seen.on_message(&stats(1_000, 0.0), 9_000_000), Delivery::First);
    // A change committed at 2,000 ms received at 2,012.5 ms: 12.5 ms.
    assert_eq!(seen.on_message(&stats(2_000, 3.0), 2_012_500), Delivery::Change(12_500));
    // The rates fell, nothing new was committed: not a delivery.
    assert_eq!(seen.on_message(&stats(2_000, 2.0), 3_000_000), Delivery::RatesOnly);
    // Received "before" its commit by this clock: negative, left to the caller to count.
    assert_eq!(seen.on_message(&stats(5_000, 2.0), 4_999_000), Delivery::Change(-1_000));
    assert_eq!(seen.messages, 4);
}

#[test]
fn delays_are_recorded_in_microseconds_and_negative_ones_counted_apart() {
    let mut h = histogram();
    assert!(!record_delay(&mut h, 12_500));
    assert!(!record_delay(&mut h, 40_000));
    assert!(record_delay(&mut h, -3_000));
    assert_eq!(h.len(), 3);
    let p = percentiles_ms(&h);
    assert_eq!(p.count, 3);
    assert!((p.max - 40.0).abs() < 0.05, "{p:?}");
    assert!((p.p50 - 12.5).abs() < 0.05, "{p:?}");
    assert_eq!(h.min(), 1, "a negative delay counts as 1 µs");
}

#[test]
fn fan_out_is_first_to_last_receipt_of_updates_everyone_got() {
    let mut a = Fanout {
        changed_at_ms: 1,
        ..Fanout::default()
    };
    for d in [30_000, 10_000, 250_000] {
        a.add(d);
    }
    assert_eq!(
        a,
        Fanout {
            changed_at_ms: 1,
            receivers: 3,
            first_us: 10_000,
            last_us: 250_000
        }
    );
    let b = Fanout {
        changed_at_ms: 2,
        receivers: 3,
        first_us: 20_000,
        last_us: 60_000,
    };
    let c = Fanout {
        changed_at_ms: 3,
        receivers: 3,
        first_us: 5_000,
        last_us: 105_000,
    };
    // Seen by one subscriber only: not a whole fan-out.
    let partial = Fanout {
        changed_at_ms: 4,
        receivers: 1,
        first_us: 900_000,
        last_us: 900_000,
    };
    let f = fanout_summary(&[a, b, c, partial], 3).unwrap();
    assert_eq!(f.updates, 3);
    assert_eq!(f.first_receiver_p50_ms, 10.0);
    assert_eq!(f.first_receiver_max_ms, 20.0);
    assert_eq!(f.fanout_p50_ms, 100.0);
    assert_eq!(f.fanout_max_ms, 240.0);
    assert_eq!(f.slowest_first_changed_at_ms, 2, "b reached its first receiver last");
    assert_eq!(fanout_summary(&[partial], 3), None);
    assert_eq!(fanout_summary(&[], 0), None);
}

#[test]
fn viewers_and_admitted_pack_into_one_word() {
    assert_eq!(pack(30_000, 30_001), (30_000u64 << 32) | 30_001);
    assert_ne!(pack(1, 2), pack(2, 1));
    assert_ne!(pack(0, 0), UNSEEN);
    assert_eq!(pack(u64::MAX, 5), (u64::from(u32::MAX) << 32) | 5);
}

#[test]
fn spreads_and_rss_per_subscriber() {
    assert_eq!(
        spread([3, 5, 4]),
        Spread {
            min: 3,
            mean: 4.0,
            max: 5,
            count: 3
        }
    );
    assert_eq!(spread(std::iter::empty()), Spread::default());
    assert_eq!(kib_per(100_000, 300_000, 10_000), Some(20.0));
    assert_eq!(kib_per(300_000, 290_000, 10_000), Some(-1.0));
    assert_eq!(kib_per(1, 2, 0), None);
}

#[test]
fn the_summary_fails_on_lost_frames_and_failed_attaches() {
    let ok = SubscribersSummary {
        wanted: 10,
        attached: 10,
        final_viewers: Some(30),
        final_admitted_total: Some(30),
        ..SubscribersSummary::default()
    }
    .judged();
    assert!(ok.ok(), "{:?}", ok.failures);
    assert!(ok.text().contains("subscribers verdict: OK"));
    let lost = SubscribersSummary { lost: 2, ..ok.clone() }.judged();
    assert!(!lost.ok());
    assert!(lost.failures[0].contains("frames lost: 2"), "{:?}", lost.failures);
    let short = SubscribersSummary {
        attached: 7,
        ..ok.clone()
    }
    .judged();
    assert!(short.failures[0].starts_with("3 of 10 subscribers failed to attach"));
    let closed = SubscribersSummary {
        closed_by_node: 1,
        ..ok.clone()
    }
    .judged();
    assert!(!closed.ok());
    assert!(closed.text().contains("subscribers verdict: FAILED"));
    let unread = SubscribersSummary {
        final_viewers: None,
        ..ok
    }
    .judged();
    assert!(!unread.ok());
}

#[test]
fn a_metrics_counter_is_read_by_its_suffix() {
    let text = "# TYPE stagefleet_subscription_payloads counter\nstagefleet_subscription_payloads_total 17\n\
                stagefleet_subscription_frames_total 170000\n";
    assert_eq!(metric(Some(text), "subscription_payloads_total"), Some(17));
    assert_eq!(metric(Some(text), "subscription_frames_total"), Some(170_000));
    assert_eq!(metric(None, "subscription_frames_total"), None);
}
