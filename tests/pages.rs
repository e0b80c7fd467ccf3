//! The embedded web pages over plain HTTP: every page and module is served with its type, an ETag
//! that turns a repeat into 304 and `no-cache`; page paths without their slash redirect; the pages'
//! CSP lets scripts come only from the node and the SDK's origin; `site` tells pages where the SDK
//! is and which IVS they talk to; `sdk_dir` self-hosts the SDK under /sdk/ and nothing outside it;
//! `me` says which role a key has; a bad `sdk_url` stops the node at start with a clear error.
//! (The pages themselves run in Chromium in tests/pages_browser.rs.)

mod common;

use common::{binary, node};
use serde_json::json;

#[tokio::test]
async fn pages_and_modules_are_served_with_types_etags_and_a_csp_for_the_default_sdk() {
    let (_dir, n) = node(&[]);
    for (path, ty) in [
        ("/", "text/html"),
        ("/watch/", "text/html"),
        ("/broadcast/", "text/html"),
        ("/console/", "text/html"),
        ("/js/gql.js", "text/javascript"),
        ("/js/site.js", "text/javascript"),
        ("/watch/watch.js", "text/javascript"),
        ("/broadcast/broadcast.js", "text/javascript"),
        ("/console/console.js", "text/javascript"),
        ("/css/app.css", "text/css"),
    ] {
        let r = n.http().get(format!("{}{path}", n.url)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let h = r.headers().clone();
        assert!(
            h["content-type"].to_str().unwrap().starts_with(ty),
            "{path}: {:?}",
            h["content-type"]
        );
        assert_eq!(h["cache-control"], "no-cache", "{path}");
        let etag = h["etag"].to_str().unwrap().to_string();
        let again = n
            .http()
            .get(format!("{}{path}", n.url))
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304, "{path}: a repeat with the ETag is 304");
        let kept = again.headers().get("content-security-policy");
        assert!(
            kept.is_none_or(|v| !v.to_str().unwrap().contains("default-src 'none'")),
            "{path}: a 304 must not replace the page's stored policy with the API's: {kept:?}"
        );
        if ty == "text/html" {
            let csp = h["content-security-policy"].to_str().unwrap();
            assert!(
                csp.contains("script-src 'self' https://web-broadcast.live-video.net;"),
                "{path}: scripts from the node and AWS's SDK CDN only: {csp}"
            );
            assert_eq!(h["x-frame-options"], "DENY");
        }
    }
    // --- a page path without its slash redirects, keeping the query
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = no_redirects
        .get(format!("{}/watch?broadcast=launch", n.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(r.headers()["location"], "/watch/?broadcast=launch");
    assert_eq!(n.get("/nothing-here.js").await.0, 404);
    // --- site: the SDK from AWS's CDN (the version the pages are tested with) and the emulator
    let site = n.ok("{ site { version sdkUrl ivs emulator } }", json!({}), None).await["site"].clone();
    let pinned = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/package.json")).unwrap();
    let version = pinned
        .split("\"amazon-ivs-web-broadcast\": \"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    assert_eq!(
        site["sdkUrl"],
        format!("https://web-broadcast.live-video.net/{version}/amazon-ivs-web-broadcast.js"),
        "the default SDK is the version the browser tests pin"
    );
    assert_eq!(site["emulator"], true);
    assert!(site["ivs"].as_str().unwrap().contains("emulator"), "{site}");
    // --- no SDK directory: /sdk/ serves nothing
    assert_eq!(n.get("/sdk/amazon-ivs-web-broadcast.js").await.0, 404);
}

#[tokio::test]
async fn me_names_the_role_of_the_key_presented_and_a_wrong_key_is_unauthenticated() {
    let (_dir, n) = node(&[]);
    let anon = n.ok("{ me { role keyId } }", json!({}), None).await;
    assert_eq!(anon["me"], json!({"role": null, "keyId": null}));
    let admin = n.admin("{ me { role } }", json!({})).await;
    assert_eq!(admin["me"]["role"], "ADMIN");
    let host = n
        .admin(
            "mutation { createApiKey(name: \"h\", role: HOST) { key apiKey { id } } }",
            json!({}),
        )
        .await["createApiKey"]
        .clone();
    let me = n.ok("{ me { role keyId } }", json!({}), host["key"].as_str()).await;
    assert_eq!(me["me"], json!({"role": "HOST", "keyId": host["apiKey"]["id"]}));
    assert_eq!(
        n.err("{ me { role } }", json!({}), Some("sf_not-a-key-at-all-000000"))
            .await,
        "UNAUTHENTICATED"
    );
}

#[tokio::test]
async fn sdk_dir_self_hosts_the_sdk_and_serves_nothing_outside_it() {
    let sdk = tempfile::tempdir().unwrap();
    std::fs::write(
        sdk.path().join("amazon-ivs-web-broadcast.js"),
        "window.IVSBroadcastClient = {};\n",
    )
    .unwrap();
    std::fs::write(sdk.path().parent().unwrap().join("outside-sdk-dir.txt"), "secret").unwrap();
    let (_dir, n) = node(&["--sdk-dir", sdk.path().to_str().unwrap()]);
    let site = n.ok("{ site { sdkUrl } }", json!({}), None).await;
    assert_eq!(site["site"]["sdkUrl"], "/sdk/amazon-ivs-web-broadcast.js");
    let r = n
        .http()
        .get(format!("{}/sdk/amazon-ivs-web-broadcast.js", n.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    assert_eq!(r.text().await.unwrap(), "window.IVSBroadcastClient = {};\n");
    for bad in [
        "/sdk/../outside-sdk-dir.txt",
        "/sdk/%2e%2e/outside-sdk-dir.txt",
        "/sdk/missing.js",
    ] {
        assert_eq!(n.get(bad).await.0, 404, "{bad}");
    }
    // self-hosted: the pages' CSP names no other script origin
    let r = n.http().get(format!("{}/watch/", n.url)).send().await.unwrap();
    let csp = r.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("script-src 'self';"), "{csp}");
}

#[test]
fn a_bad_sdk_url_or_sdk_dir_stops_the_node_at_start_with_the_setting_named() {
    for (flag, value, says) in [
        ("--sdk-url", "http://cdn.example/sdk.js", "sdk_url"),
        ("--sdk-url", "https://cdn.example/a.js'; script-src *", "sdk_url"),
        ("--sdk-url", "//cdn.example/sdk.js", "sdk_url"),
        ("--sdk-dir", "/definitely/not/a/dir", "sdk_dir"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new(binary())
            .args([
                "--data-dir",
                dir.path().to_str().unwrap(),
                "--http-addr",
                "127.0.0.1:0",
                flag,
                value,
            ])
            .env("STAGEFLEET_AUTOSCALE", "false")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{flag} {value} must not start");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{flag} {value}: {err}");
    }
}
