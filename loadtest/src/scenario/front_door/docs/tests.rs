use std::sync::LazyLock;

use super::*;

/// Built once: growing each document to the limit takes a while in a debug build.
static BASE: LazyLock<Vec<Doc>> = LazyLock::new(base);

/// Deepest nesting of `{`, `[` and `(`, strings and comments included (use on documents without).
fn depth(s: &str) -> usize {
    let (mut d, mut max) = (0usize, 0);
    for b in s.bytes() {
        match b {
            b'{' | b'[' | b'(' => {
                d += 1;
                max = max.max(d);
            }
            b'}' | b']' | b')' => d = d.saturating_sub(1),
            _ => {}
        }
    }
    max
}

fn of_kind(kind: &str) -> Vec<Doc> {
    BASE.iter().filter(|d| d.kind == kind).cloned().collect()
}

#[test]
fn every_document_fits_the_body_limit_and_the_grown_ones_fill_it() {
    let docs = &*BASE;
    assert!(docs.len() >= 40, "{} documents", docs.len());
    for d in docs {
        let len = body(&d.query).len();
        assert!(len <= MAX_BODY, "{} is {len} bytes", d.kind);
    }
    for kind in [
        "list_nesting",
        "object_nesting",
        "selection_nesting",
        "token_soup",
        "long_string",
        "comments",
    ] {
        for d in of_kind(kind) {
            let len = body(&d.query).len();
            assert!(len > MAX_BODY - 16, "{kind} stops at {len} bytes, short of the limit");
        }
    }
}

#[test]
fn nesting_documents_nest_thousands_deep() {
    for kind in [
        "list_nesting",
        "object_nesting",
        "selection_nesting",
        "argument_nesting",
        "paren_nesting",
        "mixed_nesting",
    ] {
        for d in of_kind(kind) {
            assert!(depth(&d.query) > 5_000, "{kind}: only {} deep", depth(&d.query));
        }
    }
    assert!(of_kind("list_nesting")[0].query.starts_with("query { a(x: [[[["));
    assert!(of_kind("list_nesting")[0].query.ends_with("]]]]) }"));
    assert!(of_kind("selection_nesting")[1].query.starts_with("{a{a{a"), "left open");
}

#[test]
fn a_doubling_chain_spreads_each_next_fragment_twice() {
    assert_eq!(
        doubling(2),
        "query { ...F0 }\n\
         fragment F0 on Query { ...F1 ...F1 }\n\
         fragment F1 on Query { ...F2 ...F2 }\n\
         fragment F2 on Query { __typename }\n"
    );
    let chains = of_kind("fragment_doubling");
    let fragments: Vec<usize> = chains.iter().map(|d| d.query.matches("fragment ").count()).collect();
    assert_eq!(
        fragments,
        [11, 17, 25, 33, 51, 64, 101, 201],
        "10 to 200 levels, plus the last"
    );
}

#[test]
fn cycles_close_on_the_first_fragment_and_fanout_spreads_every_later_one() {
    assert_eq!(cycle(1), "query { ...C0 }\nfragment C0 on Query { ...C0 }\n");
    assert_eq!(
        cycle(2),
        "query { ...C0 }\nfragment C0 on Query { ...C1 }\nfragment C1 on Query { ...C0 }\n"
    );
    assert_eq!(
        fanout(3),
        "query { ...G0 }\n\
         fragment G0 on Query { __typename ...G1 ...G2 }\n\
         fragment G1 on Query { __typename ...G2 }\n\
         fragment G2 on Query { __typename }\n"
    );
    let widest = &of_kind("fragment_fanout")[1];
    assert!(
        widest.query.matches("fragment ").count() > 64,
        "past the fragment limit"
    );
}

#[test]
fn token_soup_and_aliases_hold_far_more_tokens_than_the_gate_allows() {
    for d in of_kind("token_soup") {
        let tokens = d.query.split_whitespace().count().max(d.query.len() / 3);
        assert!(tokens > 20_000, "{}", &d.query[..40]);
    }
    let aliases = &of_kind("many_aliases")[0].query;
    assert!(aliases.matches(": __typename").count() > 3_000);
}

#[test]
fn strings_and_comments_hide_their_brackets_and_refused_ones_nest_after_them() {
    let harmless = of_kind("string_of_brackets");
    let quoted = harmless[0]
        .query
        .strip_prefix("query { __typename(s: \"")
        .unwrap()
        .strip_suffix("\") }")
        .unwrap();
    assert!(
        !quoted.contains(['"', '\\']) && quoted.starts_with("{[("),
        "one plain string of brackets"
    );
    let block = harmless[1]
        .query
        .strip_prefix("query { __typename(s: \"\"\"")
        .unwrap()
        .strip_suffix("\"\"\") }")
        .unwrap();
    assert!(!block.contains("\"\"\""), "the block string closes only at its end");
    let commented = &of_kind("comment_of_brackets")[0].query;
    let (comments, last) = commented.rsplit_once('\n').unwrap();
    assert!(comments.lines().all(|l| l.starts_with('#')) && last == "{ __typename }");
    assert!(
        harmless
            .iter()
            .chain(&of_kind("comment_of_brackets"))
            .all(|d| d.expect == Expect::Passes)
    );
    for kind in ["long_string", "comments"] {
        for d in of_kind(kind) {
            assert!(
                d.query.ends_with(&format!("{}) }}", "]".repeat(100))),
                "{kind}: depth after the long part"
            );
        }
    }
    let unclosed = &of_kind("block_string")[1].query;
    assert_eq!(
        unclosed.matches("\"\"\"").count(),
        1,
        "a block string that never closes"
    );
}

#[test]
fn hidden_depth_comes_only_at_the_end() {
    for d in of_kind("hidden_deep") {
        let cut = d.query.len() * 9 / 10;
        assert!(depth(&d.query[..cut]) <= 2, "shallow for the first 90%");
        assert!(d.query.len() > 25_000, "a long prefix");
    }
    let aliased = &of_kind("hidden_deep")[0].query;
    assert_eq!(
        aliased.matches(": __typename").count(),
        1_500,
        "4,500 tokens: under the default 5,000"
    );
    assert_eq!(depth(aliased), 41);
}

#[test]
fn the_oversized_body_is_just_past_the_limit() {
    let len = body(&oversize().query).len();
    assert!(len > MAX_BODY && len <= MAX_BODY + 64, "{len}");
}

#[test]
fn fit_takes_the_largest_size_that_fits() {
    // `{"query":""}` is 12 bytes.
    assert_eq!(fit_to(20, |n| "a".repeat(n)), "a".repeat(8));
    assert_eq!(fit_to(20, |n| "\"".repeat(n)), "\"".repeat(4), "JSON escapes count");
}

#[test]
fn the_generator_is_splitmix64() {
    let mut rng = Rng::new(0);
    assert_eq!(rng.next_u64(), 0xE220_A839_7B1D_CDAF);
    assert_eq!(rng.next_u64(), 0x6E78_9E6A_A1B9_65F4);
}

#[test]
fn mutants_are_reproducible_fit_the_limit_and_change_their_document() {
    let docs = &*BASE;
    let a = mutants(docs, 7, 3);
    let b = mutants(docs, 7, 3);
    let other_round = mutants(docs, 7, 4);
    assert_eq!(a.len(), docs.len());
    assert!(
        a.iter().zip(&b).all(|(x, y)| x.query == y.query),
        "same seed and round, same mutants"
    );
    assert!(
        a.iter().zip(&other_round).any(|(x, y)| x.query != y.query),
        "another round, other mutants"
    );
    assert!(
        a.iter()
            .all(|m| body(&m.query).len() <= MAX_BODY && m.expect == Expect::Answered)
    );
    let changed = a.iter().zip(docs).filter(|(m, d)| m.query != d.query).count();
    assert!(changed >= docs.len() - 2, "only {changed} of {} changed", docs.len());
}

#[test]
fn many_edits_of_a_full_document_are_cut_back_to_the_limit() {
    let full = fit(|n| "é".repeat(n));
    let mut rng = Rng::new(42);
    for _ in 0..20 {
        let m = mutate(&full, &mut rng, 64);
        assert!(body(&m).len() <= MAX_BODY);
    }
}
