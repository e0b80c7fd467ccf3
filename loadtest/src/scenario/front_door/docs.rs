//! The documents `front-door` sends: adversarial GraphQL the node's front gate must refuse (and a
//! few it must let through), each at most 64 KiB as a JSON body, plus seeded random mutations of
//! them. Pure: builds strings, sends nothing.
//!
//! The sizes follow the body limit, not the gate's limits: every generator that can grow is grown
//! to the largest document whose body fits (see [`fit`]), so the gate sees the worst a body can hold.

use serde::Serialize;

/// The node's request body limit (`MAX_BODY_BYTES` in the server's `src/api/mod.rs`).
pub const MAX_BODY: usize = 64 * 1024;

/// What the node must answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    /// Refused by the gate: 400 (413 for a body over the limit).
    Refused,
    /// Under every default gate limit, so the gate must let it through; async-graphql then
    /// answers 200 (with its own errors where the document is not valid).
    Passes,
    /// A random mutation: anything but a 5xx or no answer.
    Answered,
}

#[derive(Clone, Debug)]
pub struct Doc {
    pub kind: &'static str,
    pub query: String,
    pub expect: Expect,
}

#[derive(Serialize)]
struct Body<'a> {
    query: &'a str,
}

/// The JSON body a client POSTs for `query`.
pub fn body(query: &str) -> Vec<u8> {
    serde_json::to_vec(&Body { query }).expect("a string serializes")
}

/// `make(n)` for the largest `n` whose body is at most `limit` bytes; `make` must grow with `n`
/// and `make(1)` must fit.
pub fn fit_to(limit: usize, make: impl Fn(usize) -> String) -> String {
    let fits = |n| body(&make(n)).len() <= limit;
    assert!(fits(1), "the smallest document is over {limit} bytes");
    let (mut lo, mut hi) = (1, 2);
    while fits(hi) {
        lo = hi;
        hi *= 2;
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    make(lo)
}

/// The largest `make(n)` whose body fits the node's limit.
pub fn fit(make: impl Fn(usize) -> String) -> String {
    fit_to(MAX_BODY, make)
}

/// `open` n times, then `middle`, then `close` n times.
pub fn nest(open: &str, middle: &str, close: &str, n: usize) -> String {
    let mut s = open.repeat(n);
    s += middle;
    s += &close.repeat(n);
    s
}

/// `query { ...F0 }` where each of `levels` fragments spreads the next one twice: the spreads
/// expand to 2^(levels+1) - 1.
pub fn doubling(levels: usize) -> String {
    let mut s = String::from("query { ...F0 }\n");
    for i in 0..levels {
        s += &format!("fragment F{i} on Query {{ ...F{next} ...F{next} }}\n", next = i + 1);
    }
    s + &format!("fragment F{levels} on Query {{ __typename }}\n")
}

/// `len` fragments, each spreading the next and the last the first.
pub fn cycle(len: usize) -> String {
    let mut s = String::from("query { ...C0 }\n");
    for i in 0..len {
        s += &format!("fragment C{i} on Query {{ ...C{} }}\n", (i + 1) % len);
    }
    s
}

/// `n` fragments, each spreading every later one: n²/2 spreads written, 2^n once expanded.
pub fn fanout(n: usize) -> String {
    let mut s = String::from("query { ...G0 }\n");
    for i in 0..n {
        s += &format!("fragment G{i} on Query {{ __typename");
        for j in i + 1..n {
            s += &format!(" ...G{j}");
        }
        s += " }\n";
    }
    s
}

/// `n` aliased fields: three tokens each.
fn aliases(n: usize) -> String {
    (0..n).map(|i| format!("a{i}: __typename ")).collect()
}

/// Every base document, in a fixed order.
pub fn base() -> Vec<Doc> {
    use Expect::{Passes, Refused};
    let mut docs = Vec::new();
    let mut add = |kind, expect, query| docs.push(Doc { kind, query, expect });
    // Nesting of each bracket up to the size limit, balanced and left open.
    add(
        "list_nesting",
        Refused,
        fit(|n| format!("query {{ a(x: {}) }}", nest("[", "1", "]", n))),
    );
    add(
        "list_nesting",
        Refused,
        fit(|n| format!("query {{ a(x: {}", "[".repeat(n))),
    );
    add(
        "object_nesting",
        Refused,
        fit(|n| format!("query {{ a(x: {}) }}", nest("{a:", "1", "}", n))),
    );
    add(
        "object_nesting",
        Refused,
        fit(|n| format!("query {{ a(x: {}", "{a:".repeat(n))),
    );
    add("selection_nesting", Refused, fit(|n| nest("{ a ", "", "}", n)));
    add("selection_nesting", Refused, fit(|n| "{a".repeat(n)));
    add(
        "argument_nesting",
        Refused,
        fit(|n| format!("query {{ {} }}", nest("a(b: ", "1", ")", n))),
    );
    add(
        "paren_nesting",
        Refused,
        fit(|n| format!("query {{ a{} }}", nest("(", "", ")", n))),
    );
    add(
        "mixed_nesting",
        Refused,
        fit(|n| format!("query {{ x {} }}", nest("{ a(b: [", "1", "]) }", n))),
    );
    // Fragments: doubling chains (refused by expansion, or past 64 by count), cycles, fan-out.
    for levels in [10, 16, 24, 32, 50, 63, 100, 200] {
        add("fragment_doubling", Refused, doubling(levels));
    }
    for len in [1, 2, 3, 60] {
        add("fragment_cycle", Refused, cycle(len));
    }
    add("fragment_fanout", Refused, fanout(60));
    add("fragment_fanout", Refused, fit(fanout));
    // Token soup: names, one-byte punctuators, spreads, directives, numbers.
    add("token_soup", Refused, fit(|n| "a ".repeat(n)));
    add("token_soup", Refused, fit(|n| format!("query {{ {}}}", "a ".repeat(n))));
    add("token_soup", Refused, fit(|n| "!".repeat(n)));
    add(
        "token_soup",
        Refused,
        fit(|n| format!("query {{ a {}}}", "...".repeat(n))),
    );
    add(
        "token_soup",
        Refused,
        fit(|n| format!("query {{ a {}}}", "@b".repeat(n))),
    );
    add(
        "token_soup",
        Refused,
        fit(|n| format!("query {{ a(x: [{}]) }}", "1,".repeat(n))),
    );
    add("many_aliases", Refused, fit(|n| format!("query {{ {}}}", aliases(n))));
    // Long strings, block strings and comments: much to lex, little structure, then depth.
    let deep = nest("[", "1", "]", 100);
    let string_then_deep = |body: &str| fit(|n| format!("query {{ a(s: \"{}\", x: {deep}) }}", body.repeat(n)));
    add("long_string", Refused, string_then_deep("x"));
    add("long_string", Refused, string_then_deep("\\\""));
    add("long_string", Refused, string_then_deep("\\u00e9"));
    add("long_string", Refused, string_then_deep("{[("));
    add(
        "block_string",
        Refused,
        fit(|n| format!("query {{ a(s: \"\"\"{}\"\"\", x: {deep}) }}", "\\\"\"\" ".repeat(n))),
    );
    add(
        "block_string",
        Refused,
        fit(|n| format!("query {{ a(s: \"\"\"{}", "x\n".repeat(n))),
    );
    add(
        "comments",
        Refused,
        fit(|n| format!("{}query {{ a(x: {deep}) }}", "# {[( }\n".repeat(n))),
    );
    // Brackets inside strings and comments are not structure: the gate must let these through.
    add(
        "string_of_brackets",
        Passes,
        fit(|n| format!("query {{ __typename(s: \"{}\") }}", "{[(".repeat(n))),
    );
    add(
        "string_of_brackets",
        Passes,
        fit(|n| format!("query {{ __typename(s: \"\"\"{}\"\"\") }}", "{[( \" \"\" ".repeat(n))),
    );
    add(
        "comment_of_brackets",
        Passes,
        fit(|n| format!("{}{{ __typename }}", "# {{{{[[[[((((\n".repeat(n))),
    );
    // Deep nesting at the very end, after a long prefix that is under every limit.
    let tail = nest("{ a ", "", "}", 40);
    add("hidden_deep", Refused, format!("query {{ {}x {tail} }}", aliases(1500)));
    add(
        "hidden_deep",
        Refused,
        fit(|n| format!("{}query {{ x {tail} }}", ",".repeat(n))),
    );
    add(
        "hidden_deep",
        Refused,
        fit(|n| format!("query {{ a(s: \"{}\") x {tail} }}", "y".repeat(n))),
    );
    docs
}

/// A body just over the limit: the node must answer 413 without reading it.
pub fn oversize() -> Doc {
    let query = fit_to(MAX_BODY + 64, |n| "a ".repeat(n));
    Doc {
        kind: "oversize_body",
        query,
        expect: Expect::Refused,
    }
}

/// SplitMix64: a few lines, and the same seed gives the same documents on every build (rand's
/// small generators do not promise that across its versions).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform enough in `0..n` for picking positions (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// What a mutation writes: the lexer's every kind of boundary, and a multi-byte character.
const PIECES: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    "(",
    ")",
    "\"",
    "\"\"\"",
    "\\",
    "\\\"\"\"",
    "#",
    "\n",
    "\r",
    "...",
    ":",
    "$",
    "@",
    "!",
    "=",
    ",",
    " ",
    "a",
    "1",
    "-",
    ".",
    "e",
    "fragment ",
    " on ",
    "query ",
    "\u{feff}",
    "é",
];

fn boundary_at_or_before(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// `query` with `edits` random edits (replace, insert, delete or copy a run), cut back to fit
/// the body limit.
pub fn mutate(query: &str, rng: &mut Rng, edits: usize) -> String {
    let mut s = query.to_string();
    for _ in 0..edits {
        let at = boundary_at_or_before(&s, rng.below(s.len() + 1));
        let piece = PIECES[rng.below(PIECES.len())];
        match rng.below(4) {
            0 if at < s.len() => {
                let end = at + s[at..].chars().next().map_or(0, char::len_utf8);
                s.replace_range(at..end, piece);
            }
            1 => {
                let end = boundary_at_or_before(&s, (at + 1 + rng.below(16)).min(s.len()));
                s.replace_range(at..end, "");
            }
            2 => {
                let end = boundary_at_or_before(&s, (at + 1 + rng.below(256)).min(s.len()));
                let run = s[at..end].to_string();
                let to = boundary_at_or_before(&s, rng.below(s.len() + 1));
                s.insert_str(to, &run);
            }
            _ => s.insert_str(at, piece),
        }
    }
    loop {
        let over = body(&s).len().saturating_sub(MAX_BODY);
        if over == 0 {
            return s;
        }
        // Each character is at least one byte of JSON: cutting `over` bytes cuts enough or nearly.
        let keep = boundary_at_or_before(&s, s.len().saturating_sub(over));
        s.truncate(keep);
    }
}

/// One mutant of each base document for `round`, with 1 to 64 edits.
pub fn mutants(base: &[Doc], seed: u64, round: u32) -> Vec<Doc> {
    let mut rng = Rng::new(seed ^ (u64::from(round) << 32));
    base.iter()
        .map(|d| {
            let edits = 1 << rng.below(7);
            Doc {
                kind: "mutated",
                query: mutate(&d.query, &mut rng, edits),
                expect: Expect::Answered,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
