//! The web pages (`assets/`), embedded at build time in release builds and read from disk in debug
//! builds (so pages can be edited live), served with their MIME type, an `ETag` and `no-cache`
//! (revalidated on each use: a page never runs with a stale module after an upgrade); and, with
//! `sdk_dir`, a self-hosted copy of the IVS Web Broadcast SDK under `/sdk/`.

use std::path::{Component, Path};

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};

use super::AppState;

#[derive(rust_embed::Embed)]
#[folder = "assets/"]
struct Assets;

pub async fn serve(uri: Uri, headers: HeaderMap) -> Response {
    let path = match uri.path().trim_start_matches('/') {
        "" => "index.html".to_string(),
        p if p.ends_with('/') => format!("{p}index.html"),
        p => p.to_string(),
    };
    // Only plain names: debug builds read `assets/` from disk, and nothing outside it is served.
    if path.split('/').any(|c| c == ".." || c == "." || c.contains('\\')) {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    }
    let Some(file) = Assets::get(&path) else {
        // `/console` → `/console/`, keeping the query (e.g. `/watch?broadcast=launch`).
        if !path.contains('.') && Assets::get(&format!("{path}/index.html")).is_some() {
            let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
            return Redirect::permanent(&format!("/{path}/{query}")).into_response();
        }
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    };
    let etag = format!(
        "\"{}\"",
        file.metadata.sha256_hash()[..12]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    if headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some(etag.as_str()) {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    (
        [
            (
                header::CONTENT_TYPE,
                content_type(&path, Some(file.metadata.mimetype())),
            ),
            (header::ETAG, HeaderValue::from_str(&etag).expect("hex etag")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        file.data,
    )
        .into_response()
}

/// JavaScript modules must be served as JavaScript, whatever the platform's MIME table says.
fn content_type(path: &str, guessed: Option<&str>) -> HeaderValue {
    let by_ext = match Path::new(path).extension().and_then(|e| e.to_str()) {
        Some("js" | "mjs") => Some("text/javascript; charset=utf-8"),
        Some("html") => Some("text/html; charset=utf-8"),
        Some("css") => Some("text/css; charset=utf-8"),
        Some("svg") => Some("image/svg+xml"),
        Some("json" | "map") => Some("application/json"),
        _ => None,
    };
    by_ext
        .or(guessed)
        .and_then(|t| HeaderValue::from_str(t).ok())
        .unwrap_or(HeaderValue::from_static("application/octet-stream"))
}

/// `/sdk/<file>` from `sdk_dir`: only plain relative paths inside it.
pub async fn sdk(State(app): State<AppState>, UrlPath(rel): UrlPath<String>) -> Response {
    let dir = &app.node.cfg.sdk_dir;
    let rel = Path::new(&rel);
    let inside = rel.components().all(|c| matches!(c, Component::Normal(_)));
    if dir.as_os_str().is_empty() || !inside {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    }
    match tokio::fs::read(dir.join(rel)).await {
        Ok(bytes) => (
            [
                (header::CONTENT_TYPE, content_type(&rel.to_string_lossy(), None)),
                (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600")),
            ],
            bytes,
        )
            .into_response(),
        Err(_) => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}
