//! Parsed GraphQL documents, remembered by query text. Clients send the same few documents with
//! different variables (every viewer's join is one query), and parsing is a sizeable share of
//! a small request's CPU (BENCHMARKS.md). Bounded: when full it starts over, so documents with
//! literals inlined cannot grow it without limit.

use std::collections::HashMap;
use std::sync::Mutex;

use async_graphql::parser::types::ExecutableDocument;

pub struct ParseCache {
    docs: Mutex<HashMap<String, ExecutableDocument>>,
    capacity: usize,
}

/// Longer documents are parsed every time (rare, and not worth holding).
const MAX_QUERY_BYTES: usize = 4096;

impl ParseCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            docs: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    /// Attach the parsed document to `request` if this query text was parsed before; otherwise
    /// parse it now and remember it. Parse errors are left for the executor to report.
    pub fn prepare(&self, mut request: async_graphql::Request) -> async_graphql::Request {
        if request.query.len() > MAX_QUERY_BYTES {
            return request;
        }
        if let Some(doc) = self.docs.lock().expect("parse cache").get(&request.query) {
            request.set_parsed_query(doc.clone());
            return request;
        }
        if let Ok(doc) = async_graphql::parser::parse_query(&request.query) {
            let mut docs = self.docs.lock().expect("parse cache");
            if docs.len() >= self.capacity {
                docs.clear();
            }
            docs.insert(request.query.clone(), doc.clone());
            request.set_parsed_query(doc);
        }
        request
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_is_parsed_once_and_the_cache_stays_bounded() {
        let cache = ParseCache::new(2);
        for q in ["{ a }", "{ a }", "{ b }", "{ c }"] {
            let mut r = cache.prepare(async_graphql::Request::new(q));
            assert!(r.parsed_query().is_ok());
        }
        assert!(cache.docs.lock().unwrap().len() <= 2);
        let mut bad = cache.prepare(async_graphql::Request::new("{ broken"));
        assert!(bad.parsed_query().is_err(), "parse errors still reach the executor");
    }
}
