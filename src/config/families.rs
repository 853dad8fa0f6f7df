//! Shift families: the ways a probe set departs from the training distribution
//! (docs/configuration.md, "Shift families"). A set names one family and one or more levels, each
//! a number saying how far it shifts; the family's identity level reproduces the unshifted
//! (`none`) set.
//!
//! Everything a family's config rules depend on lives here: the sources it applies to
//! (`applies_to`), whether it reads a source of its own (`takes_source`), its levels (`levels`,
//! `check_level`, `default_levels`). Its generator is an arm of `facts_sets` and `document_sets`
//! in `data::probes`.
//!
//! Adding a family: add the variant here, its rules in these methods, and its generator arm in
//! `data::probes`. Every match on the family is exhaustive, so the compiler lists them.

use serde::{Deserialize, Serialize};

use super::{RuleGraphConfig, SourceConfig};

/// How a probe set departs from the training distribution. Each family's level is a number with
/// a documented meaning (docs/configuration.md, "Shift families"); the unshifted level gives
/// the `none` set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShiftFamily {
    /// In-distribution: training facts (rule graph) or held-out windows (other sources). Level 0;
    /// a matched set (`matched_to`, rule graph) takes the levels of the set it is matched to
    /// instead (`data::probes::levels_among`), which `levels` and `default_levels` do not see.
    None,
    /// Rule graph: held-out deducible facts; the level is the number of relations the rule chains.
    Hops,
    /// Each token replaced by a different random token with probability `level`: the share of
    /// prompts that change grows with the level (a dilution), not how far each one moves.
    TokenCorruption,
    /// Exactly `level` (a whole number k) distinct read tokens of every sample replaced, each by
    /// a different random token (never BOS): every prompt k tokens away from its original. Rule
    /// graph: among the prompt's tokens after BOS (k in 1..=2), the answer kept; documents: among
    /// the window's read tokens (k in 1..=data.context).
    TokenReplace,
    /// Text-like sources: as `token_replace`, but each replacement drawn from the training
    /// tokens' own frequencies (never the original, never BOS), so every replaced token is a
    /// familiar one and only the count k grades the shift. With the byte and char tokenizers a
    /// token is a character: every window a fixed edit distance k from its original.
    UnigramReplace,
    /// Rule graph with `data.source.deduction`: held-out facts of the alias relations, deducible
    /// from their base relation's training facts (level 1).
    Deducible,
    /// Rule graph with `data.source.deduction`: held-out facts of the random derived relations,
    /// which nothing in training determines (level 1).
    NonDeducible,
    /// Text: each character substituted, swapped, deleted or preceded by a digit string, with
    /// probability `level`.
    CharNoise,
    /// Text: as `char_noise`, on whitespace-separated words.
    WordNoise,
    /// Text: windows of `level` x the training context length.
    Length,
    /// Multiple choice; the level is the number of options listed before the question (one
    /// correct, the rest distractors; 0 lists none: the unshifted question).
    Options,
    /// Rule graph: the level is how many times a contradicting fact is stated before the question.
    Conflict,
    /// Windows of another source entirely (level 1).
    Domain,
    /// Grammar: a fraction `level` of the grammar's transition rows re-drawn.
    GrammarShift,
    /// Uniformly random tokens (level 1).
    Random,
}

/// What levels a family's sets take.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Levels {
    /// Always this one level; the config may not give levels.
    Fixed(f64),
    /// The rule graph's hop counts: `min_hops..=max_hops` unless given, each a whole count in
    /// that range.
    HopCounts,
    /// The config must give them; `example` is a list shown when it does not.
    Required { example: &'static str },
}

/// What the level checks need to know of the config a set is measured on.
#[derive(Debug, Clone, Copy)]
pub struct LevelContext {
    /// The rule graph's `min_hops` and `max_hops`; `None` for the other sources.
    pub hops: Option<(usize, usize)>,
    /// Tokens per training window (`Config::context`).
    pub context: usize,
    /// `model.seq_len`: the longest input the model takes.
    pub seq_len: usize,
    /// Tokens per option of an `options` set (`Config::option_len`).
    pub option_len: usize,
    /// The most options a set can list: the rule graph's entities, or the set's samples (the
    /// distractors are other samples' continuations).
    pub most: usize,
    /// Tokens of an `options` question.
    pub question: usize,
    /// Tokens a `token_replace` set may replace: the rule graph prompt's after BOS, or a
    /// window's read tokens.
    pub replaceable: usize,
}

impl ShiftFamily {
    /// The family's name in configs, tables and messages.
    pub fn name(self) -> &'static str {
        match self {
            ShiftFamily::None => "none",
            ShiftFamily::Hops => "hops",
            ShiftFamily::TokenCorruption => "token_corruption",
            ShiftFamily::TokenReplace => "token_replace",
            ShiftFamily::UnigramReplace => "unigram_replace",
            ShiftFamily::Deducible => "deducible",
            ShiftFamily::NonDeducible => "non_deducible",
            ShiftFamily::CharNoise => "char_noise",
            ShiftFamily::WordNoise => "word_noise",
            ShiftFamily::Length => "length",
            ShiftFamily::Options => "options",
            ShiftFamily::Conflict => "conflict",
            ShiftFamily::Domain => "domain",
            ShiftFamily::GrammarShift => "grammar_shift",
            ShiftFamily::Random => "random",
        }
    }

    /// The level of the unshifted data: 0, but 1 for `length` (one training context).
    pub fn identity_level(self) -> f64 {
        match self {
            ShiftFamily::Length => 1.0,
            ShiftFamily::None
            | ShiftFamily::Hops
            | ShiftFamily::TokenCorruption
            | ShiftFamily::TokenReplace
            | ShiftFamily::UnigramReplace
            | ShiftFamily::Deducible
            | ShiftFamily::NonDeducible
            | ShiftFamily::CharNoise
            | ShiftFamily::WordNoise
            | ShiftFamily::Options
            | ShiftFamily::Conflict
            | ShiftFamily::Domain
            | ShiftFamily::GrammarShift
            | ShiftFamily::Random => 0.0,
        }
    }

    /// Whether the family can be drawn from data of this `data.source`.
    pub fn applies_to(self, source: &SourceConfig) -> bool {
        // Facts have no text to noise or cut longer; documents have no rules to chain.
        let text_like = !matches!(source, SourceConfig::Rulegraph(_));
        match self {
            ShiftFamily::Hops
            | ShiftFamily::Conflict
            | ShiftFamily::Deducible
            | ShiftFamily::NonDeducible => !text_like,
            ShiftFamily::CharNoise
            | ShiftFamily::WordNoise
            | ShiftFamily::UnigramReplace
            | ShiftFamily::Length
            | ShiftFamily::Domain => text_like,
            ShiftFamily::GrammarShift => matches!(source, SourceConfig::Grammar(_)),
            ShiftFamily::None
            | ShiftFamily::TokenCorruption
            | ShiftFamily::TokenReplace
            | ShiftFamily::Options
            | ShiftFamily::Random => true,
        }
    }

    /// Whether a set of this family names a source of its own (`probes.sets[i].source`).
    pub fn takes_source(self) -> bool {
        match self {
            ShiftFamily::Domain => true,
            ShiftFamily::None
            | ShiftFamily::Hops
            | ShiftFamily::TokenCorruption
            | ShiftFamily::TokenReplace
            | ShiftFamily::UnigramReplace
            | ShiftFamily::Deducible
            | ShiftFamily::NonDeducible
            | ShiftFamily::CharNoise
            | ShiftFamily::WordNoise
            | ShiftFamily::Length
            | ShiftFamily::Options
            | ShiftFamily::Conflict
            | ShiftFamily::GrammarShift
            | ShiftFamily::Random => false,
        }
    }

    /// What levels the family's sets take.
    pub fn levels(self) -> Levels {
        match self {
            ShiftFamily::None => Levels::Fixed(0.0),
            ShiftFamily::Random
            | ShiftFamily::Domain
            | ShiftFamily::Deducible
            | ShiftFamily::NonDeducible => Levels::Fixed(1.0),
            ShiftFamily::TokenReplace | ShiftFamily::UnigramReplace => {
                Levels::Required { example: "[1, 2]" }
            }
            ShiftFamily::Hops => Levels::HopCounts,
            ShiftFamily::Length => Levels::Required {
                example: "[1.5, 2, 4]",
            },
            ShiftFamily::Options => Levels::Required {
                example: "[2, 4, 8]",
            },
            ShiftFamily::Conflict => Levels::Required {
                example: "[1, 2, 3]",
            },
            ShiftFamily::TokenCorruption
            | ShiftFamily::CharNoise
            | ShiftFamily::WordNoise
            | ShiftFamily::GrammarShift => Levels::Required {
                example: "[0.05, 0.1, 0.2]",
            },
        }
    }

    /// Whether `level` is legal for the family on the config `ctx` describes; the error is the
    /// message for the level's field path (`0.3 is not ...`).
    pub fn check_level(self, level: f64, ctx: &LevelContext) -> Result<(), String> {
        let l = level;
        let (ok, what) = match self {
            // A given list is refused as a whole (`Levels::Fixed`), not level by level.
            ShiftFamily::None
            | ShiftFamily::Random
            | ShiftFamily::Domain
            | ShiftFamily::Deducible
            | ShiftFamily::NonDeducible => return Ok(()),
            ShiftFamily::TokenReplace | ShiftFamily::UnigramReplace => {
                let most = ctx.replaceable;
                (
                    l.fract() == 0.0 && l >= 1.0 && l <= most as f64,
                    format!(
                        "a whole number of replaced tokens in 1..={most} (the tokens read after \
                         BOS: the prompt's, or a window's data.context)"
                    ),
                )
            }
            ShiftFamily::Hops => {
                // Without a rule graph the family check has already refused the set.
                let Some((lo, hi)) = ctx.hops else {
                    return Ok(());
                };
                let (lo, hi) = (lo as f64, hi as f64);
                (
                    l.fract() == 0.0 && l >= lo && l <= hi,
                    format!("a hop count in data.source's range {lo}..={hi}"),
                )
            }
            ShiftFamily::Length => {
                let (context, seq_len) = (ctx.context, ctx.seq_len);
                (
                    l > 0.0
                        && (l * context as f64).round() as usize >= 2
                        && (l * context as f64).round() as usize <= seq_len,
                    format!(
                        "a multiple of data.context ({context}) within 2..={seq_len} tokens \
                         (model.seq_len)"
                    ),
                )
            }
            ShiftFamily::Options => {
                let (most, m, question, seq_len) =
                    (ctx.most as f64, ctx.option_len, ctx.question, ctx.seq_len);
                // Tokens read to score an option: the listed options, the question and all but
                // the option's last token.
                (
                    l.fract() == 0.0
                        && l >= 0.0
                        && l <= most
                        && (l as usize + 1) * m + question - 1 <= seq_len,
                    format!(
                        "a whole number of options in 0..={most}, whose {m}-token options, listed \
                         before the {question}-token question, fit model.seq_len ({seq_len})"
                    ),
                )
            }
            ShiftFamily::Conflict => {
                let seq_len = ctx.seq_len;
                (
                    l.fract() == 0.0 && l >= 0.0 && 3 + 3 * l as usize <= seq_len,
                    format!(
                        "a whole number of contradicting facts (3 tokens each) that fits \
                         model.seq_len ({seq_len}) with the question"
                    ),
                )
            }
            ShiftFamily::TokenCorruption
            | ShiftFamily::CharNoise
            | ShiftFamily::WordNoise
            | ShiftFamily::GrammarShift => {
                ((0.0..=1.0).contains(&l), "a fraction in [0, 1]".to_string())
            }
        };
        if ok {
            Ok(())
        } else {
            Err(format!("{l} is not {what}"))
        }
    }

    /// The levels a set of this family expands to: the set's `given` levels where the family
    /// takes them, else its defaults. Only called on a validated config.
    pub fn default_levels(
        self,
        rule_graph: Option<&RuleGraphConfig>,
        given: Option<&[f64]>,
    ) -> Vec<f64> {
        match self.levels() {
            Levels::Fixed(level) => vec![level],
            Levels::HopCounts => match given {
                Some(levels) => levels.to_vec(),
                None => {
                    let rg = rule_graph.expect("validated: hops needs the rule graph");
                    (rg.min_hops..=rg.max_hops).map(|k| k as f64).collect()
                }
            },
            Levels::Required { .. } => given.unwrap_or_default().to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::GrammarConfig;

    #[test]
    fn families_apply_to_their_sources() {
        let rulegraph = SourceConfig::Rulegraph(RuleGraphConfig::default());
        let grammar = SourceConfig::Grammar(GrammarConfig::default());
        let text = SourceConfig::Text {
            path: "docs.txt".into(),
        };
        assert!(ShiftFamily::Hops.applies_to(&rulegraph));
        assert!(!ShiftFamily::Hops.applies_to(&text));
        assert!(!ShiftFamily::WordNoise.applies_to(&rulegraph));
        assert!(ShiftFamily::WordNoise.applies_to(&text));
        assert!(ShiftFamily::WordNoise.applies_to(&grammar));
        assert!(ShiftFamily::GrammarShift.applies_to(&grammar));
        assert!(!ShiftFamily::GrammarShift.applies_to(&text));
        assert!(!ShiftFamily::GrammarShift.applies_to(&rulegraph));
        for source in [&rulegraph, &grammar, &text] {
            assert!(ShiftFamily::None.applies_to(source));
            assert!(ShiftFamily::Random.applies_to(source));
        }
    }

    #[test]
    fn default_levels_follow_the_family() {
        let rg = RuleGraphConfig {
            min_hops: 2,
            max_hops: 4,
            ..RuleGraphConfig::default()
        };
        assert_eq!(
            ShiftFamily::Hops.default_levels(Some(&rg), None),
            vec![2.0, 3.0, 4.0]
        );
        assert_eq!(
            ShiftFamily::Hops.default_levels(Some(&rg), Some(&[3.0][..])),
            vec![3.0]
        );
        assert_eq!(ShiftFamily::None.default_levels(None, None), vec![0.0]);
        assert_eq!(ShiftFamily::Random.default_levels(None, None), vec![1.0]);
        assert_eq!(ShiftFamily::Domain.default_levels(None, None), vec![1.0]);
        assert_eq!(
            ShiftFamily::CharNoise.default_levels(None, Some(&[0.1, 0.2][..])),
            vec![0.1, 0.2]
        );
    }

    #[test]
    fn check_level_names_what_the_level_should_be() {
        let ctx = LevelContext {
            hops: Some((2, 5)),
            context: 3,
            seq_len: 16,
            option_len: 1,
            most: 200,
            question: 3,
            replaceable: 2,
        };
        assert_eq!(ShiftFamily::TokenReplace.check_level(2.0, &ctx), Ok(()));
        for bad in [0.0, 1.5, 3.0] {
            assert_eq!(
                ShiftFamily::TokenReplace.check_level(bad, &ctx),
                Err(format!(
                    "{bad} is not a whole number of replaced tokens in 1..=2 (the tokens read \
                     after BOS: the prompt's, or a window's data.context)"
                ))
            );
        }
        assert_eq!(ShiftFamily::Hops.check_level(3.0, &ctx), Ok(()));
        assert_eq!(
            ShiftFamily::Hops.check_level(6.0, &ctx),
            Err("6 is not a hop count in data.source's range 2..=5".to_string())
        );
        assert_eq!(
            ShiftFamily::TokenCorruption.check_level(1.5, &ctx),
            Err("1.5 is not a fraction in [0, 1]".to_string())
        );
        // 4 contradicting facts and the question fill 15 of 16 tokens; 5 do not fit.
        assert_eq!(ShiftFamily::Conflict.check_level(4.0, &ctx), Ok(()));
        assert!(ShiftFamily::Conflict.check_level(5.0, &ctx).is_err());
    }
}
