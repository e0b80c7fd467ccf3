//! The stage events socket (`GET /events`), as the IVS Web Broadcast SDK speaks it: the
//! participant token arrives as the only WebSocket subprotocol and is echoed back; an open socket
//! is a joined participant; every socket of a stage is sent the stage's full
//! `aws:ivs:STAGE_STATE` whenever it changes (one rising sequence number per stage); `PING` gets
//! `PONG`; `SET_STATE` sets the mute flags; a kick or a deleted stage is an `aws:ivs:DISCONNECT`
//! with the SDK's code, a refused token an `aws:ivs:JOIN_ERROR`. Closing the socket leaves.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::HeaderValue;
use axum::response::Response;
use serde_json::{Value, json};

use crate::ivs::emulator::ops::media::{self as model, Seat};
use crate::ivs::emulator::server::Shared;

/// The SDK pings every 15 s; a socket silent for this long is gone.
const IDLE: Duration = Duration::from_secs(60);
/// Nothing the SDK sends is larger than a few hundred bytes.
const MAX_MESSAGE: usize = 64 * 1024;

pub async fn upgrade(ws: WebSocketUpgrade, State(shared): State<Arc<Shared>>) -> Response {
    let token = ws
        .requested_protocols()
        .next()
        .and_then(|p| p.to_str().ok())
        .map(str::to_string);
    let mut ws = ws.max_message_size(MAX_MESSAGE);
    // A browser fails the connection unless the server selects one of the offered protocols:
    // echo the token even when it is refused, so the refusal reaches the page as JOIN_ERROR.
    if let Some(protocol) = token.as_deref().and_then(|t| HeaderValue::from_str(t).ok()) {
        ws.set_selected_protocol(protocol);
    }
    ws.on_upgrade(move |socket| run(socket, shared, token))
}

/// How a socket's life ended.
enum Exit {
    /// The page closed it (or the connection broke, or went silent).
    Left,
    /// Told to go (kicked, stage deleted, replaced by a newer socket, emulator stopping).
    Sent,
}

async fn run(mut socket: WebSocket, shared: Arc<Shared>, token: Option<String>) {
    let media = &shared.media;
    let Some(_slot) = media.open_socket() else {
        let why = format!("the emulator holds its maximum of {} event sockets", media.max_sockets);
        return refuse(socket, "BAD_REQUEST", &why).await;
    };
    let Some(token) = token else {
        return refuse(
            socket,
            "TOKEN_MISSING",
            "no participant token in Sec-WebSocket-Protocol",
        )
        .await;
    };
    let seat = match shared.with_ctx(|ctx| model::socket_join(ctx, &token)) {
        Ok(seat) => seat,
        Err(refused) => return refuse(socket, refused.code, &refused.message).await,
    };
    let id = media.hold(&seat);
    media.touch();
    tracing::debug!(stage = %seat.stage_arn, participant = %seat.participant_id, "events socket joined");

    let exit = serve(&mut socket, &shared, &seat, id).await;

    if media.release(&seat, id) {
        if let Exit::Left = exit {
            shared.with_state(|state| model::socket_leave(state, &seat));
        }
        if let Some(sfu) = &media.sfu {
            sfu.close_publisher(&seat.participant_id).await;
        }
        media.touch();
    }
    tracing::debug!(stage = %seat.stage_arn, participant = %seat.participant_id, "events socket closed");
}

/// What a socket sees when it looks at its stage.
enum Look {
    Here {
        participants: Vec<Value>,
        seq: u64,
        wake_in: Option<Duration>,
    },
    Gone(&'static str),
    Replaced,
}

async fn serve(socket: &mut WebSocket, shared: &Shared, seat: &Seat, id: u64) -> Exit {
    let media = &shared.media;
    let mut changed = media.changed.subscribe();
    let mut closing = media.closing.subscribe();
    let mut shown = 0u64;
    let mut heard = tokio::time::Instant::now();
    loop {
        changed.mark_unchanged();
        match look(shared, seat, id) {
            Look::Replaced => {
                let frame = disconnect("TOKEN_REUSED", "the same token joined again on another socket");
                return say_goodbye(socket, frame).await;
            }
            Look::Gone(code) => {
                if code == "STAGE_DELETED" {
                    media.forget_stage(&seat.stage_arn);
                }
                let reason = match code {
                    "STAGE_DELETED" => "DeleteStage called",
                    _ => "DisconnectParticipant called",
                };
                return say_goodbye(socket, disconnect(code, reason)).await;
            }
            Look::Here {
                participants,
                seq,
                wake_in,
            } => {
                if seq > shown {
                    shown = seq;
                    let frame = json!({"type": "aws:ivs:STAGE_STATE", "payload": {
                        "sequenceNumber": seq,
                        "participants": participants,
                        "disconnected": [],
                        "serverFeatures": [],
                    }});
                    if send(socket, &frame).await.is_err() {
                        return Exit::Left;
                    }
                }
                let wake = async {
                    match wake_in {
                        Some(d) => tokio::time::sleep(d).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = async { let _ = closing.wait_for(|c| *c).await; } => {
                        let _ = socket.send(Message::Close(Some(CloseFrame {
                            code: 1001,
                            reason: "the emulator is stopping".into(),
                        }))).await;
                        return Exit::Sent;
                    }
                    _ = changed.changed() => {}
                    _ = wake => {}
                    _ = tokio::time::sleep_until(heard + IDLE) => return Exit::Left,
                    message = socket.recv() => {
                        heard = tokio::time::Instant::now();
                        match message {
                            Some(Ok(Message::Text(text))) => {
                                if on_message(socket, shared, seat, text.as_str()).await.is_err() {
                                    return Exit::Left;
                                }
                            }
                            Some(Ok(Message::Binary(_) | Message::Ping(_) | Message::Pong(_))) => {}
                            Some(Ok(Message::Close(_)) | Err(_)) | None => return Exit::Left,
                        }
                    }
                }
            }
        }
    }
}

/// Look at the stage under the state lock; the sequence number is taken under it too, so
/// numbers rise in the order the changes happened.
fn look(shared: &Shared, seat: &Seat, id: u64) -> Look {
    let media = &shared.media;
    shared.with_settled_state(|state, now_ms| {
        if !media.holds(seat, id) {
            return Look::Replaced;
        }
        if let Some(code) = model::gone(state, seat) {
            return Look::Gone(code);
        }
        let participants = model::stage_participants(state, &seat.stage_arn).expect("checked by gone()");
        let (seq, participants) = media.sequence(&seat.stage_arn, participants);
        // A replica's media starts flowing at a set time: look again then.
        let wake_in = state
            .settle_at
            .map(|at| Duration::from_millis((at - now_ms).max(0) as u64 + 1));
        Look::Here {
            participants,
            seq,
            wake_in,
        }
    })
}

async fn on_message(socket: &mut WebSocket, shared: &Shared, seat: &Seat, text: &str) -> Result<(), axum::Error> {
    let message: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    match message["type"].as_str() {
        Some("PING") => send(socket, &json!({"type": "PONG"})).await,
        Some("SET_STATE") => {
            let audio_muted = message["audioMuted"].as_bool().unwrap_or(false);
            let video_stopped = message["videoStopped"].as_bool().unwrap_or(false);
            if shared.with_state(|state| model::set_mute(state, seat, audio_muted, video_stopped)) {
                shared.media.touch();
            }
            Ok(())
        }
        other => {
            // The protocol is reverse-engineered from one SDK version: say what we skipped.
            let kind: String = other.unwrap_or("(not JSON with a type)").chars().take(64).collect();
            tracing::info!(participant = %seat.participant_id, kind, "events socket: message type not emulated, ignored");
            Ok(())
        }
    }
}

fn disconnect(code: &str, reason: &str) -> Value {
    json!({"type": "aws:ivs:DISCONNECT", "payload": {"code": code, "reason": reason}})
}

async fn say_goodbye(socket: &mut WebSocket, frame: Value) -> Exit {
    let _ = send(socket, &frame).await;
    let _ = socket.send(Message::Close(None)).await;
    Exit::Sent
}

async fn refuse(mut socket: WebSocket, code: &str, message: &str) {
    tracing::debug!(code, message, "events socket refused");
    let frame = json!({"type": "aws:ivs:JOIN_ERROR", "payload": {"code": code, "message": message}});
    let _ = send(&mut socket, &frame).await;
    let _ = socket.send(Message::Close(None)).await;
}

async fn send(socket: &mut WebSocket, frame: &Value) -> Result<(), axum::Error> {
    socket.send(Message::Text(frame.to_string().into())).await
}
