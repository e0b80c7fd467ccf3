//! Part 1 of `front-door`: every document, one at a time over one keep-alive connection, so each
//! latency is the node's cost of that document and not time spent queueing behind another.
//! Tallies status, `extensions.code` and latency per kind, and whether each answer was the one
//! the document must get.

use std::time::Instant;

use hdrhistogram::Histogram;
use serde_json::Value;

use super::docs::{self, Doc, Expect};
use super::summary::{DocsSummary, KindSummary, Slowest, WorstDoc};
use crate::conn::ConnPool;
use crate::driver::{histogram, progress_bar};
use crate::percentiles::percentiles_ms;

/// Failures listed one by one in the report; the rest are only counted.
const FAILURES_LISTED: usize = 20;

/// Whether `status` is what a document expecting `expect` must get.
pub fn meets(expect: Expect, status: u16) -> bool {
    match expect {
        Expect::Refused => status == 400 || status == 413,
        Expect::Passes => status == 200,
        Expect::Answered => (100..500).contains(&status),
    }
}

/// `errors[0].extensions.code` of an answer body, if it has one.
pub fn error_code(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v["errors"][0]["extensions"]["code"].as_str().map(str::to_string)
}

struct Kind {
    name: &'static str,
    expect: Expect,
    bytes_max: usize,
    statuses: std::collections::BTreeMap<String, u64>,
    codes: std::collections::BTreeMap<String, u64>,
    latency: Histogram<u64>,
}

/// Kinds in the order first sent.
struct Tally {
    kinds: Vec<Kind>,
    sent: u64,
    refusals: Histogram<u64>,
    all: Histogram<u64>,
    slowest: Option<Slowest>,
    /// Per base document (the same in every round): its refusal times in µs.
    refusals_by_doc: Vec<Vec<u64>>,
    failures: Vec<String>,
    failures_total: usize,
}

impl Tally {
    fn new(base_docs: usize) -> Self {
        Self {
            refusals_by_doc: vec![Vec::new(); base_docs],
            kinds: Vec::new(),
            sent: 0,
            refusals: histogram(),
            all: histogram(),
            slowest: None,
            failures: Vec::new(),
            failures_total: 0,
        }
    }

    fn kind(&mut self, doc: &Doc) -> &mut Kind {
        let i = match self.kinds.iter().position(|k| k.name == doc.kind) {
            Some(i) => i,
            None => {
                self.kinds.push(Kind {
                    name: doc.kind,
                    expect: doc.expect,
                    bytes_max: 0,
                    statuses: Default::default(),
                    codes: Default::default(),
                    latency: histogram(),
                });
                self.kinds.len() - 1
            }
        };
        &mut self.kinds[i]
    }

    fn fail(&mut self, message: String) {
        self.failures_total += 1;
        if self.failures.len() < FAILURES_LISTED {
            self.failures.push(message);
        }
    }
}

/// A document as sent, and where it came from, to find it again (with `--seed`).
struct Sent<'a> {
    doc: &'a Doc,
    /// The base document's kind (a mutant's kind is `mutated`).
    origin: &'static str,
    round: u32,
    /// Position in the round: base documents, then their mutants, then the oversized body.
    index: usize,
}

/// Send the base documents, one mutant of each and one oversized body, `rounds` times.
pub async fn run(pool: &ConnPool, rounds: u32, seed: u64) -> DocsSummary {
    let base = docs::base();
    let oversize = docs::oversize();
    let per_round = 2 * base.len() + 1;
    let bar = progress_bar(u64::from(rounds) * per_round as u64, "front-door: documents");
    let mut t = Tally::new(base.len());
    let started = Instant::now();
    for round in 0..rounds {
        let mutants = docs::mutants(&base, seed, round);
        let mut round_docs: Vec<(&Doc, &'static str)> = base.iter().map(|d| (d, d.kind)).collect();
        round_docs.extend(mutants.iter().zip(&base).map(|(m, b)| (m, b.kind)));
        round_docs.push((&oversize, oversize.kind));
        for (index, (doc, origin)) in round_docs.into_iter().enumerate() {
            let sent = Sent {
                doc,
                origin,
                round,
                index,
            };
            send_one(pool, &sent, &mut t).await;
            bar.inc(1);
            bar.set_message(format!("failures {}", t.failures_total));
        }
    }
    bar.finish_and_clear();
    DocsSummary {
        rounds,
        seed,
        sent: t.sent,
        elapsed_secs: started.elapsed().as_secs_f64(),
        kinds: t
            .kinds
            .iter()
            .map(|k| KindSummary {
                kind: k.name.to_string(),
                expect: k.expect,
                bytes_max: k.bytes_max,
                statuses: k.statuses.clone(),
                codes: k.codes.clone(),
                latency_ms: percentiles_ms(&k.latency),
            })
            .collect(),
        refusal_ms: percentiles_ms(&t.refusals),
        all_ms: percentiles_ms(&t.all),
        slowest: t.slowest,
        worst_median: worst_median(&base, &t.refusals_by_doc),
        failures_total: t.failures_total,
        failures: t.failures,
    }
}

async fn send_one(pool: &ConnPool, sent: &Sent<'_>, t: &mut Tally) {
    let doc = sent.doc;
    let body = docs::body(&doc.query);
    let bytes = body.len();
    let began = Instant::now();
    let answer = pool.post_graphql(None, body).await;
    let us = (began.elapsed().as_micros() as u64).max(1);
    t.sent += 1;
    let kind = t.kind(doc);
    kind.bytes_max = kind.bytes_max.max(bytes);
    let (status, code) = match answer {
        Ok((status, body)) => (status, error_code(&body)),
        Err(e) => {
            *kind.statuses.entry("none".into()).or_default() += 1;
            let message = format!("{} (round {}, #{}): no answer: {e}", doc.kind, sent.round, sent.index);
            t.fail(message);
            return;
        }
    };
    *kind.statuses.entry(status.to_string()).or_default() += 1;
    *kind
        .codes
        .entry(code.clone().unwrap_or_else(|| "-".into()))
        .or_default() += 1;
    kind.latency.saturating_record(us);
    t.all.saturating_record(us);
    if status == 400 || status == 413 {
        t.refusals.saturating_record(us);
        if let Some(times) = t.refusals_by_doc.get_mut(sent.index) {
            times.push(us);
        }
    }
    let ms = us as f64 / 1000.0;
    if t.slowest.as_ref().is_none_or(|s| ms > s.ms) {
        t.slowest = Some(Slowest {
            kind: doc.kind.to_string(),
            origin: sent.origin.to_string(),
            round: sent.round,
            index: sent.index,
            status,
            body_bytes: bytes,
            ms,
        });
    }
    if !meets(doc.expect, status) {
        let message = format!(
            "{} (from {}, round {}, #{}): HTTP {status} {}, expected {:?}",
            doc.kind,
            sent.origin,
            sent.round,
            sent.index,
            code.unwrap_or_default(),
            doc.expect
        );
        t.fail(message);
    }
}

/// The base document meant to be refused whose median refusal time over the rounds is the
/// longest: a document's own cost, where the overall max also catches the machine's one-off
/// stalls (another process, a page fault) on any document.
pub fn worst_median(base: &[Doc], times_us: &[Vec<u64>]) -> Option<WorstDoc> {
    base.iter()
        .zip(times_us)
        .enumerate()
        .filter(|(_, (doc, times))| doc.expect == Expect::Refused && !times.is_empty())
        .map(|(index, (doc, times))| {
            let mut sorted = times.clone();
            sorted.sort_unstable();
            WorstDoc {
                kind: doc.kind.to_string(),
                index,
                rounds: sorted.len(),
                median_ms: sorted[(sorted.len() - 1) / 2] as f64 / 1000.0,
                max_ms: sorted[sorted.len() - 1] as f64 / 1000.0,
            }
        })
        .max_by(|a, b| a.median_ms.total_cmp(&b.median_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_right_statuses_count_as_the_right_answer() {
        assert!(meets(Expect::Refused, 400) && meets(Expect::Refused, 413));
        assert!(!meets(Expect::Refused, 200), "a refusal-meant document that ran");
        assert!(
            meets(Expect::Passes, 200) && !meets(Expect::Passes, 400),
            "the gate refused a harmless one"
        );
        assert!(meets(Expect::Answered, 400) && meets(Expect::Answered, 200));
        assert!(!meets(Expect::Answered, 500) && !meets(Expect::Answered, 503));
    }

    #[test]
    fn the_worst_document_is_the_one_slowest_in_its_median_not_in_one_stall() {
        let doc = |kind, expect| Doc {
            kind,
            query: String::new(),
            expect,
        };
        let base = [
            doc("steady", Expect::Refused),
            doc("one_stall", Expect::Refused),
            doc("harmless", Expect::Passes),
        ];
        let times = [vec![900, 1000, 1100], vec![100, 30_000, 120], vec![9_000, 9_000, 9_000]];
        let w = worst_median(&base, &times).unwrap();
        assert_eq!((w.kind.as_str(), w.index, w.rounds), ("steady", 0, 3));
        assert_eq!((w.median_ms, w.max_ms), (1.0, 1.1));
        assert!(worst_median(&base, &[vec![], vec![], vec![]]).is_none());
    }

    #[test]
    fn the_error_code_is_read_from_the_first_error() {
        let body = br#"{"data":null,"errors":[{"message":"m","extensions":{"code":"BAD_REQUEST"}}]}"#;
        assert_eq!(error_code(body).as_deref(), Some("BAD_REQUEST"));
        assert_eq!(error_code(br#"{"data":{"__typename":"Query"}}"#), None);
        assert_eq!(error_code(b"not json"), None);
    }
}
