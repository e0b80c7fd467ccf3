//! `joinBroadcast` documents seen before are answered by a compiled plan instead of async-graphql's
//! executor (`src/api/compiled.rs`). A client must not be able to tell: each document here goes
//! through both paths — the first request of a document runs on the executor, the second on the
//! plan (the node's `graphql_compiled` counter says which) — and the two answers are compared.

mod common;

use common::{TestNode, decode_jwt, node};
use serde_json::{Value, json};

/// `doc` twice with the same variables: (executor's answer, compiled plan's answer).
async fn both_ways(n: &TestNode, doc: &str, vars: Value, key: Option<&str>) -> (Value, Value) {
    let before = n.compiled_answers().await;
    let (s1, executed) = n.post(doc, vars.clone(), key).await;
    assert_eq!(
        n.compiled_answers().await,
        before,
        "a new document runs on the executor: {doc}"
    );
    let (s2, planned) = n.post(doc, vars, key).await;
    assert_eq!(
        n.compiled_answers().await,
        before + 1,
        "the second request used the plan: {doc}"
    );
    assert_eq!(s1, s2, "same HTTP status");
    (executed, planned)
}

/// `doc` twice: the second answer must come from the executor again (the plan declined it).
async fn executor_twice(n: &TestNode, doc: &str, vars: Value) -> (Value, Value) {
    let before = n.compiled_answers().await;
    let (_, a) = n.post(doc, vars.clone(), None).await;
    let (_, b) = n.post(doc, vars, None).await;
    assert_eq!(n.compiled_answers().await, before, "the plan must not answer: {doc}");
    (a, b)
}

/// The answer's text, as sent.
async fn raw(n: &TestNode, doc: &str, vars: Value) -> String {
    let body = json!({"query": doc, "variables": vars});
    let resp = n
        .http()
        .post(format!("{}/graphql", n.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    resp.text().await.unwrap()
}

/// Every field a join can show, with aliases and `__typename` at each level.
const EVERYTHING: &str = "mutation Join($b: ID!, $u: String!, $a: [AttributeInput!]) {
  seat: joinBroadcast(broadcastId: $b, userId: $u, attributes: $a) {
    __typename rejoined t: token tokenExpiresAt
    session { __typename id broadcastId userId stageId participantId
              attributes { __typename key v: value } joinedAt lastSeen leaseUntil }
    where: stage { __typename id broadcastId slot role state capacity viewers arn ivsStageId
                   eventsUrl whipUrl createdAt }
  }
}";

/// Blank what legitimately differs between two rejoins a moment apart: the token (new signature,
/// `iat`) and the times derived from "now"; check the tokens carry the same claims otherwise.
fn without_clock(mut answer: Value) -> Value {
    let seat = &mut answer["data"]["seat"];
    let (_, mut claims) = decode_jwt(seat["t"].as_str().expect("a token"));
    claims["iat"] = Value::Null;
    claims["exp"] = Value::Null;
    seat["t"] = claims;
    assert!(seat["tokenExpiresAt"].as_str().unwrap().ends_with('Z'));
    seat["tokenExpiresAt"] = Value::Null;
    for time in ["lastSeen", "leaseUntil"] {
        assert!(seat["session"][time].as_str().unwrap().ends_with('Z'));
        seat["session"][time] = Value::Null;
    }
    answer
}

#[tokio::test]
async fn a_compiled_join_answers_exactly_as_the_executor_does() {
    let (_dir, n) = node(&["--join-rate-per-ip", "0"]);
    n.start_broadcast("show").await;
    let attrs = json!([{"key": "seat", "value": "7"}, {"key": "lang", "value": "fr\"\\é"}]);
    // alice takes her seat (with another text of the document, so that one stays new); both
    // answers below are rejoins, so they must agree
    let seated = n
        .ok(
            &format!("{EVERYTHING} "),
            json!({"b": "show", "u": "alice", "a": attrs}),
            None,
        )
        .await;
    assert_eq!(seated["seat"]["rejoined"], false);
    let vars = json!({"b": "show", "u": "alice", "a": attrs});
    let (executed, planned) = both_ways(&n, EVERYTHING, vars, None).await;
    assert!(executed.get("errors").is_none(), "{executed}");
    assert_eq!(executed["data"]["seat"]["rejoined"], true);
    // attributes come sorted by key
    assert_eq!(executed["data"]["seat"]["session"]["attributes"][0]["v"], "fr\"\\é");
    assert_eq!(without_clock(executed), without_clock(planned));

    // keys come in the order of the selection (serde_json's Value sorts them: read the text)
    let doc = "mutation($b: ID!, $u: String!) { joinBroadcast(userId: $u, broadcastId: $b) {
        stage { viewers id } token session { userId id } } }";
    let (_, first) = both_ways(&n, doc, json!({"b": "show", "u": "bob"}), None).await;
    assert_eq!(
        first["data"]["joinBroadcast"]["stage"]["viewers"], 2,
        "live count: alice and bob"
    );
    for answer in [raw(&n, doc, json!({"b": "show", "u": "bob"})).await, {
        let doc = format!("{doc} ");
        raw(&n, &doc, json!({"b": "show", "u": "bob"})).await
    }] {
        let at = |k: &str| {
            answer
                .find(&format!("\"{k}\":"))
                .unwrap_or_else(|| panic!("{k} in {answer}"))
        };
        assert!(at("stage") < at("viewers") && at("viewers") < at("id"), "{answer}");
        assert!(
            at("id") < at("token") && at("token") < at("session") && at("session") < at("userId"),
            "{answer}"
        );
    }

    // literal arguments
    let doc = "mutation { joinBroadcast(broadcastId: \"show\", userId: \"carol\") { rejoined session { userId } } }";
    let (executed, planned) = both_ways(&n, doc, json!({}), None).await;
    assert_eq!(executed["data"]["joinBroadcast"]["rejoined"], false, "carol is new");
    assert_eq!(
        planned["data"]["joinBroadcast"]["rejoined"], true,
        "and seated after that"
    );
    assert_eq!(
        planned["data"]["joinBroadcast"]["session"],
        executed["data"]["joinBroadcast"]["session"]
    );
}

#[tokio::test]
async fn a_compiled_join_fails_exactly_as_the_executor_does() {
    let (_dir, n) = node(&["--join-rate-per-ip", "0", "--seats-per-stage", "1"]);
    n.start_broadcast("show").await;
    n.start_broadcast("over").await;
    n.admin("mutation { endBroadcast(id: \"over\") { state } }", json!({}))
        .await;
    n.join("show", "first").await.unwrap();
    let doc = |n: usize| {
        // same document, different text: each is new to the node's document cache
        format!(
            "mutation($b: ID!, $u: String!, $a: [AttributeInput!]) {{{}\n  joinBroadcast(broadcastId: $b, userId: $u, attributes: $a) {{ token }} }}",
            " ".repeat(n)
        )
    };
    let big = json!([{"key": "k", "value": "x".repeat(1100)}]);
    let cases = [
        (json!({"b": "nowhere", "u": "u"}), "BROADCAST_NOT_FOUND"),
        (json!({"b": "over", "u": "u"}), "BROADCAST_NOT_LIVE"),
        (json!({"b": "show", "u": "second"}), "CAPACITY_EXHAUSTED"),
        (json!({"b": "show", "u": ""}), "INVALID_INPUT"),
        (json!({"b": "show", "u": "u".repeat(129)}), "INVALID_INPUT"),
        (json!({"b": "show", "u": "u", "a": big}), "INVALID_INPUT"),
    ];
    for (i, (vars, code)) in cases.into_iter().enumerate() {
        let (executed, planned) = both_ways(&n, &doc(i), vars.clone(), None).await;
        assert_eq!(executed["errors"][0]["extensions"]["code"], code, "{vars}: {executed}");
        assert_eq!(executed, planned, "{vars}");
    }
    let viewers = n.ok("{ stats { viewers admittedTotal } }", json!({}), None).await;
    assert_eq!(
        viewers["stats"],
        json!({"viewers": 1, "admittedTotal": 1}),
        "refusals changed nothing"
    );

    // keyed joins: no key, then a viewer key past its rate
    let (_dir2, keyed) = node(&["--viewer-join", "keyed", "--join-rate-per-viewer-key", "1"]);
    keyed.start_broadcast("show").await;
    let created = keyed
        .admin(
            "mutation { createApiKey(name: \"v\", role: VIEWER) { key } }",
            json!({}),
        )
        .await;
    let key = created["createApiKey"]["key"].as_str().unwrap().to_string();
    let (executed, planned) = both_ways(&keyed, &doc(0), json!({"b": "show", "u": "a"}), None).await;
    assert_eq!(executed["errors"][0]["extensions"]["code"], "UNAUTHENTICATED");
    assert_eq!(executed, planned);
    // a burst of two, spent here by the executor and the plan alike
    let (a, b) = both_ways(&keyed, &doc(1), json!({"b": "show", "u": "a"}), Some(&key)).await;
    assert!(a.get("errors").is_none() && b.get("errors").is_none(), "{a} {b}");
    let (executed, planned) = both_ways(&keyed, &doc(2), json!({"b": "show", "u": "a"}), Some(&key)).await;
    assert_eq!(executed["errors"][0]["extensions"]["code"], "RATE_LIMITED");
    assert_eq!(executed, planned);
}

#[tokio::test]
async fn what_the_plan_does_not_cover_goes_to_the_executor_and_changes_nothing() {
    let (_dir, n) = node(&["--join-rate-per-ip", "0"]);
    n.start_broadcast("show").await;
    let doc = "mutation($b: ID!, $u: String!) { joinBroadcast(broadcastId: $b, userId: $u) { token } }";
    n.join("show", "someone").await.unwrap();
    n.post(doc, json!({"b": "show", "u": "warm"}), None).await;
    // the document has a plan now, but these variables are not plain strings
    for vars in [
        json!({"b": "show", "u": 7}),
        json!({"b": "show"}),
        json!({"b": ["x"], "u": "u"}),
    ] {
        let (a, b) = executor_twice(&n, doc, vars.clone()).await;
        assert_eq!(a["errors"][0]["extensions"]["code"], "BAD_REQUEST", "{vars}: {a}");
        assert_eq!(a, b);
    }
    // an ID given as a number is valid GraphQL: the executor coerces it
    let (a, _) = executor_twice(&n, doc, json!({"b": 5, "u": "u"})).await;
    assert_eq!(a["errors"][0]["extensions"]["code"], "BROADCAST_NOT_FOUND", "{a}");
    // an operation name the document does not have
    let before = n.compiled_answers().await;
    let body = json!({"query": doc, "variables": {"b": "show", "u": "u"}, "operationName": "Other"});
    let resp: Value = n
        .http()
        .post(format!("{}/graphql", n.url))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(resp["errors"][0]["extensions"]["code"], "BAD_REQUEST", "{resp}");
    assert_eq!(n.compiled_answers().await, before);
    // a fragment: validated, but not compiled
    let frag = "mutation($b: ID!, $u: String!) { joinBroadcast(broadcastId: $b, userId: $u) { ...J } }
                fragment J on Join { rejoined }";
    let (a, b) = executor_twice(&n, frag, json!({"b": "show", "u": "someone"})).await;
    assert_eq!(
        (
            &a["data"]["joinBroadcast"]["rejoined"],
            &b["data"]["joinBroadcast"]["rejoined"]
        ),
        (&json!(true), &json!(true))
    );
    let stats = n.ok("{ stats { viewers } }", json!({}), None).await;
    assert_eq!(
        stats["stats"]["viewers"], 2,
        "someone and warm; the refused requests added no one"
    );
}
