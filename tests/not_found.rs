//! Every mutation that names something answers that thing's own "not found" code when it does
//! not exist, and changes nothing. The mutations are read from `schema.graphql`, so a new one
//! without a case here fails this test by name.

mod common;

use common::TestNode;
use serde_json::{Value, json};

/// One mutation given ids that name nothing: the document, its variables, the code it must answer.
struct Case {
    mutation: &'static str,
    query: &'static str,
    variables: Value,
    code: &'static str,
}

/// Mutations that create what they name, so nothing they take can be missing.
const NAME_NOTHING_EXISTING: &[&str] = &["startBroadcast", "createApiKey", "setPolicy"];

fn cases() -> Vec<Case> {
    let case = |mutation, query, variables, code| Case {
        mutation,
        query,
        variables,
        code,
    };
    vec![
        case(
            "endBroadcast",
            "mutation($id: ID!) { endBroadcast(id: $id) { id } }",
            json!({"id": "no-such-broadcast"}),
            "BROADCAST_NOT_FOUND",
        ),
        case(
            "joinBroadcast",
            "mutation($b: ID!) { joinBroadcast(broadcastId: $b, userId: \"u-1\") { token } }",
            json!({"b": "no-such-broadcast"}),
            "BROADCAST_NOT_FOUND",
        ),
        case(
            "leave",
            "mutation($s: ID!) { leave(sessionId: $s) { id } }",
            json!({"s": "no-such-session"}),
            "SESSION_NOT_FOUND",
        ),
        case(
            "heartbeat",
            "mutation($s: ID!) { heartbeat(sessionId: $s) { id } }",
            json!({"s": "no-such-session"}),
            "SESSION_NOT_FOUND",
        ),
        case(
            "hostTokens",
            "mutation($b: ID!) { hostTokens(broadcastId: $b, userId: \"h-1\") { token } }",
            json!({"b": "no-such-broadcast"}),
            "BROADCAST_NOT_FOUND",
        ),
        case(
            "createStage",
            "mutation($b: ID!) { createStage(broadcastId: $b) { id } }",
            json!({"b": "no-such-broadcast"}),
            "BROADCAST_NOT_FOUND",
        ),
        // A live broadcast's id with a slot it does not have.
        case(
            "deleteStage",
            "mutation($id: ID!) { deleteStage(id: $id, force: true) { id } }",
            json!({"id": "show:99"}),
            "STAGE_NOT_FOUND",
        ),
        case(
            "drainStage",
            "mutation($id: ID!) { drainStage(id: $id, moveViewers: true) { viewersMoved } }",
            json!({"id": "show:99"}),
            "STAGE_NOT_FOUND",
        ),
        case(
            "hostPublishing",
            "mutation($b: ID!) { hostPublishing(broadcastId: $b, participantId: \"h-s0\") { id } }",
            json!({"b": "no-such-broadcast"}),
            "BROADCAST_NOT_FOUND",
        ),
        case(
            "revokeApiKey",
            "mutation($id: ID!) { revokeApiKey(id: $id) { id } }",
            json!({"id": "no-such-key"}),
            "API_KEY_NOT_FOUND",
        ),
    ]
}

/// Field names of `type Mutation` in the SDL, skipping descriptions.
fn schema_mutations() -> Vec<String> {
    let sdl = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql")).unwrap();
    let body = sdl
        .split("type Mutation {")
        .nth(1)
        .expect("schema.graphql has a Mutation type");
    let mut names = Vec::new();
    let mut in_description = false;
    for line in body.lines() {
        if line == "}" {
            break;
        }
        let Some(field) = line.strip_prefix('\t').filter(|l| !l.starts_with('\t')) else {
            continue;
        };
        if field.trim() == "\"\"\"" {
            in_description = !in_description;
        } else if !in_description {
            let name: String = field.chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
            if !name.is_empty() {
                names.push(name);
            }
        }
    }
    names
}

async fn everything(n: &TestNode) -> Value {
    n.admin(
        "{ broadcasts { id state viewers admittedTotal hosts } stages { id state viewers } apiKeys { id } }",
        json!({}),
    )
    .await
}

#[test]
fn every_mutation_in_the_schema_has_a_not_found_case() {
    let schema = schema_mutations();
    assert!(
        schema.len() >= 10,
        "read too few mutations from schema.graphql: {schema:?}"
    );
    let covered: Vec<&str> = cases()
        .iter()
        .map(|c| c.mutation)
        .chain(NAME_NOTHING_EXISTING.iter().copied())
        .collect();
    let missing: Vec<&String> = schema.iter().filter(|m| !covered.contains(&m.as_str())).collect();
    assert!(
        missing.is_empty(),
        "mutations without a not-found case in tests/not_found.rs: {missing:?} \
         (add a Case, or list it in NAME_NOTHING_EXISTING if it takes no existing id)"
    );
    let stale: Vec<&&str> = covered.iter().filter(|c| !schema.iter().any(|m| m == *c)).collect();
    assert!(
        stale.is_empty(),
        "cases for mutations the schema no longer has: {stale:?}"
    );
}

#[tokio::test]
async fn unknown_ids_answer_their_own_not_found_code_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let n = TestNode::start(dir.path(), &[]);
    let admin = n.admin_key.as_deref();

    // --- 1. something to leave alone: a live broadcast with a seated viewer
    n.start_broadcast("show").await;
    n.join("show", "alice").await.unwrap();
    let before = everything(&n).await;

    // --- 2. every mutation, as admin (so the key is not what fails), names what does not exist;
    //        twice, as the second join document runs the compiled plan rather than the executor
    for round in 1..=2 {
        for c in cases() {
            let code = n.err(c.query, c.variables.clone(), admin).await;
            assert_eq!(code, c.code, "{} of an unknown id (round {round})", c.mutation);
        }
    }

    // --- 3. nothing changed
    assert_eq!(everything(&n).await, before, "a refused mutation changed the fleet");

    // --- 4. queries for unknown ids answer null, not an error
    let q = "{ broadcast(id: \"nope\") { id } stage(id: \"show:99\") { id } session(id: \"nope\") { id } }";
    assert_eq!(
        n.admin(q, json!({})).await,
        json!({"broadcast": null, "stage": null, "session": null})
    );
    let code = n
        .err("{ stats(broadcastId: \"nope\") { viewers } }", json!({}), admin)
        .await;
    assert_eq!(code, "BROADCAST_NOT_FOUND");
}
