//! Parsed GraphQL documents, remembered by query text, and whether each has passed validation.
//! Clients send the same few documents with different variables (every viewer's join is one
//! query); parsing and validating them every time was a sizeable share of a small request's CPU
//! (BENCHMARKS.md). Bounded: when full it starts over, so documents with literals inlined cannot
//! grow it without limit.
//!
//! "Validated" means: the document went through every validation rule on this node and none
//! failed. Those rules depend on the document alone, except the check of variable values against
//! argument types, which the executor repeats anyway (it coerces every variable before a resolver
//! runs, so a wrong value is still a typed error that changes nothing; tested in
//! `tests/single_node.rs`). Depth and complexity are computed for every request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_graphql::parser::types::ExecutableDocument;

use super::compiled::{self, JoinPlan};
use super::screen::Screen;

struct Doc {
    parsed: ExecutableDocument,
    validated: bool,
    /// For a validated `joinBroadcast` document: its compiled plan (see `compiled`).
    plan: Option<Arc<JoinPlan>>,
}

/// A request with its parsed document attached, and what is known of that document.
pub struct Prepared {
    pub request: async_graphql::Request,
    /// The document passed every validation rule before.
    pub validated: bool,
    pub plan: Option<Arc<JoinPlan>>,
    /// The document failed the screen (front gate or enum literals): why, for the client.
    pub refused: Option<String>,
}

pub struct ParseCache {
    docs: Mutex<HashMap<String, Doc>>,
    capacity: usize,
}

/// Longer documents are parsed every time (rare, and not worth holding).
const MAX_QUERY_BYTES: usize = 4096;

impl ParseCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            docs: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    /// Attach the parsed document to `request` if this query text was parsed before; otherwise
    /// screen it, parse it now and remember it. Parse errors are left for the executor to report.
    /// The flag says whether the document has passed validation before (see
    /// [`Self::passed_validation`]). Only documents that passed the screen are remembered, so a
    /// remembered one skips it.
    pub fn prepare(&self, mut request: async_graphql::Request, screen: &Screen) -> Prepared {
        let unknown = |request, refused| Prepared {
            request,
            validated: false,
            plan: None,
            refused,
        };
        let cacheable = request.query.len() <= MAX_QUERY_BYTES;
        if cacheable && let Some(doc) = self.docs.lock().expect("parse cache").get(&request.query) {
            if let Some(plan) = &doc.plan {
                // The plan is all it takes to answer: no copy of the document.
                return Prepared {
                    plan: Some(plan.clone()),
                    validated: true,
                    request,
                    refused: None,
                };
            }
            let validated = doc.validated;
            request.set_parsed_query(doc.parsed.clone());
            return Prepared {
                request,
                validated,
                plan: None,
                refused: None,
            };
        }
        if let Err(why) = screen.text(&request.query) {
            return unknown(request, Some(why));
        }
        if let Ok(parsed) = async_graphql::parser::parse_query(&request.query) {
            if let Err(why) = screen.parsed(&parsed) {
                return unknown(request, Some(why));
            }
            if cacheable {
                let mut docs = self.docs.lock().expect("parse cache");
                if docs.len() >= self.capacity {
                    docs.clear();
                }
                let doc = Doc {
                    parsed: parsed.clone(),
                    validated: false,
                    plan: None,
                };
                docs.insert(request.query.clone(), doc);
            }
            request.set_parsed_query(parsed);
        }
        unknown(request, None)
    }

    /// `query` went through every validation rule without an error: from now on it skips them,
    /// and a `joinBroadcast` document is answered by its compiled plan.
    pub fn passed_validation(&self, query: &str) {
        if let Some(doc) = self.docs.lock().expect("parse cache").get_mut(query) {
            doc.validated = true;
            doc.plan = compiled::compile(&doc.parsed).map(Arc::new);
        }
    }

    /// A request that the plan cannot answer after all (see `compiled::answer`) goes to the
    /// executor with the document attached again.
    pub fn attach(&self, request: &mut async_graphql::Request) {
        if let Some(doc) = self.docs.lock().expect("parse cache").get(&request.query) {
            request.set_parsed_query(doc.parsed.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn screen() -> Screen {
        Screen::new(&crate::config::Config::default(), "type Query { a: Int }")
    }

    #[test]
    fn a_document_the_screen_refuses_is_refused_every_time_and_never_remembered() {
        let cache = ParseCache::new(8);
        let deep = format!("{{ a(x: {}1{}) }}", "[".repeat(5_000), "]".repeat(5_000));
        for _ in 0..2 {
            let p = cache.prepare(async_graphql::Request::new(deep.clone()), &screen());
            assert!(
                p.refused.as_deref().is_some_and(|m| m.contains("nest")),
                "{:?}",
                p.refused
            );
        }
        assert!(cache.docs.lock().unwrap().is_empty());
    }

    #[test]
    fn a_query_is_parsed_once_and_the_cache_stays_bounded() {
        let cache = ParseCache::new(2);
        for q in ["{ a }", "{ a }", "{ b }", "{ c }"] {
            let mut r = cache.prepare(async_graphql::Request::new(q), &screen()).request;
            assert!(r.parsed_query().is_ok());
        }
        assert!(cache.docs.lock().unwrap().len() <= 2);
        let mut bad = cache.prepare(async_graphql::Request::new("{ broken"), &screen());
        assert!(
            bad.request.parsed_query().is_err(),
            "parse errors still reach the executor"
        );
        assert!(!bad.validated);
    }

    #[test]
    fn only_documents_marked_as_passing_count_as_validated() {
        let cache = ParseCache::new(8);
        let validated = |q: &str| cache.prepare(async_graphql::Request::new(q), &screen()).validated;
        assert!(!validated("{ a }"));
        assert!(!validated("{ a }"));
        cache.passed_validation("{ a }");
        assert!(validated("{ a }"));
        assert!(!validated("{ b }"));
        // a document that was never parsed (too long, or forgotten) is not marked
        cache.passed_validation("{ c }");
        assert!(!validated("{ c }"));
    }

    #[test]
    fn only_validated_join_documents_get_a_plan() {
        let cache = ParseCache::new(8);
        let join = "mutation($b: ID!, $u: String!) { joinBroadcast(broadcastId: $b, userId: $u) { token } }";
        let plan = |q: &str| cache.prepare(async_graphql::Request::new(q), &screen()).plan.is_some();
        assert!(!plan(join), "not before it passed validation");
        cache.passed_validation(join);
        assert!(plan(join));
        let with_fragment = "mutation { joinBroadcast(broadcastId: \"b\", userId: \"u\") { ...J } } \
                             fragment J on Join { token }";
        let other_field = "mutation($s: ID!) { leave(sessionId: $s) { id } }";
        let two_fields = "mutation { a: joinBroadcast(broadcastId: \"b\", userId: \"u\") { token } \
                          b: joinBroadcast(broadcastId: \"b\", userId: \"v\") { token } }";
        let directive = "mutation($t: Boolean!) { joinBroadcast(broadcastId: \"b\", userId: \"u\") \
                         { token @include(if: $t) } }";
        let query = "query { joinBroadcast: stats { viewers } }";
        for q in [with_fragment, other_field, two_fields, directive, query] {
            cache.prepare(async_graphql::Request::new(q), &screen());
            cache.passed_validation(q);
            assert!(!plan(q), "{q}");
            assert!(cache.prepare(async_graphql::Request::new(q), &screen()).validated);
        }
    }
}
