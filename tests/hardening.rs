//! The front door, tried as an attacker or a careless client would: every finding of the
//! hardening review has a test here, against the real binary on loopback. Each asserts what the
//! client sees (status, `extensions.code`, a closed socket) and that the node is still up after.

mod common;

use std::time::Duration;

use common::ws::Ws;
use common::{TestNode, node};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn addr(n: &TestNode) -> String {
    n.url.trim_start_matches("http://").to_string()
}

async fn alive(n: &TestNode) {
    assert_eq!(n.get("/livez").await.0, 200, "the node still answers");
}

/// POST a raw body with a content type; (status, parsed body or Null).
async fn post_raw(n: &TestNode, content_type: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let resp = n
        .http()
        .post(format!("{}/graphql", n.url))
        .header("content-type", content_type)
        .body(body)
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .expect("an answer, not a hang or a dropped connection");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"].as_str().unwrap_or("<none>")
}

fn message(body: &Value) -> &str {
    body["errors"][0]["message"].as_str().unwrap_or("")
}

#[tokio::test]
async fn deeply_nested_values_are_refused_by_the_gate_and_the_node_stays_up() {
    let (_dir, n) = node(&[]);
    // --- 1. 16,000 levels: ten times the depth that overflowed the parser's stack
    let list = format!(
        "{{ broadcast(id: {}1{}) {{ id }} }}",
        "[".repeat(16_000),
        "]".repeat(16_000)
    );
    let object = format!(
        "{{ broadcast(id: {}1{}) {{ id }} }}",
        "{a:".repeat(16_000),
        "}".repeat(16_000)
    );
    let selections = format!(
        "{{ {} }}",
        "broadcasts { stages { ".repeat(2_000) + &"} } ".repeat(2_000)
    );
    for doc in [&list, &object, &selections] {
        let body = json!({"query": doc}).to_string();
        let (status, answer) = post_raw(&n, "application/json", body).await;
        assert_eq!((status, code(&answer)), (400, "BAD_REQUEST"), "{answer}");
        assert!(
            message(&answer).contains("graphql_max_nesting"),
            "names the limit: {answer}"
        );
    }
    alive(&n).await;
    // --- 2. the same over a WebSocket: an error on that operation, the socket and node live on
    let mut ws = Ws::connect(&n, None).await;
    let answer = ws.run("deep", &list).await;
    assert_eq!(
        answer["payload"]["errors"][0]["extensions"]["code"], "BAD_REQUEST",
        "{answer}"
    );
    let said = answer["payload"]["errors"][0]["message"].as_str().unwrap_or("");
    assert!(said.contains("graphql_max_nesting"), "{answer}");
    let fine = ws.run("ok", "{ broadcasts { id } }").await;
    assert_eq!(fine["type"], "next", "{fine}");
    alive(&n).await;
}

#[tokio::test]
async fn a_doubling_fragment_chain_is_refused_before_its_cost_is_paid() {
    let (_dir, n) = node(&[]);
    // 30 levels cost 2^30 in the complexity check before (about 220 s of CPU)
    let mut doc = String::from("query { ...F0 }\n");
    for i in 0..30 {
        doc.push_str(&format!("fragment F{i} on Query {{ ...F{} ...F{} }}\n", i + 1, i + 1));
    }
    doc.push_str("fragment F30 on Query { broadcasts { id } }\n");
    let started = std::time::Instant::now();
    let (status, answer) = post_raw(&n, "application/json", json!({"query": doc}).to_string()).await;
    assert_eq!((status, code(&answer)), (400, "BAD_REQUEST"), "{answer}");
    assert!(message(&answer).contains("graphql_max_spreads"), "{answer}");
    // Not a benchmark (BENCHMARKS.md measures the refusal time): a hang detector only.
    assert!(started.elapsed() < Duration::from_secs(10), "answered, not computed");
    // a fragment cycle is refused too
    let cycle = "query { ...A } fragment A on Query { ...B } fragment B on Query { ...A }";
    let (status, answer) = post_raw(&n, "application/json", json!({"query": cycle}).to_string()).await;
    assert_eq!((status, code(&answer)), (400, "BAD_REQUEST"), "{answer}");
    alive(&n).await;
}

#[tokio::test]
async fn a_revoked_key_stops_working_on_the_socket_it_opened_and_the_socket_is_closed() {
    let (_dir, n) = node(&[]);
    let created = n
        .admin(
            "mutation { createApiKey(name: \"ops2\", role: ADMIN) { key apiKey { id } } }",
            json!({}),
        )
        .await;
    let key = created["createApiKey"]["key"].as_str().unwrap().to_string();
    let id = created["createApiKey"]["apiKey"]["id"].as_str().unwrap().to_string();
    // --- 1. the key works on its socket
    let mut ws = Ws::connect(&n, Some(&key)).await;
    let ok = ws.run("1", "{ apiKeys { id } }").await;
    assert_eq!(ok["type"], "next", "{ok}");
    // --- 2. revoked elsewhere: the socket is closed with the reason
    n.admin("mutation($id: ID!) { revokeApiKey(id: $id) { id } }", json!({"id": id}))
        .await;
    let close = ws.closed().await.expect("a close frame with a code");
    assert_eq!(close.0, 4403);
    assert!(close.1.contains("revoked"), "{close:?}");
    // --- 3. and nothing it might still send runs: admin keys are unchanged
    let keys = n.admin("{ apiKeys { id } }", json!({})).await;
    assert!(!keys.to_string().contains(&id), "the revoked key is gone: {keys}");
}

#[tokio::test]
async fn websocket_frames_are_limited_on_the_way_in_but_not_on_the_way_out() {
    let (_dir, n) = node(&["--graphql-max-complexity", "1000000"]);
    // --- 1. a frame header announcing 16 MiB is refused at once: the server closes the socket
    //        while the payload has not been sent
    let mut tcp = TcpStream::connect(addr(&n)).await.unwrap();
    let upgrade = format!(
        "GET /graphql HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n",
        addr(&n)
    );
    tcp.write_all(upgrade.as_bytes()).await.unwrap();
    let mut head = vec![0u8; 1024];
    let got = tcp.read(&mut head).await.unwrap();
    assert!(String::from_utf8_lossy(&head[..got]).starts_with("HTTP/1.1 101"));
    // FIN + text, masked, 64-bit length = 16 MiB, mask key, then only 4 payload bytes
    let mut frame = vec![0x81u8, 0x80 | 127];
    frame.extend_from_slice(&(16u64 << 20).to_be_bytes());
    frame.extend_from_slice(&[1, 2, 3, 4, b'a', b'b', b'c', b'd']);
    tcp.write_all(&frame).await.unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(20), tcp.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "the server closed the socket instead of waiting for 16 MiB"
    );
    alive(&n).await;

    // --- 2. an answer over 1 MiB arrives whole over a WebSocket
    let mut ws = Ws::connect(&n, None).await;
    let mut doc = String::from("{");
    for i in 0..150 {
        doc.push_str(&format!(
            " a{i}: __schema {{ types {{ name description fields {{ name description }} }} }}"
        ));
    }
    doc.push('}');
    let answer = ws.run("big", &doc).await;
    assert_eq!(
        answer["type"],
        "next",
        "{}",
        &answer.to_string()[..200.min(answer.to_string().len())]
    );
    let size = answer.to_string().len();
    assert!(size > 1 << 20, "the answer is {size} bytes");
    let fine = ws.run("after", "{ broadcasts { id } }").await;
    assert_eq!(fine["type"], "next", "the socket lives on: {fine}");
}

#[tokio::test]
async fn slow_and_idle_clients_are_cut_off_and_the_node_keeps_serving() {
    let (_dir, n) = node(&["--header-read-timeout-secs", "1", "--body-read-timeout-secs", "1"]);
    // --- 1. slowloris: headers never finish; the node closes the connection
    let mut slow = TcpStream::connect(addr(&n)).await.unwrap();
    slow.write_all(b"POST /graphql HTTP/1.1\r\nHost: x\r\nX-A: ")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(20), slow.read_to_end(&mut buf)).await;
    assert!(closed.is_ok(), "a connection whose headers never finish is closed");
    // --- 2. an idle connection that never sent anything is closed too
    let mut idle = TcpStream::connect(addr(&n)).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(20), idle.read_to_end(&mut buf)).await;
    assert!(closed.is_ok(), "an idle connection is closed");
    // --- 3. a body that never finishes gets a 408 with a code
    let mut half = TcpStream::connect(addr(&n)).await.unwrap();
    half.write_all(b"POST /graphql HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"query\":")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), half.read_to_end(&mut answer))
        .await
        .expect("answered within 20 s")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"code\":\"BAD_REQUEST\""), "{answer}");
    alive(&n).await;
}

#[tokio::test]
async fn past_the_connection_cap_clients_get_a_clean_refusal_and_the_node_recovers() {
    let (_dir, n) = node(&["--max-connections", "20", "--header-read-timeout-secs", "30"]);
    // --- 1. ten idle connections and ten WebSockets fill the node (an upgraded connection keeps
    //        its place)
    let mut held = Vec::new();
    for _ in 0..10 {
        held.push(TcpStream::connect(addr(&n)).await.unwrap());
    }
    let mut sockets = Vec::new();
    for _ in 0..10 {
        sockets.push(Ws::connect(&n, None).await);
    }
    // the node counts a connection once it accepted it: wait until the twenty-first is refused
    let refusal = common::eventually(Duration::from_secs(20), "a refusal past the cap", || async {
        let mut extra = TcpStream::connect(addr(&n)).await.ok()?;
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), extra.read_to_end(&mut answer))
            .await
            .ok()?
            .ok()?;
        let answer = String::from_utf8_lossy(&answer).to_string();
        answer.starts_with("HTTP/1.1 503").then_some(answer)
    })
    .await;
    assert!(refusal.contains("\"code\":\"UNAVAILABLE\""), "{refusal}");
    assert!(refusal.contains("max_connections"), "{refusal}");
    // --- 2. once they go, the node serves again
    drop(held);
    drop(sockets);
    common::eventually(Duration::from_secs(20), "the node serves again", || async {
        let r = n.http().get(format!("{}/livez", n.url)).send().await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
}

#[tokio::test]
async fn sigterm_with_half_sent_requests_exits_within_the_drain_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = TestNode::start(
        dir.path(),
        &["--shutdown-drain-secs", "2", "--header-read-timeout-secs", "60"],
    );
    let mut held = Vec::new();
    for i in 0..50 {
        let mut s = TcpStream::connect(addr(&n)).await.unwrap();
        // half of them stop inside the headers, half inside the body
        let part: &[u8] = if i % 2 == 0 {
            b"POST /graphql HTTP/1.1\r\nHost: x\r\n"
        } else {
            b"POST /graphql HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 500\r\n\r\n{"
        };
        s.write_all(part).await.unwrap();
        held.push(s);
    }
    let mut ws = Ws::connect(&n, None).await;
    let pid = n.pid();
    let exited = tokio::task::spawn_blocking(move || {
        let ok = n.terminate();
        (ok, n)
    });
    // the WebSocket is told the node is going away
    assert_eq!(ws.closed().await.map(|c| c.0), Some(1001));
    let (ok, _n) = tokio::time::timeout(Duration::from_secs(30), exited)
        .await
        .unwrap_or_else(|_| panic!("node {pid} did not exit within 30 s of SIGTERM"))
        .unwrap();
    assert!(ok, "the node exited cleanly");
    drop(held);
}

#[tokio::test]
async fn behind_proxies_the_client_is_the_address_the_proxy_added_counted_by_network() {
    let (_dir, n) = node(&["--join-rate-per-ip", "1", "--client-ip-header", "x-forwarded-for"]);
    n.start_broadcast("b").await;
    // --- 1. the client rotates the first entry; nginx appended its real address last
    let mut codes = Vec::new();
    for (i, user) in ["s1", "s2", "s3", "s4"].into_iter().enumerate() {
        codes.push(
            n.join_forwarded(&format!("198.18.{i}.{i}, 203.0.113.7"), "b", user)
                .await,
        );
    }
    assert_eq!(codes[..2], [None, None], "a burst of two");
    assert_eq!(
        codes[2].as_deref(),
        Some("RATE_LIMITED"),
        "a spoofed first entry gains nothing"
    );
    // --- 2. other addresses of the same /24 are the same client
    assert_eq!(
        n.join_forwarded("203.0.113.99", "b", "s5").await.as_deref(),
        Some("RATE_LIMITED")
    );
    // --- 3. another network is another client
    assert_eq!(n.join_forwarded("198.51.100.2", "b", "o1").await, None);
    // --- 4. IPv6: one /64 is one client
    assert_eq!(n.join_forwarded("2001:db8:1:1::1", "b", "v1").await, None);
    assert_eq!(n.join_forwarded("2001:db8:1:1::2", "b", "v2").await, None);
    assert_eq!(
        n.join_forwarded("2001:db8:1:1::ffff", "b", "v3").await.as_deref(),
        Some("RATE_LIMITED")
    );

    // --- 5. with trusted CIDRs, a header from a peer that is not a proxy is ignored
    let (_dir2, m) = node(&[
        "--join-rate-per-ip",
        "1",
        "--client-ip-header",
        "x-forwarded-for",
        "--trusted-proxy-cidrs",
        "10.0.0.0/8",
    ]);
    m.start_broadcast("b").await;
    let mut codes = Vec::new();
    for (i, user) in ["t1", "t2", "t3"].into_iter().enumerate() {
        codes.push(m.join_forwarded(&format!("198.18.{i}.1"), "b", user).await);
    }
    assert_eq!(
        codes[2].as_deref(),
        Some("RATE_LIMITED"),
        "loopback is not a trusted proxy: {codes:?}"
    );
}

#[tokio::test]
async fn a_viewer_key_does_not_skip_the_per_client_limit() {
    let (_dir, n) = node(&["--join-rate-per-ip", "1"]);
    n.start_broadcast("b").await;
    let created = n
        .admin(
            "mutation { createApiKey(name: \"page\", role: VIEWER) { key } }",
            json!({}),
        )
        .await;
    let key = created["createApiKey"]["key"].as_str().unwrap().to_string();
    let q = "mutation($u: String!) { joinBroadcast(broadcastId: \"b\", userId: $u) { token } }";
    let mut codes = Vec::new();
    for u in ["k1", "k2", "k3"] {
        let (_, body) = n.post(q, json!({"u": u}), Some(&key)).await;
        codes.push(code(&body).to_string());
    }
    assert_eq!(codes, ["<none>", "<none>", "RATE_LIMITED"]);
}

#[tokio::test]
async fn only_json_posts_run_and_every_refusal_carries_a_code() {
    let (_dir, n) = node(&[]);
    n.start_broadcast("b").await;
    let join =
        json!({"query": "mutation { joinBroadcast(broadcastId: \"b\", userId: \"csrf\") { token } }"}).to_string();
    // --- 1. what a cross-site form can send without a preflight never runs
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let (status, body) = post_raw(&n, ct, join.clone()).await;
        assert_eq!((status, code(&body)), (415, "UNSUPPORTED_MEDIA_TYPE"), "{ct}: {body}");
    }
    let viewers = n
        .ok(
            "{ stats(broadcastId: \"b\") { viewers admittedTotal } }",
            json!({}),
            None,
        )
        .await;
    assert_eq!(
        viewers["stats"],
        json!({"viewers": 0, "admittedTotal": 0}),
        "nothing ran"
    );
    let (status, _) = post_raw(&n, "application/json; charset=utf-8", join.clone()).await;
    assert_eq!(status, 200);
    // --- 2. 413 and 431 carry codes
    let big = format!(
        "{{\"query\": \"{{ broadcasts {{ id }} }}\", \"x\": \"{}\"}}",
        "a".repeat(70 * 1024)
    );
    let (status, body) = post_raw(&n, "application/json", big).await;
    assert_eq!((status, code(&body)), (413, "REQUEST_TOO_LARGE"), "{body}");
    let resp = n
        .http()
        .get(format!("{}/livez", n.url))
        .header("x-padding", "p".repeat(20 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 431);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(code(&body), "REQUEST_TOO_LARGE");
    // --- 3. errors async-graphql raises over a WebSocket carry a code too
    let mut ws = Ws::connect(&n, None).await;
    for bad in ["{ nope }", "{ broken", "{ broadcasts { id } "] {
        let answer = ws.run("bad", bad).await;
        assert_eq!(
            answer["payload"]["errors"][0]["extensions"]["code"], "BAD_REQUEST",
            "{bad}: {answer}"
        );
    }
}

#[tokio::test]
async fn enums_take_enum_literals_and_user_ids_take_printable_text() {
    let (_dir, n) = node(&[]);
    n.start_broadcast("b").await;
    let before = n.admin("{ apiKeys { id } }", json!({})).await;
    // --- 1. a string literal where an enum goes is refused; the enum literal and a variable work
    let quoted = "mutation { createApiKey(name: \"x\", role: \"ADMIN\") { key } }";
    let (status, body) = n.post(quoted, json!({}), n.admin_key.as_deref()).await;
    assert_eq!(code(&body), "BAD_REQUEST", "{status} {body}");
    assert!(message(&body).contains("ADMIN"), "{body}");
    assert_eq!(
        n.admin("{ apiKeys { id } }", json!({})).await,
        before,
        "nothing was created"
    );
    n.admin(
        "mutation { createApiKey(name: \"y\", role: VIEWER) { key } }",
        json!({}),
    )
    .await;
    n.admin(
        "mutation($r: Role!) { createApiKey(name: \"z\", role: $r) { key } }",
        json!({"r": "VIEWER"}),
    )
    .await;
    // --- 2. control characters and surrounding whitespace in user ids
    for bad in [
        "line\nbreak",
        "bell\u{7}",
        "nul\u{0}",
        "esc\u{1b}[31m",
        " padded",
        "padded ",
    ] {
        assert_eq!(n.join("b", bad).await.unwrap_err(), "INVALID_INPUT", "{bad:?}");
    }
    let stats = n.ok("{ stats(broadcastId: \"b\") { viewers } }", json!({}), None).await;
    assert_eq!(stats["stats"]["viewers"], 0);
    assert!(n.join("b", "zoë smith").await.is_ok());
}

#[tokio::test]
async fn pages_carry_security_headers_and_cors_is_off_unless_an_origin_is_allowed() {
    let (_dir, n) = node(&[]);
    // --- 1. security headers on pages, GraphiQL and the API
    for path in ["/", "/graphql", "/livez"] {
        let r = n.http().get(format!("{}{path}", n.url)).send().await.unwrap();
        let h = r.headers();
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
    }
    let graphiql = n.get("/graphql").await.1;
    assert!(
        graphiql.contains("integrity=\"sha384-"),
        "GraphiQL's scripts are pinned with integrity"
    );
    assert!(
        !graphiql.contains("@latest") && !graphiql.contains("graphiql@4/"),
        "pinned versions"
    );
    // --- 2. CORS off by default: no allow-origin for anyone
    let r = n
        .http()
        .post(format!("{}/graphql", n.url))
        .header("origin", "https://evil.example")
        .json(&json!({"query": "{ broadcasts { id } }"}))
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    // --- 3. an allow-list turns it on for the named origin only
    let (_dir2, m) = node(&["--cors-allowed-origins", "https://app.example"]);
    let preflight = |origin: &'static str| {
        m.http()
            .request(reqwest::Method::OPTIONS, format!("{}/graphql", m.url))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization, content-type")
            .send()
    };
    let ok = preflight("https://app.example").await.unwrap();
    assert_eq!(ok.status().as_u16(), 204);
    assert_eq!(ok.headers()["access-control-allow-origin"], "https://app.example");
    let no = preflight("https://evil.example").await.unwrap();
    assert_eq!(no.status().as_u16(), 403);
    assert!(no.headers().get("access-control-allow-origin").is_none());
}

mod generated {
    //! Random and mutated documents and bodies thrown at the front gate: every one is answered
    //! (never a hang or a dropped connection) and the node stays up.
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    const SEEDS: &[&str] = &[
        "{ broadcasts { id state stages { id viewers } } }",
        "mutation($b: ID!, $u: String!) { joinBroadcast(broadcastId: $b, userId: $u) { token session { id } } }",
        "query Q { ...F } fragment F on Query { stats(broadcastId: \"b\") { viewers } }",
        "{ broadcast(id: [[1, {a: [2]}]]) { id } }",
        "mutation { createApiKey(name: \"n\", role: ADMIN) { key } }",
        "\"\"\"block \"\"\" { a(b: \"s\\u0041\") # comment\n }",
    ];

    fn documents() -> impl Strategy<Value = String> {
        let seed = proptest::sample::select(SEEDS).prop_map(str::to_string);
        let mutated = (
            seed,
            proptest::collection::vec((any::<usize>(), any::<u8>(), 0..3u8), 0..40),
        )
            .prop_map(|(mut doc, edits)| {
                const ALPHABET: &[u8] = b"{}[]()...:$@!\"\\#\n fragment on query ...F a";
                for (at, byte, op) in edits {
                    let at = at % (doc.len() + 1);
                    let at = (0..=at).rev().find(|i| doc.is_char_boundary(*i)).unwrap_or(0);
                    let c = ALPHABET[byte as usize % ALPHABET.len()] as char;
                    match op {
                        0 => doc.insert(at, c),
                        1 if at < doc.len() => {
                            doc.remove(at);
                        }
                        _ => {
                            let tail = doc[at..].chars().take(40).collect::<String>();
                            doc.insert_str(at, &tail.repeat(1 + byte as usize % 50));
                        }
                    }
                }
                doc
            });
        let soup = proptest::collection::vec(proptest::sample::select(b"{[(...)]}\"#:$ a".to_vec()), 0..20_000)
            .prop_map(|b| String::from_utf8(b).unwrap());
        prop_oneof![4 => mutated, 1 => soup, 1 => any::<String>()]
    }

    fn bodies() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => documents().prop_map(|d| json!({"query": d}).to_string()),
            1 => documents().prop_map(|d| json!({"query": d, "variables": {"b": [[[d.len()]]]}}).to_string()),
            1 => any::<String>(),
            1 => proptest::collection::vec(proptest::sample::select(b"[{\"query\":1,}]".to_vec()), 0..30_000)
                .prop_map(|b| String::from_utf8(b).unwrap()),
        ]
    }

    #[test]
    fn every_generated_request_is_answered_and_the_node_stays_up() {
        let (_dir, n) = node(&["--join-rate-per-ip", "0"]);
        let rt = tokio::runtime::Runtime::new().unwrap();
        let mut runner = TestRunner::new(Config {
            cases: 400,
            failure_persistence: None,
            ..Config::default()
        });
        runner
            .run(&bodies(), |body| {
                let (status, answer) = rt.block_on(post_raw(&n, "application/json", body));
                prop_assert!(matches!(status, 200 | 400 | 413), "status {status}: {answer}");
                if status != 200 {
                    prop_assert!(code(&answer) != "<none>", "a refusal without a code: {answer}");
                }
                Ok(())
            })
            .unwrap();
        rt.block_on(alive(&n));
    }
}
