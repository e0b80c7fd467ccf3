//! Headers on the way in and out, for every route: oversized header sets are refused with a code
//! (431), CORS is answered only for the origins an operator allowed (`cors_allowed_origins`; off
//! by default, so only same-origin pages can call the API with a browser's credentials), and every
//! response carries the security headers a browser needs to keep pages from being framed, sniffed
//! or leaking their URL. Pages get a Content-Security-Policy; a handler that set its own (GraphiQL)
//! keeps it.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::ErrorCode;
use super::error::error_body;

/// Largest header set (names and values) accepted; hyper itself stops at 64 KiB.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// The embedded pages' policy: scripts from this node and the IVS Web Broadcast SDK's origin
/// (`sdk_url`); media and connections to IVS (or the emulator on another local port).
pub fn page_csp(sdk_origin: Option<&str>) -> HeaderValue {
    let sdk = sdk_origin.map(|o| format!(" {o}")).unwrap_or_default();
    let csp = format!(
        "default-src 'self'; script-src 'self'{sdk}; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; \
         media-src 'self' blob: mediastream:; connect-src 'self' ws: wss: http: https:; worker-src 'self' blob:; \
         frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    );
    HeaderValue::from_str(&csp).expect("sdk_url is validated to printable ASCII without quotes or semicolons")
}
/// Everything else (JSON, metrics, text) is never a document.
const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'";

/// Allowed CORS origins, parsed once from `cors_allowed_origins`.
#[derive(Default)]
pub struct Cors {
    origins: Vec<String>,
}

impl Cors {
    pub fn new(setting: &str) -> Self {
        Self {
            origins: setting
                .split(',')
                .map(|o| o.trim().trim_end_matches('/').to_string())
                .filter(|o| !o.is_empty())
                .collect(),
        }
    }

    fn allows<'h>(&self, headers: &'h HeaderMap) -> Option<&'h HeaderValue> {
        let origin = headers.get(header::ORIGIN)?;
        let o = origin.to_str().ok()?;
        self.origins.iter().any(|allowed| allowed == o).then_some(origin)
    }
}

fn header_bytes(headers: &HeaderMap) -> usize {
    headers.iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum()
}

pub async fn layer(State(app): State<AppState>, req: Request, next: Next) -> Response {
    if header_bytes(req.headers()) > MAX_HEADER_BYTES {
        app.node.metrics.refuse("too_large");
        let msg = format!("the request's headers are larger than {} KiB", MAX_HEADER_BYTES / 1024);
        let mut r = error_body(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ErrorCode::RequestTooLarge,
            &msg,
        );
        secure(r.headers_mut(), &app.page_csp);
        return r;
    }
    let origin = app.cors.allows(req.headers()).cloned();
    if req.method() == Method::OPTIONS && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD) {
        let mut r = match &origin {
            Some(o) => {
                let mut r = StatusCode::NO_CONTENT.into_response();
                let h = r.headers_mut();
                h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o.clone());
                h.insert(
                    header::ACCESS_CONTROL_ALLOW_METHODS,
                    HeaderValue::from_static("GET, POST"),
                );
                h.insert(
                    header::ACCESS_CONTROL_ALLOW_HEADERS,
                    HeaderValue::from_static("authorization, content-type, x-stagefleet-read"),
                );
                h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
                r
            }
            None => StatusCode::FORBIDDEN.into_response(),
        };
        r.headers_mut().insert(header::VARY, HeaderValue::from_static("origin"));
        secure(r.headers_mut(), &app.page_csp);
        return r;
    }
    let mut r = next.run(req).await;
    let status = r.status();
    let h = r.headers_mut();
    if let Some(o) = origin {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("x-stagefleet-read, x-stagefleet-applied-index, x-stagefleet-leader"),
        );
        h.append(header::VARY, HeaderValue::from_static("origin"));
    }
    // A 304 keeps the policy the browser stored with the page: a cached page revalidated here
    // must not get the API's `default-src 'none'` (the 304 has no content type to tell them apart).
    if status != StatusCode::NOT_MODIFIED {
        secure(h, &app.page_csp);
    } else {
        plain_security(h);
    }
    r
}

/// The security headers every response carries.
fn secure(h: &mut HeaderMap, page_csp: &HeaderValue) {
    let html = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        let csp = if html {
            page_csp.clone()
        } else {
            HeaderValue::from_static(API_CSP)
        };
        h.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    plain_security(h);
}

/// The security headers that do not depend on what the response is.
fn plain_security(h: &mut HeaderMap) {
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}
