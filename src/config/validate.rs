//! Config validation: every value-level problem with its field path, found before anything runs.
//! Type errors (a string where a number belongs, an unknown metric name) are caught earlier, when
//! the YAML is read into the typed structs.

use super::families::{LevelContext, Levels};
use super::*;

impl Config {
    /// Every value-level problem, each with its field path. Empty means valid.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut issues = Vec::new();
        let mut check = |ok: bool, path: &str, message: String| {
            if !ok {
                issues.push((path.to_string(), message));
            }
        };
        check(
            is_folder_name(&self.name),
            "name",
            format!(
                "{:?} must be non-empty and use only letters, digits, '-', '_' and '.'",
                self.name
            ),
        );

        validate_source(&self.data.source, "data.source", &mut check);
        let d = &self.data;
        check(
            d.held_out > 0.0 && d.held_out < 1.0,
            "data.held_out",
            "must be within (0, 1)".into(),
        );
        if let Some(context) = d.context {
            check(
                context >= 2 && context <= self.model.seq_len,
                "data.context",
                format!("must be within 2..={} (model.seq_len)", self.model.seq_len),
            );
        }
        let tokenizer = self.tokenizer();
        let rulegraph = self.rulegraph().is_some();
        check(
            !rulegraph || d.context.is_none(),
            "data.context",
            "the rule graph trains on its 3-token facts: remove data.context".into(),
        );
        check(
            !rulegraph || tokenizer == TokenizerConfig::Word,
            "data.tokenizer",
            "the rule graph's facts are words: only kind: word applies".into(),
        );
        if let TokenizerConfig::Bpe { vocab_size, .. } = tokenizer {
            check(
                vocab_size >= 258,
                "data.tokenizer.vocab_size",
                "must be at least 258 (256 byte symbols, BOS and unknown)".into(),
            );
        }
        if let Some(v) = self.model.vocab_size {
            check(v >= 2, "model.vocab_size", "must be at least 2".into());
            if let TokenizerConfig::Bpe { vocab_size, .. } = tokenizer {
                check(
                    vocab_size <= v,
                    "data.tokenizer.vocab_size",
                    format!("{vocab_size} is larger than model.vocab_size ({v})"),
                );
            }
        }

        let m = &self.model;
        check(m.layers >= 1, "model.layers", "must be at least 1".into());
        check(m.d_model >= 1, "model.d_model", "must be at least 1".into());
        check(m.heads >= 1, "model.heads", "must be at least 1".into());
        check(
            m.heads >= 1 && m.d_model.is_multiple_of(m.heads),
            "model.heads",
            format!("{} heads do not divide d_model {}", m.heads, m.d_model),
        );
        check(m.d_ff >= 1, "model.d_ff", "must be at least 1".into());
        check(
            m.seq_len >= self.context(),
            "model.seq_len",
            format!("must be at least {} (the training context)", self.context()),
        );
        check(
            (0.0..1.0).contains(&m.dropout),
            "model.dropout",
            "must be within [0, 1)".into(),
        );

        let t = &self.train;
        check(t.steps >= 1, "train.steps", "must be at least 1".into());
        check(
            t.batch_size >= 1,
            "train.batch_size",
            "must be at least 1".into(),
        );
        check(
            t.shards >= 1 && t.shards <= t.batch_size,
            "train.shards",
            format!("must be within [1, train.batch_size = {}]", t.batch_size),
        );
        check(
            t.lr > 0.0 && t.lr.is_finite(),
            "train.lr",
            "must be positive".into(),
        );
        check(
            t.min_lr >= 0.0 && t.min_lr <= t.lr,
            "train.min_lr",
            "must be within [0, lr]".into(),
        );
        check(
            t.weight_decay >= 0.0,
            "train.weight_decay",
            "must not be negative".into(),
        );
        check(
            (0.0..1.0).contains(&t.beta1),
            "train.beta1",
            "must be within [0, 1)".into(),
        );
        check(
            (0.0..1.0).contains(&t.beta2),
            "train.beta2",
            "must be within [0, 1)".into(),
        );
        check(
            t.grad_clip >= 0.0,
            "train.grad_clip",
            "must not be negative".into(),
        );
        check(
            t.log_every >= 1,
            "train.log_every",
            "must be at least 1".into(),
        );

        let c = &self.checkpoint;
        check(
            c.keep_last >= 1,
            "checkpoint.keep_last",
            "must be at least 1".into(),
        );
        check(
            !c.log_spaced || c.every >= 1,
            "checkpoint.log_spaced",
            "needs checkpoint.every >= 1".into(),
        );

        let pr = &self.probes;
        check(pr.every >= 1, "probes.every", "must be at least 1".into());
        check(
            pr.samples >= 1,
            "probes.samples",
            "must be at least 1".into(),
        );
        check(
            pr.batch_size >= 1,
            "probes.batch_size",
            "must be at least 1".into(),
        );
        check(
            !pr.sites.is_empty(),
            "probes.sites",
            "must name at least one site".into(),
        );
        check(
            !pr.positions.is_empty(),
            "probes.positions",
            "must name at least one position".into(),
        );
        check(
            !pr.metrics.is_empty(),
            "probes.metrics",
            "must name at least one metric".into(),
        );
        for (i, q) in pr.quantiles.iter().enumerate() {
            check(
                (0.0..=1.0).contains(q),
                &format!("probes.quantiles[{i}]"),
                format!("{q} is not within [0, 1]"),
            );
        }
        issues.extend(self.validate_sets(&pr.sets, "probes.sets"));
        issues
    }

    /// Problems with probe sets measured on this config's model and data: the config's own, or a
    /// `densitrace probe` file's (`prefix` names where they are).
    pub fn validate_sets(&self, sets: &[ProbeSetConfig], prefix: &str) -> Vec<(String, String)> {
        let mut issues = Vec::new();
        let mut check = |ok: bool, path: &str, message: String| {
            if !ok {
                issues.push((path.to_string(), message));
            }
        };
        check(
            !sets.is_empty(),
            prefix,
            "must hold at least one probe set".into(),
        );
        let source = self.data.source.kind();
        let rg = self.rulegraph();
        let text_like = rg.is_none();
        let context = self.context();
        for (i, set) in sets.iter().enumerate() {
            let path = format!("{prefix}[{i}]");
            check(
                !set.name.is_empty()
                    && set
                        .name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c)),
                &format!("{path}.name"),
                format!(
                    "{:?} must be non-empty and use only letters, digits, '-' and '_'",
                    set.name
                ),
            );
            if sets[..i].iter().any(|other| other.name == set.name) {
                check(
                    false,
                    &format!("{path}.name"),
                    format!("{:?} is used twice", set.name),
                );
            }
            if let Some(n) = set.samples {
                check(
                    n >= 1,
                    &format!("{path}.samples"),
                    "must be at least 1".into(),
                );
            }
            let family = set.family;
            let name = family.name();
            check(
                family.applies_to(&self.data.source),
                &format!("{path}.family"),
                format!("family {name} does not apply to data.source kind {source}"),
            );
            if let (Some(rg), ShiftFamily::Deducible | ShiftFamily::NonDeducible) = (rg, family) {
                let (count, field) = match (&rg.deduction, family) {
                    (Some(d), ShiftFamily::Deducible) => (d.aliases, "deduction.aliases"),
                    (Some(d), _) => (d.random_derived, "deduction.random_derived"),
                    (None, _) => (0, "deduction"),
                };
                check(
                    count >= 1,
                    &format!("{path}.family"),
                    format!(
                        "family {name} draws held-out facts of data.source.{field}, and the \
                         config has none: set it (e.g. deduction: {{aliases: 8, \
                         random_derived: 8, shown_fraction: 0.6}})"
                    ),
                );
            }
            if family.takes_source() {
                match &set.source {
                    None => check(
                        false,
                        &format!("{path}.source"),
                        "family domain needs a source, e.g. {kind: text, path: other/*.txt}".into(),
                    ),
                    Some(other) => {
                        check(
                            other.kind() != "rulegraph",
                            &format!("{path}.source.kind"),
                            "a domain source must be text, jsonl, parquet or grammar".into(),
                        );
                        validate_source(other, &format!("{path}.source"), &mut check);
                    }
                }
            } else {
                check(
                    set.source.is_none(),
                    &format!("{path}.source"),
                    format!("only family domain takes a source, not {name}"),
                );
            }
            if let Some(reference) = &set.reference {
                check_names_another(sets, i, reference, &format!("{path}.reference"), &mut check);
            }
            let lpath = format!("{path}.levels");
            if let Some(target) = &set.matched_to {
                let mpath = format!("{path}.matched_to");
                check(
                    family == ShiftFamily::None,
                    &mpath,
                    format!("only a set of family none can be matched, not {name}"),
                );
                check(
                    rg.is_some(),
                    &mpath,
                    format!(
                        "matched sets are drawn from the rule graph's training facts; \
                         data.source kind {source} has none"
                    ),
                );
                if check_names_another(sets, i, target, &mpath, &mut check) {
                    let other = sets.iter().find(|s| &s.name == target);
                    if let Some(further) = other.and_then(|o| o.matched_to.as_ref()) {
                        check(
                            false,
                            &mpath,
                            format!(
                                "{target:?} is itself matched (to {further:?}); match to a set \
                                 that is not"
                            ),
                        );
                    }
                }
                check(
                    set.levels.is_none(),
                    &lpath,
                    format!(
                        "a matched set takes the levels of {target:?} (matched_to): remove levels"
                    ),
                );
                check(
                    set.samples.is_none(),
                    &format!("{path}.samples"),
                    format!(
                        "a matched set takes the sample counts of {target:?} (matched_to): \
                         remove samples"
                    ),
                );
            }
            let levels = set.levels.as_deref().unwrap_or(&[]);
            match family.levels() {
                // A matched set's levels were refused above, naming `matched_to`.
                Levels::Fixed(_) if set.matched_to.is_some() => {}
                Levels::Fixed(_) => check(
                    set.levels.is_none(),
                    &lpath,
                    format!("family {name} takes no levels"),
                ),
                Levels::HopCounts => {}
                Levels::Required { example } => check(
                    !levels.is_empty(),
                    &lpath,
                    format!("family {name} needs a list of levels, e.g. {example}"),
                ),
            }
            let ctx = LevelContext {
                hops: rg.map(|rg| (rg.min_hops, rg.max_hops)),
                context,
                seq_len: self.model.seq_len,
                option_len: self.option_len(),
                // Options to choose from: entities, or other samples' continuations.
                most: match rg {
                    Some(rg) => rg.entities,
                    None => set.samples.unwrap_or(self.probes.samples),
                },
                question: if text_like { context } else { 3 },
                replaceable: if text_like {
                    context
                } else {
                    RuleGraphConfig::PROMPT_LEN - 1
                },
            };
            for (j, &l) in levels.iter().enumerate() {
                if let Err(message) = family.check_level(l, &ctx) {
                    check(false, &format!("{lpath}[{j}]"), message);
                }
            }
        }
        issues
    }
}

/// Checks that `name`, given at `path` by set `i` of `sets`, names another set of the list;
/// returns whether it does.
fn check_names_another(
    sets: &[ProbeSetConfig],
    i: usize,
    name: &str,
    path: &str,
    check: &mut dyn FnMut(bool, &str, String),
) -> bool {
    if name == sets[i].name {
        check(
            false,
            path,
            format!("{name:?} is this set itself: name another set"),
        );
        return false;
    }
    if !sets.iter().any(|s| s.name == name) {
        let names: Vec<&str> = sets.iter().map(|s| s.name.as_str()).collect();
        check(
            false,
            path,
            format!("no probe set is named {name:?}; the sets are {names:?}"),
        );
        return false;
    }
    true
}

/// The checks of one source's fields.
fn validate_source(source: &SourceConfig, p: &str, check: &mut dyn FnMut(bool, &str, String)) {
    match source {
        SourceConfig::Rulegraph(rg) => {
            check(
                rg.entities >= 2,
                &format!("{p}.entities"),
                "must be at least 2".into(),
            );
            check(
                rg.relations >= 1,
                &format!("{p}.relations"),
                "must be at least 1".into(),
            );
            check(
                rg.min_hops >= 2,
                &format!("{p}.min_hops"),
                "must be at least 2".into(),
            );
            check(
                rg.max_hops >= rg.min_hops,
                &format!("{p}.max_hops"),
                format!("must be at least min_hops ({})", rg.min_hops),
            );
            check(
                (0.0..=1.0).contains(&rg.derived_train_fraction),
                &format!("{p}.derived_train_fraction"),
                "must be within [0, 1]".into(),
            );
            if let Some(d) = &rg.deduction {
                let dp = format!("{p}.deduction");
                check(
                    d.aliases + d.random_derived >= 1,
                    &format!("{dp}.aliases"),
                    "aliases and random_derived are both 0: give at least one derived relation, \
                     or remove the deduction block"
                        .into(),
                );
                let shown = d.shown_heads(rg.entities);
                check(
                    d.shown_fraction.is_finite() && shown >= 1 && shown < rg.entities,
                    &format!("{dp}.shown_fraction"),
                    format!(
                        "{} shows {shown} of the {} heads of each derived relation in training; \
                         at least one must be shown and at least one held out",
                        d.shown_fraction, rg.entities
                    ),
                );
            }
        }
        SourceConfig::Grammar(g) => {
            check(
                (2..=100_000).contains(&g.symbols),
                &format!("{p}.symbols"),
                "must be within 2..=100000".into(),
            );
            check(
                g.branching >= 1 && g.branching <= g.symbols,
                &format!("{p}.branching"),
                format!("must be within 1..={} (symbols)", g.symbols),
            );
            check(
                g.documents >= 2,
                &format!("{p}.documents"),
                "must be at least 2".into(),
            );
            check(
                g.length >= 2,
                &format!("{p}.length"),
                "must be at least 2".into(),
            );
        }
        SourceConfig::Text { path } => {
            check(
                !path.is_empty(),
                &format!("{p}.path"),
                "must not be empty".into(),
            );
        }
        SourceConfig::Jsonl { path, field } => {
            check(
                !path.is_empty(),
                &format!("{p}.path"),
                "must not be empty".into(),
            );
            check(
                !field.is_empty(),
                &format!("{p}.field"),
                "must not be empty".into(),
            );
        }
        SourceConfig::Parquet { path, column } => {
            check(
                !path.is_empty(),
                &format!("{p}.path"),
                "must not be empty".into(),
            );
            check(
                !column.is_empty(),
                &format!("{p}.column"),
                "must not be empty".into(),
            );
        }
    }
}
