//! Matched sets (`matched_to`): training facts whose prompts end in the tokens a target set's
//! samples end in, level by level, drawn after the other sets and put back in their places.

use rand::seq::SliceRandom;

use super::bigrams::measure_shift;
use super::{ProbeSet, levels_among, rng_for};
use crate::config::{Config, ProbeSetConfig};
use crate::data::rulegraph::{BOS, Fact, KnowledgeBase, PROMPT_LEN};
use crate::error::InputError;

/// `unmatched`, the built sets of `sets` but the matched ones (in order, cut to size), with the
/// matched sets drawn and put in their places; `id` is the unshifted samples for the distances.
pub(super) fn with_matched_sets(
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

/// Matched sets (`matched_to`): training facts with a target set's last-read tokens, level by
/// level; and configs without the new fields build what they built before.
#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::config::ShiftFamily;
    use crate::data::probes::{build, content_hash, levels, levels_of};
    use crate::data::{Dataset, Kind};

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
