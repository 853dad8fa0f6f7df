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

use std::collections::HashSet;

use rand::{Rng, SeedableRng, seq::SliceRandom};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::config::{Config, ProbeSetConfig, ShiftFamily};
use crate::data::rulegraph::{BOS, Fact, KnowledgeBase, PROMPT_LEN, RelationKind};
use crate::data::tokenizer::Tokenizer;
use crate::data::{Dataset, Documents, Kind, noise, source};
use crate::error::InputError;
use crate::seed::derive_seed;

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
        Kind::Facts(kb) => facts_sets(config, sets, kb, data.vocab_size, most)?,
        Kind::Documents(docs) => document_sets(config, sets, docs, data, most)?,
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
    with_matched_sets(config, sets, out, kb, &id)
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

/// Every set but the matched ones, and the unshifted samples they were measured against.
fn facts_sets(
    config: &Config,
    sets: &[ProbeSetConfig],
    kb: &KnowledgeBase,
    vocab: usize,
    samples: usize,
) -> Result<(Vec<ProbeSet>, Vec<Vec<u32>>), InputError> {
    let mut id_rng = ChaCha8Rng::seed_from_u64(derive_seed(config.seed, "probes/id"));
    let id_facts = draw(&kb.train, samples, &mut id_rng);
    let id: Vec<Vec<u32>> = id_facts.iter().map(|f| kb.sequence(f)).collect();
    let mut out = Vec::new();
    for (i, set) in sets.iter().enumerate() {
        if set.matched_to.is_some() {
            continue;
        }
        for level in levels_among(config, sets, set) {
            let mut rng = rng_for(config, set, level);
            let probe = match set.family {
                ShiftFamily::None => ProbeSet::from_sequences(set, level, id.clone(), true),
                ShiftFamily::TokenCorruption | ShiftFamily::Random => {
                    let mut seqs = id.clone();
                    for s in &mut seqs {
                        let n = s.len() - 1;
                        corrupt(&mut s[1..n], level, vocab, &mut rng);
                    }
                    ProbeSet::from_sequences(set, level, seqs, true)
                }
                ShiftFamily::Hops => {
                    let pool: Vec<Fact> = kb
                        .held_out
                        .iter()
                        .filter(|f| {
                            kb.relation_kind(f.relation) == RelationKind::Chain
                                && f.hops as f64 == level
                        })
                        .copied()
                        .collect();
                    if pool.is_empty() {
                        return Err(InputError::Other(format!(
                            "probes.sets[{i}] ({}): no held-out {level}-hop facts exist \
                             (data.source.rules and derived_train_fraction leave none)",
                            set.name
                        )));
                    }
                    let seqs = draw(&pool, samples, &mut rng)
                        .iter()
                        .map(|f| kb.sequence(f))
                        .collect();
                    ProbeSet::from_sequences(set, level, seqs, true)
                }
                ShiftFamily::TokenReplace => {
                    let mut seqs = id.clone();
                    for s in &mut seqs {
                        let n = s.len() - 1;
                        replace_exactly(&mut s[..n], level as usize, vocab, &mut rng).map_err(
                            |e| InputError::Other(format!("probes.sets[{i}].levels: {e}")),
                        )?;
                    }
                    ProbeSet::from_sequences(set, level, seqs, true)
                }
                ShiftFamily::Deducible | ShiftFamily::NonDeducible => {
                    let kind = if set.family == ShiftFamily::Deducible {
                        RelationKind::Deducible
                    } else {
                        RelationKind::NonDeducible
                    };
                    let pool: Vec<Fact> = kb
                        .held_out
                        .iter()
                        .filter(|f| kb.relation_kind(f.relation) == kind)
                        .copied()
                        .collect();
                    if pool.is_empty() {
                        return Err(InputError::Other(format!(
                            "probes.sets[{i}].family: {} has no held-out facts \
                             (data.source.deduction leaves none)",
                            set.family.name()
                        )));
                    }
                    let seqs = draw(&pool, samples, &mut rng)
                        .iter()
                        .map(|f| kb.sequence(f))
                        .collect();
                    ProbeSet::from_sequences(set, level, seqs, true)
                }
                ShiftFamily::Options => {
                    let k = level as usize;
                    let (mut seqs, mut options, mut correct) = (Vec::new(), Vec::new(), Vec::new());
                    for fact in &id_facts {
                        // Level 0 lists nothing: the unshifted question.
                        let mut choices = if k == 0 { vec![] } else { vec![fact.tail] };
                        while choices.len() < k {
                            let e = rng.random_range(0..kb.entities as u32);
                            if !choices.contains(&e) {
                                choices.push(e);
                            }
                        }
                        choices.shuffle(&mut rng);
                        let tokens: Vec<u32> =
                            choices.iter().map(|&e| kb.entity_token(e)).collect();
                        let mut seq = vec![BOS];
                        seq.extend(&tokens);
                        seq.extend(&kb.sequence(fact)[1..]);
                        if let Some(at) = choices.iter().position(|&e| e == fact.tail) {
                            correct.push(at as u32);
                        }
                        options.extend(tokens);
                        seqs.push(seq);
                    }
                    let mut probe = ProbeSet::from_sequences(set, level, seqs, true);
                    if k > 0 {
                        probe.options = Some(options);
                        probe.correct = Some(correct);
                    }
                    probe
                }
                ShiftFamily::Conflict => {
                    let k = level as usize;
                    let seqs = id_facts
                        .iter()
                        .map(|fact| {
                            // One wrong tail per sample, whatever the level.
                            let mut wrong_rng = ChaCha8Rng::seed_from_u64(derive_seed(
                                config.seed,
                                &format!(
                                    "probes/{}/wrong/{}/{}",
                                    set.name, fact.head, fact.relation
                                ),
                            ));
                            let mut wrong = fact.tail;
                            while wrong == fact.tail {
                                wrong = wrong_rng.random_range(0..kb.entities as u32);
                            }
                            let [_, h, r] = kb.prompt(fact);
                            let mut seq = vec![BOS];
                            for _ in 0..k {
                                seq.extend([h, r, kb.entity_token(wrong)]);
                            }
                            seq.extend(&kb.sequence(fact)[1..]);
                            seq
                        })
                        .collect();
                    ProbeSet::from_sequences(set, level, seqs, true)
                }
                ShiftFamily::CharNoise
                | ShiftFamily::WordNoise
                | ShiftFamily::UnigramReplace
                | ShiftFamily::Length
                | ShiftFamily::Domain
                | ShiftFamily::GrammarShift => unreachable!(
                    "validated: {} does not apply to the rule graph",
                    set.family.name()
                ),
            };
            out.push(probe);
        }
    }
    measure_shift(&mut out, &id);
    Ok((out, id))
}

/// `unmatched`, the built sets of `sets` but the matched ones (in order, cut to size), with the
/// matched sets drawn and put in their places; `id` is the unshifted samples for the distances.
fn with_matched_sets(
    config: &Config,
    sets: &[ProbeSetConfig],
    unmatched: Vec<ProbeSet>,
    kb: &KnowledgeBase,
    id: &[Vec<u32>],
) -> Result<Vec<ProbeSet>, InputError> {
    // Where each unmatched set's levels lie in `unmatched`.
    let mut at = std::collections::HashMap::new();
    let mut next = 0;
    for set in sets.iter().filter(|s| s.matched_to.is_none()) {
        let n = levels_among(config, sets, set).len();
        at.insert(set.name.as_str(), next..next + n);
        next += n;
    }
    debug_assert_eq!(next, unmatched.len());
    let mut matched = Vec::new();
    for (i, set) in sets.iter().enumerate() {
        if let Some(target) = &set.matched_to {
            let range = at.get(target.as_str()).cloned().ok_or_else(|| {
                InputError::Other(format!(
                    "probes.sets[{i}].matched_to: {target:?} is not an unmatched probe set"
                ))
            })?;
            let mut drawn = matched_set(config, i, set, &unmatched[range], kb)?;
            measure_shift(&mut drawn, id);
            matched.push(drawn);
        }
    }
    let mut matched = matched.into_iter();
    let mut unmatched = unmatched.into_iter();
    let mut out = Vec::new();
    for set in sets {
        if set.matched_to.is_some() {
            out.extend(matched.next().expect("one per matched set"));
        } else {
            let n = at[set.name.as_str()].len();
            out.extend(unmatched.by_ref().take(n));
        }
    }
    Ok(out)
}

/// Set `i` of the config, `set`, matched to the built levels `targets` of another set: for each
/// target level L, a `none` set at level L with one training fact per target sample, in order,
/// whose prompt ends in the token the target sample has at its `last` position. Per level and
/// per such token, the token's training facts are shuffled by the set's own rng and taken in
/// order, re-used from the start only when all were taken.
fn matched_set(
    config: &Config,
    i: usize,
    set: &ProbeSetConfig,
    targets: &[ProbeSet],
    kb: &KnowledgeBase,
) -> Result<Vec<ProbeSet>, InputError> {
    let mut pools: std::collections::BTreeMap<u32, Vec<Fact>> = Default::default();
    for fact in &kb.train {
        let last = kb.prompt(fact)[PROMPT_LEN - 1];
        pools.entry(last).or_default().push(*fact);
    }
    let target_name = set.matched_to.as_deref().unwrap_or_default();
    targets
        .iter()
        .map(|target| {
            let level = target.level;
            let mut rng = rng_for(config, set, level);
            // Each token's pool in its shuffled order, and the next fact to take.
            let mut drawn: std::collections::HashMap<u32, (Vec<Fact>, usize)> = Default::default();
            let seqs = (0..target.samples())
                .map(|j| {
                    let token = target.sample(j)[target.last_index()];
                    let Some(pool) = pools.get(&token) else {
                        return Err(InputError::Other(format!(
                            "probes.sets[{i}].matched_to: sample {j} of {target_name:?} at level \
                             {level} ends in token {token} ({}), which no training fact's prompt \
                             ends in: a matched set needs a target whose last read token is a \
                             relation",
                            token_word(kb, token)
                        )));
                    };
                    let (order, next) = drawn.entry(token).or_insert_with(|| {
                        let mut order = pool.clone();
                        order.shuffle(&mut rng);
                        (order, 0)
                    });
                    let fact = order[*next % order.len()];
                    *next += 1;
                    Ok(kb.sequence(&fact))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(ProbeSet::from_sequences(set, level, seqs, true))
        })
        .collect()
}

/// A rule-graph token as the tokenizer writes it (`<bos>`, `e12`, `r3`), for messages.
fn token_word(kb: &KnowledgeBase, token: u32) -> String {
    let entities = kb.entities as u32;
    let relations = kb.relations() as u32;
    match token {
        BOS => "<bos>".into(),
        t if t <= entities => format!("entity e{}", t - 1),
        t if t <= entities + relations => format!("relation r{}", t - 1 - entities),
        _ => "<unk>".into(),
    }
}

/// A window start in the held-out text: where its text begins, and its unshifted tokens.
struct Window {
    start: usize,
    tokens: Vec<u32>,
}

/// Text spans are this many bytes per token needed, which is ample for every tokenizer.
const SPAN_BYTES_PER_TOKEN: usize = 16;

/// `count` seeded window starts in `text`, each just after a whitespace, each with at least
/// twice `need` tokens in its span (room for the noise families' deletions).
fn windows(
    text: &[u8],
    tokenizer: &Tokenizer,
    need: usize,
    count: usize,
    seed: u64,
    what: &str,
) -> Result<Vec<Window>, InputError> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let span = need * SPAN_BYTES_PER_TOKEN;
    let mut out = Vec::with_capacity(count);
    let mut attempts = 0;
    while out.len() < count {
        attempts += 1;
        if attempts > 100 * count + 1000 {
            return Err(InputError::Other(format!(
                "{what}: the text ({} bytes) has too few places with {} tokens in a row for \
                 a probe window (twice data.context + 1, or twice the longest `length` level); \
                 use more text or a shorter context",
                text.len(),
                2 * need
            )));
        }
        let at = rng.random_range(0..text.len());
        let Some(ws) = text[at..].iter().position(|b| b.is_ascii_whitespace()) else {
            continue;
        };
        let Some(start) = text[at + ws..]
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .map(|s| at + ws + s)
        else {
            continue;
        };
        let tokens = tokenizer.encode_bytes(span_at(text, start, span));
        if tokens.len() >= 2 * need {
            out.push(Window { start, tokens });
        }
    }
    Ok(out)
}

/// Up to `span` bytes from `start`, cut back to a UTF-8 character boundary.
fn span_at(text: &[u8], start: usize, span: usize) -> &[u8] {
    let mut end = (start + span).min(text.len());
    while end < text.len() && end > start && (text[end] & 0xC0) == 0x80 {
        end -= 1;
    }
    &text[start..end]
}

/// Every set but the matched ones (which need the rule graph), and the unshifted windows.
fn document_sets(
    config: &Config,
    sets: &[ProbeSetConfig],
    docs: &Documents,
    data: &Dataset,
    samples: usize,
) -> Result<(Vec<ProbeSet>, Vec<Vec<u32>>), InputError> {
    let tokenizer = &data.tokenizer;
    let context = config.context();
    let len_at = |level: f64| (level * context as f64).round() as usize;
    let longest = sets
        .iter()
        .filter(|s| s.family == ShiftFamily::Length)
        .flat_map(|s| levels_among(config, sets, s))
        .map(len_at)
        .fold(context, usize::max);
    let base = windows(
        &docs.held_out_text,
        tokenizer,
        longest + 1,
        samples,
        derive_seed(config.seed, "probes/windows"),
        "the held-out documents",
    )?;
    let cut = |tokens: &[u32], len: usize| tokens[..len + 1].to_vec();
    let id: Vec<Vec<u32>> = base.iter().map(|w| cut(&w.tokens, context)).collect();
    let span = (longest + 1) * SPAN_BYTES_PER_TOKEN;
    // word_noise's substitutes: the held-out words, collected once for every level.
    let held_out_words: Vec<String> = if sets.iter().any(|s| s.family == ShiftFamily::WordNoise) {
        let text = String::from_utf8_lossy(&docs.held_out_text);
        let set: std::collections::BTreeSet<&str> = text.split_whitespace().collect();
        set.into_iter().map(str::to_string).collect()
    } else {
        Vec::new()
    };
    // unigram_replace's substitutes: every training token but BOS, so that a uniform draw from
    // them is a draw by training frequency.
    let unigrams: Vec<u32> = if sets.iter().any(|s| s.family == ShiftFamily::UnigramReplace) {
        docs.train_tokens
            .iter()
            .copied()
            .filter(|&t| t != BOS)
            .collect()
    } else {
        Vec::new()
    };
    let mut out = Vec::new();
    for (i, set) in sets.iter().enumerate() {
        if set.matched_to.is_some() {
            continue;
        }
        let name = format!("probes.sets[{i}] ({})", set.name);
        for level in levels_among(config, sets, set) {
            let mut rng = rng_for(config, set, level);
            let noised =
                |noise: &mut dyn FnMut(&str) -> String| -> Result<Vec<Vec<u32>>, InputError> {
                    base.iter()
                        .map(|w| {
                            let text = span_at(&docs.held_out_text, w.start, span);
                            let tokens = tokenizer.encode(&noise(&String::from_utf8_lossy(text)));
                            if tokens.len() < context + 1 {
                                return Err(InputError::Other(format!(
                                    "{name}: a noised window has {} tokens, fewer than {}",
                                    tokens.len(),
                                    context + 1
                                )));
                            }
                            Ok(cut(&tokens, context))
                        })
                        .collect()
                };
            let seqs: Vec<Vec<u32>> = match set.family {
                ShiftFamily::None => id.clone(),
                ShiftFamily::TokenCorruption | ShiftFamily::Random => {
                    let mut seqs = id.clone();
                    for s in &mut seqs {
                        corrupt(s, level, data.vocab_size, &mut rng);
                    }
                    seqs
                }
                ShiftFamily::TokenReplace => {
                    let mut seqs = id.clone();
                    for s in &mut seqs {
                        // The window's read tokens; the scored continuation stays.
                        replace_exactly(
                            &mut s[..context],
                            level as usize,
                            data.vocab_size,
                            &mut rng,
                        )
                        .map_err(|e| InputError::Other(format!("{name}.levels: {e}")))?;
                    }
                    seqs
                }
                ShiftFamily::UnigramReplace => {
                    let mut seqs = id.clone();
                    for s in &mut seqs {
                        replace_from(&mut s[..context], level as usize, &unigrams, &mut rng)
                            .map_err(|e| InputError::Other(format!("{name}.levels: {e}")))?;
                    }
                    seqs
                }
                // Level 0 keeps the window's bytes exactly (no lossy UTF-8 round trip).
                ShiftFamily::CharNoise | ShiftFamily::WordNoise if level == 0.0 => id.clone(),
                ShiftFamily::CharNoise => noised(&mut |t| noise::char_noise(t, level, &mut rng))?,
                ShiftFamily::WordNoise => {
                    noised(&mut |t| noise::word_noise(t, level, &held_out_words, &mut rng))?
                }
                ShiftFamily::Length => base.iter().map(|w| cut(&w.tokens, len_at(level))).collect(),
                ShiftFamily::Options => {
                    let probe = text_options(set, level, &base, context, config, &name)?;
                    out.push(probe);
                    continue;
                }
                ShiftFamily::GrammarShift => {
                    let grammar = docs.grammar.as_ref().expect("validated: a grammar source");
                    let shifted = grammar.shifted(level);
                    let text: Vec<u8> = docs
                        .held_out_ids
                        .iter()
                        .flat_map(|&d| shifted.document(d))
                        .collect();
                    base.iter()
                        .map(|w| {
                            cut(
                                &tokenizer.encode_bytes(span_at(&text, w.start, span)),
                                context,
                            )
                        })
                        .collect()
                }
                ShiftFamily::Domain => {
                    let other = set.source.as_ref().expect("validated: domain has a source");
                    // A domain grammar gets its own seed: with the training grammar's parameters
                    // it is then another language, not the same one.
                    let seed = derive_seed(config.seed, &format!("domain/{}", set.name));
                    let docs = source::read_documents(other, tokenizer.needs_utf8(), seed)
                        .map_err(|e| InputError::Other(format!("{name}.source: {e}")))?;
                    let text = crate::data::join_documents(docs.iter());
                    windows(
                        &text,
                        tokenizer,
                        context + 1,
                        samples,
                        derive_seed(config.seed, &format!("probes/{}/windows", set.name)),
                        &format!("{name}.source"),
                    )?
                    .iter()
                    .map(|w| cut(&w.tokens, context))
                    .collect()
                }
                ShiftFamily::Hops
                | ShiftFamily::Conflict
                | ShiftFamily::Deducible
                | ShiftFamily::NonDeducible => unreachable!(
                    "validated: {} does not apply to documents",
                    set.family.name()
                ),
            };
            out.push(ProbeSet::from_sequences(set, level, seqs, false));
        }
    }
    measure_shift(&mut out, &id);
    Ok((out, id))
}

/// Multiple choice on text: the question is a window's first `context` tokens, the true option
/// the `option_len` tokens that follow it, the k - 1 distractors the continuations of other
/// windows (distinct, and not equal to the true one). The options are listed before the question;
/// the sample's last token is the true option's first, so level 0 is the unshifted set.
fn text_options(
    set: &ProbeSetConfig,
    level: f64,
    base: &[Window],
    context: usize,
    config: &Config,
    name: &str,
) -> Result<ProbeSet, InputError> {
    let (k, m) = (level as usize, config.option_len());
    let continuation = |w: &Window| w.tokens[context..context + m].to_vec();
    let mut rng = rng_for(config, set, level);
    let (mut seqs, mut options, mut correct) = (Vec::new(), Vec::new(), Vec::new());
    for (i, window) in base.iter().enumerate() {
        let truth = continuation(window);
        let mut choices = if k == 0 { vec![] } else { vec![truth.clone()] };
        let mut others: Vec<usize> = (0..base.len()).filter(|&j| j != i).collect();
        others.shuffle(&mut rng);
        for j in others {
            if choices.len() >= k {
                break;
            }
            let candidate = continuation(&base[j]);
            if !choices.contains(&candidate) {
                choices.push(candidate);
            }
        }
        if choices.len() < k {
            return Err(InputError::Other(format!(
                "{name}: only {} distinct continuations for {k} options; draw more samples",
                choices.len()
            )));
        }
        choices.shuffle(&mut rng);
        let mut seq: Vec<u32> = choices.concat();
        seq.extend(&window.tokens[..context + 1]);
        if let Some(at) = choices.iter().position(|c| *c == truth) {
            correct.push(at as u32);
        }
        options.extend(choices.concat());
        seqs.push(seq);
    }
    let mut probe = ProbeSet::from_sequences(set, level, seqs, false);
    if k > 0 {
        probe.options = Some(options);
        probe.option_len = m;
        probe.correct = Some(correct);
    }
    Ok(probe)
}

/// Replaces each token with probability `p` by a different token, never BOS.
fn corrupt(tokens: &mut [u32], p: f64, vocab: usize, rng: &mut ChaCha8Rng) {
    for token in tokens.iter_mut() {
        if rng.random_bool(p) {
            // Uniform over the vocabulary minus BOS and the original.
            let skip_original = *token != BOS;
            let choices = vocab as u32 - 1 - skip_original as u32;
            let mut t = 1 + rng.random_range(0..choices);
            if skip_original && t >= *token {
                t += 1;
            }
            *token = t;
        }
    }
}

/// Replaces exactly `k` distinct positions of `tokens` whose token is not BOS (BOS stays where
/// it is), each by a different token drawn uniformly from the vocabulary minus BOS and itself.
/// Fails (naming the counts) when fewer than `k` positions can be replaced.
fn replace_exactly(
    tokens: &mut [u32],
    k: usize,
    vocab: usize,
    rng: &mut ChaCha8Rng,
) -> Result<(), String> {
    let mut positions: Vec<usize> = (0..tokens.len()).filter(|&i| tokens[i] != BOS).collect();
    if positions.len() < k {
        return Err(format!(
            "token_replace level {k} is more than the {} replaceable tokens a sample reads",
            positions.len()
        ));
    }
    positions.shuffle(rng);
    for &p in &positions[..k] {
        let original = tokens[p];
        let mut t = 1 + rng.random_range(0..vocab as u32 - 2);
        if t >= original {
            t += 1;
        }
        tokens[p] = t;
    }
    Ok(())
}

/// Replaces exactly `k` distinct non-BOS positions of `tokens`, each by a token drawn uniformly
/// from `pool` (so by its frequency there) that differs from the one it replaces.
fn replace_from(
    tokens: &mut [u32],
    k: usize,
    pool: &[u32],
    rng: &mut ChaCha8Rng,
) -> Result<(), String> {
    let mut positions: Vec<usize> = (0..tokens.len()).filter(|&i| tokens[i] != BOS).collect();
    if positions.len() < k {
        return Err(format!(
            "unigram_replace level {k} is more than the {} replaceable tokens a sample reads",
            positions.len()
        ));
    }
    positions.shuffle(rng);
    for &p in &positions[..k] {
        let original = tokens[p];
        // A pool of one distinct token could never differ; bound the redraws and say so.
        let drawn = (0..10_000)
            .map(|_| pool[rng.random_range(0..pool.len())])
            .find(|&t| t != original)
            .ok_or_else(|| {
                "unigram_replace: the training tokens offer no substitute for a token".to_string()
            })?;
        tokens[p] = drawn;
    }
    Ok(())
}

/// Sets each probe set's `distance` and `novelty` against the unshifted samples `id`.
fn measure_shift(sets: &mut [ProbeSet], id: &[Vec<u32>]) {
    let pool: HashSet<(u32, u32)> = id
        .iter()
        .flat_map(|s| s.windows(2).map(|w| (w[0], w[1])))
        .collect();
    for set in sets {
        set.distance = distance(set, id);
        set.novelty = novelty(set, &pool);
    }
}

/// The fraction of all the set's bigrams that occur nowhere in the unshifted set.
pub fn novelty(probe: &ProbeSet, pool: &HashSet<(u32, u32)>) -> f64 {
    let (mut novel, mut total) = (0usize, 0usize);
    for i in 0..probe.samples() {
        for w in probe.sample(i).windows(2) {
            total += 1;
            novel += !pool.contains(&(w[0], w[1])) as usize;
        }
    }
    novel as f64 / total.max(1) as f64
}

/// The mean fraction of a sample's input bigrams absent from the same-index unshifted sample.
pub fn distance(probe: &ProbeSet, id: &[Vec<u32>]) -> f64 {
    let n = probe.samples().min(id.len());
    if n == 0 {
        return f64::NAN;
    }
    let total: f64 = (0..n)
        .map(|i| {
            let reference: HashSet<(u32, u32)> = id[i].windows(2).map(|w| (w[0], w[1])).collect();
            let sample = probe.sample(i);
            let bigrams = sample.len() - 1;
            let missing = sample
                .windows(2)
                .filter(|w| !reference.contains(&(w[0], w[1])))
                .count();
            missing as f64 / bigrams as f64
        })
        .sum();
    total / n as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corruption_replaces_the_expected_fraction_and_never_makes_bos() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let original: Vec<u32> = (0..30_000).map(|i| 1 + (i % 7)).collect();
        let mut tokens = original.clone();
        corrupt(&mut tokens, 0.25, 50, &mut rng);
        let changed = tokens.iter().zip(&original).filter(|(a, b)| a != b).count();
        let fraction = changed as f64 / original.len() as f64;
        assert!((fraction - 0.25).abs() < 0.01, "fraction {fraction}");
        assert!(tokens.iter().all(|&t| t != BOS && t < 50));
    }
}

/// Stored probe sets must read back exactly what was written: their hash is recomputed from the
/// parsed sets by every later command, so one bit lost in a float refuses the run (issue 9).
#[cfg(test)]
mod round_trip {
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

/// Matched sets (`matched_to`): training facts with a target set's last-read tokens, level by
/// level; and configs without the new fields build what they built before.
#[cfg(test)]
mod matched {
    use super::*;

    fn rulegraph(sets: &str) -> Config {
        let yaml = format!(
            "name: m\nseed: 3\ndata:\n  source: {{kind: rulegraph}}\n\
             probes:\n  every: 5\n  samples: 150\n  sets:\n{sets}"
        );
        Config::from_yaml(&yaml, "m.yaml", &[]).unwrap_or_else(|e| panic!("{e}"))
    }

    fn built(config: &Config) -> (KnowledgeBase, Vec<ProbeSet>) {
        let data = Dataset::prepare(config, None).unwrap();
        let sets = build(config, &config.probes.sets, &data).unwrap();
        let Kind::Facts(kb) = data.kind else {
            panic!("a rule graph")
        };
        (kb, sets)
    }

    fn named<'a>(sets: &'a [ProbeSet], name: &str) -> Vec<&'a ProbeSet> {
        sets.iter().filter(|s| s.name == name).collect()
    }

    fn last_tokens(set: &ProbeSet) -> Vec<u32> {
        (0..set.samples())
            .map(|j| set.sample(j)[set.last_index()])
            .collect()
    }

    /// Every sample is a training fact's whole sequence.
    fn assert_training_facts(kb: &KnowledgeBase, set: &ProbeSet) {
        let train: HashSet<Vec<u32>> = kb.train.iter().map(|f| kb.sequence(f)).collect();
        assert_eq!(set.len, PROMPT_LEN);
        assert!(set.has_answer);
        for j in 0..set.samples() {
            assert!(
                train.contains(set.sample(j)),
                "{} at {}: sample {j} {:?} is not a training fact",
                set.name,
                set.level,
                set.sample(j)
            );
        }
    }

    #[test]
    fn a_matched_set_ends_in_its_targets_tokens_sample_for_sample_at_every_level() {
        let config = rulegraph(
            "    - {name: id, family: none}\n\
             \x20   - {name: id_hops, family: none, matched_to: hops}\n\
             \x20   - {name: hops, family: hops, reference: id_hops, samples: 120}\n\
             \x20   - {name: id_conflict, family: none, matched_to: conflict}\n\
             \x20   - {name: conflict, family: conflict, levels: [1, 3]}\n",
        );
        let (kb, sets) = built(&config);
        // Output order is config order, level by level (what `levels_of` says).
        let order: Vec<(&str, f64)> = sets.iter().map(|s| (s.name.as_str(), s.level)).collect();
        let expected: Vec<(&str, f64)> = levels_of(&config, &config.probes.sets)
            .iter()
            .zip(config.probes.sets.iter().flat_map(|s| levels(&config, s)))
            .map(|(s, l)| (s.name.as_str(), l))
            .collect();
        assert_eq!(order, expected);
        assert_eq!(
            levels(&config, &config.probes.sets[1]),
            [2.0, 3.0, 4.0, 5.0]
        );
        assert_eq!(levels(&config, &config.probes.sets[3]), [1.0, 3.0]);
        for (matched, target) in [("id_hops", "hops"), ("id_conflict", "conflict")] {
            let (m, t) = (named(&sets, matched), named(&sets, target));
            assert_eq!(m.len(), t.len(), "{matched}: one set per level of {target}");
            for (m, t) in m.iter().zip(&t) {
                assert_eq!(m.family, ShiftFamily::None);
                assert_eq!(m.level.to_bits(), t.level.to_bits(), "{matched}: the level");
                assert_eq!(
                    m.samples(),
                    t.samples(),
                    "{matched} at {}: the count",
                    m.level
                );
                assert_eq!(
                    last_tokens(m),
                    last_tokens(t),
                    "{matched} at {}: the last tokens",
                    m.level
                );
                assert_training_facts(&kb, m);
                // Derived relations, of this hop count's rules: not the base relations id is
                // mostly made of.
                let base = kb.relation_token(kb.base_relations as u32);
                if target == "hops" {
                    assert!(last_tokens(m).iter().all(|&t| t >= base));
                }
            }
        }
        assert!(named(&sets, "hops").iter().all(|s| s.samples() == 120));
        assert!(named(&sets, "conflict").iter().all(|s| s.samples() == 150));

        // Adding matched sets (and references) changes no other set.
        let plain = rulegraph(
            "    - {name: id, family: none}\n\
             \x20   - {name: hops, family: hops, samples: 120}\n\
             \x20   - {name: conflict, family: conflict, levels: [1, 3]}\n",
        );
        let (_, before) = built(&plain);
        let after: Vec<ProbeSet> = sets
            .iter()
            .filter(|s| !s.name.starts_with("id_"))
            .cloned()
            .collect();
        assert_eq!(after, before);
    }

    #[test]
    fn matched_to_id_is_another_draw_with_the_same_last_tokens() {
        let config = rulegraph(
            "    - {name: id, family: none}\n\
             \x20   - {name: id_again, family: none, matched_to: id, reference: id}\n",
        );
        let (kb, sets) = built(&config);
        assert_eq!(sets.len(), 2);
        let (id, again) = (&sets[0], &sets[1]);
        assert_eq!((again.name.as_str(), again.level), ("id_again", 0.0));
        assert_eq!(again.samples(), id.samples());
        assert_eq!(last_tokens(again), last_tokens(id));
        let mut a = last_tokens(again);
        let mut b = last_tokens(id);
        a.sort();
        b.sort();
        assert_eq!(a, b, "the same multiset of last tokens");
        assert_ne!(again.tokens, id.tokens, "another draw, not a copy");
        let same = (0..id.samples())
            .filter(|&j| id.sample(j) == again.sample(j))
            .count();
        assert!(same < id.samples() / 4, "{same} samples coincide");
        assert_training_facts(&kb, again);
        assert_eq!(config.probes.reference_of("id_again"), Some("id"));
        assert_eq!(config.probes.reference_of("id"), None);
        assert_eq!(config.probes.matched_to_of("id_again"), Some("id"));

        // Seeded: the same config draws the same set.
        let (_, again2) = built(&config);
        assert_eq!(again2, sets);
    }

    /// A pool smaller than the target's count is re-used from the start, never short: the
    /// token's facts in one shuffled order, then the same order again.
    #[test]
    fn an_exhausted_pool_is_cycled() {
        let config = rulegraph(
            "    - {name: id, family: none}\n\
             \x20   - {name: m, family: none, matched_to: id}\n",
        );
        let data = Dataset::prepare(&config, None).unwrap();
        let Kind::Facts(kb) = &data.kind else {
            panic!("a rule graph")
        };
        // 450 samples that all end in relation r0, whose pool is one fact per entity (200).
        let fact = kb.train.iter().find(|f| f.relation == 0).unwrap();
        let target = ProbeSet::from_sequences(
            &config.probes.sets[0],
            0.0,
            vec![kb.sequence(fact); 450],
            true,
        );
        let m = &matched_set(&config, 1, &config.probes.sets[1], &[target], kb).unwrap()[0];
        assert_eq!(m.samples(), 450);
        assert_training_facts(kb, m);
        let pool: HashSet<Vec<u32>> = kb
            .train
            .iter()
            .filter(|f| f.relation == 0)
            .map(|f| kb.sequence(f))
            .collect();
        assert_eq!(pool.len(), 200);
        let first: HashSet<Vec<u32>> = (0..200).map(|j| m.sample(j).to_vec()).collect();
        assert_eq!(first, pool, "the whole pool before any fact repeats");
        for j in 200..450 {
            assert_eq!(m.sample(j), m.sample(j - 200), "cycled in the same order");
        }
    }

    /// A target whose last tokens include entities (random prompts) is bad input, named.
    #[test]
    fn a_target_ending_in_a_token_no_fact_ends_in_is_refused_naming_the_field() {
        let config = rulegraph(
            "    - {name: random, family: random}\n\
             \x20   - {name: m, family: none, matched_to: random}\n",
        );
        let data = Dataset::prepare(&config, None).unwrap();
        let e = build(&config, &config.probes.sets, &data).unwrap_err();
        let message = e.to_string();
        for needle in [
            "probes.sets[1].matched_to",
            "\"random\"",
            "level 1",
            "token",
        ] {
            assert!(message.contains(needle), "{message:?} lacks {needle:?}");
        }
    }

    /// The new fields are optional and never written when absent: old configs and their
    /// config.yaml read and write as before.
    #[test]
    fn sets_without_the_new_fields_serialize_as_before() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/quickstart.yaml");
        let config = Config::load(&path, &[]).unwrap();
        assert!(
            config
                .probes
                .sets
                .iter()
                .all(|s| s.reference.is_none() && s.matched_to.is_none())
        );
        let yaml = config.to_yaml();
        assert!(
            !yaml.contains("reference") && !yaml.contains("matched_to"),
            "{yaml}"
        );
        let json = serde_json::to_string(&config.probes.sets).unwrap();
        assert!(
            !json.contains("reference") && !json.contains("matched_to"),
            "{json}"
        );
    }

    /// The quickstart's probe sets, as drawn before matched sets existed: the content hash its
    /// runs record in their manifests.
    #[test]
    fn the_quickstart_probe_sets_hash_as_before() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/quickstart.yaml");
        let config = Config::load(&path, &[]).unwrap();
        let (_, sets) = built(&config);
        assert_eq!(content_hash(&sets), QUICKSTART_PROBES_HASH);
    }

    /// Computed by the code before `reference` and `matched_to` existed (commit 9175343).
    const QUICKSTART_PROBES_HASH: &str = "ec376ab398b461b8";
}

/// `token_replace` (exactly k tokens away in every sample) and the deduction sets.
#[cfg(test)]
mod replace_and_deduction {
    use super::*;

    fn config(source: &str, sets: &str) -> Config {
        let yaml = format!(
            "name: r\nseed: 4\ndata:\n  source: {source}\n\
             probes:\n  every: 5\n  samples: 200\n  sets:\n{sets}"
        );
        Config::from_yaml(&yaml, "r.yaml", &[]).unwrap_or_else(|e| panic!("{e}"))
    }

    fn built(config: &Config) -> (Dataset, Vec<ProbeSet>) {
        let data = Dataset::prepare(config, None).unwrap();
        let sets = build(config, &config.probes.sets, &data).unwrap();
        (data, sets)
    }

    /// Every sample differs from its unshifted twin in exactly k read positions, never in BOS
    /// or the scored last token, and no replaced token is BOS or the original.
    fn assert_exactly_k_replaced(sets: &[ProbeSet], family: ShiftFamily, reads_bos: bool) {
        let id = sets.iter().find(|s| s.family == ShiftFamily::None).unwrap();
        let replaced: Vec<&ProbeSet> = sets.iter().filter(|s| s.family == family).collect();
        assert!(!replaced.is_empty());
        for set in replaced {
            let k = set.level as usize;
            assert_eq!(set.samples(), id.samples());
            for j in 0..set.samples() {
                let (a, b) = (id.sample(j), set.sample(j));
                let changed: Vec<usize> = (0..a.len()).filter(|&p| a[p] != b[p]).collect();
                assert_eq!(changed.len(), k, "level {k}, sample {j}: {a:?} -> {b:?}");
                assert!(changed.iter().all(|&p| p < set.len), "the answer stays");
                if reads_bos {
                    assert_eq!(b[0], BOS);
                    assert!(!changed.contains(&0));
                }
                assert!(changed.iter().all(|&p| b[p] != BOS));
            }
        }
    }

    #[test]
    fn token_replace_changes_exactly_k_prompt_tokens_of_every_fact() {
        let config = config(
            "{kind: rulegraph}",
            "    - {name: id, family: none}\n\
             \x20   - {name: replace, family: token_replace, levels: [1, 2]}\n",
        );
        let (_, sets) = built(&config);
        assert_exactly_k_replaced(&sets, ShiftFamily::TokenReplace, true);
        // Level 2 replaces the whole prompt after BOS: its bigram distance is 1.
        assert_eq!(sets[2].distance, 1.0);
        assert!(sets[1].distance > 0.4 && sets[1].distance < 1.0);
    }

    #[test]
    fn token_replace_changes_exactly_k_tokens_of_every_window() {
        let config = config(
            "{kind: grammar, symbols: 64, documents: 60, length: 64}\n  context: 8",
            "    - {name: id, family: none}\n\
             \x20   - {name: replace, family: token_replace, levels: [1, 3, 8]}\n",
        );
        let (_, sets) = built(&config);
        assert_exactly_k_replaced(&sets, ShiftFamily::TokenReplace, false);
        let distances: Vec<f64> = sets[1..].iter().map(|s| s.distance).collect();
        assert!(
            distances.windows(2).all(|w| w[0] < w[1]),
            "farther with k: {distances:?}"
        );
    }

    #[test]
    fn unigram_replace_changes_exactly_k_tokens_to_training_tokens_at_their_frequency() {
        // Skewed symbol frequencies, so that a uniform draw would look different from the
        // training distribution.
        let config = config(
            "{kind: grammar, symbols: 64, documents: 60, length: 64}\n  context: 8",
            "    - {name: id, family: none}\n\
             \x20   - {name: familiar, family: unigram_replace, levels: [1, 3, 8]}\n",
        );
        let (data, sets) = built(&config);
        assert_exactly_k_replaced(&sets, ShiftFamily::UnigramReplace, false);
        let Kind::Documents(docs) = &data.kind else {
            panic!("a grammar source gives documents")
        };
        let mut train = vec![0usize; data.vocab_size];
        for &t in docs.train_tokens.iter().filter(|&&t| t != BOS) {
            train[t as usize] += 1;
        }
        // The substitutes of all levels, counted by token.
        let id = &sets[0];
        let mut drawn = vec![0usize; data.vocab_size];
        for set in &sets[1..] {
            for j in 0..set.samples() {
                let (a, b) = (id.sample(j), set.sample(j));
                for p in (0..a.len()).filter(|&p| a[p] != b[p]) {
                    assert!(
                        train[b[p] as usize] > 0,
                        "{} never occurs in training",
                        b[p]
                    );
                    drawn[b[p] as usize] += 1;
                }
            }
        }
        // Total variation distance between substitute and training frequencies: small for
        // 200 x 12 draws (excluding the original shifts it a little), large for a uniform draw.
        let (n_train, n_drawn) = (
            train.iter().sum::<usize>() as f64,
            drawn.iter().sum::<usize>() as f64,
        );
        let tv = |q: &dyn Fn(usize) -> f64| {
            (0..data.vocab_size)
                .map(|t| (train[t] as f64 / n_train - q(t)).abs())
                .sum::<f64>()
                / 2.0
        };
        let used = train.iter().filter(|&&c| c > 0).count() as f64;
        let to_drawn = tv(&|t| drawn[t] as f64 / n_drawn);
        let to_uniform = tv(&|t| if train[t] > 0 { 1.0 / used } else { 0.0 });
        assert!(
            to_drawn < 0.12 && to_drawn < to_uniform / 2.0,
            "substitutes {to_drawn:.3} from the training frequencies, uniform {to_uniform:.3}"
        );
    }

    #[test]
    fn deduction_sets_hold_held_out_facts_of_their_kind_and_can_be_matched() {
        let config = config(
            "{kind: rulegraph, rules: 0, deduction: {aliases: 3, random_derived: 3, \
             shown_fraction: 0.6}}",
            "    - {name: id, family: none}\n\
             \x20   - {name: ded, family: deducible, reference: id_ded}\n\
             \x20   - {name: id_ded, family: none, matched_to: ded}\n\
             \x20   - {name: non, family: non_deducible}\n\
             \x20   - {name: id_non, family: none, matched_to: non}\n",
        );
        let (data, sets) = built(&config);
        let Kind::Facts(kb) = &data.kind else {
            panic!("a rule graph")
        };
        let held: HashSet<Vec<u32>> = kb.held_out.iter().map(|f| kb.sequence(f)).collect();
        let train: HashSet<Vec<u32>> = kb.train.iter().map(|f| kb.sequence(f)).collect();
        let kind_of = |s: &[u32]| kb.relation_kind(s[2] - 1 - kb.entities as u32);
        for (name, kind, pool) in [
            ("ded", RelationKind::Deducible, &held),
            ("non", RelationKind::NonDeducible, &held),
            ("id_ded", RelationKind::Deducible, &train),
            ("id_non", RelationKind::NonDeducible, &train),
        ] {
            let set = sets.iter().find(|s| s.name == name).unwrap();
            assert_eq!(set.level, 1.0, "{name}");
            assert!(set.has_answer);
            // 3 relations x 80 held-out heads: all 200 samples drawn.
            assert_eq!(set.samples(), 200, "{name}");
            for j in 0..set.samples() {
                let s = set.sample(j);
                assert!(pool.contains(s), "{name}: sample {j}");
                assert_eq!(kind_of(s), kind, "{name}: sample {j}");
            }
        }
        let ded = sets.iter().find(|s| s.name == "ded").unwrap();
        let id_ded = sets.iter().find(|s| s.name == "id_ded").unwrap();
        for j in 0..ded.samples() {
            assert_eq!(ded.sample(j)[2], id_ded.sample(j)[2], "same last token");
        }
    }
}
