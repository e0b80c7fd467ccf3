//! Small pure pieces: pacing math, /proc parsing, the node banner, the churn draw, report JSON.

use std::time::Duration;

use loadtest::driver::{Outcome, histogram};
use loadtest::pacing::{due, planned_duration};
use loadtest::procstat::{cpu_ticks, machine_ticks, parse_udp_drops, rss_kib};
use loadtest::report::{Phase, Report};
use loadtest::scenario::churn::draw;
use loadtest::target::{Banner, Targets, parse_banner_line};

#[test]
fn a_fixed_rate_schedules_against_the_start() {
    assert_eq!(due(0, Some(1000.0)), Duration::ZERO);
    assert_eq!(due(1000, Some(1000.0)), Duration::from_secs(1));
    assert_eq!(due(250, Some(500.0)), Duration::from_millis(500));
    assert_eq!(due(99, None), Duration::ZERO, "open loop: all due at once");
    assert_eq!(planned_duration(20_000, Some(1000.0)), Some(Duration::from_secs(20)));
    assert_eq!(planned_duration(20_000, None), None);
}

#[test]
fn proc_stat_survives_a_command_name_with_spaces_and_parens() {
    let stat = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 100 0 0";
    assert_eq!(cpu_ticks(stat), Some(300));
    let status = "Name:\tstagefleet\nVmPeak:\t  900 kB\nVmRSS:\t  123456 kB\nThreads:\t8\n";
    assert_eq!(rss_kib(status), Some(123_456));
}

#[test]
fn machine_cpu_and_udp_drops_come_from_proc() {
    let (busy, all) = machine_ticks("cpu  100 5 50 800 20 3 2 0 0 0").unwrap();
    assert_eq!((busy, all), (160, 980), "idle and iowait are not busy");
    assert_eq!(machine_ticks("cpu0 1 2 3 4 5 6 7 8"), None, "only the machine's line");
    let udp = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
               \x20 12: 0100007F:D2F0 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1001 2 0000000000000000 7\n\
               \x20 13: 0100007F:9C40 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000     0        0 1002 2 0000000000000000 3\n\
               \x20 14: 0100007F:9C41 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000     0        0 1003 2 0000000000000000 0\n";
    assert_eq!(parse_udp_drops(udp, Some(0xD2F0)), (7, 3));
    assert_eq!(parse_udp_drops(udp, None), (0, 10));
}

#[test]
fn the_node_banner_gives_url_key_and_emulator() {
    let mut b = Banner::default();
    for line in [
        "stagefleet 0.1.0 node 1 ready",
        "  GraphQL (GraphiQL in a browser)  http://127.0.0.1:40123/graphql",
        "  web pages                        http://127.0.0.1:40123/",
        "  IVS                              built-in IVS emulator at http://127.0.0.1:40124",
        "  admin key (shown once; keep it): sf_abc123",
        "  data                             /tmp/x",
    ] {
        parse_banner_line(line, &mut b);
    }
    assert_eq!(b.base_url, "http://127.0.0.1:40123");
    assert_eq!(b.admin_key.as_deref(), Some("sf_abc123"));
    assert_eq!(b.emulator_url.as_deref(), Some("http://127.0.0.1:40124"));
}

#[test]
fn targets_take_turns() {
    let t = Targets::new(&["http://a:1/graphql".into(), "http://b:2/".into()]).unwrap();
    let picked: Vec<&str> = (0..4).map(|_| t.pick()).collect();
    assert_eq!(picked, ["http://a:1", "http://b:2", "http://a:1", "http://b:2"]);
    assert!(Targets::new(&[]).is_err());
}

#[test]
fn a_target_marked_down_is_skipped_and_the_others_share_evenly() {
    let urls: Vec<String> = ["http://a:1", "http://b:2", "http://c:3"].map(String::from).into();
    let t = Targets::new(&urls).unwrap();
    t.set_down(0, true);
    let picked: Vec<&str> = (0..6).map(|_| t.pick()).collect();
    assert_eq!(picked.iter().filter(|u| **u == "http://b:2").count(), 3, "{picked:?}");
    assert_eq!(picked.iter().filter(|u| **u == "http://c:3").count(), 3, "{picked:?}");
    t.set_down(0, false);
    let picked: Vec<&str> = (0..3).map(|_| t.pick()).collect();
    assert!(picked.contains(&"http://a:1"), "{picked:?}");
    // All down: requests still go somewhere (and fail there) rather than nowhere.
    (0..3).for_each(|i| t.set_down(i, true));
    assert!(urls.iter().any(|u| u == t.pick()));
}

#[test]
fn the_churn_draw_is_uniform_enough() {
    let n = 100_000;
    let below: usize = (0..n).filter(|&i| draw(i) < 0.3).count();
    assert!((0..n).all(|i| (0.0..1.0).contains(&draw(i))));
    assert!((below as f64 / n as f64 - 0.3).abs() < 0.01, "{below}");
}

#[test]
fn the_json_report_has_the_numbers_an_operator_scripts_against() {
    let mut latency = histogram();
    for ms in 1..=100u64 {
        latency.record(ms * 1000).unwrap();
    }
    let outcome = Outcome {
        offered_rate: Some(1000.0),
        ok: 100,
        errors: [("CAPACITY_EXHAUSTED".to_string(), 5)].into(),
        elapsed: Duration::from_secs(1),
        latency: latency.clone(),
        latency_from_due: latency,
    };
    let report = Report {
        scenario: "join-storm".into(),
        phases: vec![Phase::from_outcome("joins", &outcome)],
        ..Report::default()
    };
    let v = serde_json::to_value(&report).unwrap();
    let p = &v["phases"][0];
    assert_eq!(p["ok"], 100);
    assert_eq!(p["attempted"], 105);
    assert_eq!(p["errors"]["CAPACITY_EXHAUSTED"], 5);
    assert!((p["latency_ms"]["p50"].as_f64().unwrap() - 50.0).abs() < 0.1);
    assert!((p["latency_ms"]["p99"].as_f64().unwrap() - 99.0).abs() < 0.1);
    assert!(p["latency_from_due_ms"]["p999"].is_number());
    assert_eq!(p["offered_rate"], 1000.0);
    assert!(v["verdict"].is_null() && report.ok());
    assert!(report.text().contains("CAPACITY_EXHAUSTED 5"));
}
