//! The rule graph's probe sets (`data.source.kind: rulegraph`): every family but the matched
//! sets, drawn from the knowledge base's training and held-out facts.

use rand::{Rng, SeedableRng, seq::SliceRandom};
use rand_chacha::ChaCha8Rng;

use super::bigrams::measure_shift;
use super::edit::{corrupt, replace_exactly};
use super::{ProbeSet, draw, levels_among, rng_for};
use crate::config::{Config, ProbeSetConfig, ShiftFamily};
use crate::data::rulegraph::{BOS, Fact, KnowledgeBase, RelationKind};
use crate::error::InputError;
use crate::seed::derive_seed;

/// Every set but the matched ones, and the unshifted samples they were measured against.
pub(super) fn facts_sets(
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

/// The deduction sets: held-out facts of `data.source.deduction`'s relations, by kind.
#[cfg(test)]
mod deduction {
    use std::collections::HashSet;

    use super::*;
    use crate::data::probes::build;
    use crate::data::{Dataset, Kind};

    use crate::data::probes::test_config as config;

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
        let data = Dataset::prepare(&config, None).unwrap();
        let sets = build(&config, &config.probes.sets, &data).unwrap();
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
