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
//! A fact is written as the sequence `BOS head relation tail`; the model reads the prompt
//! `BOS head relation` and is trained to predict each next token, the tail being the answer.

use rand::{Rng, SeedableRng, seq::SliceRandom};
use rand_chacha::ChaCha8Rng;

use crate::config::RuleGraphConfig;
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
    /// 1 for a base fact, the chain length for a derived one.
    pub hops: u32,
}

#[derive(Debug, Clone)]
pub struct KnowledgeBase {
    pub entities: usize,
    pub base_relations: usize,
    /// The chain of base relations behind each derived relation.
    pub rules: Vec<Vec<usize>>,
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
        KnowledgeBase {
            entities: e,
            base_relations: r,
            rules,
            train,
            held_out,
        }
    }

    pub fn vocab_size(&self) -> usize {
        1 + self.entities + self.base_relations + self.rules.len()
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
        words.extend((0..self.base_relations + self.rules.len()).map(|r| format!("r{r}")));
        let unk = words.len() as u32;
        words.push("<unk>".into());
        crate::data::tokenizer::Tokenizer::word(words, unk)
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

    #[test]
    fn stream_visits_every_fact_once_per_epoch() {
        let mut s = FactStream::new(10, 4);
        let mut epoch = s.next_batch(10);
        epoch.sort();
        assert_eq!(epoch, (0..10).collect::<Vec<_>>());
    }
}
