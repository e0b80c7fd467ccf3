//! Validation results, remembered per document. Every viewer sends the same join document with
//! other variables, and running all of GraphQL's validation rules on it each time was ~7% of the
//! node's request CPU (BENCHMARKS.md).
//!
//! A document (query text + operation name) is validated in full the first time. If it passes, its
//! result (complexity, depth, cache control) is kept, and later requests with the same document skip
//! the rules. The one rule that looks at variable *values* (argument types) is then enforced by the
//! executor instead: it coerces every variable into its argument's type before a resolver runs, so a
//! wrong value is still a typed error that changes nothing (tested in `tests/single_node.rs`).
//! Documents that fail validation are never remembered. Bounded: when full it starts over.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextPrepareRequest, NextValidation};
use async_graphql::{Request, ServerError, ServerResult, ValidationResult};

/// Longer documents are validated every time (rare, and not worth holding).
const MAX_QUERY_BYTES: usize = 4096;

type Key = (String, Option<String>);

pub struct ValidationCache {
    passed: Arc<Mutex<HashMap<Key, ValidationResult>>>,
    capacity: usize,
}

impl ValidationCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            passed: Arc::new(Mutex::new(HashMap::new())),
            capacity: capacity.max(1),
        }
    }
}

impl ExtensionFactory for ValidationCache {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(PerRequest {
            passed: self.passed.clone(),
            capacity: self.capacity,
            key: Mutex::new(None),
        })
    }
}

struct PerRequest {
    passed: Arc<Mutex<HashMap<Key, ValidationResult>>>,
    capacity: usize,
    /// This request's document, noted in `prepare_request`.
    key: Mutex<Option<Key>>,
}

#[async_trait::async_trait]
impl Extension for PerRequest {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        let request = next.run(ctx, request).await?;
        if request.query.len() <= MAX_QUERY_BYTES {
            *self.key.lock().expect("validation key") = Some((request.query.clone(), request.operation_name.clone()));
        }
        Ok(request)
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let key = self.key.lock().expect("validation key").take();
        let Some(key) = key else {
            return next.run(ctx).await;
        };
        if let Some(known) = self.passed.lock().expect("validation cache").get(&key) {
            return Ok(*known);
        }
        let result = next.run(ctx).await?;
        let mut passed = self.passed.lock().expect("validation cache");
        if passed.len() >= self.capacity {
            passed.clear();
        }
        passed.insert(key, result);
        Ok(result)
    }
}
