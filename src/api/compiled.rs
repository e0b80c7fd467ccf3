//! Compiled `joinBroadcast`. Every viewer sends the same join document with its own variables, so
//! once a document has passed validation (see `parse_cache`) it is compiled into a [`JoinPlan`]:
//! where its arguments come from and which fields, under which response keys, the answer holds.
//! A request for that document is then answered by calling the node and writing the JSON directly,
//! instead of async-graphql resolving a dozen fields one boxed future at a time, which was the
//! largest share of a join's CPU outside signing (BENCHMARKS.md).
//!
//! The plan covers one mutation field, `joinBroadcast`, with plain fields of `Join`, `Session`,
//! `Stage` and `Attribute` (aliases and `__typename` included). Anything else — fragments,
//! directives, other fields, more than one operation — compiles to nothing and the executor runs,
//! as it does for any request whose variables are not plain strings (it then reports the typed
//! error). Answers and errors are the executor's, byte for byte: `tests/compiled_join.rs` sends
//! each document through both paths and compares them.

use std::collections::HashSet;

use async_graphql::parser::types::{DocumentOperations, ExecutableDocument, OperationType, Selection, SelectionSet};
use async_graphql::resolver_utils::EnumType;
use async_graphql::{PathSegment, Pos, ServerError, Variables};
use async_graphql_value::{ConstValue, Value};

use super::AppState;
use super::auth::Principal;
use super::error::to_graphql;
use super::schema::types::{self, rfc3339};
use crate::node::join::{Joined, ivs_stage_id};

/// Where an argument's value comes from.
#[derive(Debug)]
enum Arg {
    Variable(String),
    Literal(String),
}

#[derive(Debug)]
enum JoinField {
    Typename,
    Session(Vec<(String, SessionField)>),
    Stage(Vec<(String, StageField)>),
    Token,
    TokenExpiresAt,
    Rejoined,
}

#[derive(Debug)]
enum SessionField {
    Typename,
    Id,
    BroadcastId,
    UserId,
    StageId,
    ParticipantId,
    Attributes(Vec<(String, AttributeField)>),
    JoinedAt,
    LastSeen,
    LeaseUntil,
}

#[derive(Debug)]
enum StageField {
    Typename,
    Id,
    BroadcastId,
    Slot,
    Role,
    State,
    Capacity,
    Viewers,
    Arn,
    IvsStageId,
    EventsUrl,
    WhipUrl,
    CreatedAt,
}

#[derive(Debug)]
enum AttributeField {
    Typename,
    Key,
    Value,
}

/// A validated `joinBroadcast` document, ready to answer without the executor.
#[derive(Debug)]
pub struct JoinPlan {
    /// The operation's name, if the document names it.
    operation_name: Option<String>,
    /// The response key (alias or `joinBroadcast`) and where the field is, for errors.
    key: String,
    pos: Pos,
    broadcast_id: Arg,
    user_id: Arg,
    attributes: Option<Arg>,
    fields: Vec<(String, JoinField)>,
}

/// Compile `doc` if it is a `joinBroadcast` mutation the plan covers. Call only for documents that
/// passed every validation rule: types and argument shapes are not checked again here.
pub fn compile(doc: &ExecutableDocument) -> Option<JoinPlan> {
    if !doc.fragments.is_empty() {
        return None;
    }
    let (operation_name, op) = match &doc.operations {
        DocumentOperations::Single(op) => (None, op),
        DocumentOperations::Multiple(ops) if ops.len() == 1 => {
            let (name, op) = ops.iter().next()?;
            (Some(name.to_string()), op)
        }
        DocumentOperations::Multiple(_) => return None,
    };
    let op = &op.node;
    let plain_variables = op.variable_definitions.iter().all(|v| v.node.directives.is_empty());
    if op.ty != OperationType::Mutation || !op.directives.is_empty() || !plain_variables {
        return None;
    }
    let [Selection::Field(field)] = op.selection_set.node.items.iter().map(|s| &s.node).collect::<Vec<_>>()[..] else {
        return None;
    };
    let f = &field.node;
    if f.name.node != "joinBroadcast" || !f.directives.is_empty() {
        return None;
    }
    let (mut broadcast_id, mut user_id, mut attributes) = (None, None, None);
    for (name, value) in &f.arguments {
        let arg = match &value.node {
            Value::Variable(v) => Arg::Variable(v.to_string()),
            Value::String(s) => Arg::Literal(s.clone()),
            _ => return None,
        };
        match name.node.as_str() {
            "broadcastId" => broadcast_id = Some(arg),
            "userId" => user_id = Some(arg),
            "attributes" if matches!(arg, Arg::Variable(_)) => attributes = Some(arg),
            _ => return None,
        }
    }
    Some(JoinPlan {
        operation_name,
        key: f.response_key().node.to_string(),
        pos: field.pos,
        broadcast_id: broadcast_id?,
        user_id: user_id?,
        attributes,
        fields: fields(&f.selection_set.node, join_field)?,
    })
}

/// The plain fields of `set` as (response key, what to write), each key once.
fn fields<T>(set: &SelectionSet, field: impl Fn(&str, &SelectionSet) -> Option<T>) -> Option<Vec<(String, T)>> {
    let mut keys = HashSet::new();
    let mut out = Vec::new();
    for item in &set.items {
        let Selection::Field(f) = &item.node else {
            return None;
        };
        let f = &f.node;
        let key = f.response_key().node.to_string();
        if !f.arguments.is_empty() || !f.directives.is_empty() || !keys.insert(key.clone()) {
            return None;
        }
        out.push((key, field(f.name.node.as_str(), &f.selection_set.node)?));
    }
    Some(out)
}

fn join_field(name: &str, set: &SelectionSet) -> Option<JoinField> {
    Some(match name {
        "__typename" => JoinField::Typename,
        "session" => JoinField::Session(fields(set, session_field)?),
        "stage" => JoinField::Stage(fields(set, stage_field)?),
        "token" => JoinField::Token,
        "tokenExpiresAt" => JoinField::TokenExpiresAt,
        "rejoined" => JoinField::Rejoined,
        _ => return None,
    })
}

fn session_field(name: &str, set: &SelectionSet) -> Option<SessionField> {
    Some(match name {
        "__typename" => SessionField::Typename,
        "id" => SessionField::Id,
        "broadcastId" => SessionField::BroadcastId,
        "userId" => SessionField::UserId,
        "stageId" => SessionField::StageId,
        "participantId" => SessionField::ParticipantId,
        "attributes" => SessionField::Attributes(fields(set, attribute_field)?),
        "joinedAt" => SessionField::JoinedAt,
        "lastSeen" => SessionField::LastSeen,
        "leaseUntil" => SessionField::LeaseUntil,
        _ => return None,
    })
}

fn stage_field(name: &str, _: &SelectionSet) -> Option<StageField> {
    Some(match name {
        "__typename" => StageField::Typename,
        "id" => StageField::Id,
        "broadcastId" => StageField::BroadcastId,
        "slot" => StageField::Slot,
        "role" => StageField::Role,
        "state" => StageField::State,
        "capacity" => StageField::Capacity,
        "viewers" => StageField::Viewers,
        "arn" => StageField::Arn,
        "ivsStageId" => StageField::IvsStageId,
        "eventsUrl" => StageField::EventsUrl,
        "whipUrl" => StageField::WhipUrl,
        "createdAt" => StageField::CreatedAt,
        _ => return None,
    })
}

fn attribute_field(name: &str, _: &SelectionSet) -> Option<AttributeField> {
    Some(match name {
        "__typename" => AttributeField::Typename,
        "key" => AttributeField::Key,
        "value" => AttributeField::Value,
        _ => return None,
    })
}

/// The arguments of one request, if they are the plain strings the plan handles.
struct Args<'a> {
    broadcast_id: &'a str,
    user_id: &'a str,
    attributes: Vec<(String, String)>,
}

/// `{key: String, value: String}` and nothing else.
fn attribute(v: &ConstValue) -> Option<(String, String)> {
    let ConstValue::Object(o) = v else {
        return None;
    };
    match (o.len(), o.get("key")?, o.get("value")?) {
        (2, ConstValue::String(k), ConstValue::String(v)) => Some((k.clone(), v.clone())),
        _ => None,
    }
}

/// Answer `request` with `plan`, or `None` when the executor must (the request names another
/// operation, or its variables are not plain strings). Nothing has happened when it returns `None`.
pub async fn answer(
    app: &AppState,
    plan: &JoinPlan,
    request: &async_graphql::Request,
    principal: &Principal,
) -> Option<Vec<u8>> {
    if request.operation_name.is_some() && request.operation_name != plan.operation_name {
        return None;
    }
    let args = plan.args(&request.variables)?;
    if let Err(e) = app.limits.check(principal) {
        return Some(plan.error(e));
    }
    let joined = app
        .node
        .join(
            args.broadcast_id,
            args.user_id,
            &args.attributes,
            principal.seat_client(),
        )
        .await;
    Some(match joined {
        Ok(j) => plan.render(app, &j),
        Err(e) => plan.error(to_graphql(&e)),
    })
}

impl JoinPlan {
    /// This request's arguments, or `None` when they are not the plain strings the plan handles.
    fn args<'a>(&'a self, vars: &'a Variables) -> Option<Args<'a>> {
        let string = |arg: &'a Arg| match arg {
            Arg::Literal(s) => Some(s.as_str()),
            Arg::Variable(name) => match vars.get(name.as_str())? {
                ConstValue::String(s) => Some(s.as_str()),
                _ => None,
            },
        };
        let attributes = match &self.attributes {
            None => Vec::new(),
            Some(Arg::Literal(_)) => return None,
            Some(Arg::Variable(name)) => match vars.get(name.as_str()) {
                None | Some(ConstValue::Null) => Vec::new(),
                Some(ConstValue::List(items)) => items.iter().map(attribute).collect::<Option<_>>()?,
                Some(_) => return None,
            },
        };
        Some(Args {
            broadcast_id: string(&self.broadcast_id)?,
            user_id: string(&self.user_id)?,
            attributes,
        })
    }

    /// The executor's answer to a failed non-null mutation field: no data, one located error.
    fn error(&self, e: async_graphql::Error) -> Vec<u8> {
        let e: ServerError = e
            .into_server_error(self.pos)
            .with_path(vec![PathSegment::Field(self.key.clone())]);
        serde_json::to_vec(&async_graphql::Response::from_errors(vec![e])).expect("responses serialize")
    }

    fn render(&self, app: &AppState, j: &Joined) -> Vec<u8> {
        let mut w = Json(Vec::with_capacity(1536));
        w.raw("{\"data\":{");
        w.key(&self.key);
        w.object(&self.fields, |w, f| match f {
            JoinField::Typename => w.str("Join"),
            JoinField::Session(fs) => render_session(w, fs, &j.session),
            JoinField::Stage(fs) => render_stage(w, fs, app, &j.stage),
            JoinField::Token => w.str(&j.token),
            JoinField::TokenExpiresAt => w.str(&rfc3339(j.expires_at * 1000)),
            JoinField::Rejoined => w.raw(if j.rejoined { "true" } else { "false" }),
        });
        w.raw("}}");
        w.0
    }
}

fn render_session(w: &mut Json, fs: &[(String, SessionField)], s: &crate::fleet::Session) {
    w.object(fs, |w, f| match f {
        SessionField::Typename => w.str("Session"),
        SessionField::Id => w.str(&s.id),
        SessionField::BroadcastId => w.str(&s.broadcast_id),
        SessionField::UserId => w.str(&s.user_id),
        SessionField::StageId => w.str(&s.stage_id),
        SessionField::ParticipantId => w.str(&s.participant_id),
        SessionField::Attributes(afs) => {
            w.raw("[");
            for (i, (k, v)) in s.attributes.iter().enumerate() {
                if i > 0 {
                    w.raw(",");
                }
                w.object(afs, |w, f| match f {
                    AttributeField::Typename => w.str("Attribute"),
                    AttributeField::Key => w.str(k),
                    AttributeField::Value => w.str(v),
                });
            }
            w.raw("]");
        }
        SessionField::JoinedAt => w.str(&rfc3339(s.joined_at)),
        SessionField::LastSeen => w.str(&rfc3339(s.last_seen)),
        SessionField::LeaseUntil => w.str(&rfc3339(s.lease_until)),
    });
}

fn render_stage(w: &mut Json, fs: &[(String, StageField)], app: &AppState, s: &crate::fleet::Stage) {
    w.object(fs, |w, f| match f {
        StageField::Typename => w.str("Stage"),
        StageField::Id => w.str(&s.id),
        StageField::BroadcastId => w.str(&s.broadcast_id),
        StageField::Slot => w.num(s.slot),
        StageField::Role => w.str(enum_name(types::StageRole::from(s.role))),
        StageField::State => w.str(enum_name(types::StageState::from(s.state))),
        StageField::Capacity => w.num(s.capacity),
        StageField::Viewers => w.num(types::stage_viewers(&app.node.store.view(), s)),
        StageField::Arn => w.opt_str(s.arn.as_deref()),
        StageField::IvsStageId => w.opt_str(ivs_stage_id(s)),
        StageField::EventsUrl => w.opt_str(types::stage_events_url(s)),
        StageField::WhipUrl => w.opt_str(types::stage_whip_url(s)),
        StageField::CreatedAt => w.str(&rfc3339(s.created_at)),
    });
}

/// The GraphQL name of an enum value, as the schema spells it.
fn enum_name<T: EnumType + PartialEq>(v: T) -> &'static str {
    T::items().iter().find(|i| i.value == v).map_or("", |i| i.name)
}

/// A JSON text written in order, strings escaped by serde_json.
struct Json(Vec<u8>);

impl Json {
    fn raw(&mut self, s: &str) {
        self.0.extend_from_slice(s.as_bytes());
    }

    fn str(&mut self, s: &str) {
        serde_json::to_writer(&mut self.0, s).expect("writing to a Vec");
    }

    fn opt_str(&mut self, s: Option<&str>) {
        match s {
            Some(s) => self.str(s),
            None => self.raw("null"),
        }
    }

    fn num(&mut self, n: u32) {
        use std::io::Write;
        write!(self.0, "{n}").expect("writing to a Vec");
    }

    fn key(&mut self, k: &str) {
        self.str(k);
        self.raw(":");
    }

    fn object<F>(&mut self, fields: &[(String, F)], mut value: impl FnMut(&mut Self, &F)) {
        self.raw("{");
        for (i, (key, f)) in fields.iter().enumerate() {
            if i > 0 {
                self.raw(",");
            }
            self.key(key);
            value(self, f);
        }
        self.raw("}");
    }
}
