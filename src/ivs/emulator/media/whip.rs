//! WHIP on the stage's `whip_url`, as the IVS Web Broadcast SDK and OBS use it:
//! `POST /whip/publish/{participantId}` and `POST /whip/subscribe/{participantId}` with the
//! participant token as a Bearer token and an SDP offer; 201 with the SFU's ICE-lite answer and a
//! `Location` to `DELETE` when done. CORS on every answer: the pages calling it are served from
//! another origin (the node's HTTP port).

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};

use super::sfu::{Answer, SfuError};
use crate::ivs::emulator::error::ApiError;
use crate::ivs::emulator::ops::media as model;
use crate::ivs::emulator::server::Shared;

/// SDP offers are a few KiB.
const MAX_OFFER: usize = 64 * 1024;

pub fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/whip/publish/{participant}", post(publish))
        .route("/whip/subscribe/{participant}", post(subscribe))
        .route("/whip/session/{session}", delete(end))
        .layer(DefaultBodyLimit::max(MAX_OFFER))
        .layer(middleware::from_fn(cors))
}

/// A WHIP refusal: a status and a sentence, as plain text.
struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        tracing::debug!(status = %self.0, "WHIP refused: {}", self.1);
        (self.0, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], self.1).into_response()
    }
}

impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Self {
        let status = match e {
            ApiError::QuotaExceeded(_) => StatusCode::SERVICE_UNAVAILABLE,
            ref other => other.status(),
        };
        Refusal(status, e.to_string())
    }
}

impl From<SfuError> for Refusal {
    fn from(e: SfuError) -> Self {
        let status = match e {
            SfuError::NotPublishing(_) => StatusCode::NOT_FOUND,
            SfuError::BadOffer(_) => StatusCode::BAD_REQUEST,
            SfuError::TooManySessions(_) | SfuError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
        };
        Refusal(status, e.to_string())
    }
}

fn bearer(headers: &HeaderMap) -> Result<&str, Refusal> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            Refusal(
                StatusCode::UNAUTHORIZED,
                "a participant token is needed: Authorization: Bearer <token>".into(),
            )
        })
}

fn sfu(shared: &Shared) -> Result<&super::Sfu, Refusal> {
    shared.media.sfu.as_ref().ok_or_else(|| {
        Refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "this emulator's media plane is off".into(),
        )
    })
}

async fn publish(
    State(shared): State<Arc<Shared>>,
    Path(participant): Path<String>,
    headers: HeaderMap,
    offer: String,
) -> Result<Response, Refusal> {
    let token = bearer(&headers)?;
    let seat = shared.with_ctx(|ctx| model::publish_check(ctx, token, &participant))?;
    let sfu = sfu(&shared)?;
    let answer = sfu.publish(&participant, &offer).await?;
    // The page may have left while the SFU answered: then nobody is publishing.
    if !shared.with_state(|state| model::set_publishing(state, &seat, true)) {
        sfu.close(&answer.session).await;
        return Err(Refusal(
            StatusCode::NOT_FOUND,
            format!("participant {participant} left the stage"),
        ));
    }
    shared.media.publishing(&participant, &answer.session);
    shared.media.touch();
    Ok(created(&shared, answer))
}

async fn subscribe(
    State(shared): State<Arc<Shared>>,
    Path(participant): Path<String>,
    headers: HeaderMap,
    offer: String,
) -> Result<Response, Refusal> {
    let token = bearer(&headers)?;
    let source = shared.with_ctx(|ctx| model::subscribe_check(ctx, token, &participant))?;
    let answer = sfu(&shared)?.subscribe(&source, &offer).await?;
    Ok(created(&shared, answer))
}

async fn end(
    State(shared): State<Arc<Shared>>,
    Path(session): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    let token = bearer(&headers)?;
    shared.with_ctx(|ctx| model::token_ok(ctx, token))?;
    if sfu(&shared)?.close(&session).await || shared.media.recently_ended(&session) {
        Ok(StatusCode::OK.into_response())
    } else {
        Err(Refusal(StatusCode::NOT_FOUND, format!("no session {session}")))
    }
}

fn created(shared: &Shared, answer: Answer) -> Response {
    let location = format!("{}/whip/session/{}", shared.settings.public_base_url, answer.session);
    let link = format!("<{location}>; rel=\"urn:ietf:params:whip:ivs-stages:session-delete\"");
    (
        StatusCode::CREATED,
        [
            (header::CONTENT_TYPE, "application/sdp".to_string()),
            (header::LOCATION, location),
            (header::LINK, link),
        ],
        answer.sdp,
    )
        .into_response()
}

/// CORS by hand for the few headers the SDK needs: preflights answered here, every answer
/// marked, `Location` and `Link` readable by the page.
async fn cors(request: Request, next: Next) -> Response {
    let origin = request.headers().get(header::ORIGIN).cloned();
    let asked = request.headers().get(header::ACCESS_CONTROL_REQUEST_HEADERS).cloned();
    let mut response = if request.method() == Method::OPTIONS {
        StatusCode::NO_CONTENT.into_response()
    } else {
        next.run(request).await
    };
    let h = response.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        origin.unwrap_or(HeaderValue::from_static("*")),
    );
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, DELETE, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        asked.unwrap_or(HeaderValue::from_static("authorization, content-type")),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Location, Link"),
    );
    h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    response
}
