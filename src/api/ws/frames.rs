//! graphql-transport-ws messages: what a client may send, and the frames the node writes. A
//! payload serialized once (one shared subscription update) is framed per subscriber by
//! concatenation, never serialized again.

use serde::Deserialize;

/// Client → server.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    ConnectionInit {
        #[serde(default)]
        payload: Option<serde_json::Value>,
    },
    Ping {},
    Pong {},
    Subscribe {
        id: String,
        payload: Box<async_graphql::Request>,
    },
    Complete {
        id: String,
    },
}

/// An operation id as a JSON string (with its quotes), ready to splice into frames.
pub fn id_json(id: &str) -> String {
    let mut s = serde_json::to_string(id).expect("strings serialize");
    // Kept for the operation's life: no spare room (serde_json starts at 128 bytes).
    s.shrink_to_fit();
    s
}

/// `{"id":…,"type":"next","payload":…}` around a payload serialized once.
pub fn next(id_json: &str, payload: &str) -> String {
    let mut f = String::with_capacity(id_json.len() + payload.len() + 36);
    f.push_str(r#"{"id":"#);
    f.push_str(id_json);
    f.push_str(r#","type":"next","payload":"#);
    f.push_str(payload);
    f.push('}');
    f
}

pub fn complete(id_json: &str) -> String {
    format!(r#"{{"id":{id_json},"type":"complete"}}"#)
}

/// A GraphQL response holding one error with `code`.
pub fn errors(code: &str, message: &str) -> String {
    serde_json::json!({ "data": null, "errors": [{ "message": message, "extensions": { "code": code } }] }).to_string()
}

/// `error`: the operation ends with these errors (terminal, no `complete` follows).
pub fn error(id_json: &str, code: &str, message: &str) -> String {
    let errors = serde_json::json!([{ "message": message, "extensions": { "code": code } }]);
    format!(r#"{{"id":{id_json},"type":"error","payload":{errors}}}"#)
}

pub const ACK: &str = r#"{"type":"connection_ack"}"#;
pub const PING: &str = r#"{"type":"ping"}"#;
pub const PONG: &str = r#"{"type":"pong"}"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_the_json_a_client_parses() {
        let id = id_json("a\"b");
        let f: serde_json::Value = serde_json::from_str(&next(&id, r#"{"data":{"x":1}}"#)).unwrap();
        assert_eq!(
            f,
            serde_json::json!({"id": "a\"b", "type": "next", "payload": {"data": {"x": 1}}})
        );
        let c: serde_json::Value = serde_json::from_str(&complete(&id)).unwrap();
        assert_eq!(c["type"], "complete");
        let e: serde_json::Value = serde_json::from_str(&error(&id, "UNAVAILABLE", "bye")).unwrap();
        assert_eq!(e["payload"][0]["extensions"]["code"], "UNAVAILABLE");
        let m: ClientMessage =
            serde_json::from_str(r#"{"type":"subscribe","id":"1","payload":{"query":"{ a }"}}"#).unwrap();
        assert!(matches!(m, ClientMessage::Subscribe { id, payload } if id == "1" && payload.query == "{ a }"));
        assert!(serde_json::from_str::<ClientMessage>(r#"{"type":"start","id":"1"}"#).is_err());
    }
}
