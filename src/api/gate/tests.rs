use std::time::{Duration, Instant};

use async_graphql::parser::parse_query;
use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use proptest::prelude::*;
use proptest::sample::Index;

use super::*;

/// The limits the server ships with.
const DEFAULTS: GateLimits = GateLimits {
    max_nesting: 32,
    max_tokens: 5000,
    max_fragments: 64,
    max_spreads: 1000,
};

/// Wide enough that only the document's own shape decides (for comparing with the parser).
const WIDE: GateLimits = GateLimits {
    max_nesting: 10_000,
    max_tokens: 1_000_000,
    max_fragments: 10_000,
    max_spreads: 1_000_000,
};

/// GraphiQL's standard introspection query (graphql-js `getIntrospectionQuery()`), verbatim.
const INTROSPECTION: &str = r#"
query IntrospectionQuery {
  __schema {
    queryType { name }
    mutationType { name }
    subscriptionType { name }
    types {
      ...FullType
    }
    directives {
      name
      description
      locations
      args {
        ...InputValue
      }
    }
  }
}

fragment FullType on __Type {
  kind
  name
  description
  fields(includeDeprecated: true) {
    name
    description
    args {
      ...InputValue
    }
    type {
      ...TypeRef
    }
    isDeprecated
    deprecationReason
  }
  inputFields {
    ...InputValue
  }
  interfaces {
    ...TypeRef
  }
  enumValues(includeDeprecated: true) {
    name
    description
    isDeprecated
    deprecationReason
  }
  possibleTypes {
    ...TypeRef
  }
}

fragment InputValue on __InputValue {
  name
  description
  type { ...TypeRef }
  defaultValue
}

fragment TypeRef on __Type {
  kind
  name
  ofType {
    kind
    name
    ofType {
      kind
      name
      ofType {
        kind
        name
        ofType {
          kind
          name
          ofType {
            kind
            name
            ofType {
              kind
              name
              ofType {
                kind
                name
              }
            }
          }
        }
      }
    }
  }
}
"#;

/// Documents clients really send, used as seeds for the properties below.
const SEEDS: &[&str] = &[
    INTROSPECTION,
    "query Q($id: ID!) { broadcast(id: $id) { ...B stages { ... on Stage { id } } } }
     fragment B on Broadcast { id name ...S } fragment S on Broadcast { state }",
    r#"mutation { createApiKey(name: "ops {", role: ADMIN) { key apiKey { id role } } }"#,
    r#"mutation J($u: String!) { joinBroadcast(broadcastId: "b1", userId: $u,
       attributes: [{key: "k", value: """v \""" }"""}]) { token session { id } } } # done {"#,
    "{ a: broadcasts(state: LIVE) { id } b: stats(broadcastId: null) { viewers capacity } }",
    "query A { ...F ...F } query B { ...G @include(if: true) } fragment F on Query { ...G } fragment G on Query { node { nodeId } }",
];

fn doubling_chain(levels: usize) -> String {
    let mut doc = String::from("query { ...F0 }\n");
    for i in 0..levels {
        doc += &format!("fragment F{i} on Query {{ ...F{n} ...F{n} }}\n", n = i + 1);
    }
    doc + &format!("fragment F{levels} on Query {{ __typename }}\n")
}

/// Spread expansion as async-graphql's complexity check sees it, from the parsed document.
fn parser_spreads(doc: &ExecutableDocument) -> usize {
    fn walk(doc: &ExecutableDocument, set: &SelectionSet, depth: usize) -> usize {
        assert!(depth < 64, "a fragment cycle the gate did not see");
        let item = |s: &Selection| match s {
            Selection::Field(f) => walk(doc, &f.node.selection_set.node, depth),
            Selection::InlineFragment(i) => walk(doc, &i.node.selection_set.node, depth),
            Selection::FragmentSpread(s) => {
                let target = doc.fragments.get(&s.node.fragment_name.node);
                1 + target.map_or(0, |f| walk(doc, &f.node.selection_set.node, depth + 1))
            }
        };
        set.items.iter().map(|s| item(&s.node)).sum()
    }
    doc.operations
        .iter()
        .map(|(_, op)| walk(doc, &op.node.selection_set.node, 0))
        .sum()
}

// --- Nesting: what crashed the process

#[test]
fn the_1600_level_list_that_overflowed_the_parser_is_refused() {
    let doc = format!(
        "{{ broadcast(id: {}1{}) {{ id }} }}",
        "[".repeat(1600),
        "]".repeat(1600)
    );
    assert!(doc.len() < 3300);
    assert_eq!(check(&doc, &DEFAULTS), Err(GateRefusal::Nesting { limit: 32 }));
}

#[test]
fn ten_times_deeper_lists_and_objects_are_refused() {
    let lists = format!(
        "{{ broadcast(id: {}1{}) {{ id }} }}",
        "[".repeat(16_000),
        "]".repeat(16_000)
    );
    let mixed = format!(
        "{{ broadcast(id: {}1{}) {{ id }} }}",
        "[{a: ".repeat(8_000),
        "}]".repeat(8_000)
    );
    assert_eq!(check(&lists, &DEFAULTS), Err(GateRefusal::Nesting { limit: 32 }));
    assert_eq!(check(&mixed, &DEFAULTS), Err(GateRefusal::Nesting { limit: 32 }));
}

#[test]
fn selection_sets_nest_to_the_limit_and_no_further() {
    let nested = |levels: usize| format!("{}id{}", "{ a ".repeat(levels), " }".repeat(levels));
    assert_eq!(check(&nested(32), &DEFAULTS), Ok(()));
    assert_eq!(check(&nested(33), &DEFAULTS), Err(GateRefusal::Nesting { limit: 32 }));
    assert_eq!(
        check(&nested(5_000), &DEFAULTS),
        Err(GateRefusal::Nesting { limit: 32 })
    );
}

// --- Spreads: what cost minutes of CPU

#[test]
fn doubling_fragment_chains_are_refused_as_spreads_at_once() {
    for levels in [30, 60] {
        let doc = doubling_chain(levels);
        let started = Instant::now();
        assert_eq!(
            check(&doc, &DEFAULTS),
            Err(GateRefusal::Spreads { limit: 1000 }),
            "{levels} levels"
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{levels} levels took {:?}",
            started.elapsed()
        );
    }
    // A short chain is fine: 2 + 4 + … + 2^8 = 510 expanded spreads (plus the operation's 1).
    assert_eq!(measure(&doubling_chain(8), &DEFAULTS).map(|m| m.spreads), Ok(511));
}

#[test]
fn a_long_fragment_chain_is_walked_without_recursion() {
    // 20,000 fragments, each spreading the next once: a recursive walk would need a deep stack.
    let levels = 20_000;
    let mut doc = String::from("{ ...F0 }\n");
    for i in 0..levels {
        doc += &format!("fragment F{i} on Query {{ ...F{} }}\n", i + 1);
    }
    doc += &format!("fragment F{levels} on Query {{ id }}");
    let wide = GateLimits {
        max_fragments: levels + 1,
        ..WIDE
    };
    assert_eq!(measure(&doc, &wide).map(|m| m.spreads), Ok(levels + 1));
    assert_eq!(check(&doc, &DEFAULTS), Err(GateRefusal::Fragments { limit: 64 }));
}

#[test]
fn fragment_cycles_are_refused_with_a_fragment_of_the_cycle() {
    let pair = "query { ...A } fragment A on Query { ...B } fragment B on Query { id ...A }";
    let own = "query { id } fragment Me on Query { ...Me }";
    assert_eq!(
        check(pair, &DEFAULTS),
        Err(GateRefusal::FragmentCycle { name: "A".into() })
    );
    assert_eq!(
        check(own, &DEFAULTS),
        Err(GateRefusal::FragmentCycle { name: "Me".into() })
    );
}

#[test]
fn undefined_fragments_cost_one_and_inline_fragments_nothing() {
    let doc = "{ ...Missing ...Missing ... on Query { id } ... @include(if: true) { id } ...on Query { id } }";
    assert_eq!(measure(doc, &DEFAULTS).map(|m| m.spreads), Ok(2));
}

#[test]
fn the_graphiql_introspection_query_is_accepted_with_the_defaults() {
    let m = measure(INTROSPECTION, &DEFAULTS).expect("accepted");
    assert_eq!((m.fragments, m.spreads), (3, 10));
    assert_eq!(m.nesting, 8, "TypeRef: its body and 7 levels of ofType");
    assert_eq!(m.spreads, parser_spreads(&parse_query(INTROSPECTION).unwrap()));
}

// --- Tokens and fragments

#[test]
fn token_and_fragment_limits_are_refused_by_name() {
    let long = format!("{{ {} }}", "id ".repeat(5_000));
    let many = (0..65)
        .map(|i| format!("fragment F{i} on Query {{ id }} "))
        .collect::<String>();
    assert_eq!(check(&long, &DEFAULTS), Err(GateRefusal::Tokens { limit: 5000 }));
    assert_eq!(
        check(&format!("{{ ...F0 }} {many}"), &DEFAULTS),
        Err(GateRefusal::Fragments { limit: 64 })
    );
}

#[test]
fn refusals_name_the_limit_and_its_setting() {
    let said = GateRefusal::Nesting { limit: 32 }.to_string();
    assert_eq!(said, "the document nests deeper than 32 levels (graphql_max_nesting)");
    assert!(
        GateRefusal::Spreads { limit: 1000 }
            .to_string()
            .contains("1000 spreads (graphql_max_spreads)")
    );
    assert!(
        GateRefusal::FragmentCycle { name: "A".into() }
            .to_string()
            .contains("fragment `A`")
    );
}

// --- The lexer: structure hidden in text does not count, text that is structure does

#[test]
fn brackets_inside_strings_block_strings_and_comments_do_not_count() {
    let tight = GateLimits {
        max_nesting: 2,
        ..DEFAULTS
    };
    let doc = "{ a(s: \"{{[[(( \\\" ]] #\", b: \"\"\" {{{{ \\\"\"\" [[[[ \n (( \"\"\") # {{{{ [[[[\r}";
    assert_eq!(check(doc, &tight), Ok(()));
    assert!(parse_query(doc).is_ok(), "the parser reads it the same way");
    // A comment ends at a bare CR, as in the parser: what follows is structure.
    assert_eq!(
        check("{ a # c\r{ b { c } } }", &tight),
        Err(GateRefusal::Nesting { limit: 2 })
    );
}

#[test]
fn an_unclosed_block_string_is_refused_rather_than_read_two_ways() {
    // The parser reads `"""a"` as `""` then `"a"`, so the lists after it are structure to it.
    let doc = |levels: usize| format!("{{ a(x: [\"\"\"a\" {}1{}]) }}", "[".repeat(levels), "]".repeat(levels));
    assert!(parse_query(doc(3)).is_ok());
    assert_eq!(check(&doc(3), &DEFAULTS), Err(GateRefusal::UnclosedBlockString));
    assert_eq!(check(&doc(40), &DEFAULTS), Err(GateRefusal::UnclosedBlockString));
}

#[test]
fn keyword_prefixes_and_on_follow_the_parser() {
    // async-graphql's grammar reads `fragmentF` as `fragment F` and `...on @dir` as a spread of a
    // fragment named `on`; a gate that missed either could be walked past by a doubling chain.
    let doc = "query { ...on @include(if: true) ...on } fragmenton on Query { ...F ...F } fragmentF on Query { id }";
    let parsed = parse_query(doc).expect("the parser accepts it");
    assert_eq!(parsed.fragments.len(), 2);
    let m = measure(doc, &DEFAULTS).unwrap();
    assert_eq!((m.fragments, m.spreads), (2, parser_spreads(&parsed)));
    assert_eq!(m.spreads, 2 * (1 + 2));
}

#[test]
fn ordinary_documents_are_accepted() {
    for doc in SEEDS {
        assert_eq!(check(doc, &DEFAULTS), Ok(()), "{doc}");
    }
}

// --- Properties

/// Characters that matter to the lexer, plus some that do not.
const ALPHABET: &[char] = &[
    '{', '}', '[', ']', '(', ')', '"', '#', '\\', '.', '\n', '\r', ' ', ',', '@', '$', ':', 'o', 'n', 'F', '1', 'é',
    '\u{feff}',
];

/// Insert, delete or duplicate at random positions of a seed.
fn mutated() -> impl Strategy<Value = String> {
    let edit = (
        0..3u8,
        any::<Index>(),
        any::<Index>(),
        proptest::sample::select(ALPHABET),
    );
    (proptest::sample::select(SEEDS), proptest::collection::vec(edit, 1..8)).prop_map(|(seed, edits)| {
        let mut chars: Vec<char> = seed.chars().collect();
        for (op, at, len, c) in edits {
            let at = at.index(chars.len() + 1);
            match op {
                0 => chars.insert(at, c),
                1 if at < chars.len() => {
                    chars.remove(at);
                }
                _ => {
                    let end = (at + len.index(24)).min(chars.len());
                    let copy = chars[at..end].to_vec();
                    chars.splice(at..at, copy);
                }
            }
        }
        chars.into_iter().collect()
    })
}

/// Token boundaries of a document, as the gate's lexer sees them.
fn boundaries(doc: &str) -> Vec<usize> {
    let tokens = Lexer::new(doc).flat_map(|t| [t.start, t.end]);
    std::iter::once(0).chain(tokens).collect()
}

proptest! {
    #[test]
    fn any_text_is_answered(doc in any::<String>()) {
        let _ = check(&doc, &DEFAULTS);
    }

    #[test]
    fn punctuation_soup_is_answered(doc in "[{}\\[\\]()\"#\\\\.!$&:=@|, \n\ra-z0-9]{0,300}") {
        let _ = check(&doc, &DEFAULTS);
        let _ = check(&doc, &WIDE);
    }

    /// Where the parser accepts a mutated document, the gate counted what the parser will expand.
    #[test]
    fn mutated_documents_are_answered_and_measured_as_the_parser_reads_them(doc in mutated()) {
        let _ = check(&doc, &DEFAULTS);
        if let (Ok(m), Ok(parsed)) = (measure(&doc, &WIDE), parse_query(&doc)) {
            prop_assert_eq!(m.fragments, parsed.fragments.len());
            prop_assert_eq!(m.spreads, parser_spreads(&parsed));
        }
    }

    /// Whitespace changes nothing the gate measures; comments do not turn acceptance into refusal.
    #[test]
    fn whitespace_and_comments_keep_accepted_documents_accepted(
        seed in proptest::sample::select(SEEDS),
        spots in proptest::collection::vec((any::<Index>(), 0..4usize), 1..10),
    ) {
        let before = measure(seed, &DEFAULTS).expect("seeds are accepted");
        let places = boundaries(seed);
        let mut inserts: Vec<(usize, usize)> = spots.iter().map(|(i, what)| (*i.get(&places), *what)).collect();
        inserts.sort();
        let (mut spaced, mut commented) = (seed.to_string(), seed.to_string());
        for &(at, what) in inserts.iter().rev() {
            spaced.insert_str(at, [" ", "\n\t,", "\r\n", "\u{feff}"][what]);
            commented.insert_str(at, [" # {{[[((\n", "#\"\"\"\r", "# ... F\n", ",#}\r\n"][what]);
        }
        prop_assert_eq!(measure(&spaced, &DEFAULTS), Ok(before));
        prop_assert!(check(&commented, &DEFAULTS).is_ok(), "{}", commented);
    }
}
