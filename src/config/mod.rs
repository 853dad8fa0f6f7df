//! The experiment config: YAML -> generic tree -> `--set` overrides -> typed structs -> validation.
//!
//! Every error names the file and the field path (`probes.sets[2].levels: ...`), and all of it
//! happens before a run directory exists, so a bad config never leaves anything behind.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::InputError;
use crate::metrics::{MetricSpec, Position, SiteKind};

// The family type lives with its rules in `families`; sets (and older code) name it here.
pub mod families;
pub use families::ShiftFamily;

mod validate;

/// A whole experiment, exactly as `config.yaml` in a run directory records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Runs land in `<out>/<name>/<run_id>/`.
    pub name: String,
    #[serde(default = "Config::default_seed")]
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

impl Config {
    fn default_seed() -> u64 {
        1
    }
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

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
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
    #[serde(default = "DataConfig::default_held_out")]
    pub held_out: f64,
    /// Tokens per training window; defaults to `model.seq_len`. A `length` probe at level x reads
    /// x * context tokens, which must fit in `model.seq_len`. (The rule graph trains on its
    /// 3-token prompts and ignores this.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<usize>,
}

impl DataConfig {
    fn default_held_out() -> f64 {
        0.1
    }
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
    Bpe {
        vocab_size: usize,
        /// Split the text GPT-2's way (words, numbers, punctuation and spaces apart) before
        /// merging, so no merge spans a word boundary; `false` merges across spaces, what
        /// densitrace did before this option.
        #[serde(default = "TokenizerConfig::default_split")]
        split: bool,
    },
    /// One token per whitespace-separated word of the training documents, plus BOS and unknown.
    Word,
}

impl TokenizerConfig {
    fn default_split() -> bool {
        true
    }

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
#[serde(deny_unknown_fields, default)]
pub struct RuleGraphConfig {
    pub entities: usize,
    /// Base relations: each maps every entity to one tail entity.
    pub relations: usize,
    /// Derived relations, each the composition of a chain of base relations.
    pub rules: usize,
    pub min_hops: usize,
    pub max_hops: usize,
    /// Fraction of each derived relation's facts that are trained on; the rest are held out.
    pub derived_train_fraction: f64,
    /// The deduction task (docs/science.md, "Deduction task"): derived relations of two kinds
    /// added after the rule chains' ones, deducible aliases and non-deducible random ones, whose
    /// held-out facts are the `deducible` and `non_deducible` probe sets. Absent (the default):
    /// none, and the graph is exactly what it was before this block existed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deduction: Option<DeductionConfig>,
}

/// `data.source.deduction`: derived relations whose held-out facts can (`aliases`) or cannot
/// (`random_derived`) be deduced from the training facts. Their relation tokens follow the base
/// relations' and the rule chains', the two kinds interleaved in a seeded order, so nothing but
/// their facts tells them apart; each shows the same number of heads in training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeductionConfig {
    /// Deducible derived relations, each an alias of one base relation drawn from the seed:
    /// (h, d, t) holds iff (h, b, t) does, for its base relation b.
    pub aliases: usize,
    /// Non-deducible derived relations: each head's tail drawn uniformly at random.
    pub random_derived: usize,
    /// Fraction of each of these relations' heads (round(shown_fraction * entities)) whose fact
    /// is trained on; the other heads' facts are held out.
    pub shown_fraction: f64,
}

impl Default for DeductionConfig {
    fn default() -> Self {
        Self {
            aliases: 8,
            random_derived: 8,
            shown_fraction: 0.6,
        }
    }
}

impl DeductionConfig {
    /// Heads of each deduction relation shown in training, of `entities`.
    pub fn shown_heads(&self, entities: usize) -> usize {
        (self.shown_fraction * entities as f64).round() as usize
    }
}

impl Default for RuleGraphConfig {
    fn default() -> Self {
        Self {
            entities: 200,
            relations: 8,
            rules: 16,
            min_hops: 2,
            max_hops: 5,
            derived_train_fraction: 0.5,
            deduction: None,
        }
    }
}

impl RuleGraphConfig {
    /// Tokens of a fact's prompt, `BOS head relation`; the next token is the answer.
    pub const PROMPT_LEN: usize = 3;
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

/// Which parameters AdamW's weight decay applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecayParams {
    /// Parameters with 2 or more dimensions (nanoGPT's convention).
    Matrices,
    /// Every parameter.
    All,
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
    /// AdamW's decoupled weight decay, applied to the parameters `decay` names.
    pub weight_decay: f64,
    /// Which parameters decay: `matrices` (every parameter with 2 or more dimensions: the linear
    /// weights and the embeddings; biases and LayerNorm scales and shifts are exempt, nanoGPT's
    /// convention) or `all`.
    pub decay: DecayParams,
    pub beta1: f64,
    pub beta2: f64,
    /// The largest global L2 norm of all gradients together (PyTorch's `clip_grad_norm_`, as in
    /// nanoGPT): above it, every gradient is scaled by grad_clip / (norm + 1e-6). 0 turns it off.
    pub grad_clip: f64,
    /// Write a train-table row every this many steps.
    pub log_every: usize,
    /// Split each batch into this many slices, whose forward and backward passes run on threads
    /// of their own on the CPU backend (one after the other on a GPU), and add their gradients.
    /// The same training up to rounding; on 2 CPU cores, 2 keeps both busy. The tables depend on
    /// this number, never on the machine's core count.
    pub shards: usize,
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
            decay: DecayParams::Matrices,
            beta1: 0.9,
            beta2: 0.95,
            grad_clip: 1.0,
            log_every: 10,
            shards: 1,
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
    #[serde(default = "ProbesConfig::default_samples")]
    pub samples: usize,
    /// Site kinds to measure in every block (`resid_post`, `mlp.post`, `attn.out`) and after the
    /// final norm (`final.norm`).
    #[serde(default = "ProbesConfig::default_sites")]
    pub sites: Vec<SiteKind>,
    #[serde(default = "ProbesConfig::default_positions")]
    pub positions: Vec<Position>,
    /// Metric names, parameters after `@` (`near_zero@1e-3`).
    #[serde(default = "ProbesConfig::default_metrics")]
    pub metrics: Vec<MetricSpec>,
    /// Quantiles of each metric over a probe set's vectors (numpy's linear interpolation), written
    /// to the `quantiles/` table; an empty list turns them off.
    #[serde(default = "ProbesConfig::default_quantiles")]
    pub quantiles: Vec<f64>,
    /// Which sites and positions also write every vector's per-vector metrics to the `samples/`
    /// table (what `report` needs for AUROC and a single run's intervals): `true` (all), `false`
    /// (none) or `{sites: [...], positions: [...]}`. Each selected site reads back vectors x
    /// metrics floats per probe set; when any measured site is selected, each sample's
    /// `next_token_loss` and `prompt_loss` are written too (site `logits`): the baseline
    /// detectors.
    #[serde(default)]
    pub per_sample: PerSample,
    /// Probe tokens per forward pass (samples x tokens); bounds device memory during evaluation.
    #[serde(default = "ProbesConfig::default_batch_size")]
    pub batch_size: usize,
    /// Who turns activations into metrics: `fast` (the default: the WGSL kernels on a wgpu
    /// device, the f32 CPU reduction `kernels::fast` on the CPU backend) or `reference` (the f64
    /// reference on the host, on either device: every activation is read back). Both compute the
    /// same metrics, agreeing within 1e-6 relative; `reference` is the definition, to check
    /// against or to rule the fast path out.
    #[serde(default)]
    pub reduction: ReductionChoice,
    pub sets: Vec<ProbeSetConfig>,
}

/// `probes.reduction`; `measure::reduce::Reduction::for_config` turns it into the reduction that
/// runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReductionChoice {
    /// The fastest exact path the device has: the WGSL kernels on wgpu, `kernels::fast` on the
    /// CPU backend.
    #[default]
    Fast,
    /// The f64 reference (`kernels::reference`) on the host.
    Reference,
}

impl ProbesConfig {
    fn default_samples() -> usize {
        512
    }
    fn default_sites() -> Vec<SiteKind> {
        use SiteKind::*;
        vec![ResidPost, MlpPost, AttnOut, FinalNorm]
    }
    fn default_positions() -> Vec<Position> {
        vec![Position::Last, Position::All]
    }
    fn default_metrics() -> Vec<MetricSpec> {
        crate::metrics::DEFAULT_METRICS.to_vec()
    }
    fn default_quantiles() -> Vec<f64> {
        vec![0.05, 0.25, 0.5, 0.75, 0.95]
    }
    fn default_batch_size() -> usize {
        4096
    }
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
    /// The name of another set in the same list that `densitrace report` takes this set's gaps,
    /// detection scores and tests against; absent, the in-distribution (`none`) set, as before.
    /// Only recorded and checked here (see `ProbesConfig::reference_of`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// Rule graph, family `none` only: draw this set as training facts matched to another set's
    /// samples. For each level of the named set, and each of its samples in order, one training
    /// fact whose prompt ends in the same token (the token measured as `last`, the relation); the
    /// set takes the named set's levels and sample counts (see `data::probes`). The named set
    /// may not itself be matched, and this set gives no `levels` or `samples`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched_to: Option<String>,
}

impl ProbesConfig {
    /// The set `set_name`'s declared `reference`: the name of the set the report compares it
    /// with; `None` when it declares none (the report's default, the in-distribution set) or
    /// when no set has that name.
    pub fn reference_of(&self, set_name: &str) -> Option<&str> {
        reference_of(&self.sets, set_name)
    }

    /// The set `set_name`'s `matched_to`: the set whose last tokens it matches; `None` for an
    /// ordinary set or an unknown name.
    pub fn matched_to_of(&self, set_name: &str) -> Option<&str> {
        self.sets
            .iter()
            .find(|s| s.name == set_name)
            .and_then(|s| s.matched_to.as_deref())
    }
}

/// As `ProbesConfig::reference_of`, in any list of sets (a `densitrace probe` file's too).
pub fn reference_of<'a>(sets: &'a [ProbeSetConfig], set_name: &str) -> Option<&'a str> {
    sets.iter()
        .find(|s| s.name == set_name)
        .and_then(|s| s.reference.as_deref())
}

/// Which measured tensors write their per-vector table to `samples/`.
#[derive(Debug, Clone, PartialEq)]
pub enum PerSample {
    /// `false`: none.
    Off,
    /// `true`: every site and position.
    Every,
    /// Only these site kinds at these positions.
    Only {
        sites: Vec<SiteKind>,
        positions: Vec<Position>,
    },
}

/// The default: the report's default site and position, `final.norm` at the last token, so
/// every run can be scored as an OOD detector and bootstrapped over its samples.
impl Default for PerSample {
    fn default() -> Self {
        PerSample::Only {
            sites: vec![SiteKind::FinalNorm],
            positions: vec![Position::Last],
        }
    }
}

impl PerSample {
    /// Whether the tensor of `site` at `position` writes its samples.
    pub fn covers(&self, site: SiteKind, position: Position) -> bool {
        match self {
            PerSample::Off => false,
            PerSample::Every => true,
            PerSample::Only { sites, positions } => {
                sites.contains(&site) && positions.contains(&position)
            }
        }
    }
}

/// `per_sample`'s map form.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PerSampleOnly {
    sites: Vec<SiteKind>,
    positions: Vec<Position>,
}

impl Serialize for PerSample {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            PerSample::Off => s.serialize_bool(false),
            PerSample::Every => s.serialize_bool(true),
            PerSample::Only { sites, positions } => PerSampleOnly {
                sites: sites.clone(),
                positions: positions.clone(),
            }
            .serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for PerSample {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = PerSample;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("true, false or {sites: [...], positions: [...]}")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<PerSample, E> {
                Ok(if v { PerSample::Every } else { PerSample::Off })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<PerSample, A::Error> {
                let only =
                    PerSampleOnly::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(PerSample::Only {
                    sites: only.sites,
                    positions: only.positions,
                })
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// What every evaluation measures: the `probes` lists (parsed at load, names checked there).
#[derive(Debug, Clone)]
pub struct ProbePlan {
    pub sites: Vec<SiteKind>,
    pub positions: Vec<Position>,
    pub metrics: Vec<MetricSpec>,
    pub quantiles: Vec<f64>,
    pub per_sample: PerSample,
}

impl ProbePlan {
    /// Whether any measured site and position writes samples (then each sample's losses are
    /// written too).
    pub fn writes_samples(&self) -> bool {
        self.sites.iter().any(|&site| {
            self.positions
                .iter()
                .any(|&p| self.per_sample.covers(site, p))
        })
    }
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
            SourceConfig::Rulegraph(_) => RuleGraphConfig::PROMPT_LEN,
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

    /// What every evaluation measures.
    pub fn probe_plan(&self) -> ProbePlan {
        ProbePlan {
            sites: self.probes.sites.clone(),
            positions: self.probes.positions.clone(),
            metrics: self.probes.metrics.clone(),
            quantiles: self.probes.quantiles.clone(),
            per_sample: self.probes.per_sample.clone(),
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

    /// `probes.reduction` defaults to `fast`, reads `reference`, and a wrong value is refused
    /// with the field's path and the values it takes.
    #[test]
    fn probes_reduction_defaults_to_fast_and_names_itself_when_wrong() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/quickstart.yaml");
        let yaml = std::fs::read_to_string(&path).unwrap();
        let load = |set: &[&str]| {
            let set: Vec<String> = set.iter().map(|s| s.to_string()).collect();
            Config::from_yaml(&yaml, "quickstart", &set)
        };
        assert_eq!(load(&[]).unwrap().probes.reduction, ReductionChoice::Fast);
        let reference = load(&["probes.reduction=reference"]).unwrap();
        assert_eq!(reference.probes.reduction, ReductionChoice::Reference);
        assert!(reference.to_yaml().contains("reduction: reference"));
        let error = load(&["probes.reduction=f64"]).unwrap_err().to_string();
        for needle in ["probes.reduction", "`fast`", "`reference`"] {
            assert!(error.contains(needle), "{needle:?} not in: {error}");
        }
    }
}
