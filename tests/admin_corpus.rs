//! Parser quality: every phrasing of tests/admin_corpus.tsv (written independently of the
//! parser) mapped to its expected command. Reports accuracy and every miss; at least 95%.

use tenantgate::admin::english::{parse, Vocab};

fn vocab() -> Vocab {
    Vocab::sample(&["primary", "pg2", "eu_west"])
}

/// (phrasings, misses) of a corpus.
fn evaluate(corpus: &str, v: &Vocab) -> (usize, Vec<String>) {
    let (mut total, mut misses) = (0, Vec::new());
    for line in corpus.lines() {
        let line = line.trim_end();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (text, want) = line.split_once('\t').expect("phrasing<TAB>command");
        total += 1;
        let got = parse(text, v).map(|c| c.to_string());
        if got.as_deref() != Some(want) {
            misses.push(format!("{text:?}\n    want {want}\n    got  {got:?}"));
        }
    }
    (total, misses)
}

#[test]
fn english_corpus_accuracy() {
    let (total, misses) = evaluate(include_str!("admin_corpus.tsv"), &vocab());
    let accuracy = 100.0 * (total - misses.len()) as f64 / total as f64;
    println!("english corpus: {total} phrasings, accuracy {accuracy:.1}%");
    for m in &misses {
        println!("miss: {m}");
    }
    assert!(total >= 150, "corpus has {total} phrasings");
    assert!(
        accuracy >= 95.0,
        "accuracy {accuracy:.1}% < 95%:\n{}",
        misses.join("\n")
    );
}

/// A second corpus, written by someone who did not read the parser. Measured blind the first
/// time (84.0%); the gaps it showed were then fixed, so it is no longer blind, but it guards
/// the parser's generality against regressions.
#[test]
fn english_heldout_accuracy() {
    let (total, misses) = evaluate(include_str!("admin_corpus_heldout.tsv"), &vocab());
    let accuracy = 100.0 * (total - misses.len()) as f64 / total as f64;
    println!("held-out corpus: {total} phrasings, accuracy {accuracy:.1}%");
    for m in &misses {
        println!("miss: {m}");
    }
    assert!(
        accuracy >= 95.0,
        "held-out accuracy {accuracy:.1}%:\n{}",
        misses.join("\n")
    );
}
