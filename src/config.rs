//! The experiment config: YAML -> generic tree -> `--set` overrides -> typed structs -> validation.
//!
//! Every error names the file and the field path (`probes.sets[2].levels: ...`), and all of it
//! happens before a run directory exists, so a bad config never leaves anything behind.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::InputError;
use crate::metrics::{MetricSpec, Position, SiteKind};

/// A whole experiment, exactly as `config.yaml` in a run directory records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Runs land in `<out>/<name>/<run_id>/`.
    pub name: String,
    #[serde(default = "defaults::seed")]
    pub seed: u64,
    #[serde(default)]
    pub device: DeviceChoice,
    pub data: DataConfig,
    #[serde(default)]
    pub model: ModelConfig,
    #[serde(default)]
    pub train: TrainConfig,
    pub probes: ProbesConfig,
    #[serde(default)]
    pub checkpoint: CheckpointConfig,
}

/// When checkpoints (model, optimizer, step) are written, and which are kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointConfig {
    /// Write a checkpoint every this many steps; 0 writes none (only the final weights).
    pub every: usize,
    /// Also at steps 1, 2, 4, ... below `every` (Pythia's schedule).
    pub log_spaced: bool,
    /// Keep this many of the newest checkpoints (at least 1)...
    pub keep_last: usize,
    /// ...and every checkpoint at these steps.
    pub major: Vec<usize>,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        Self {
            every: 0,
            log_spaced: false,
            keep_last: 2,
            major: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceChoice {
    /// A hardware GPU through wgpu if there is one, else Burn's CPU backend with the CPU metrics.
    #[default]
    Auto,
    /// Any wgpu adapter, software Vulkan (llvmpipe) included; this is how tests run the kernels.
    Wgpu,
    /// Burn's CPU backend (`flex`) with the f64 reference metrics.
    Cpu,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    pub source: SourceConfig,
    /// Defaults to `word` for the rule graph and the grammar, `byte` for text, jsonl and parquet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<TokenizerConfig>,
    /// Fraction of the documents held out of training; probe sets are drawn from them. (The rule
    /// graph holds out by `derived_train_fraction` instead.)
    #[serde(default = "defaults::held_out")]
    pub held_out: f64,
    /// Tokens per training window; defaults to `model.seq_len`. A `length` probe at level x reads
    /// x * context tokens, which must fit in `model.seq_len`. (The rule graph trains on its
    /// 3-token prompts and ignores this.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<usize>,
}

/// Where documents come from. Paths are relative to the working directory; `run` records them
/// as absolute paths in the run's config.yaml, so `--resume` works from anywhere.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceConfig {
    /// The synthetic knowledge graph of docs/science.md (see `data::rulegraph`).
    Rulegraph(RuleGraphConfig),
    /// A seeded Markov language with a shift knob (see `data::grammar`).
    Grammar(GrammarConfig),
    /// UTF-8 text: a file, a directory (every file under it) or a glob.
    Text { path: String },
    /// JSON Lines: one document per line, the string at `field`.
    Jsonl { path: String, field: String },
    /// Parquet: one document per row, the string column `column`.
    Parquet { path: String, column: String },
}

impl SourceConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            SourceConfig::Rulegraph(_) => "rulegraph",
            SourceConfig::Grammar(_) => "grammar",
            SourceConfig::Text { .. } => "text",
            SourceConfig::Jsonl { .. } => "jsonl",
            SourceConfig::Parquet { .. } => "parquet",
        }
    }

    /// The file path of a file-backed source.
    pub fn path_mut(&mut self) -> Option<&mut String> {
        match self {
            SourceConfig::Text { path }
            | SourceConfig::Jsonl { path, .. }
            | SourceConfig::Parquet { path, .. } => Some(path),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrammarConfig {
    /// Distinct words (symbols) of the language.
    pub symbols: usize,
    /// Successors each symbol can be followed by, with Zipf weights 1, 1/2, 1/3, ...
    pub branching: usize,
    /// Documents generated, each `length` words.
    pub documents: usize,
    pub length: usize,
}

impl Default for GrammarConfig {
    fn default() -> Self {
        Self {
            symbols: 256,
            branching: 4,
            documents: 400,
            length: 256,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TokenizerConfig {
    /// One token per byte, plus BOS: accepts any input.
    Byte,
    /// One token per character seen in the training documents, plus BOS and an unknown token.
    Char,
    /// Byte-level BPE trained on the training documents (the `tokenizers` crate), saved in the
    /// run directory as tokenizer.json.
    Bpe { vocab_size: usize },
    /// One token per whitespace-separated word of the training documents, plus BOS and unknown.
    Word,
}

impl TokenizerConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            TokenizerConfig::Byte => "byte",
            TokenizerConfig::Char => "char",
            TokenizerConfig::Bpe { .. } => "bpe",
            TokenizerConfig::Word => "word",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleGraphConfig {
    #[serde(default = "defaults::entities")]
    pub entities: usize,
    /// Base relations: each maps every entity to one tail entity.
    #[serde(default = "defaults::relations")]
    pub relations: usize,
    /// Derived relations, each the composition of a chain of base relations.
    #[serde(default = "defaults::rules")]
    pub rules: usize,
    #[serde(default = "defaults::min_hops")]
    pub min_hops: usize,
    #[serde(default = "defaults::max_hops")]
    pub max_hops: usize,
    /// Fraction of each derived relation's facts that are trained on; the rest are held out.
    #[serde(default = "defaults::derived_train_fraction")]
    pub derived_train_fraction: f64,
}

impl Default for RuleGraphConfig {
    fn default() -> Self {
        Self {
            entities: defaults::entities(),
            relations: defaults::relations(),
            rules: defaults::rules(),
            min_hops: defaults::min_hops(),
            max_hops: defaults::max_hops(),
            derived_train_fraction: defaults::derived_train_fraction(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    Relu,
    Gelu,
    Silu,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    pub layers: usize,
    pub d_model: usize,
    pub heads: usize,
    pub d_ff: usize,
    pub activation: Activation,
    /// Learned position embeddings for this many positions: the longest input the model takes.
    pub seq_len: usize,
    pub dropout: f64,
    /// Rows of the token embedding; defaults to the tokenizer's vocabulary. A vocabulary larger
    /// than this is an error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vocab_size: Option<usize>,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            layers: 2,
            d_model: 128,
            heads: 4,
            d_ff: 512,
            activation: Activation::Gelu,
            seq_len: 16,
            dropout: 0.0,
            vocab_size: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub steps: usize,
    pub batch_size: usize,
    /// Peak learning rate, reached after `warmup_steps` of linear warm-up.
    pub lr: f64,
    /// Floor of the cosine decay, reached at the last step.
    pub min_lr: f64,
    pub warmup_steps: usize,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    /// Gradient norm clipping; 0 turns it off.
    pub grad_clip: f64,
    /// Write a train-table row every this many steps.
    pub log_every: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            steps: 1000,
            batch_size: 64,
            lr: 1e-3,
            min_lr: 1e-4,
            warmup_steps: 50,
            weight_decay: 0.1,
            beta1: 0.9,
            beta2: 0.95,
            grad_clip: 1.0,
            log_every: 10,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbesConfig {
    /// Evaluate every this many steps (and always at step 0 and at the last step).
    pub every: usize,
    /// Also evaluate at steps 1, 2, 4, ... below `every` (Pythia's schedule: early dynamics need
    /// dense measurement).
    #[serde(default)]
    pub log_spaced: bool,
    /// Samples drawn for each probe set and level (a set may override it).
    #[serde(default = "defaults::samples")]
    pub samples: usize,
    /// Site kinds to measure in every block (`resid_post`, `mlp.post`, `attn.out`) and after the
    /// final norm (`final.norm`).
    #[serde(default = "defaults::sites")]
    pub sites: Vec<String>,
    #[serde(default = "defaults::positions")]
    pub positions: Vec<String>,
    /// Metric names, parameters after `@` (`near_zero@1e-3`).
    #[serde(default = "defaults::metrics")]
    pub metrics: Vec<String>,
    /// Quantiles of each metric over a probe set's vectors (numpy's linear interpolation), written
    /// to the `quantiles/` table; an empty list turns them off.
    #[serde(default = "defaults::quantiles")]
    pub quantiles: Vec<f64>,
    /// Also write every vector's per-vector metrics to the `samples/` table (for AUROC and
    /// bootstrap intervals); reads back rows x metrics floats per site, position and probe set.
    #[serde(default)]
    pub per_sample: bool,
    /// Probe tokens per forward pass (samples x tokens); bounds device memory during evaluation.
    #[serde(default = "defaults::probe_batch")]
    pub batch_size: usize,
    pub sets: Vec<ProbeSetConfig>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeSetConfig {
    pub name: String,
    pub family: ShiftFamily,
    /// Shift levels; each becomes its own probe set. Defaults depend on the family.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub levels: Option<Vec<f64>>,
    /// The other source of a `domain` set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceConfig>,
    /// Overrides `probes.samples` for this set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples: Option<usize>,
}

/// How a probe set departs from the training distribution. Each family's level is a number with
/// a documented meaning (README, "Shift families"); the unshifted level gives the `none` set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShiftFamily {
    /// In-distribution: training facts (rule graph) or held-out windows (other sources). Level 0.
    None,
    /// Rule graph: held-out deducible facts; the level is the number of relations the rule chains.
    Hops,
    /// Each token replaced by a different random token with probability `level`.
    TokenCorruption,
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

impl ShiftFamily {
    pub fn name(self) -> &'static str {
        match self {
            ShiftFamily::None => "none",
            ShiftFamily::Hops => "hops",
            ShiftFamily::TokenCorruption => "token_corruption",
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
            _ => 0.0,
        }
    }
}

mod defaults {
    pub fn seed() -> u64 {
        1
    }
    pub fn entities() -> usize {
        200
    }
    pub fn relations() -> usize {
        8
    }
    pub fn rules() -> usize {
        16
    }
    pub fn min_hops() -> usize {
        2
    }
    pub fn max_hops() -> usize {
        5
    }
    pub fn derived_train_fraction() -> f64 {
        0.5
    }
    pub fn held_out() -> f64 {
        0.1
    }
    pub fn samples() -> usize {
        512
    }
    pub fn probe_batch() -> usize {
        4096
    }
    pub fn sites() -> Vec<String> {
        ["resid_post", "mlp.post", "attn.out", "final.norm"]
            .map(String::from)
            .to_vec()
    }
    pub fn quantiles() -> Vec<f64> {
        vec![0.05, 0.25, 0.5, 0.75, 0.95]
    }
    pub fn positions() -> Vec<String> {
        ["last", "all"].map(String::from).to_vec()
    }
    pub fn metrics() -> Vec<String> {
        crate::metrics::DEFAULT_METRICS
            .iter()
            .map(|s| s.to_string())
            .collect()
    }
}

/// The parsed forms of the string lists in `probes`, checked once by `validate`.
#[derive(Debug, Clone)]
pub struct ProbePlan {
    pub sites: Vec<SiteKind>,
    pub positions: Vec<Position>,
    pub metrics: Vec<MetricSpec>,
    pub quantiles: Vec<f64>,
    pub per_sample: bool,
}

impl Config {
    /// Reads `path`, applies `overrides` (`a.b=value`, value in YAML), types and validates it.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Config, InputError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| InputError::File {
            file: file.clone(),
            message: format!("cannot read: {e}"),
        })?;
        Self::from_yaml(&text, &file, overrides)
    }

    /// As `load`, from YAML text; `origin` names the text in messages.
    pub fn from_yaml(text: &str, origin: &str, overrides: &[String]) -> Result<Config, InputError> {
        let mut tree = yaml_tree(text, origin)?;
        if tree.is_null() {
            return Err(InputError::File {
                file: origin.to_string(),
                message: "the config is empty".into(),
            });
        }
        for spec in overrides {
            apply_override(&mut tree, spec)?;
        }
        let config: Config = typed(tree, origin)?;
        let issues = config.validate();
        if !issues.is_empty() {
            return Err(InputError::Fields {
                file: origin.to_string(),
                issues,
            });
        }
        Ok(config)
    }

    /// The resolved config as YAML: what `check` prints and `config.yaml` holds.
    pub fn to_yaml(&self) -> String {
        serde_saphyr::to_string(self).expect("a typed config always serializes")
    }

    pub fn rulegraph(&self) -> Option<&RuleGraphConfig> {
        match &self.data.source {
            SourceConfig::Rulegraph(rg) => Some(rg),
            _ => None,
        }
    }

    /// The tokenizer, with the source's default filled in.
    pub fn tokenizer(&self) -> TokenizerConfig {
        self.data.tokenizer.unwrap_or(match self.data.source {
            SourceConfig::Rulegraph(_) | SourceConfig::Grammar(_) => TokenizerConfig::Word,
            _ => TokenizerConfig::Byte,
        })
    }

    /// Tokens per option of an `options` probe: single entities for the rule graph; a quarter of
    /// the context (at least 1) for text-like sources, cut from the text after the question.
    pub fn option_len(&self) -> usize {
        match self.data.source {
            SourceConfig::Rulegraph(_) => 1,
            _ => (self.context() / 4).max(1),
        }
    }

    /// Tokens per training window (the rule graph's prompts are 3 tokens).
    pub fn context(&self) -> usize {
        match self.data.source {
            SourceConfig::Rulegraph(_) => crate::data::rulegraph::PROMPT_LEN,
            _ => self.data.context.unwrap_or(self.model.seq_len),
        }
    }

    /// Makes every relative source path absolute against `base`, so the recorded config does not
    /// depend on the directory a later command runs in.
    pub fn absolutize_paths(&mut self, base: &Path) {
        let fix = |path: &mut String| {
            if !Path::new(path.as_str()).is_absolute() {
                *path = base.join(&*path).display().to_string();
            }
        };
        if let Some(path) = self.data.source.path_mut() {
            fix(path);
        }
        for set in &mut self.probes.sets {
            if let Some(path) = set.source.as_mut().and_then(SourceConfig::path_mut) {
                fix(path);
            }
        }
    }

    /// Parses the probe lists; only called on a validated config.
    pub fn probe_plan(&self) -> ProbePlan {
        ProbePlan {
            sites: self
                .probes
                .sites
                .iter()
                .map(|s| s.parse().unwrap())
                .collect(),
            positions: self
                .probes
                .positions
                .iter()
                .map(|s| s.parse().unwrap())
                .collect(),
            metrics: self
                .probes
                .metrics
                .iter()
                .map(|s| s.parse().unwrap())
                .collect(),
            quantiles: self.probes.quantiles.clone(),
            per_sample: self.probes.per_sample,
        }
    }

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
        if let TokenizerConfig::Bpe { vocab_size } = tokenizer {
            check(
                vocab_size >= 258,
                "data.tokenizer.vocab_size",
                "must be at least 258 (256 byte symbols, BOS and unknown)".into(),
            );
        }
        if let Some(v) = self.model.vocab_size {
            check(v >= 2, "model.vocab_size", "must be at least 2".into());
            if let TokenizerConfig::Bpe { vocab_size } = tokenizer {
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
            m.heads >= 1 && m.d_model % m.heads == 0,
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
        for (i, s) in pr.sites.iter().enumerate() {
            if let Err(e) = s.parse::<SiteKind>() {
                check(false, &format!("probes.sites[{i}]"), e);
            }
        }
        check(
            !pr.sites.is_empty(),
            "probes.sites",
            "must name at least one site".into(),
        );
        for (i, s) in pr.positions.iter().enumerate() {
            if let Err(e) = s.parse::<Position>() {
                check(false, &format!("probes.positions[{i}]"), e);
            }
        }
        check(
            !pr.positions.is_empty(),
            "probes.positions",
            "must name at least one position".into(),
        );
        for (i, s) in pr.metrics.iter().enumerate() {
            if let Err(e) = s.parse::<MetricSpec>() {
                check(false, &format!("probes.metrics[{i}]"), e);
            }
        }
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
        let seq_len = self.model.seq_len;
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
            let fpath = format!("{path}.family");
            // Which sources a family applies to.
            let applies = match family {
                ShiftFamily::Hops | ShiftFamily::Conflict => !text_like,
                ShiftFamily::CharNoise
                | ShiftFamily::WordNoise
                | ShiftFamily::Length
                | ShiftFamily::Domain => text_like,
                ShiftFamily::GrammarShift => source == "grammar",
                _ => true,
            };
            check(
                applies,
                &fpath,
                format!("family {name} does not apply to data.source kind {source}"),
            );
            if family == ShiftFamily::Domain {
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
            let lpath = format!("{path}.levels");
            let levels = set.levels.as_deref().unwrap_or(&[]);
            let each = |check: &mut dyn FnMut(bool, &str, String),
                        ok: &dyn Fn(f64) -> bool,
                        what: &str| {
                for (j, &l) in levels.iter().enumerate() {
                    check(
                        ok(l),
                        &format!("{lpath}[{j}]"),
                        format!("{l} is not {what}"),
                    );
                }
            };
            let fraction = |l: f64| (0.0..=1.0).contains(&l);
            match family {
                ShiftFamily::None | ShiftFamily::Random | ShiftFamily::Domain => check(
                    set.levels.is_none(),
                    &lpath,
                    format!("family {name} takes no levels"),
                ),
                ShiftFamily::Hops => {
                    if let Some(rg) = rg {
                        let (lo, hi) = (rg.min_hops as f64, rg.max_hops as f64);
                        each(
                            &mut check,
                            &|l| l.fract() == 0.0 && l >= lo && l <= hi,
                            &format!("a hop count in data.source's range {lo}..={hi}"),
                        );
                    }
                }
                _ => {
                    check(
                        !levels.is_empty(),
                        &lpath,
                        format!(
                            "family {name} needs a list of levels, e.g. {}",
                            match family {
                                ShiftFamily::Length => "[1.5, 2, 4]",
                                ShiftFamily::Options => "[2, 4, 8]",
                                ShiftFamily::Conflict => "[1, 2, 3]",
                                _ => "[0.05, 0.1, 0.2]",
                            }
                        ),
                    );
                    match family {
                        ShiftFamily::Length => each(
                            &mut check,
                            &|l| {
                                l > 0.0
                                    && (l * context as f64).round() as usize >= 2
                                    && (l * context as f64).round() as usize <= seq_len
                            },
                            &format!(
                                "a multiple of data.context ({context}) within 2..={seq_len} \
                                 tokens (model.seq_len)"
                            ),
                        ),
                        ShiftFamily::Options => {
                            // Options to choose from: entities, or other samples' continuations.
                            let most = match rg {
                                Some(rg) => rg.entities,
                                None => set.samples.unwrap_or(self.probes.samples),
                            } as f64;
                            let m = self.option_len();
                            // Tokens read to score an option: the listed options, the question
                            // and all but the option's last token.
                            let question = if text_like { context } else { 3 };
                            each(
                                &mut check,
                                &|l| {
                                    l.fract() == 0.0
                                        && l >= 0.0
                                        && l <= most
                                        && (l as usize + 1) * m + question - 1 <= seq_len
                                },
                                &format!(
                                    "a whole number of options in 0..={most}, whose {m}-token \
                                     options, listed before the {question}-token question, fit \
                                     model.seq_len ({seq_len})"
                                ),
                            );
                        }
                        ShiftFamily::Conflict => each(
                            &mut check,
                            &|l| l.fract() == 0.0 && l >= 0.0 && 3 + 3 * l as usize <= seq_len,
                            &format!(
                                "a whole number of contradicting facts (3 tokens each) that fits \
                                 model.seq_len ({seq_len}) with the question"
                            ),
                        ),
                        _ => each(&mut check, &fraction, "a fraction in [0, 1]"),
                    }
                }
            }
        }
        issues
    }
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

/// Whether `name` can name a folder we create: non-empty, letters, digits, '-', '_' and '.', and
/// not hidden (a leading '.' is how temporary folders are named).
pub fn is_folder_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// YAML text as a generic tree; `origin` names the text in messages.
pub fn yaml_tree(text: &str, origin: &str) -> Result<Value, InputError> {
    serde_saphyr::from_str(text).map_err(|e| InputError::File {
        file: origin.to_string(),
        message: format!("invalid YAML: {e}"),
    })
}

/// A YAML tree as a typed struct; the error names the field path of the first problem.
pub fn typed<T: serde::de::DeserializeOwned>(tree: Value, origin: &str) -> Result<T, InputError> {
    serde_path_to_error::deserialize(tree).map_err(|e| InputError::Fields {
        file: origin.to_string(),
        issues: vec![(e.path().to_string(), e.into_inner().to_string())],
    })
}

/// Applies one `a.b[2].c=value` override to the YAML tree, parsing `value` as YAML.
fn apply_override(tree: &mut Value, spec: &str) -> Result<(), InputError> {
    let bad = |message: String| InputError::Override {
        spec: spec.to_string(),
        message,
    };
    let (path, raw) = spec
        .split_once('=')
        .ok_or_else(|| bad("expected KEY=VALUE, e.g. train.steps=100".into()))?;
    let path = path.trim();
    if path.is_empty() {
        return Err(bad("the key is empty".into()));
    }
    let value: Value = if raw.trim().is_empty() {
        Value::String(String::new())
    } else {
        serde_saphyr::from_str(raw).map_err(|e| bad(format!("the value is not valid YAML: {e}")))?
    };

    let mut node = tree;
    let segments: Vec<&str> = path.split('.').collect();
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        let (key, indices) = split_indices(segment).map_err(bad)?;
        let map = node.as_object_mut().ok_or_else(|| {
            bad(format!(
                "{key:?} cannot be set: its parent is not a mapping"
            ))
        })?;
        if last && indices.is_empty() {
            map.insert(key.to_string(), value);
            return Ok(());
        }
        node = map
            .entry(key.to_string())
            .or_insert_with(|| Value::Object(Default::default()));
        for (j, index) in indices.iter().enumerate() {
            let list = node
                .as_array_mut()
                .ok_or_else(|| bad(format!("{key} is not a list")))?;
            let len = list.len();
            let slot = list
                .get_mut(*index)
                .ok_or_else(|| bad(format!("{key}[{index}] is out of range (length {len})")))?;
            if last && j + 1 == indices.len() {
                *slot = value;
                return Ok(());
            }
            node = slot;
        }
    }
    unreachable!("the loop returns at the last segment")
}

/// `sets[2][0]` -> ("sets", [2, 0]).
fn split_indices(segment: &str) -> Result<(&str, Vec<usize>), String> {
    let (key, mut rest) = match segment.find('[') {
        Some(at) => (&segment[..at], &segment[at..]),
        None => (segment, ""),
    };
    if key.is_empty() {
        return Err(format!("{segment:?} has an empty key"));
    }
    let mut indices = Vec::new();
    while !rest.is_empty() {
        let close = rest
            .find(']')
            .filter(|_| rest.starts_with('['))
            .ok_or_else(|| format!("{segment:?}: expected [INDEX]"))?;
        let index = rest[1..close]
            .parse()
            .map_err(|_| format!("{segment:?}: {:?} is not an index", &rest[1..close]))?;
        indices.push(index);
        rest = &rest[close + 1..];
    }
    Ok((key, indices))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_indices_reads_nested_indices() {
        assert_eq!(split_indices("sets[2][0]").unwrap(), ("sets", vec![2, 0]));
        assert_eq!(split_indices("steps").unwrap(), ("steps", vec![]));
        assert!(split_indices("sets[x]").is_err());
        assert!(split_indices("[1]").is_err());
    }

    /// `--resume` and `probe` rebuild the config from config.yaml: every float must read back
    /// with the bits the run started with, or a resumed run would train with another lr.
    #[test]
    fn the_written_config_reads_back_identical_with_random_floats() {
        use rand::{Rng, SeedableRng};
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/quickstart.yaml");
        let base = Config::load(&path, &[]).unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        for round in 0..500 {
            let mut c = base.clone();
            let mut unit = || rng.random_range(f64::EPSILON..1.0);
            c.train.lr = unit();
            c.train.min_lr = c.train.lr * unit();
            c.train.weight_decay = unit();
            c.train.beta1 = unit();
            c.train.beta2 = unit();
            c.train.grad_clip = unit() * 1e3;
            let mut quantiles = vec![unit(), unit(), unit()];
            quantiles.sort_by(f64::total_cmp);
            c.probes.quantiles = quantiles;
            c.probes.sets[2].levels = Some(vec![unit(), unit() / 3.0]);
            let yaml = c.to_yaml();
            let back = Config::from_yaml(&yaml, "round trip", &[])
                .unwrap_or_else(|e| panic!("round {round}: {e}\n{yaml}"));
            assert_eq!(back, c, "round {round}:\n{yaml}");
            assert_eq!(back.to_yaml(), yaml, "round {round}");
        }
    }
}
