//! `assignment` without an executor held open per subscriber. A viewer's seat changes rarely (the
//! first message, a move, the end), yet an async-graphql subscription keeps a whole execution alive
//! for it: the document, the query environment and the resolver's stream, about 10 KiB a viewer.
//! Here a subscriber holds only the node's update stream and the request's text; each update is
//! rendered by a one-shot execution of the same document against a schema with one field, the
//! same `assignment(sessionId:)` over the same `Assignment` type, so selections, aliases,
//! fragments, variables, validation and errors come out exactly as from the full schema.

use std::sync::{Arc, Mutex};

use async_graphql::{Context, Data, EmptyMutation, Executor, ID, Object, Schema, Subscription};
use futures_util::StreamExt;
use futures_util::stream::{self, BoxStream};

use crate::api::error::Gql;
use crate::api::schema::live::Assignment;
use crate::node::Node;
use crate::node::live::AssignmentUpdate;

/// The one-field schema updates are rendered with.
pub type Renderer = Schema<RenderQuery, EmptyMutation, RenderSubscription>;

pub fn renderer(node: Arc<Node>, max_depth: usize, max_complexity: usize) -> Renderer {
    Schema::build(RenderQuery, EmptyMutation, RenderSubscription)
        .limit_depth(max_depth)
        .limit_complexity(max_complexity)
        .data(node)
        .finish()
}

/// What one rendering does: open the session's updates (the first message), or show one update.
enum Turn {
    Open,
    Update(AssignmentUpdate),
}

/// Handed to the resolver through the request's data; the updates come back through it.
#[derive(Default)]
struct Exchange {
    turn: Mutex<Option<Turn>>,
    updates: Mutex<Option<BoxStream<'static, AssignmentUpdate>>>,
}

pub struct RenderQuery;

#[Object(name = "Query")]
impl RenderQuery {
    /// Never asked: a schema needs a query type.
    async fn unused(&self) -> bool {
        false
    }
}

pub struct RenderSubscription;

#[Subscription(name = "Subscription")]
impl RenderSubscription {
    async fn assignment(
        &self,
        ctx: &Context<'_>,
        session_id: ID,
    ) -> async_graphql::Result<BoxStream<'static, Assignment>> {
        let exchange = ctx.data_unchecked::<Arc<Exchange>>();
        let turn = exchange.turn.lock().expect("exchange lock").take();
        match turn {
            Some(Turn::Open) => {
                let node = ctx.data_unchecked::<Arc<Node>>();
                let mut updates = node.assignment(&session_id).await.gql()?;
                let first = updates.next().await;
                *exchange.updates.lock().expect("exchange lock") = Some(updates);
                Ok(stream::iter(first.map(Assignment::from)).boxed())
            }
            Some(Turn::Update(u)) => Ok(stream::once(async move { Assignment::from(u) }).boxed()),
            None => Ok(stream::empty().boxed()),
        }
    }
}

/// What a subscriber keeps between updates to render the next one: the request's text.
struct Template {
    renderer: Renderer,
    query: String,
    operation_name: Option<String>,
    variables: async_graphql::Variables,
    session: Arc<Data>,
}

impl Template {
    async fn render(&self, turn: Turn) -> (Option<async_graphql::Response>, Arc<Exchange>) {
        let exchange = Arc::new(Exchange::default());
        *exchange.turn.lock().expect("exchange lock") = Some(turn);
        let mut request = async_graphql::Request::new(self.query.clone()).variables(self.variables.clone());
        if let Some(name) = &self.operation_name {
            request = request.operation_name(name.clone());
        }
        let request = request.data(exchange.clone());
        let response = Executor::execute_stream(&self.renderer, request, Some(self.session.clone()))
            .next()
            .await;
        (response, exchange)
    }
}

/// The `assignment` subscription `request` asks for, as the responses to send.
pub fn follow(
    renderer: Renderer,
    request: async_graphql::Request,
    session: Arc<Data>,
) -> BoxStream<'static, async_graphql::Response> {
    let template = Template {
        renderer,
        query: request.query,
        operation_name: request.operation_name,
        variables: request.variables,
        session,
    };
    // `None` updates: not opened yet; then the session's updates until they end.
    let state: (Template, Option<Option<BoxStream<'static, AssignmentUpdate>>>) = (template, None);
    // Renders are boxed: held only while one runs, not inline in every subscriber's state.
    Box::pin(stream::unfold(state, |(template, updates)| async move {
        match updates {
            None => {
                let (response, exchange) = Box::pin(template.render(Turn::Open)).await;
                // Refused (not valid, unknown session): that answer, then the end.
                let updates = exchange.updates.lock().expect("exchange lock").take();
                response.map(|r| (r, (template, Some(updates))))
            }
            Some(Some(mut updates)) => {
                let update = updates.next().await?;
                let (response, _) = Box::pin(template.render(Turn::Update(update))).await;
                response.map(|r| (r, (template, Some(Some(updates)))))
            }
            Some(None) => None,
        }
    }))
}
