//! The token edits the shift families make: random corruption, and exactly k replacements,
//! uniform or drawn from a pool of training tokens.

use rand::{Rng, seq::SliceRandom};
use rand_chacha::ChaCha8Rng;

use crate::data::rulegraph::BOS;

/// Replaces each token with probability `p` by a different token, never BOS.
pub(super) fn corrupt(tokens: &mut [u32], p: f64, vocab: usize, rng: &mut ChaCha8Rng) {
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
pub(super) fn replace_exactly(
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
pub(super) fn replace_from(
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

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

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

/// `token_replace` and `unigram_replace`: exactly k tokens away in every sample.
#[cfg(test)]
mod replace {
    use super::*;
    use crate::config::{Config, ShiftFamily};
    use crate::data::probes::{ProbeSet, build};
    use crate::data::{Dataset, Kind};

    use crate::data::probes::test_config as config;

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
}
