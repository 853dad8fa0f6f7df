//! Tokenizers: text <-> token ids. Token 0 is always BOS, which starts every document.
//!
//! - `byte`: 256 byte tokens after BOS; accepts any input, valid UTF-8 or not.
//! - `char`: the characters of the training documents (sorted), after BOS and UNK.
//! - `word`: the whitespace-separated words of the training documents, most frequent first
//!   (ties alphabetical), after BOS and UNK. The rule graph's facts use a fixed word vocabulary.
//! - `bpe`: byte-level BPE trained on the training documents with the `tokenizers` crate; its
//!   vocabulary starts with BOS and UNK.
//!
//! A run's tokenizer is built once, saved as `tokenizer.json` in the run directory, and reloaded
//! (never retrained) by every later command on that run. `bpe` saves the `tokenizers` crate's own
//! format, so Python's `tokenizers.Tokenizer.from_file` reads it too.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer as HfTokenizer, TokenizerBuilder};

use crate::config::TokenizerConfig;
use crate::error::InputError;

pub const BOS: u32 = 0;
const BOS_TEXT: &str = "<bos>";
const UNK_TEXT: &str = "<unk>";

/// Our own tokenizers' saved form (`bpe` is saved in the `tokenizers` crate's format).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "densitrace_tokenizer", rename_all = "snake_case")]
enum Saved {
    Byte,
    Char { chars: Vec<char> },
    Word { words: Vec<String>, unk: u32 },
}

#[derive(Clone)]
pub enum Tokenizer {
    Byte,
    Char {
        chars: Vec<char>,
        index: HashMap<char, u32>,
    },
    Word {
        words: Vec<String>,
        index: HashMap<String, u32>,
        unk: u32,
    },
    Bpe(Box<HfTokenizer>),
}

/// `char` and `word` vocabularies start after BOS (0) and UNK (1).
const FIRST_LEARNED: u32 = 2;

impl Tokenizer {
    /// Builds the configured tokenizer from the training documents.
    pub fn train(config: TokenizerConfig, documents: &[String]) -> Result<Tokenizer, InputError> {
        Ok(match config {
            TokenizerConfig::Byte => Tokenizer::Byte,
            TokenizerConfig::Char => {
                let set: BTreeSet<char> = documents.iter().flat_map(|d| d.chars()).collect();
                Tokenizer::char(set.into_iter().collect())
            }
            TokenizerConfig::Word => {
                let mut counts: HashMap<&str, usize> = HashMap::new();
                for word in documents.iter().flat_map(|d| d.split_whitespace()) {
                    *counts.entry(word).or_default() += 1;
                }
                let mut ranked: Vec<(&str, usize)> = counts.into_iter().collect();
                ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
                let mut words = vec![BOS_TEXT.to_string(), UNK_TEXT.to_string()];
                words.extend(ranked.into_iter().map(|(w, _)| w.to_string()));
                Tokenizer::word(words, 1)
            }
            TokenizerConfig::Bpe { vocab_size, split } => {
                Tokenizer::Bpe(Box::new(train_bpe(vocab_size, split, documents)?))
            }
        })
    }

    fn char(chars: Vec<char>) -> Tokenizer {
        let index = chars
            .iter()
            .enumerate()
            .map(|(i, &c)| (c, FIRST_LEARNED + i as u32))
            .collect();
        Tokenizer::Char { chars, index }
    }

    /// A word tokenizer over a fixed vocabulary (`words[0]` is BOS, `words[unk]` the unknown).
    pub fn word(words: Vec<String>, unk: u32) -> Tokenizer {
        let index = words
            .iter()
            .enumerate()
            .map(|(i, w)| (w.clone(), i as u32))
            .collect();
        Tokenizer::Word { words, index, unk }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Tokenizer::Byte => "byte",
            Tokenizer::Char { .. } => "char",
            Tokenizer::Word { .. } => "word",
            Tokenizer::Bpe(_) => "bpe",
        }
    }

    pub fn vocab_size(&self) -> usize {
        match self {
            Tokenizer::Byte => 257,
            Tokenizer::Char { chars, .. } => FIRST_LEARNED as usize + chars.len(),
            Tokenizer::Word { words, .. } => words.len(),
            Tokenizer::Bpe(t) => t.get_vocab_size(true),
        }
    }

    /// Whether the tokenizer reads text (char, word, bpe) rather than bytes: those need UTF-8.
    pub fn needs_utf8(&self) -> bool {
        !matches!(self, Tokenizer::Byte)
    }

    /// The tokens of `text`, without BOS.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        self.encode_bytes(text.as_bytes())
    }

    /// As `encode`; for a text tokenizer the bytes must be UTF-8 (`data::source` checks that).
    pub fn encode_bytes(&self, bytes: &[u8]) -> Vec<u32> {
        match self {
            Tokenizer::Byte => bytes.iter().map(|&b| 1 + b as u32).collect(),
            _ => {
                let text = String::from_utf8_lossy(bytes);
                match self {
                    Tokenizer::Char { index, .. } => text
                        .chars()
                        .map(|c| index.get(&c).copied().unwrap_or(1))
                        .collect(),
                    Tokenizer::Word { index, unk, .. } => text
                        .split_whitespace()
                        .map(|w| index.get(w).copied().unwrap_or(*unk))
                        .collect(),
                    Tokenizer::Bpe(t) => t
                        .encode(text.as_ref(), false)
                        .expect("byte-level BPE encodes any text")
                        .get_ids()
                        .to_vec(),
                    Tokenizer::Byte => unreachable!(),
                }
            }
        }
    }

    /// The text of `tokens` (BOS and UNK as `<bos>` and `<unk>`; bytes that are not UTF-8 as U+FFFD).
    pub fn decode(&self, tokens: &[u32]) -> String {
        match self {
            Tokenizer::Byte => {
                let bytes: Vec<u8> = tokens
                    .iter()
                    .filter(|&&t| t != BOS)
                    .map(|&t| (t - 1) as u8)
                    .collect();
                String::from_utf8_lossy(&bytes).into_owned()
            }
            Tokenizer::Char { chars, .. } => tokens
                .iter()
                .map(|&t| match t {
                    BOS => BOS_TEXT.to_string(),
                    1 => UNK_TEXT.to_string(),
                    t => chars[(t - FIRST_LEARNED) as usize].to_string(),
                })
                .collect(),
            Tokenizer::Word { words, .. } => tokens
                .iter()
                .map(|&t| words[t as usize].as_str())
                .collect::<Vec<_>>()
                .join(" "),
            Tokenizer::Bpe(t) => t.decode(tokens, false).unwrap_or_default(),
        }
    }

    /// Writes `tokenizer.json` content.
    pub fn to_json(&self) -> String {
        let saved = match self {
            Tokenizer::Byte => Saved::Byte,
            Tokenizer::Char { chars, .. } => Saved::Char {
                chars: chars.clone(),
            },
            Tokenizer::Word { words, unk, .. } => Saved::Word {
                words: words.clone(),
                unk: *unk,
            },
            Tokenizer::Bpe(t) => return t.to_string(true).expect("a BPE tokenizer serializes"),
        };
        serde_json::to_string_pretty(&saved).expect("a tokenizer serializes")
    }

    /// Reads a run's `tokenizer.json`.
    pub fn load(path: &Path) -> Result<Tokenizer, InputError> {
        let bad = |message: String| InputError::File {
            file: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read: {e}")))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
        if value.get("densitrace_tokenizer").is_some() {
            let saved: Saved =
                serde_json::from_value(value).map_err(|e| bad(format!("not a tokenizer: {e}")))?;
            return Ok(match saved {
                Saved::Byte => Tokenizer::Byte,
                Saved::Char { chars } => Tokenizer::char(chars),
                Saved::Word { words, unk } => Tokenizer::word(words, unk),
            });
        }
        text.parse::<HfTokenizer>()
            .map(|t| Tokenizer::Bpe(Box::new(t)))
            .map_err(|e| bad(format!("not a tokenizers-crate tokenizer: {e}")))
    }
}

/// Byte-level BPE with BOS (id 0) and UNK (id 1) as special tokens, trained on `documents`;
/// `split`: the byte-level pre-tokenizer's GPT-2 regex splits words, numbers, punctuation and
/// runs of spaces apart first, so merges stay within them.
fn train_bpe(
    vocab_size: usize,
    split: bool,
    documents: &[String],
) -> Result<HfTokenizer, InputError> {
    let mut trainer = BpeTrainerBuilder::new()
        .show_progress(false)
        .vocab_size(vocab_size)
        .min_frequency(0)
        .special_tokens(vec![
            AddedToken::from(BOS_TEXT, true),
            AddedToken::from(UNK_TEXT, true),
        ])
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    let mut tokenizer = TokenizerBuilder::new()
        .with_model(BPE::default())
        .with_normalizer(None::<tokenizers::NormalizerWrapper>)
        .with_pre_tokenizer(Some(ByteLevel::new(false, true, split)))
        .with_post_processor(None::<tokenizers::PostProcessorWrapper>)
        .with_decoder(Some(ByteLevel::default()))
        .build()
        .map_err(|e| InputError::Other(format!("data.tokenizer: cannot build BPE: {e}")))?;
    tokenizer
        .train(&mut trainer, documents.iter())
        .map_err(|e| InputError::Other(format!("data.tokenizer: BPE training failed: {e}")))?;
    let tokenizer: HfTokenizer = tokenizer.into();
    debug_assert_eq!(tokenizer.token_to_id(BOS_TEXT), Some(BOS));
    Ok(tokenizer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs() -> Vec<String> {
        vec![
            "the cat sat on the mat\nthe dog sat too".to_string(),
            "naïve café: 3 € — ok".to_string(),
        ]
    }

    fn round_trip(config: TokenizerConfig) {
        let docs = docs();
        let t = Tokenizer::train(config, &docs).unwrap();
        let reloaded = {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("tokenizer.json");
            std::fs::write(&path, t.to_json()).unwrap();
            Tokenizer::load(&path).unwrap()
        };
        for doc in &docs {
            let ids = t.encode(doc);
            assert!(ids.iter().all(|&i| (i as usize) < t.vocab_size()));
            assert!(!ids.contains(&BOS));
            assert_eq!(reloaded.encode(doc), ids, "{config:?} reloaded differs");
            let expected = match config {
                TokenizerConfig::Word => doc.split_whitespace().collect::<Vec<_>>().join(" "),
                _ => doc.clone(),
            };
            assert_eq!(t.decode(&ids), expected, "{config:?}");
        }
    }

    #[test]
    fn every_tokenizer_round_trips_and_reloads_identically() {
        round_trip(TokenizerConfig::Byte);
        round_trip(TokenizerConfig::Char);
        round_trip(TokenizerConfig::Word);
        for split in [true, false] {
            round_trip(TokenizerConfig::Bpe {
                vocab_size: 300,
                split,
            });
        }
    }

    /// With the split, no token crosses a word boundary: a space appears only as a token's first
    /// character (GPT-2's "Ġword"). Without it, repeated phrases merge across spaces.
    #[test]
    fn bpe_merges_stay_within_words_when_split() {
        let docs = vec![
            "the cat sat on the mat. ".repeat(50),
            "a cat and the mat! ".repeat(30),
        ];
        let spans = |split: bool| {
            let t = Tokenizer::train(
                TokenizerConfig::Bpe {
                    vocab_size: 300,
                    split,
                },
                &docs,
            )
            .unwrap();
            let ids = t.encode(&docs[0]);
            ids.iter()
                .map(|&id| t.decode(&[id]))
                .filter(|piece| piece.chars().skip(1).any(char::is_whitespace))
                .count()
        };
        assert_eq!(spans(true), 0);
        assert!(
            spans(false) > 0,
            "without the split some merge spans a space"
        );
    }

    #[test]
    fn bpe_has_bos_first_and_learns_merges() {
        let t = Tokenizer::train(
            TokenizerConfig::Bpe {
                vocab_size: 300,
                split: true,
            },
            &docs(),
        )
        .unwrap();
        let Tokenizer::Bpe(hf) = &t else {
            unreachable!()
        };
        assert_eq!(hf.token_to_id(BOS_TEXT), Some(BOS));
        assert!(t.vocab_size() > 258, "no merges learned");
        assert!(t.encode("the cat").len() < "the cat".len());
    }

    #[test]
    fn unseen_characters_and_words_are_unknown() {
        let t = Tokenizer::train(TokenizerConfig::Char, &docs()).unwrap();
        assert_eq!(t.encode("z"), vec![1]);
        let w = Tokenizer::train(TokenizerConfig::Word, &docs()).unwrap();
        assert_eq!(w.encode("the zebra"), vec![w.encode("the")[0], 1]);
        assert_eq!(Tokenizer::Byte.encode_bytes(&[0xff, 0]), vec![256, 1]);
    }
}
