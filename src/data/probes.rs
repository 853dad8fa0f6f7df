//! Probe sets: fixed, seeded prompts drawn once at run start and reused at every evaluation.
//!
//! One `ProbeSet` per configured set and level:
//! - `none` (level 0): training facts, the in-distribution reference.
//! - `token_corruption` (level p): the same facts as `none`, each prompt token after BOS replaced
//!   with probability p by another token drawn uniformly from the vocabulary (never BOS, never
//!   the original token), so the expected fraction of replaced prompt tokens is exactly p. The
//!   answer stays the original tail.
//! - `hops` (level k): held-out deducible facts whose rule chains k relations.
//! - `random` (level 1): prompts of uniformly random tokens after BOS.

use rand::{Rng, SeedableRng, seq::index};
use rand_chacha::ChaCha8Rng;

use crate::config::{Config, ShiftFamily};
use crate::data::rulegraph::{BOS, Fact, KnowledgeBase, PROMPT_LEN};
use crate::error::InputError;
use crate::seed::derive_seed;

#[derive(Debug, Clone, PartialEq)]
pub struct ProbeSet {
    pub name: String,
    pub family: ShiftFamily,
    pub level: f64,
    /// Row-major `[samples, PROMPT_LEN]` prompt tokens.
    pub prompts: Vec<u32>,
    pub answers: Vec<u32>,
}

impl ProbeSet {
    pub fn samples(&self) -> usize {
        self.answers.len()
    }

    /// Index of the position measured as `last` in every prompt.
    pub fn last_index(&self) -> usize {
        PROMPT_LEN - 1
    }
}

/// Every probe set of the config, in config order, levels ascending as given.
pub fn build(config: &Config, kb: &KnowledgeBase) -> Result<Vec<ProbeSet>, InputError> {
    let samples = config.probes.samples;
    let id_facts = draw(&kb.train, samples, derive_seed(config.seed, "probes/id"));
    let mut sets = Vec::new();
    for (i, set) in config.probes.sets.iter().enumerate() {
        let rng_for = |level: f64| {
            ChaCha8Rng::seed_from_u64(derive_seed(
                config.seed,
                &format!("probes/{}/{}", set.name, level),
            ))
        };
        let from_facts = |facts: &[Fact], level: f64| ProbeSet {
            name: set.name.clone(),
            family: set.family,
            level,
            prompts: facts.iter().flat_map(|f| kb.prompt(f)).collect(),
            answers: facts.iter().map(|f| kb.answer(f)).collect(),
        };
        match set.family {
            ShiftFamily::None => sets.push(from_facts(&id_facts, 0.0)),
            ShiftFamily::TokenCorruption => {
                for &p in set.levels.as_deref().unwrap_or(&[]) {
                    let mut probe = from_facts(&id_facts, p);
                    corrupt(&mut probe.prompts, p, kb.vocab_size(), &mut rng_for(p));
                    sets.push(probe);
                }
            }
            ShiftFamily::Random => {
                let mut probe = from_facts(&id_facts, 1.0);
                corrupt(&mut probe.prompts, 1.0, kb.vocab_size(), &mut rng_for(1.0));
                sets.push(probe);
            }
            ShiftFamily::Hops => {
                let rg = config.rulegraph();
                let levels: Vec<f64> = match &set.levels {
                    Some(l) => l.clone(),
                    None => (rg.min_hops..=rg.max_hops).map(|k| k as f64).collect(),
                };
                for k in levels {
                    let pool: Vec<Fact> = kb
                        .held_out
                        .iter()
                        .filter(|f| f.hops as f64 == k)
                        .copied()
                        .collect();
                    if pool.is_empty() {
                        return Err(InputError::Other(format!(
                            "probes.sets[{i}] ({}): no held-out {k}-hop facts exist \
                             (data.source.rules and derived_train_fraction leave none)",
                            set.name
                        )));
                    }
                    let facts = draw(
                        &pool,
                        samples,
                        derive_seed(config.seed, &format!("probes/{}/{k}", set.name)),
                    );
                    sets.push(from_facts(&facts, k));
                }
            }
        }
    }
    Ok(sets)
}

/// `samples` facts without replacement (all of them, in a seeded order, if there are fewer).
fn draw(facts: &[Fact], samples: usize, seed: u64) -> Vec<Fact> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = samples.min(facts.len());
    index::sample(&mut rng, facts.len(), n)
        .into_iter()
        .map(|i| facts[i])
        .collect()
}

/// Replaces each non-BOS token with probability `p` by a different non-BOS token.
fn corrupt(prompts: &mut [u32], p: f64, vocab: usize, rng: &mut ChaCha8Rng) {
    for token in prompts.iter_mut().filter(|t| **t != BOS) {
        if rng.random_bool(p) {
            // Uniform over the vocab minus BOS and the original: draw from vocab - 2, skip both.
            let mut t = rng.random_range(1..vocab as u32 - 1);
            if t >= *token {
                t += 1;
            }
            *token = t;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corruption_replaces_the_expected_fraction_and_never_bos() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let original: Vec<u32> = (0..30_000)
            .map(|i| if i % 3 == 0 { BOS } else { 5 })
            .collect();
        let mut tokens = original.clone();
        corrupt(&mut tokens, 0.25, 50, &mut rng);
        let changed = tokens.iter().zip(&original).filter(|(a, b)| a != b).count();
        let eligible = original.iter().filter(|t| **t != BOS).count();
        let fraction = changed as f64 / eligible as f64;
        assert!((fraction - 0.25).abs() < 0.01, "fraction {fraction}");
        for (t, o) in tokens.iter().zip(&original) {
            assert_eq!(*t == BOS, *o == BOS);
            assert!(*t < 50);
        }
    }
}
