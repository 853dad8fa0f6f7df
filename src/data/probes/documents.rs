//! The documents' probe sets (text, jsonl, parquet, grammar): seeded windows of the held-out
//! text, and every family but the matched sets on them.

use rand::{Rng, SeedableRng, seq::SliceRandom};
use rand_chacha::ChaCha8Rng;

use super::bigrams::measure_shift;
use super::edit::{corrupt, replace_exactly, replace_from};
use super::{ProbeSet, levels_among, rng_for};
use crate::config::{Config, ProbeSetConfig, ShiftFamily};
use crate::data::rulegraph::BOS;
use crate::data::tokenizer::Tokenizer;
use crate::data::{Dataset, Documents, noise, source};
use crate::error::InputError;
use crate::seed::derive_seed;

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
pub(super) fn document_sets(
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
