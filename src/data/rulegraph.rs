//! The synthetic knowledge graph of docs/science.md, after the paper's pretraining setup.
//!
//! - Entities and base relations: every base relation maps every entity to one tail entity, so
//!   each (head, relation) has exactly one answer. All base facts are trained on.
//! - Rules: each derived relation is the composition of a chain of 2 to 5 base relations
//!   (`min_hops..=max_hops`, cycled over the rules so every hop count is present). A derived fact
//!   (h, d, t) holds when following the chain from h lands on t: it is deducible from base facts.
//! - A fraction `derived_train_fraction` of each derived relation's facts is trained on; the rest
//!   are held out and become the `hops` probe sets, leveled by the chain's length.
//!
//! - Deduction (`deduction`, absent by default): after the rules' derived relations, `aliases`
//!   deducible ones, each an alias of a base relation b drawn from the seed ((h, d, t) holds iff
//!   (h, b, t) does), and `random_derived` non-deducible ones, each head's tail drawn at random;
//!   the two kinds interleaved in a seeded order. Each shows round(shown_fraction * entities) of
//!   its heads in training; the other heads' facts are held out (`deducible`, `non_deducible`
//!   probe sets). Drawn from a stream of their own, so the rest of the graph is unchanged.
//!
//! A fact is written as the sequence `BOS head relation tail`; the model reads the prompt
//! `BOS head relation` and is trained to predict each next token, the tail being the answer.

use rand::{Rng, SeedableRng, seq::SliceRandom};
use rand_chacha::ChaCha8Rng;

use crate::config::{DeductionConfig, RuleGraphConfig};
use crate::seed::derive_seed;

pub use crate::data::tokenizer::BOS;
/// `BOS head relation`: the prompt whose last token predicts the answer.
pub const PROMPT_LEN: usize = RuleGraphConfig::PROMPT_LEN;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fact {
    pub head: u32,
    /// Base relations come first, then one derived relation per rule.
    pub relation: u32,
    pub tail: u32,
    /// 1 for a base fact, the chain length for a derived one; 1 for an alias's fact (one step
    /// from its base relation), 0 for a random derived relation's (no chain leads to it).
    pub hops: u32,
}

/// What a deduction relation (`data.source.deduction`) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Derived {
    /// An alias of this base relation: deducible.
    Alias(usize),
    /// Tails drawn at random: not deducible.
    Random,
}

/// What kind of relation a fact's relation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelationKind {
    Base,
    /// A rule chain's derived relation.
    Chain,
    /// A deduction alias.
    Deducible,
    /// A deduction relation with random tails.
    NonDeducible,
}

#[derive(Debug, Clone)]
pub struct KnowledgeBase {
    pub entities: usize,
    pub base_relations: usize,
    /// The chain of base relations behind each derived relation.
    pub rules: Vec<Vec<usize>>,
    /// The deduction relations, after the rules' (relation `base_relations + rules.len() + i`).
    pub deduction: Vec<Derived>,
    pub train: Vec<Fact>,
    pub held_out: Vec<Fact>,
}

impl KnowledgeBase {
    pub fn generate(cfg: &RuleGraphConfig, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(seed, "rulegraph"));
        let (e, r) = (cfg.entities, cfg.relations);
        let tails: Vec<Vec<u32>> = (0..r)
            .map(|_| (0..e).map(|_| rng.random_range(0..e as u32)).collect())
            .collect();
        let mut train: Vec<Fact> = (0..r)
            .flat_map(|rel| {
                let tails = &tails;
                (0..e).map(move |h| Fact {
                    head: h as u32,
                    relation: rel as u32,
                    tail: tails[rel][h],
                    hops: 1,
                })
            })
            .collect();

        let span = cfg.max_hops - cfg.min_hops + 1;
        let rules: Vec<Vec<usize>> = (0..cfg.rules)
            .map(|j| {
                let k = cfg.min_hops + j % span;
                (0..k).map(|_| rng.random_range(0..r)).collect()
            })
            .collect();
        let trained_heads = (cfg.derived_train_fraction * e as f64).round() as usize;
        let mut held_out = Vec::new();
        for (j, chain) in rules.iter().enumerate() {
            let mut heads: Vec<u32> = (0..e as u32).collect();
            heads.shuffle(&mut rng);
            for (i, &h) in heads.iter().enumerate() {
                let tail = chain.iter().fold(h, |x, &rel| tails[rel][x as usize]);
                let fact = Fact {
                    head: h,
                    relation: (r + j) as u32,
                    tail,
                    hops: chain.len() as u32,
                };
                if i < trained_heads {
                    train.push(fact);
                } else {
                    held_out.push(fact);
                }
            }
        }
        let mut kb = KnowledgeBase {
            entities: e,
            base_relations: r,
            rules,
            deduction: Vec::new(),
            train,
            held_out,
        };
        if let Some(d) = &cfg.deduction {
            kb.add_deduction(d, &tails, seed);
        }
        kb
    }

    /// The deduction relations and their facts, from a stream of their own.
    fn add_deduction(&mut self, d: &DeductionConfig, tails: &[Vec<u32>], seed: u64) {
        let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(seed, "rulegraph/deduction"));
        let (e, r) = (self.entities, self.base_relations);
        let mut kinds: Vec<Derived> = (0..d.aliases)
            .map(|_| Derived::Alias(rng.random_range(0..r)))
            .chain(std::iter::repeat_n(Derived::Random, d.random_derived))
            .collect();
        kinds.shuffle(&mut rng);
        let shown = d.shown_heads(e);
        let first = (r + self.rules.len()) as u32;
        for (i, &kind) in kinds.iter().enumerate() {
            let mut heads: Vec<u32> = (0..e as u32).collect();
            heads.shuffle(&mut rng);
            for (j, &h) in heads.iter().enumerate() {
                let (tail, hops) = match kind {
                    Derived::Alias(b) => (tails[b][h as usize], 1),
                    Derived::Random => (rng.random_range(0..e as u32), 0),
                };
                let fact = Fact {
                    head: h,
                    relation: first + i as u32,
                    tail,
                    hops,
                };
                if j < shown {
                    self.train.push(fact);
                } else {
                    self.held_out.push(fact);
                }
            }
        }
        self.deduction = kinds;
    }

    /// Base, rule-chain and deduction relations.
    pub fn relations(&self) -> usize {
        self.base_relations + self.rules.len() + self.deduction.len()
    }

    /// What kind of relation `relation` is.
    pub fn relation_kind(&self, relation: u32) -> RelationKind {
        let r = relation as usize;
        let chains = self.base_relations + self.rules.len();
        if r < self.base_relations {
            RelationKind::Base
        } else if r < chains {
            RelationKind::Chain
        } else {
            match self.deduction[r - chains] {
                Derived::Alias(_) => RelationKind::Deducible,
                Derived::Random => RelationKind::NonDeducible,
            }
        }
    }

    pub fn vocab_size(&self) -> usize {
        1 + self.entities + self.relations()
    }

    pub fn entity_token(&self, entity: u32) -> u32 {
        1 + entity
    }

    pub fn relation_token(&self, relation: u32) -> u32 {
        1 + self.entities as u32 + relation
    }

    /// The prompt `BOS head relation` of a fact.
    pub fn prompt(&self, fact: &Fact) -> [u32; PROMPT_LEN] {
        [
            BOS,
            self.entity_token(fact.head),
            self.relation_token(fact.relation),
        ]
    }

    /// The token the prompt should be continued with.
    pub fn answer(&self, fact: &Fact) -> u32 {
        self.entity_token(fact.tail)
    }

    /// The whole fact, `BOS head relation tail`: the prompt and its answer.
    pub fn sequence(&self, fact: &Fact) -> Vec<u32> {
        let mut s = self.prompt(fact).to_vec();
        s.push(self.answer(fact));
        s
    }

    /// The facts' word vocabulary, in token order: `<bos>`, `e0`.., `r0`.. (base relations, then
    /// derived), and `<unk>` last (never produced by facts; there for text typed by a user).
    pub fn tokenizer(&self) -> crate::data::tokenizer::Tokenizer {
        let mut words = vec!["<bos>".to_string()];
        words.extend((0..self.entities).map(|e| format!("e{e}")));
        words.extend((0..self.relations()).map(|r| format!("r{r}")));
        let unk = words.len() as u32;
        words.push("<unk>".into());
        crate::data::tokenizer::Tokenizer::word(words, unk)
    }
}

/// The frequency prior of the training facts: for each token a training prompt ends in (its
/// relation), the tail token most often seen after it in training (ties: the smallest entity
/// id). Answering with it needs no deduction: a held-out set tests more than familiarity with
/// a relation's tails only where a model beats it (`prior_acc`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Prior {
    answer: std::collections::HashMap<u32, u32>,
}

impl Prior {
    pub fn new(kb: &KnowledgeBase) -> Prior {
        let mut counts: std::collections::HashMap<u32, std::collections::BTreeMap<u32, usize>> =
            Default::default();
        for fact in &kb.train {
            let last = kb.prompt(fact)[PROMPT_LEN - 1];
            *counts
                .entry(last)
                .or_default()
                .entry(kb.answer(fact))
                .or_default() += 1;
        }
        let answer = counts
            .into_iter()
            .map(|(last, tails)| {
                // Entity tokens are in entity order: the first of the most frequent is the
                // smallest id.
                let most = tails.values().copied().max().unwrap_or(0);
                let tail = tails.into_iter().find(|&(_, c)| c == most).unwrap().0;
                (last, tail)
            })
            .collect();
        Prior { answer }
    }

    /// The prior's answer after a prompt whose last read token is `last`; `None` for a token no
    /// training prompt ends in.
    pub fn answer(&self, last: u32) -> Option<u32> {
        self.answer.get(&last).copied()
    }
}

/// Seeded batches of training facts: a fresh shuffle of the training facts every epoch.
pub struct FactStream {
    order: Vec<usize>,
    next: usize,
    rng: ChaCha8Rng,
}

impl FactStream {
    pub fn new(facts: usize, seed: u64) -> Self {
        let mut stream = FactStream {
            order: (0..facts).collect(),
            next: 0,
            rng: ChaCha8Rng::seed_from_u64(derive_seed(seed, "train-order")),
        };
        stream.order.shuffle(&mut stream.rng);
        stream
    }

    /// The indices of the next `batch` facts.
    pub fn next_batch(&mut self, batch: usize) -> Vec<usize> {
        (0..batch)
            .map(|_| {
                if self.next == self.order.len() {
                    self.order.shuffle(&mut self.rng);
                    self.next = 0;
                }
                self.next += 1;
                self.order[self.next - 1]
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kb(seed: u64) -> KnowledgeBase {
        KnowledgeBase::generate(&RuleGraphConfig::default(), seed)
    }

    #[test]
    fn derived_facts_follow_their_rule_chain() {
        let kb = kb(3);
        let base = |rel: usize, h: u32| {
            kb.train
                .iter()
                .find(|f| f.hops == 1 && f.relation == rel as u32 && f.head == h)
                .unwrap()
                .tail
        };
        for fact in kb.held_out.iter().take(50) {
            let chain = &kb.rules[fact.relation as usize - kb.base_relations];
            let tail = chain.iter().fold(fact.head, |x, &rel| base(rel, x));
            assert_eq!(tail, fact.tail);
            assert_eq!(fact.hops as usize, chain.len());
        }
    }

    #[test]
    fn every_hop_count_is_held_out_and_splits_are_disjoint() {
        let kb = kb(1);
        for k in 2..=5 {
            assert!(kb.held_out.iter().any(|f| f.hops == k), "no {k}-hop facts");
        }
        for f in &kb.held_out {
            assert!(!kb.train.contains(f));
        }
        let c = RuleGraphConfig::default();
        assert_eq!(
            kb.train.len(),
            c.entities * c.relations + c.entities * c.rules / 2
        );
    }

    #[test]
    fn same_seed_same_graph_other_seed_other_graph() {
        assert_eq!(kb(7).held_out, kb(7).held_out);
        assert_ne!(kb(7).held_out, kb(8).held_out);
    }

    fn with_deduction(aliases: usize, random_derived: usize) -> RuleGraphConfig {
        RuleGraphConfig {
            deduction: Some(DeductionConfig {
                aliases,
                random_derived,
                shown_fraction: 0.6,
            }),
            ..RuleGraphConfig::default()
        }
    }

    /// The deduction relations come after everything else, from their own stream: the graph
    /// without them is a prefix of the graph with them.
    #[test]
    fn deduction_adds_relations_and_changes_nothing_else() {
        let plain = kb(5);
        let more = KnowledgeBase::generate(&with_deduction(3, 5), 5);
        assert_eq!(more.rules, plain.rules);
        assert_eq!(more.train[..plain.train.len()], plain.train[..]);
        assert_eq!(more.held_out[..plain.held_out.len()], plain.held_out[..]);
        assert_eq!(more.relations(), plain.relations() + 8);
        assert_eq!(more.vocab_size(), plain.vocab_size() + 8);
        assert_eq!(plain.deduction, []);
        let tokenizer = more.tokenizer();
        assert_eq!(tokenizer.vocab_size(), more.vocab_size() + 1, "and <unk>");
    }

    #[test]
    fn aliases_copy_their_base_relation_and_random_relations_do_not() {
        let cfg = with_deduction(4, 4);
        let kb = KnowledgeBase::generate(&cfg, 2);
        let e = cfg.entities;
        let first = (kb.base_relations + kb.rules.len()) as u32;
        assert_eq!(kb.deduction.len(), 8);
        let kinds: Vec<RelationKind> = (first..first + 8).map(|r| kb.relation_kind(r)).collect();
        let deducible = kinds
            .iter()
            .filter(|&&k| k == RelationKind::Deducible)
            .count();
        assert_eq!(deducible, 4);
        assert!(
            kinds
                .iter()
                .all(|&k| k == RelationKind::Deducible || k == RelationKind::NonDeducible)
        );
        // Interleaved by the seed, not all aliases first (for this seed).
        assert_ne!(kinds[..4], [RelationKind::Deducible; 4]);
        assert_eq!(kb.relation_kind(0), RelationKind::Base);
        assert_eq!(kb.relation_kind(first - 1), RelationKind::Chain);
        let base_tail = |rel: usize, h: u32| {
            kb.train
                .iter()
                .find(|f| f.relation == rel as u32 && f.head == h)
                .unwrap()
                .tail
        };
        let shown = (0.6 * e as f64).round() as usize;
        for (i, kind) in kb.deduction.iter().enumerate() {
            let rel = first + i as u32;
            let train: Vec<&Fact> = kb.train.iter().filter(|f| f.relation == rel).collect();
            let held: Vec<&Fact> = kb.held_out.iter().filter(|f| f.relation == rel).collect();
            assert_eq!(
                (train.len(), held.len()),
                (shown, e - shown),
                "relation {rel}"
            );
            let mut heads: Vec<u32> = train.iter().chain(&held).map(|f| f.head).collect();
            heads.sort();
            assert_eq!(heads, (0..e as u32).collect::<Vec<_>>(), "every head once");
            let same = train
                .iter()
                .chain(&held)
                .filter(|f| f.tail == base_tail(0, f.head))
                .count();
            match *kind {
                Derived::Alias(b) => {
                    for f in train.iter().chain(&held) {
                        assert_eq!(f.tail, base_tail(b, f.head));
                        assert_eq!(f.hops, 1);
                    }
                }
                Derived::Random => {
                    // Random tails agree with a base relation about as often as chance.
                    assert!(same < e / 10, "relation {rel}: {same} tails equal r0's");
                    assert!(train.iter().chain(&held).all(|f| f.hops == 0));
                }
            }
        }
    }

    /// The prior against a brute-force count over the training facts, ties to the smallest id.
    #[test]
    fn the_prior_is_the_most_common_training_tail_of_each_last_token() {
        let kb = KnowledgeBase::generate(&with_deduction(2, 2), 4);
        let prior = Prior::new(&kb);
        for rel in 0..kb.relations() as u32 {
            let token = kb.relation_token(rel);
            let mut best: Option<(usize, u32)> = None;
            for tail in 0..kb.entities as u32 {
                let count = kb
                    .train
                    .iter()
                    .filter(|f| f.relation == rel && f.tail == tail)
                    .count();
                if count > 0 && best.is_none_or(|(c, _)| count > c) {
                    best = Some((count, tail));
                }
            }
            let expected = best.map(|(_, t)| kb.entity_token(t));
            assert_eq!(prior.answer(token), expected, "relation {rel}");
        }
        assert_eq!(prior.answer(BOS), None);
        assert_eq!(prior.answer(kb.entity_token(0)), None);
    }

    #[test]
    fn stream_visits_every_fact_once_per_epoch() {
        let mut s = FactStream::new(10, 4);
        let mut epoch = s.next_batch(10);
        epoch.sort();
        assert_eq!(epoch, (0..10).collect::<Vec<_>>());
    }
}
