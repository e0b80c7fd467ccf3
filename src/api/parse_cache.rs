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
use std::sync::Mutex;

use async_graphql::parser::types::ExecutableDocument;

struct Doc {
    parsed: ExecutableDocument,
    validated: bool,
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
    /// parse it now and remember it. Parse errors are left for the executor to report. The flag
    /// says whether the document has passed validation before (see [`Self::passed_validation`]).
    pub fn prepare(&self, mut request: async_graphql::Request) -> (async_graphql::Request, bool) {
        if request.query.len() > MAX_QUERY_BYTES {
            return (request, false);
        }
        if let Some(doc) = self.docs.lock().expect("parse cache").get(&request.query) {
            let validated = doc.validated;
            request.set_parsed_query(doc.parsed.clone());
            return (request, validated);
        }
        if let Ok(parsed) = async_graphql::parser::parse_query(&request.query) {
            let mut docs = self.docs.lock().expect("parse cache");
            if docs.len() >= self.capacity {
                docs.clear();
            }
            let doc = Doc {
                parsed: parsed.clone(),
                validated: false,
            };
            docs.insert(request.query.clone(), doc);
            request.set_parsed_query(parsed);
        }
        (request, false)
    }

    /// `query` went through every validation rule without an error.
    pub fn passed_validation(&self, query: &str) {
        if let Some(doc) = self.docs.lock().expect("parse cache").get_mut(query) {
            doc.validated = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_is_parsed_once_and_the_cache_stays_bounded() {
        let cache = ParseCache::new(2);
        for q in ["{ a }", "{ a }", "{ b }", "{ c }"] {
            let (mut r, _) = cache.prepare(async_graphql::Request::new(q));
            assert!(r.parsed_query().is_ok());
        }
        assert!(cache.docs.lock().unwrap().len() <= 2);
        let (mut bad, validated) = cache.prepare(async_graphql::Request::new("{ broken"));
        assert!(bad.parsed_query().is_err(), "parse errors still reach the executor");
        assert!(!validated);
    }

    #[test]
    fn only_documents_marked_as_passing_count_as_validated() {
        let cache = ParseCache::new(8);
        assert!(!cache.prepare(async_graphql::Request::new("{ a }")).1);
        assert!(!cache.prepare(async_graphql::Request::new("{ a }")).1);
        cache.passed_validation("{ a }");
        assert!(cache.prepare(async_graphql::Request::new("{ a }")).1);
        assert!(!cache.prepare(async_graphql::Request::new("{ b }")).1);
        // a document that was never parsed (too long, or forgotten) is not marked
        cache.passed_validation("{ c }");
        assert!(!cache.prepare(async_graphql::Request::new("{ c }")).1);
    }
}
