//! Probe sets: fixed, seeded token sequences drawn once at run start, stored in the run directory
//! (`probes.json`, with a content hash in the manifest) and reused unchanged at every evaluation.
//!
//! One `ProbeSet` per configured set and level. Each sample is a sequence of `len + 1` tokens: the
//! model reads the first `len`, the next-token loss is scored against the last `len`, and the
//! position measured as `last` is the last one read.
//!
//! Rule graph (`data.source.kind: rulegraph`), each sample `BOS head relation tail`:
//! - `none` (0): training facts.
//! - `none` with `matched_to: T` (T's levels): training facts matched to set T's samples, for
//!   each level L of T a set at level L with one training fact per T sample at L, in order, whose
//!   prompt ends in the same token as that sample's `last` position (its relation): the same
//!   last-read tokens and counts as T, on familiar facts. Drawn after the other sets, from T's
//!   built samples (`with_matched_sets`).
//! - `hops` (k): held-out deducible facts whose rule chains k relations.
//! - `token_corruption` (p): the `none` facts, each prompt token after BOS replaced with
//!   probability p by a different token (never BOS); the answer stays.
//! - `options` (k): k options (the answer and k - 1 distinct distractor entities, shuffled) listed
//!   after BOS, then the question: `BOS o1..ok head relation tail`. Scored as multiple choice
//!   (`choice_acc`); level 0 lists no options and is the `none` set.
//! - `conflict` (k): a contradicting fact `head relation wrong` stated k times before the question.
//! - `token_replace` (k): the `none` facts, exactly k distinct prompt tokens after BOS (k <= 2)
//!   each replaced by a different token (never BOS); the answer stays.
//! - `deducible` (1), `non_deducible` (1): held-out facts of `data.source.deduction`'s alias
//!   relations and of its random derived relations.
//! - `random` (1): every prompt token after BOS uniformly random.
//!
//! Documents (text, jsonl, parquet, grammar): windows cut from the held-out text at seeded
//! starts (just after a whitespace), `data.context + 1` tokens each:
//! - `none` (0): the windows.
//! - `token_corruption` (p), `random` (1): as above, on every token of the window.
//! - `token_replace` (k): exactly k distinct tokens of the window's `context` read tokens
//!   replaced, as above; the scored continuation stays.
//! - `char_noise` / `word_noise` (p): the window's text noised (see `noise`) before tokenizing.
//! - `length` (x): windows of round(x * context) + 1 tokens from the same starts.
//! - `grammar_shift` (q): the held-out documents regenerated from the grammar with a fraction q
//!   of its rows re-drawn, windows from the same starts.
//! - `options` (k): multiple choice. The question is a window's first `context` tokens, the true
//!   option the `option_len` tokens after it, the distractors other windows' continuations; the
//!   k options are listed before the question (see `text_options`).
//! - `domain` (1): windows of another source, tokenized by the run's tokenizer.
//!
//! Every family at its identity level (0; 1 for `length`) reproduces the `none` set exactly.
//! Each set records two measured distances from the unshifted samples (of the same count):
//! - `distance`: the mean, over samples, of the fraction of a sample's token bigrams that do not
//!   occur in the same-index unshifted sample (0 for identical samples, 1 when they share none);
//! - `novelty`: the fraction of all the set's bigrams that occur in no unshifted sample: how much
//!   of the set is unlike anything in distribution, whatever sample it came from. It grades shifts
//!   whose samples diverge from their unshifted twins at once (`grammar_shift`), and stays low
//!   for `length`, whose extra tokens are ordinary text.
//!
//! The set type and its stored form, and `build`, which draws every set, are here; the sets of
//! each kind of data in `facts.rs` and `documents.rs`, matched sets in `matched.rs`, the token
//! edits the shifts make in `edit.rs`, and the bigram distances in `bigrams.rs`.

use rand::{SeedableRng, seq::SliceRandom};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::config::{Config, ProbeSetConfig, ShiftFamily};
use crate::data::{Dataset, Kind};
use crate::error::InputError;
use crate::seed::derive_seed;

mod bigrams;
mod documents;
mod edit;
mod facts;
mod matched;

pub use bigrams::{distance, novelty};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeSet {
    pub name: String,
    pub family: ShiftFamily,
    pub level: f64,
    /// Tokens the model reads per sample.
    pub len: usize,
    /// Row-major `[samples, len + 1]`.
    pub tokens: Vec<u32>,
    /// Whether the last token is a rule-graph answer (scored as `answer_loss`, `answer_acc`).
    pub has_answer: bool,
    /// For multiple choice: each sample's options, row-major `[samples, k, option_len]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Vec<u32>>,
    /// Tokens per option.
    #[serde(default = "one")]
    pub option_len: usize,
    /// For multiple choice: the index of the correct option of each sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correct: Option<Vec<u32>>,
    /// Bigram distance from the unshifted set (module docs).
    pub distance: f64,
    /// Bigram novelty against the whole unshifted set (module docs).
    pub novelty: f64,
}

impl ProbeSet {
    pub fn samples(&self) -> usize {
        self.tokens.len() / (self.len + 1)
    }

    /// Index of the position measured as `last`.
    pub fn last_index(&self) -> usize {
        self.len - 1
    }

    pub fn sample(&self, i: usize) -> &[u32] {
        &self.tokens[i * (self.len + 1)..(i + 1) * (self.len + 1)]
    }

    /// Options per sample, for multiple choice.
    pub fn option_count(&self) -> usize {
        self.options
            .as_ref()
            .map_or(0, |o| o.len() / (self.samples() * self.option_len))
    }

    fn from_sequences(
        set: &ProbeSetConfig,
        level: f64,
        sequences: Vec<Vec<u32>>,
        has_answer: bool,
    ) -> ProbeSet {
        let len = sequences[0].len() - 1;
        debug_assert!(sequences.iter().all(|s| s.len() == len + 1));
        ProbeSet {
            name: set.name.clone(),
            family: set.family,
            level,
            len,
            tokens: sequences.concat(),
            has_answer,
            options: None,
            option_len: 1,
            correct: None,
            distance: 0.0,
            novelty: 0.0,
        }
    }
}

fn one() -> usize {
    1
}

/// What `probes.json` holds.
#[derive(Debug, Serialize, Deserialize)]
pub struct Stored {
    pub hash: String,
    pub sets: Vec<ProbeSet>,
}

/// A content hash of probe sets (their JSON), recorded in the manifest.
pub fn content_hash(sets: &[ProbeSet]) -> String {
    let json = serde_json::to_string(sets).expect("probe sets serialize");
    format!("{:016x}", derive_seed(0, &json))
}

/// Every probe set of `sets`, in order, levels as given; `seed` is the run's seed.
///
/// Matched sets (`matched_to`) are drawn after the others, from the built (and cut to size)
/// samples of the sets they are matched to, and then put back in their place in `sets`: the
/// output is in `levels_of` order either way.
pub fn build(
    config: &Config,
    sets: &[ProbeSetConfig],
    data: &Dataset,
) -> Result<Vec<ProbeSet>, InputError> {
    let samples_of = |set: &ProbeSetConfig| set.samples.unwrap_or(config.probes.samples);
    // A matched set draws its own facts, as many as its target has: it takes no share here.
    let most = sets
        .iter()
        .filter(|s| s.matched_to.is_none())
        .map(samples_of)
        .max()
        .unwrap_or(1);
    let (mut out, id) = match &data.kind {
        Kind::Facts(kb) => facts::facts_sets(config, sets, kb, data.vocab_size, most)?,
        Kind::Documents(docs) => documents::document_sets(config, sets, docs, data, most)?,
    };
    // Each set keeps its own sample count (a prefix of the shared draw).
    let unmatched = levels_of(config, sets)
        .into_iter()
        .filter(|s| s.matched_to.is_none());
    for (set, cfg) in out.iter_mut().zip(unmatched) {
        let n = samples_of(cfg).min(set.samples());
        set.tokens.truncate(n * (set.len + 1));
        if let (Some(options), Some(correct)) = (&mut set.options, &mut set.correct) {
            let k = options.len() / correct.len();
            options.truncate(n * k);
            correct.truncate(n);
        }
    }
    if sets.iter().all(|s| s.matched_to.is_none()) {
        return Ok(out);
    }
    let Kind::Facts(kb) = &data.kind else {
        let i = sets.iter().position(|s| s.matched_to.is_some()).unwrap();
        return Err(InputError::Other(format!(
            "probes.sets[{i}].matched_to: matched sets are drawn from the rule graph's training \
             facts; this source has none"
        )));
    };
    matched::with_matched_sets(config, sets, out, kb, &id)
}

/// The config of each built set, level by level, in build order.
fn levels_of<'a>(config: &Config, sets: &'a [ProbeSetConfig]) -> Vec<&'a ProbeSetConfig> {
    sets.iter()
        .flat_map(|s| std::iter::repeat_n(s, levels_among(config, sets, s).len()))
        .collect()
}

/// The levels a set of the config's own `probes.sets` expands to (see `levels_among`).
pub fn levels(config: &Config, set: &ProbeSetConfig) -> Vec<f64> {
    levels_among(config, &config.probes.sets, set)
}

/// The levels `set`, one of `sets`, expands to: its family's (see `ShiftFamily::default_levels`),
/// or, for a matched set (`matched_to`), the levels of the set in `sets` it is matched to. Only
/// called on validated sets.
pub fn levels_among(config: &Config, sets: &[ProbeSetConfig], set: &ProbeSetConfig) -> Vec<f64> {
    let target = set
        .matched_to
        .as_deref()
        .and_then(|name| sets.iter().find(|s| s.name == name))
        .unwrap_or(set);
    target
        .family
        .default_levels(config.rulegraph(), target.levels.as_deref())
}

fn rng_for(config: &Config, set: &ProbeSetConfig, level: f64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(derive_seed(
        config.seed,
        &format!("probes/{}/{level}", set.name),
    ))
}

/// `n` items in a seeded order (all of them if there are fewer): a prefix of one shuffle, so a
/// smaller sample is a prefix of a larger one.
fn draw<T: Copy>(items: &[T], n: usize, rng: &mut ChaCha8Rng) -> Vec<T> {
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.shuffle(rng);
    order.into_iter().take(n).map(|i| items[i]).collect()
}

/// Stored probe sets must read back exactly what was written: their hash is recomputed from the
/// parsed sets by every later command, so one bit lost in a float refuses the run (issue 9).
/// A config on `source` with these probe `sets` (YAML list items), for the family tests.
#[cfg(test)]
fn test_config(source: &str, sets: &str) -> Config {
    let yaml = format!(
        "name: r\nseed: 4\ndata:\n  source: {source}\n\
         probes:\n  every: 5\n  samples: 200\n  sets:\n{sets}"
    );
    Config::from_yaml(&yaml, "r.yaml", &[]).unwrap_or_else(|e| panic!("{e}"))
}

#[cfg(test)]
mod round_trip {
    use rand::Rng;

    use super::*;

    /// A finite f64 of any magnitude and mantissa: random bits, plus ratios k/n like the
    /// distances and novelties a probe set records (0.9991666666666665 = 1199/1200).
    fn any_f64(rng: &mut ChaCha8Rng) -> f64 {
        loop {
            let x = if rng.random_bool(0.5) {
                f64::from_bits(rng.random::<u64>())
            } else {
                rng.random_range(0..100_000u64) as f64 / rng.random_range(1..100_000u64) as f64
            };
            if x.is_finite() {
                return x;
            }
        }
    }

    fn set(rng: &mut ChaCha8Rng, i: usize) -> ProbeSet {
        ProbeSet {
            name: format!("set{i}"),
            family: ShiftFamily::TokenCorruption,
            level: any_f64(rng),
            len: 3,
            tokens: (0..8).map(|_| rng.random_range(0..500)).collect(),
            has_answer: false,
            options: None,
            option_len: 1,
            correct: None,
            distance: any_f64(rng),
            novelty: any_f64(rng),
        }
    }

    #[test]
    fn probe_sets_with_random_floats_read_back_bit_for_bit_and_hash_the_same() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        for round in 0..2_000 {
            let sets: Vec<ProbeSet> = (0..4).map(|i| set(&mut rng, i)).collect();
            let hash = content_hash(&sets);
            let text = serde_json::to_string(&Stored {
                hash: hash.clone(),
                sets: sets.clone(),
            })
            .unwrap();
            let back: Stored = serde_json::from_str(&text).unwrap();
            for (a, b) in sets.iter().zip(&back.sets) {
                for (x, y) in [
                    (a.level, b.level),
                    (a.distance, b.distance),
                    (a.novelty, b.novelty),
                ] {
                    assert_eq!(
                        x.to_bits(),
                        y.to_bits(),
                        "round {round}: {x:?} read back as {y:?}"
                    );
                }
            }
            assert_eq!(content_hash(&back.sets), hash, "round {round}");
        }
    }

    /// The two values that broke every quickstart run, as the issue measured them: the text
    /// written must parse to the value that prints as that same text.
    #[test]
    fn the_quickstart_values_that_broke_reloading_read_back_exactly() {
        for text in ["0.9991666666666665", "0.22395833333333334"] {
            let value: f64 = serde_json::from_str(text).unwrap();
            assert_eq!(value, text.parse::<f64>().unwrap());
            assert_eq!(serde_json::to_string(&value).unwrap(), text);
        }
    }
}
