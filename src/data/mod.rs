//! Data: a source's documents, split into training and held-out parts, tokenized; the training
//! batches; and the probe sets the model is measured with.
//!
//! Two shapes of data flow through the same model:
//! - the rule graph: one fact per sequence (`BOS head relation` -> `tail`), trained fact by fact;
//! - documents (text, JSONL, Parquet, grammar): a token stream, trained on random windows of
//!   `data.context` tokens.

pub mod grammar;
pub mod noise;
pub mod probes;
pub mod rulegraph;
pub mod source;
pub mod tokenizer;

use rand::{Rng, SeedableRng, seq::SliceRandom};
use rand_chacha::ChaCha8Rng;

use crate::config::{Config, SourceConfig};
use crate::error::InputError;
use crate::seed::derive_seed;
use grammar::Grammar;
use rulegraph::{FactStream, KnowledgeBase};
use tokenizer::{BOS, Tokenizer};

/// A source made ready for training and probing.
pub struct Dataset {
    pub tokenizer: Tokenizer,
    /// Rows of the model's embedding: `model.vocab_size`, or the tokenizer's vocabulary.
    pub vocab_size: usize,
    pub kind: Kind,
}

pub enum Kind {
    Facts(KnowledgeBase),
    Documents(Documents),
}

pub struct Documents {
    /// The training documents' tokens, each after a BOS, concatenated.
    pub train_tokens: Vec<u32>,
    pub train_documents: usize,
    /// Indices (in source order) of the held-out documents.
    pub held_out_ids: Vec<usize>,
    /// The held-out documents, concatenated: where probe windows are cut from.
    pub held_out_text: Vec<u8>,
    /// The generated language, for a grammar source (`grammar_shift` re-draws it).
    pub grammar: Option<Grammar>,
}

impl Dataset {
    /// Reads and splits the source and builds the tokenizer, or uses `tokenizer` (a run's saved
    /// one, never retrained). Every problem is an `InputError`.
    pub fn prepare(config: &Config, tokenizer: Option<Tokenizer>) -> Result<Dataset, InputError> {
        let seed = config.seed;
        let (kind, tokenizer) = match &config.data.source {
            SourceConfig::Rulegraph(rg) => {
                let kb = KnowledgeBase::generate(rg, seed);
                let tokenizer = tokenizer.unwrap_or_else(|| kb.tokenizer());
                (Kind::Facts(kb), tokenizer)
            }
            source => {
                let wanted = config.tokenizer();
                let utf8 = tokenizer.as_ref().map_or(
                    wanted != crate::config::TokenizerConfig::Byte,
                    Tokenizer::needs_utf8,
                );
                let docs = source::read_documents(source, utf8, seed)?;
                let (train_ids, held_out_ids) = split(docs.len(), config.data.held_out, seed)
                    .ok_or_else(|| {
                        InputError::Other(format!(
                            "data.source: {} document(s) cannot be split into training and \
                             held-out parts; the corpus needs more text (documents are blocks of \
                             about {} bytes of whole lines, or records)",
                            docs.len(),
                            source::BLOCK_BYTES
                        ))
                    })?;
                let tokenizer = match tokenizer {
                    Some(t) => t,
                    None => {
                        let train_text: Vec<String> = train_ids
                            .iter()
                            .map(|&i| String::from_utf8_lossy(&docs[i]).into_owned())
                            .collect();
                        Tokenizer::train(wanted, &train_text)?
                    }
                };
                let mut train_tokens = Vec::new();
                for &i in &train_ids {
                    train_tokens.push(BOS);
                    train_tokens.extend(tokenizer.encode_bytes(&docs[i]));
                }
                let context = config.context();
                if train_tokens.len() < context + 1 {
                    return Err(InputError::Other(format!(
                        "data.source: the training part is {} tokens, shorter than one sequence \
                         of data.context + 1 = {} tokens",
                        train_tokens.len(),
                        context + 1
                    )));
                }
                let held_out_text = join_documents(held_out_ids.iter().map(|&i| &docs[i]));
                let grammar = match source {
                    SourceConfig::Grammar(g) => Some(Grammar::new(g, seed)),
                    _ => None,
                };
                let kind = Kind::Documents(Documents {
                    train_tokens,
                    train_documents: train_ids.len(),
                    held_out_ids,
                    held_out_text,
                    grammar,
                });
                (kind, tokenizer)
            }
        };
        let vocab_size = config.model.vocab_size.unwrap_or(tokenizer.vocab_size());
        if tokenizer.vocab_size() > vocab_size {
            return Err(InputError::Other(format!(
                "model.vocab_size: the {} tokenizer's vocabulary has {} tokens, more than the \
                 model's {vocab_size} embedding rows",
                tokenizer.kind(),
                tokenizer.vocab_size()
            )));
        }
        Ok(Dataset {
            tokenizer,
            vocab_size,
            kind,
        })
    }

    /// A fingerprint of the tokenized training data and the held-out text: a run records it, and
    /// `--resume` and `probe` refuse data that no longer matches.
    pub fn fingerprint(&self) -> String {
        let mut bytes = Vec::new();
        match &self.kind {
            Kind::Facts(kb) => {
                for fact in kb.train.iter().chain(&kb.held_out) {
                    for t in kb.sequence(fact) {
                        bytes.extend(t.to_le_bytes());
                    }
                }
            }
            Kind::Documents(d) => {
                for t in &d.train_tokens {
                    bytes.extend(t.to_le_bytes());
                }
                bytes.extend(&d.held_out_text);
            }
        }
        crate::seed::fingerprint(&bytes)
    }

    /// The rule graph's frequency prior over its training facts (`prior_acc`); `None` for
    /// documents.
    pub fn prior(&self) -> Option<rulegraph::Prior> {
        match &self.kind {
            Kind::Facts(kb) => Some(rulegraph::Prior::new(kb)),
            Kind::Documents(_) => None,
        }
    }

    /// A one-line description for the log.
    pub fn describe(&self) -> String {
        match &self.kind {
            Kind::Facts(kb) => format!(
                "rule graph: {} training facts, {} held out, vocabulary {}",
                kb.train.len(),
                kb.held_out.len(),
                self.vocab_size
            ),
            Kind::Documents(d) => format!(
                "{} training documents ({} tokens), {} held out ({} bytes); {} tokenizer, \
                 vocabulary {}",
                d.train_documents,
                d.train_tokens.len(),
                d.held_out_ids.len(),
                d.held_out_text.len(),
                self.tokenizer.kind(),
                self.vocab_size
            ),
        }
    }
}

/// Documents as one text, a newline after each that does not end in one (records from JSONL
/// or Parquet would otherwise run their words together).
pub fn join_documents<'a>(docs: impl Iterator<Item = &'a Vec<u8>>) -> Vec<u8> {
    let mut text = Vec::new();
    for doc in docs {
        text.extend_from_slice(doc);
        if !doc.ends_with(b"\n") {
            text.push(b'\n');
        }
    }
    text
}

/// A seeded split of `n` documents: (training, held-out) indices, each ascending; `None` when
/// either part would be empty.
pub fn split(n: usize, held_out: f64, seed: u64) -> Option<(Vec<usize>, Vec<usize>)> {
    if n < 2 {
        return None;
    }
    let held = ((n as f64 * held_out).round() as usize).clamp(1, n - 1);
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(derive_seed(seed, "split")));
    let (mut held_ids, mut train_ids) = (order[..held].to_vec(), order[held..].to_vec());
    held_ids.sort_unstable();
    train_ids.sort_unstable();
    Some((train_ids, held_ids))
}

/// The training batches, a function of (seed, step) alone, so a resumed run replays them.
pub struct Batches<'a> {
    data: &'a Dataset,
    facts: Option<FactStream>,
    seed: u64,
    batch_size: usize,
    context: usize,
}

impl<'a> Batches<'a> {
    /// Positioned to produce the batch of step `first + 1` next.
    pub fn new(data: &'a Dataset, config: &Config, first: usize) -> Batches<'a> {
        let batch_size = config.train.batch_size;
        let facts = match &data.kind {
            Kind::Facts(kb) => {
                let mut stream = FactStream::new(kb.train.len(), config.seed);
                for _ in 0..first {
                    stream.next_batch(batch_size);
                }
                Some(stream)
            }
            Kind::Documents(_) => None,
        };
        Batches {
            data,
            facts,
            seed: config.seed,
            batch_size,
            context: config.context(),
        }
    }

    /// Inputs and next-token targets of `step`, row-major `[batch_size, tokens]`, and `tokens`.
    pub fn next(&mut self, step: usize) -> (Vec<i64>, Vec<i64>, usize) {
        let mut inputs = Vec::new();
        let mut targets = Vec::new();
        let mut push = |sequence: &[u32]| {
            let n = sequence.len() - 1;
            inputs.extend(sequence[..n].iter().map(|&t| t as i64));
            targets.extend(sequence[1..].iter().map(|&t| t as i64));
        };
        match (&self.data.kind, &mut self.facts) {
            (Kind::Facts(kb), Some(stream)) => {
                for i in stream.next_batch(self.batch_size) {
                    push(&kb.sequence(&kb.train[i]));
                }
            }
            (Kind::Documents(d), _) => {
                let mut rng =
                    ChaCha8Rng::seed_from_u64(derive_seed(self.seed, &format!("batch/{step}")));
                let window = self.context + 1;
                for _ in 0..self.batch_size {
                    let start = rng.random_range(0..=d.train_tokens.len() - window);
                    push(&d.train_tokens[start..start + window]);
                }
            }
            _ => unreachable!("facts come with their stream"),
        }
        let tokens = inputs.len() / self.batch_size;
        (inputs, targets, tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_seeded_disjoint_and_complete() {
        let (a, b) = split(100, 0.1, 1).unwrap();
        assert_eq!(b.len(), 10);
        let mut all: Vec<usize> = a.iter().chain(&b).copied().collect();
        all.sort();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        assert_eq!(split(100, 0.1, 1), Some((a, b.clone())));
        assert_ne!(split(100, 0.1, 2).unwrap().1, b);
        assert!(split(1, 0.1, 1).is_none());
        assert_eq!(split(2, 0.01, 1).unwrap().1.len(), 1);
    }
}
