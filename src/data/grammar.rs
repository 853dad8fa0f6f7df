//! The `grammar` source: a seeded synthetic language with a continuous shift knob.
//!
//! The language is a first-order Markov chain over `symbols` words. Each word has `branching`
//! successors, drawn at random, followed with Zipf probabilities proportional to 1, 1/2, 1/3, ...
//! A document starts at a uniformly random word and takes `length` words; words are written
//! `w` plus a zero-padded index (`w007`), so every word of a language has the same width.
//!
//! The shift knob: at level q, each word's successor row is re-drawn with probability q, decided
//! by one uniform number per word drawn once from the seed, so the rows re-drawn at q are a subset
//! of those re-drawn at any q' > q. Level 0 is the training language; level 1 re-draws every row:
//! the same words in an unrelated language. A document is regenerated from the same random numbers
//! at every level, so documents drift from their unshifted versions exactly where they pass
//! through a re-drawn row.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::GrammarConfig;
use crate::seed::derive_seed;

#[derive(Debug, Clone)]
pub struct Grammar {
    config: GrammarConfig,
    seed: u64,
    /// `successors[w]`: the words that can follow `w`, most probable first.
    successors: Vec<Vec<u32>>,
    /// Cumulative Zipf probabilities over a row's successors.
    cumulative: Vec<f64>,
}

impl Grammar {
    pub fn new(config: &GrammarConfig, seed: u64) -> Grammar {
        let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(seed, "grammar/rules"));
        let successors = (0..config.symbols)
            .map(|_| random_row(config, &mut rng))
            .collect();
        let weights: Vec<f64> = (1..=config.branching).map(|k| 1.0 / k as f64).collect();
        let total: f64 = weights.iter().sum();
        let cumulative = weights
            .iter()
            .scan(0.0, |acc, w| {
                *acc += w / total;
                Some(*acc)
            })
            .collect();
        Grammar {
            config: config.clone(),
            seed,
            successors,
            cumulative,
        }
    }

    /// The language with a fraction `level` of its rows re-drawn (see the module docs).
    pub fn shifted(&self, level: f64) -> Grammar {
        let mut shifted = self.clone();
        let mut chooser = ChaCha8Rng::seed_from_u64(derive_seed(self.seed, "grammar/shift"));
        let mut redraw = ChaCha8Rng::seed_from_u64(derive_seed(self.seed, "grammar/redraw"));
        for row in shifted.successors.iter_mut() {
            let u: f64 = chooser.random();
            // Drawn for every row, used or not, so a row's new successors do not depend on level.
            let new_row = random_row(&self.config, &mut redraw);
            if u < level {
                *row = new_row;
            }
        }
        shifted
    }

    /// Document `index` as word indices, from its own seed (the same at every shift level).
    pub fn document_symbols(&self, index: usize) -> Vec<u32> {
        let mut rng =
            ChaCha8Rng::seed_from_u64(derive_seed(self.seed, &format!("grammar/doc/{index}")));
        let mut word = rng.random_range(0..self.config.symbols as u32);
        let mut words = Vec::with_capacity(self.config.length);
        words.push(word);
        while words.len() < self.config.length {
            let u: f64 = rng.random();
            let k = self
                .cumulative
                .iter()
                .position(|&c| u < c)
                .unwrap_or(self.config.branching - 1);
            word = self.successors[word as usize][k];
            words.push(word);
        }
        words
    }

    /// Document `index` as text.
    pub fn document(&self, index: usize) -> Vec<u8> {
        let width = (self.config.symbols - 1).to_string().len();
        let words: Vec<String> = self
            .document_symbols(index)
            .iter()
            .map(|w| format!("w{w:0width$}"))
            .collect();
        let mut text = words.join(" ");
        text.push('\n');
        text.into_bytes()
    }

    /// Every document of the language, in index order.
    pub fn documents(&self) -> Vec<Vec<u8>> {
        (0..self.config.documents)
            .map(|i| self.document(i))
            .collect()
    }
}

/// `branching` distinct successors in random order.
fn random_row(config: &GrammarConfig, rng: &mut ChaCha8Rng) -> Vec<u32> {
    rand::seq::index::sample(rng, config.symbols, config.branching)
        .into_iter()
        .map(|i| i as u32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> GrammarConfig {
        GrammarConfig {
            symbols: 50,
            branching: 3,
            documents: 20,
            length: 100,
        }
    }

    #[test]
    fn documents_follow_the_rules_and_share_one_width() {
        let g = Grammar::new(&config(), 1);
        let doc = g.document_symbols(3);
        for pair in doc.windows(2) {
            assert!(g.successors[pair[0] as usize].contains(&pair[1]));
        }
        let lengths: Vec<usize> = g.documents().iter().map(Vec::len).collect();
        assert!(lengths.iter().all(|&l| l == lengths[0]));
    }

    #[test]
    fn level_zero_is_the_language_and_drift_grows_with_level() {
        let g = Grammar::new(&config(), 1);
        assert_eq!(g.shifted(0.0).documents(), g.documents());
        let changed = |level: f64| {
            let s = g.shifted(level);
            let (mut diff, mut total) = (0, 0);
            for i in 0..20 {
                let (a, b) = (g.document_symbols(i), s.document_symbols(i));
                diff += a.iter().zip(&b).filter(|(x, y)| x != y).count();
                total += a.len();
            }
            diff as f64 / total as f64
        };
        let drift: Vec<f64> = [0.0, 0.1, 0.5, 1.0].map(changed).to_vec();
        assert_eq!(drift[0], 0.0);
        assert!(drift.windows(2).all(|w| w[0] < w[1]), "{drift:?}");
    }

    #[test]
    fn seeds_give_different_languages() {
        assert_ne!(
            Grammar::new(&config(), 1).documents(),
            Grammar::new(&config(), 2).documents()
        );
    }
}
