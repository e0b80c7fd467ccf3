//! The front gate: cheap limits checked on a GraphQL document's raw text before anything parses it.
//! async-graphql's parser recurses once per nesting level (a 3 KB `[[[…` list overflowed the stack
//! and killed the process), and its complexity check expands every fragment spread (fragments that
//! each spread the next twice cost 2^levels). The gate measures nesting, tokens, fragment
//! definitions and total spread expansion in one pass over the bytes plus one pass over the
//! fragment graph: linear time, and a stack that does not grow with the input (no recursion).
//!
//! It owns only those four limits (and fragment cycles, which make expansion infinite). It does
//! not validate the document: syntax errors, unknown fields and undefined fragments are left to
//! async-graphql, which reports them properly once the document is known to be cheap to parse.
//!
//! The lexer follows the lexical grammar async-graphql's parser actually uses (its pest grammar,
//! which is GraphQL October 2021 with a few quirks); where the two could disagree it errs towards
//! counting more. Every quirk that could hide structure from the gate is mirrored, and named where.

use std::collections::HashMap;

mod lexer;
#[cfg(test)]
mod tests;

use lexer::{Kind, Lexer, type_condition_follows};

#[derive(Clone, Copy, Debug)]
pub struct GateLimits {
    /// Deepest combined nesting of `{`, `[` and `(`.
    pub max_nesting: usize,
    /// Most lexical tokens in the document.
    pub max_tokens: usize,
    /// Most `fragment` definitions.
    pub max_fragments: usize,
    /// Most fragment spreads once every spread is expanded, over all operations.
    pub max_spreads: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GateRefusal {
    #[error("the document nests deeper than {limit} levels (graphql_max_nesting)")]
    Nesting { limit: usize },
    #[error("the document has more than {limit} tokens (graphql_max_tokens)")]
    Tokens { limit: usize },
    #[error("the document defines more than {limit} fragments (graphql_max_fragments)")]
    Fragments { limit: usize },
    #[error("the document's fragment spreads expand to more than {limit} spreads (graphql_max_spreads)")]
    Spreads { limit: usize },
    #[error("fragment `{name}` spreads itself, directly or through other fragments; GraphQL forbids fragment cycles")]
    FragmentCycle { name: String },
    /// Refused rather than measured: async-graphql's parser reads an unclosed `"""` as an empty
    /// string `""` followed by an ordinary string, so what follows would be structure to it but
    /// string content to a GraphQL lexer. Either reading is a lexical error in GraphQL.
    #[error("the document has a block string (\"\"\") that is never closed")]
    UnclosedBlockString,
}

/// Measure `document` against `limits`, stopping at the first limit exceeded.
pub fn check(document: &str, limits: &GateLimits) -> Result<(), GateRefusal> {
    measure(document, limits).map(|_| ())
}

/// What the gate measured of an accepted document (tests compare it with the parser's view).
#[derive(Debug, Default, PartialEq, Eq)]
struct Measure {
    tokens: usize,
    nesting: usize,
    fragments: usize,
    /// Expanded spreads over all operations.
    spreads: usize,
}

fn measure(document: &str, limits: &GateLimits) -> Result<Measure, GateRefusal> {
    let bytes = document.as_bytes();
    let mut graph = SpreadGraph::default();
    let mut m = Measure::default();
    let mut depth = 0usize;
    // Between two definitions at depth 0: the next name or `{` starts a new one.
    let mut between = true;
    let mut fragment_name_next = false;
    let mut after_spread = false;

    for token in Lexer::new(document) {
        // The name after a bare `fragment` keyword, if this token is one.
        let fragment_name = std::mem::take(&mut fragment_name_next);
        m.tokens += 1;
        if m.tokens > limits.max_tokens {
            return Err(GateRefusal::Tokens {
                limit: limits.max_tokens,
            });
        }
        let text = &document[token.start..token.end];
        match token.kind {
            Kind::UnclosedBlockString => return Err(GateRefusal::UnclosedBlockString),
            Kind::Open(open) => {
                if depth == 0 && open == b'{' && between {
                    graph.start_operation();
                    between = false;
                }
                depth += 1;
                m.nesting = m.nesting.max(depth);
                if depth > limits.max_nesting {
                    return Err(GateRefusal::Nesting {
                        limit: limits.max_nesting,
                    });
                }
            }
            Kind::Close(close) => {
                // Mismatched or extra closers are syntax errors: the parser stops there.
                depth = depth.saturating_sub(1);
                if depth == 0 && close == b'}' {
                    between = true;
                }
            }
            Kind::Name if depth == 0 && fragment_name => {
                graph.start_fragment(text);
                m.fragments += 1;
            }
            Kind::Name if depth == 0 && between => {
                between = false;
                // The parser matches keywords as bare prefixes: `fragmentF on T` defines `F` and
                // `queryQ {` is a query named `Q`. Anything not `fragment…` starts an operation.
                match text.strip_prefix("fragment") {
                    Some("") => fragment_name_next = true,
                    Some(name) => {
                        graph.start_fragment(name);
                        m.fragments += 1;
                    }
                    None => graph.start_operation(),
                }
            }
            // `... on T` is an inline fragment only when `on` is followed by whitespace (comments
            // excluded) and a name; otherwise the parser reads a spread of a fragment named `on`.
            Kind::Name if after_spread && (text != "on" || !type_condition_follows(bytes, token.end)) => {
                graph.add_spread(text);
            }
            _ => {}
        }
        if m.fragments > limits.max_fragments {
            return Err(GateRefusal::Fragments {
                limit: limits.max_fragments,
            });
        }
        after_spread = token.kind == Kind::Spread;
    }
    m.spreads = graph.expanded_total(limits.max_spreads)?;
    Ok(m)
}

/// Which named spreads each operation and fragment contains directly. Fragment names are
/// interned; a name spread but never defined stays undefined and costs 1 per spread.
#[derive(Default)]
struct SpreadGraph<'a> {
    ids: HashMap<&'a str, usize>,
    /// Per fragment id: the ids it spreads directly (duplicates kept: each one costs).
    fragments: Vec<Vec<usize>>,
    defined: Vec<bool>,
    operations: Vec<Vec<usize>>,
    current: Option<Owner>,
}

#[derive(Clone, Copy)]
enum Owner {
    Operation(usize),
    Fragment(usize),
}

impl<'a> SpreadGraph<'a> {
    fn id(&mut self, name: &'a str) -> usize {
        let next = self.fragments.len();
        let id = *self.ids.entry(name).or_insert(next);
        if id == next {
            self.fragments.push(Vec::new());
            self.defined.push(false);
        }
        id
    }

    fn start_operation(&mut self) {
        self.operations.push(Vec::new());
        self.current = Some(Owner::Operation(self.operations.len() - 1));
    }

    /// A name defined twice (a parse error) keeps the spreads of both definitions: never fewer.
    fn start_fragment(&mut self, name: &'a str) {
        let id = self.id(name);
        self.defined[id] = true;
        self.current = Some(Owner::Fragment(id));
    }

    fn add_spread(&mut self, name: &'a str) {
        let target = self.id(name);
        // A spread before any definition is a syntax error; an operation holds it all the same.
        let owner = self.current.unwrap_or_else(|| {
            self.start_operation();
            Owner::Operation(self.operations.len() - 1)
        });
        match owner {
            Owner::Fragment(f) => self.fragments[f].push(target),
            Owner::Operation(o) => self.operations[o].push(target),
        }
    }

    /// Expanded spreads summed over the operations. Each fragment's expansion is computed once,
    /// children first, by a depth-first walk with an explicit stack: linear in the spreads.
    /// A fragment over `limit` on its own is refused too, used or not: async-graphql's
    /// validation visits every fragment definition, and an unused one is an error anyway.
    fn expanded_total(&self, limit: usize) -> Result<usize, GateRefusal> {
        #[derive(Clone, Copy, PartialEq)]
        enum Visit {
            New,
            Open,
            Done,
        }
        let cost = |spreads: &[usize], expanded: &[usize]| {
            spreads
                .iter()
                .fold(0usize, |sum, &t| sum.saturating_add(1).saturating_add(expanded[t]))
        };
        let over = || GateRefusal::Spreads { limit };
        let mut visit = vec![Visit::New; self.fragments.len()];
        let mut expanded = vec![0usize; self.fragments.len()];
        let mut stack: Vec<(usize, usize)> = Vec::new();
        for root in 0..self.fragments.len() {
            if !self.defined[root] || visit[root] != Visit::New {
                continue;
            }
            visit[root] = Visit::Open;
            stack.push((root, 0));
            while let Some(top) = stack.last_mut() {
                let (node, next) = *top;
                if let Some(&target) = self.fragments[node].get(next) {
                    top.1 += 1;
                    if !self.defined[target] {
                        continue;
                    }
                    match visit[target] {
                        Visit::New => {
                            visit[target] = Visit::Open;
                            stack.push((target, 0));
                        }
                        Visit::Open => {
                            return Err(GateRefusal::FragmentCycle {
                                name: self.name(target),
                            });
                        }
                        Visit::Done => {}
                    }
                } else {
                    expanded[node] = cost(&self.fragments[node], &expanded);
                    if expanded[node] > limit {
                        return Err(over());
                    }
                    visit[node] = Visit::Done;
                    stack.pop();
                }
            }
        }
        let mut total = 0usize;
        for spreads in &self.operations {
            total = total.saturating_add(cost(spreads, &expanded));
            if total > limit {
                return Err(over());
            }
        }
        Ok(total)
    }

    /// The fragment's name for a message, cut short: it is the client's own text.
    fn name(&self, id: usize) -> String {
        let name = self.ids.iter().find(|&(_, &i)| i == id).map_or("", |(name, _)| *name);
        name.chars().take(64).collect()
    }
}
