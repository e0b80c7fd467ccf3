//! The ledger check catches each kind of loss the issue names, from states built by hand.

use loadtest::api::{BroadcastCounts, Join, SessionInfo, StageCount, StageInfo};
use loadtest::ledger::{Ledger, ServerView, Violation, check};

fn join(session: &str, user: &str, stage: &str, rejoined: bool) -> Join {
    Join {
        session: SessionInfo {
            id: session.into(),
            user_id: user.into(),
            stage_id: stage.into(),
            participant_id: format!("p-{session}"),
        },
        stage: StageInfo {
            id: stage.into(),
            capacity: 2,
            ..StageInfo::default()
        },
        token: String::new(),
        rejoined,
    }
}

fn stage(id: &str, viewers: u32, capacity: u32) -> StageCount {
    StageCount {
        id: id.into(),
        viewers,
        capacity,
        arn: None,
    }
}

/// The server agrees with everything the ledger holds.
fn agreeing_view(ledger: &Ledger) -> ServerView {
    let mut view = ServerView::default();
    for e in &ledger.entries {
        let present = (!e.left).then(|| e.session.clone());
        view.sessions.insert(e.session.id.clone(), present);
    }
    view
}

#[test]
fn a_clean_run_has_no_violations() {
    // --- two viewers on one stage, one rejoins idempotently
    let mut ledger = Ledger::default();
    ledger.record(&join("s1", "alice", "b:0", false));
    ledger.record(&join("s2", "bob", "b:0", false));
    ledger.record(&join("s1", "alice", "b:0", true));
    let mut view = agreeing_view(&ledger);
    view.stages = vec![stage("b:0", 2, 2)];
    view.broadcast = Some(BroadcastCounts {
        viewers: 2,
        admitted_total: 2,
    });
    assert_eq!(check(&ledger, &view, true), vec![]);
    assert_eq!(ledger.entries.len(), 2, "a rejoin is recorded once");
}

#[test]
fn a_session_the_server_forgot_is_a_lost_join() {
    let mut ledger = Ledger::default();
    ledger.record(&join("s1", "alice", "b:0", false));
    let mut view = agreeing_view(&ledger);
    view.sessions.insert("s1".into(), None);
    assert_eq!(
        check(&ledger, &view, false),
        vec![Violation::LostJoin {
            session: "s1".into(),
            user: "alice".into()
        }]
    );
}

#[test]
fn a_second_session_for_one_user_is_a_duplicate() {
    let mut ledger = Ledger::default();
    ledger.record(&join("s1", "alice", "b:0", false));
    ledger.record(&join("s9", "alice", "b:0", false));
    let found = check(&ledger, &agreeing_view(&ledger), false);
    assert!(found.contains(&Violation::DuplicateSession {
        user: "alice".into(),
        first: "s1".into(),
        second: "s9".into()
    }));
}

#[test]
fn a_rejoin_with_another_session_is_flagged() {
    let mut ledger = Ledger::default();
    ledger.record(&join("s1", "alice", "b:0", false));
    ledger.record(&join("s2", "alice", "b:0", true));
    assert!(matches!(
        check(&ledger, &agreeing_view(&ledger), false)[0],
        Violation::RejoinMismatch { .. }
    ));
}

#[test]
fn a_stage_over_capacity_is_flagged_even_when_not_exclusive() {
    let ledger = Ledger::default();
    let view = ServerView {
        stages: vec![stage("b:0", 3, 2)],
        ..ServerView::default()
    };
    assert_eq!(
        check(&ledger, &view, false),
        vec![Violation::OverCapacity {
            stage: "b:0".into(),
            viewers: 3,
            capacity: 2
        }]
    );
}

#[test]
fn a_left_session_must_be_gone_and_not_counted() {
    // --- alice joins and leaves; the server still has her seated
    let mut ledger = Ledger::default();
    ledger.record(&join("s1", "alice", "b:0", false));
    ledger.record_leave("s1");
    let mut view = agreeing_view(&ledger);
    view.sessions
        .insert("s1".into(), Some(ledger.entries[0].session.clone()));
    view.stages = vec![stage("b:0", 1, 2)];
    let found = check(&ledger, &view, true);
    assert!(found.contains(&Violation::LeaveNotApplied { session: "s1".into() }));
    assert!(found.iter().any(|v| matches!(
        v,
        Violation::CountMismatch {
            server: 1,
            ledger: 0,
            ..
        }
    )));
}

#[test]
fn extra_viewers_the_ledger_never_saw_break_exclusive_counts() {
    // --- a retried join that got a second, unacknowledged seat shows up only in the counts
    let mut ledger = Ledger::default();
    ledger.record(&join("s1", "alice", "b:0", false));
    let mut view = agreeing_view(&ledger);
    view.stages = vec![stage("b:0", 2, 2)];
    view.broadcast = Some(BroadcastCounts {
        viewers: 2,
        admitted_total: 2,
    });
    let found = check(&ledger, &view, true);
    assert_eq!(
        found.len(),
        3,
        "stage count, broadcast viewers, admittedTotal: {found:?}"
    );
    assert!(
        check(&ledger, &view, false).is_empty(),
        "not compared when others write too"
    );
}
