//! Sources, splits, tokenizers and shift families, through the library: every source reads back
//! what was written, splits and probe sets depend on the seed alone, and every shift family is
//! the unshifted set at its identity level and moves away from it as its level grows.
//!
//! The distance is `data::probes::distance`: the mean fraction of a sample's token bigrams that
//! the same-index unshifted sample does not contain.

use std::path::Path;
use std::sync::Arc;

mod common;

use arrow::array::{ArrayRef, Int64Array, StringArray};
use densitrace::config::{Config, SourceConfig};
use densitrace::data::probes::{self, ProbeSet};
use densitrace::data::{Dataset, Kind, source};

/// About 60 KB of varied English-like text, in several files.
fn write_corpus(dir: &Path) {
    let words = [
        "the", "model", "reads", "a", "sequence", "of", "tokens", "and", "predicts", "next", "one",
        "density", "grows", "while", "training", "on", "familiar", "text", "but", "noise", "makes",
        "it", "sparse", "again", "every", "step",
    ];
    for f in 0..4 {
        let mut text = String::new();
        let mut state = 7u64 + f;
        for line in 0..150 {
            for w in 0..12 {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let word = words[(state >> 33) as usize % words.len()];
                text.push_str(word);
                text.push(if w == 11 { '.' } else { ' ' });
            }
            text.push_str(if line % 5 == 4 { "\n\n" } else { "\n" });
        }
        std::fs::write(dir.join(format!("part{f}.txt")), text).unwrap();
    }
}

fn text_config(dir: &Path, seed: u64, sets: &str) -> Config {
    let yaml = format!(
        "
name: t
seed: {seed}
device: cpu
data:
  source: {{kind: text, path: {}}}
  tokenizer: {{kind: byte}}
  context: 16
model: {{layers: 1, d_model: 16, heads: 2, d_ff: 32, seq_len: 64}}
probes:
  every: 10
  samples: 200
  sets:
{sets}
",
        dir.join("*.txt").display()
    );
    Config::from_yaml(&yaml, "test.yaml", &[]).unwrap()
}

fn build(config: &Config) -> (Dataset, Vec<ProbeSet>) {
    let data = Dataset::prepare(config, None).unwrap();
    let sets = probes::build(config, &config.probes.sets, &data).unwrap();
    (data, sets)
}

fn by_level<'a>(sets: &'a [ProbeSet], name: &str) -> Vec<&'a ProbeSet> {
    sets.iter().filter(|s| s.name == name).collect()
}

/// The family at its identity level equals `id`, and the distance grows strictly with level.
fn assert_graded(sets: &[ProbeSet], name: &str, id: &ProbeSet) {
    let levels = by_level(sets, name);
    assert!(levels.len() >= 3, "{name}: too few levels");
    let first = levels[0];
    assert_eq!(
        first.level,
        first.family.identity_level(),
        "{name}: list the identity level first"
    );
    assert!(
        first.tokens == id.tokens,
        "{name} at its identity level is not the unshifted set"
    );
    assert_eq!((first.distance, first.novelty), (0.0, 0.0));
    let distances: Vec<f64> = levels.iter().map(|s| s.distance).collect();
    assert!(
        distances.windows(2).all(|w| w[0] < w[1]),
        "{name}: distance does not grow with level: {distances:?}"
    );
}

/// As `assert_graded`, for novelty (the content shifts: noise, corruption, the grammar's rules).
fn assert_novelty_grows(sets: &[ProbeSet], name: &str) {
    let novelty: Vec<f64> = by_level(sets, name).iter().map(|s| s.novelty).collect();
    assert_eq!(novelty[0], 0.0);
    assert!(
        novelty.windows(2).all(|w| w[0] < w[1]),
        "{name}: novelty does not grow with level: {novelty:?}"
    );
}

#[test]
fn text_sources_read_back_what_was_written() {
    let dir = tempfile::tempdir().unwrap();
    write_corpus(dir.path());
    // text: every byte of every file, in name order.
    let path = dir.path().join("*.txt").display().to_string();
    let docs = source::read_documents(&SourceConfig::Text { path }, true, 1).unwrap();
    let mut expected = Vec::new();
    for f in 0..4 {
        expected.extend(std::fs::read(dir.path().join(format!("part{f}.txt"))).unwrap());
    }
    assert_eq!(docs.concat(), expected);
    // A directory reads the same files.
    let from_dir = source::read_documents(
        &SourceConfig::Text {
            path: dir.path().display().to_string(),
        },
        true,
        1,
    )
    .unwrap();
    assert_eq!(from_dir, docs);

    // jsonl: the named field of each record, blank lines skipped.
    let jsonl = dir.path().join("d.jsonl");
    std::fs::write(
        &jsonl,
        "{\"text\": \"héllo\", \"n\": 1}\n\n{\"text\": \"world\"}\n",
    )
    .unwrap();
    let docs = source::read_documents(
        &SourceConfig::Jsonl {
            path: jsonl.display().to_string(),
            field: "text".into(),
        },
        true,
        1,
    )
    .unwrap();
    assert_eq!(docs, vec!["héllo".as_bytes().to_vec(), b"world".to_vec()]);

    // parquet: the named string column of each row.
    let pq = dir.path().join("d.parquet");
    common::write_parquet(
        &pq,
        vec![
            (
                "text",
                Arc::new(StringArray::from(vec!["alpha", "béta", "gamma"])) as ArrayRef,
            ),
            (
                "n",
                Arc::new(Int64Array::from_iter_values(0..3)) as ArrayRef,
            ),
        ],
    );
    let docs = source::read_documents(
        &SourceConfig::Parquet {
            path: pq.display().to_string(),
            column: "text".into(),
        },
        true,
        1,
    )
    .unwrap();
    assert_eq!(
        docs,
        vec![
            b"alpha".to_vec(),
            "béta".as_bytes().to_vec(),
            b"gamma".to_vec()
        ]
    );
}

#[test]
fn every_tokenizer_round_trips_the_training_documents() {
    let dir = tempfile::tempdir().unwrap();
    write_corpus(dir.path());
    for tokenizer in ["byte", "char", "word", "{kind: bpe, vocab_size: 300}"] {
        let kind = if tokenizer.starts_with('{') {
            tokenizer.to_string()
        } else {
            format!("{{kind: {tokenizer}}}")
        };
        let config = Config::from_yaml(
            &text_config(dir.path(), 1, "    - {name: id, family: none}").to_yaml(),
            "t",
            &[format!("data.tokenizer={kind}")],
        )
        .unwrap();
        let data = Dataset::prepare(&config, None).unwrap();
        let Kind::Documents(docs) = &data.kind else {
            unreachable!()
        };
        // The training stream decodes back to the training documents (words: whitespace
        // normalised), BOS between documents.
        let text = String::from_utf8(std::fs::read(dir.path().join("part0.txt")).unwrap()).unwrap();
        let first_doc_tokens = data.tokenizer.encode(text.lines().next().unwrap());
        assert!(!first_doc_tokens.is_empty());
        let decoded = data.tokenizer.decode(&first_doc_tokens);
        let original = text.lines().next().unwrap();
        if tokenizer == "word" {
            assert_eq!(
                decoded,
                original.split_whitespace().collect::<Vec<_>>().join(" ")
            );
        } else {
            assert_eq!(decoded, original, "{tokenizer}");
        }
        assert!(
            docs.train_tokens
                .iter()
                .all(|&t| (t as usize) < data.vocab_size)
        );
    }
}

#[test]
fn splits_and_probe_sets_depend_on_the_seed_alone() {
    let dir = tempfile::tempdir().unwrap();
    write_corpus(dir.path());
    let sets =
        "    - {name: id, family: none}\n    - {name: noise, family: char_noise, levels: [0.1]}";
    let held_out = |data: &Dataset| match &data.kind {
        Kind::Documents(d) => d.held_out_ids.clone(),
        Kind::Facts(_) => unreachable!(),
    };
    let (a_data, a) = build(&text_config(dir.path(), 1, sets));
    let (b_data, b) = build(&text_config(dir.path(), 1, sets));
    let (c_data, c) = build(&text_config(dir.path(), 2, sets));
    assert_eq!(held_out(&a_data), held_out(&b_data));
    assert_eq!(a, b);
    assert_eq!(probes::content_hash(&a), probes::content_hash(&b));
    assert_ne!(held_out(&a_data), held_out(&c_data));
    assert_ne!(a[0].tokens, c[0].tokens);
    assert_ne!(a[1].tokens, c[1].tokens);

    // The rule graph likewise.
    let rg = |seed: u64| {
        let yaml = format!(
            "name: r\nseed: {seed}\ndata: {{source: {{kind: rulegraph}}}}\nprobes: {{every: 5, \
             sets: [{{name: id, family: none}}, {{name: hops, family: hops}}]}}"
        );
        build(&Config::from_yaml(&yaml, "r", &[]).unwrap()).1
    };
    assert_eq!(rg(1), rg(1));
    assert_ne!(rg(1), rg(2));
}

#[test]
fn text_shift_families_are_graded() {
    let dir = tempfile::tempdir().unwrap();
    write_corpus(dir.path());
    let code = dir.path().join("code");
    std::fs::create_dir(&code).unwrap();
    std::fs::write(
        code.join("a.rs"),
        "fn main() { let x: Vec<u32> = (0..10).map(|i| i * i).collect(); println!(\"{x:?}\"); }\n"
            .repeat(40),
    )
    .unwrap();
    let sets = format!(
        "    - {{name: id, family: none}}
    - {{name: char, family: char_noise, levels: [0, 0.05, 0.2, 0.5]}}
    - {{name: word, family: word_noise, levels: [0, 0.05, 0.2, 0.5]}}
    - {{name: corrupt, family: token_corruption, levels: [0, 0.1, 0.3, 0.6]}}
    - {{name: long, family: length, levels: [1, 2, 4]}}
    - {{name: options, family: options, levels: [0, 2, 4]}}
    - {{name: code, family: domain, source: {{kind: text, path: {}}}}}
    - {{name: random, family: random}}",
        code.display()
    );
    let config = text_config(dir.path(), 1, &sets);
    let (_, sets) = build(&config);
    let id = &sets[0];
    assert_eq!(id.samples(), 200);
    assert_eq!(id.len, 16);
    for name in ["char", "word", "corrupt", "long", "options"] {
        assert_graded(&sets, name, id);
    }
    // Multiple choice on text: 4 options of 16 / 4 = 4 tokens listed before the question; the
    // correct one is the 4 tokens that follow the question in the text.
    let four = by_level(&sets, "options")[2];
    let (m, k) = (four.option_len, four.option_count());
    assert_eq!((m, k), (4, 4));
    let long = by_level(&sets, "long")[2];
    let (options, correct) = (
        four.options.as_ref().unwrap(),
        four.correct.as_ref().unwrap(),
    );
    for i in 0..four.samples() {
        let sample = four.sample(i);
        let listed = &options[i * k * m..(i + 1) * k * m];
        assert_eq!(&sample[..k * m], listed);
        assert_eq!(&sample[k * m..], id.sample(i));
        let truth = &long.sample(i)[16..16 + m];
        let c = correct[i] as usize;
        assert_eq!(&listed[c * m..(c + 1) * m], truth);
        let others = (0..k)
            .filter(|&j| &listed[j * m..(j + 1) * m] == truth)
            .count();
        assert_eq!(others, 1, "the true continuation is listed once");
    }
    for name in ["char", "word", "corrupt"] {
        assert_novelty_grows(&sets, name);
    }
    let long = by_level(&sets, "long");
    assert_eq!(
        long.iter().map(|s| s.len).collect::<Vec<_>>(),
        vec![16, 32, 64]
    );
    // Longer windows start with the unshifted window.
    assert_eq!(long[2].sample(0)[..17], id.sample(0)[..]);
    let code = by_level(&sets, "code")[0];
    let random = by_level(&sets, "random")[0];
    assert!(code.distance > 0.5, "code distance {}", code.distance);
    assert!(random.distance > 0.9, "random distance {}", random.distance);
}

#[test]
fn grammar_shift_is_graded_and_rule_graph_families_too() {
    let yaml = "
name: g
data:
  source: {kind: grammar, symbols: 64, branching: 3, documents: 60, length: 128}
  context: 16
model: {seq_len: 32}
probes:
  every: 10
  samples: 200
  sets:
    - {name: id, family: none}
    - {name: rules, family: grammar_shift, levels: [0, 0.25, 0.5, 1]}
";
    let (_, sets) = build(&Config::from_yaml(yaml, "g", &[]).unwrap());
    assert_graded(&sets, "rules", &sets[0]);
    assert_novelty_grows(&sets, "rules");

    let yaml = "
name: r
data: {source: {kind: rulegraph}}
model: {seq_len: 16}
probes:
  every: 10
  samples: 200
  sets:
    - {name: id, family: none}
    - {name: options, family: options, levels: [0, 2, 4, 8]}
    - {name: conflict, family: conflict, levels: [0, 1, 2, 3]}
    - {name: corrupt, family: token_corruption, levels: [0, 0.2, 0.5, 1]}
";
    let (data, sets) = build(&Config::from_yaml(yaml, "r", &[]).unwrap());
    for name in ["options", "conflict", "corrupt"] {
        assert_graded(&sets, name, &sets[0]);
    }
    // Multiple choice: k options, exactly one of them the answer, listed before the question.
    let Kind::Facts(kb) = &data.kind else {
        unreachable!()
    };
    let eight = by_level(&sets, "options")[3];
    assert_eq!(eight.option_count(), 8);
    let (options, correct) = (
        eight.options.as_ref().unwrap(),
        eight.correct.as_ref().unwrap(),
    );
    for i in 0..eight.samples() {
        let sample = eight.sample(i);
        let opts = &options[i * 8..(i + 1) * 8];
        assert_eq!(&sample[1..9], opts);
        let answer = *sample.last().unwrap();
        assert_eq!(opts[correct[i] as usize], answer);
        assert_eq!(opts.iter().filter(|&&o| o == answer).count(), 1);
        assert!(
            opts.iter()
                .all(|&o| o >= kb.entity_token(0) && o <= kb.entity_token(kb.entities as u32 - 1))
        );
    }
    // Conflict: the question keeps its true answer after k statements of one wrong one.
    let two = by_level(&sets, "conflict")[2];
    let s = two.sample(0);
    assert_eq!(s.len(), 1 + 3 * 2 + 3);
    assert_eq!(s[1..4], s[4..7]);
    assert_eq!(s[1..3], s[7..9]);
    assert_ne!(s[3], s[9]);
    assert_eq!(s[7..], sets[0].sample(0)[1..]);
}

/// Every family on every kind of source: the config is refused, naming the set's family, or the
/// probe sets build. Nothing in between (a family the validation lets through to a source that
/// cannot build it would panic).
#[test]
fn every_family_on_every_source_is_refused_or_builds() {
    let dir = tempfile::tempdir().unwrap();
    write_corpus(dir.path());
    let families = [
        ("none", ""),
        ("hops", ""),
        ("token_corruption", ", levels: [0.1]"),
        ("token_replace", ", levels: [1]"),
        ("unigram_replace", ", levels: [1]"),
        ("deducible", ""),
        ("non_deducible", ""),
        ("char_noise", ", levels: [0.1]"),
        ("word_noise", ", levels: [0.1]"),
        ("length", ", levels: [2]"),
        ("options", ", levels: [4]"),
        ("conflict", ", levels: [2]"),
        ("grammar_shift", ", levels: [0.5]"),
        ("random", ""),
    ];
    let text = dir.path().join("*.txt").display().to_string();
    let sources = [
        (
            "rulegraph",
            "{kind: rulegraph, deduction: {aliases: 2, random_derived: 2}}".to_string(),
            "",
        ),
        (
            "grammar",
            "{kind: grammar, symbols: 32, documents: 40, length: 100}".into(),
            "\n  context: 8",
        ),
        (
            "text",
            format!("{{kind: text, path: {text}}}"),
            "\n  context: 8",
        ),
    ];
    let mut families: Vec<(&str, String)> =
        families.iter().map(|(f, l)| (*f, l.to_string())).collect();
    families.push(("domain", format!(", source: {{kind: text, path: {text}}}")));
    let mut built = 0;
    for (kind, source, context) in &sources {
        for (family, levels) in &families {
            let yaml = format!(
                "name: f\ndata:\n  source: {source}{context}\nmodel: {{seq_len: 24}}\n\
                 probes:\n  every: 5\n  samples: 8\n  sets:\n    - {{name: s, family: {family}{levels}}}\n"
            );
            match Config::from_yaml(&yaml, "f", &[]) {
                Ok(config) => {
                    let data = Dataset::prepare(&config, None).unwrap();
                    probes::build(&config, &config.probes.sets, &data)
                        .unwrap_or_else(|e| panic!("{family} on {kind}: {e}"));
                    built += 1;
                }
                Err(e) => assert!(
                    e.to_string().contains(&format!(
                        "family {family} does not apply to data.source kind {kind}"
                    )),
                    "{family} on {kind}: {e}"
                ),
            }
        }
    }
    // none, token_corruption, token_replace, options and random everywhere; hops, conflict,
    // deducible and non_deducible on the rule graph (with a deduction block); char and word
    // noise, unigram_replace, length and domain on text and the grammar; grammar_shift on the
    // grammar.
    assert_eq!(built, 5 * 3 + 4 + 5 + 6);
}
