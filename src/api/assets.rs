//! The web pages, embedded at build time (release) or read from `assets/` (debug builds).

use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

#[derive(rust_embed::Embed)]
#[folder = "assets/"]
struct Assets;

pub async fn serve(uri: Uri, headers: HeaderMap) -> Response {
    let path = match uri.path().trim_start_matches('/') {
        "" => "index.html".to_string(),
        p if p.ends_with('/') => format!("{p}index.html"),
        p => p.to_string(),
    };
    let Some(file) = Assets::get(&path) else {
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
    let cache = if path.ends_with(".html") {
        "no-cache"
    } else {
        "public, max-age=300"
    };
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_str(file.metadata.mimetype())
                    .unwrap_or(HeaderValue::from_static("application/octet-stream")),
            ),
            (header::ETAG, HeaderValue::from_str(&etag).expect("hex etag")),
            (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
        ],
        file.data,
    )
        .into_response()
}
