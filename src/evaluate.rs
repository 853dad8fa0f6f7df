//! One evaluation: every probe set through the model, every site and position reduced to
//! (mean, std, n) per metric, and each probe set's next-token loss (with, where the set has them,
//! the answer's loss and accuracy and the multiple-choice accuracy).
//!
//! On a wgpu device the activations never leave it: the WGSL kernels reduce each
//! `[vectors, width]` site tensor to a `[columns, 3]` summary, and all summaries of the evaluation
//! come back in one `Transaction`. On the CPU backend the activations are read back and reduced
//! on the host by `kernels::fast`, or, with `probes.reduction: reference` (on either device), by
//! the f64 reference. `readback_bytes` counts what crossed, either way.

use burn::prelude::*;
use burn::tensor::Transaction;
use burn::tensor::activation::log_softmax;

use anyhow::Result;

use crate::config::{ProbePlan, ReductionChoice};
use crate::data::probes::ProbeSet;
use crate::data::rulegraph::Prior;
use crate::device::RunDevice;
use crate::kernels::{self, across, fast, reference};
use crate::metrics::{
    Columns, LOGITS_SITE, LogitsMetric, MetricSpec, Position, SiteKind, effective_rank,
};
use crate::model::{Gpt, Sites};
use crate::rundir::RunDir;
use crate::rundir::tables::{DensityRow, QuantileRow, RowKey, SampleRow};

pub struct Evaluation {
    pub rows: Vec<DensityRow>,
    pub quantile_rows: Vec<QuantileRow>,
    /// Only for the sites and positions `probes.per_sample` selects, and then each sample's
    /// losses.
    pub sample_rows: Vec<SampleRow>,
    pub readback_bytes: u64,
    pub timing: EvaluationTiming,
}

/// Where an evaluation's seconds go. On a wgpu device the forward passes are only queued when
/// `forward` ends, so the device's work lands in `reduce`, which waits for the read-back.
#[derive(Debug, Clone, Copy, Default)]
pub struct EvaluationTiming {
    /// The probe sets' forward passes.
    pub forward: f64,
    /// The metrics: kernels or reference, the read-back and decoding the rows.
    pub reduce: f64,
    /// Writing the Parquet tables.
    pub write: f64,
}

/// Who turns activations into metrics. The one place that chooses (`for_config`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reduction {
    /// The WGSL kernels, on the device; only summaries are read back.
    Kernels,
    /// `kernels::fast`, the f32 CPU reduction, on the host; the activations are read back.
    CpuFast,
    /// The f64 reference, on the host; the activations are read back.
    Reference,
}

impl Reduction {
    /// `probes.reduction` on `device`: `fast` is the kernels on a wgpu device and
    /// `kernels::fast` on the CPU backend; `reference` is the f64 reference on either.
    pub fn for_config(device: &RunDevice, choice: ReductionChoice) -> Reduction {
        match choice {
            ReductionChoice::Reference => Reduction::Reference,
            ReductionChoice::Fast if device.measures_on_device() => Reduction::Kernels,
            ReductionChoice::Fast => Reduction::CpuFast,
        }
    }

    /// What a config that does not set `probes.reduction` gets on `device`.
    pub fn for_device(device: &RunDevice) -> Reduction {
        Reduction::for_config(device, ReductionChoice::default())
    }

    /// The name the manifest records for each evaluation.
    pub fn name(self) -> &'static str {
        match self {
            Reduction::Kernels => "kernels",
            Reduction::CpuFast => "cpu_fast",
            Reduction::Reference => "reference",
        }
    }

    /// Whether the activations themselves are read back and reduced on the host.
    pub fn on_host(self) -> bool {
        self != Reduction::Kernels
    }
}

/// What one evaluation measures, and where: the probe sets, the plan (sites, positions, metrics,
/// quantiles) and the reduction.
pub struct Probing<'a> {
    pub sets: &'a [ProbeSet],
    pub plan: &'a ProbePlan,
    /// The model's blocks: `final.norm` and `logits` rows carry this as their layer.
    pub layers: usize,
    /// Probe tokens per forward pass.
    pub batch_tokens: usize,
    pub device: &'a Device,
    pub reduction: Reduction,
    /// The rule graph's frequency prior: each answered set gets a `prior_acc` row beside its
    /// `answer_acc`. `None` for documents.
    pub prior: Option<&'a Prior>,
}

impl Probing<'_> {
    /// Measures every probe set on `model`.
    pub fn evaluate(&self, model: &Gpt) -> Evaluation {
        let started = std::time::Instant::now();
        let (measured, answers) = self.forward_all(model);
        let forward = started.elapsed().as_secs_f64();
        let reads = Reads::new(self.plan);

        // Read back what the evaluation needs, in one transaction: per measured tensor what the
        // reduction registers, then each probe set's answer statistics.
        let mut transaction = Transaction::default();
        for m in &measured {
            transaction = match self.reduction {
                Reduction::Kernels => reads.register_kernels(transaction, m),
                Reduction::CpuFast | Reduction::Reference => {
                    transaction.register(m.vectors.clone())
                }
            };
        }
        for (stats, losses) in &answers {
            transaction = transaction.register(stats.clone());
            if let Some(losses) = losses {
                transaction = transaction.register(losses.clone());
            }
        }
        let data = transaction.execute();
        let readback_bytes = data.iter().map(|d| d.as_bytes().len() as u64).sum();
        let mut data = data.into_iter();
        let mut next = || -> Vec<f32> {
            data.next()
                .expect("one read-back per registered tensor")
                .try_to_vec::<f32>()
                .expect("f32 read back")
        };

        let mut eval = Evaluation {
            rows: Vec::new(),
            quantile_rows: Vec::new(),
            sample_rows: Vec::new(),
            readback_bytes,
            timing: EvaluationTiming {
                forward,
                ..EvaluationTiming::default()
            },
        };
        for m in &measured {
            let reduced = match self.reduction {
                Reduction::Kernels => reads.decode_kernels(&mut next, m),
                host => reads.reduce_on_host(next(), m, host),
            };
            self.push_rows(&mut eval, m, &reads.cols, reduced);
        }
        for (probe, (_, losses)) in self.sets.iter().zip(&answers) {
            self.push_answer_rows(&mut eval, probe, next());
            if losses.is_some() {
                self.push_loss_samples(&mut eval, probe, next());
            }
        }
        eval.timing.reduce = started.elapsed().as_secs_f64() - forward;
        eval
    }

    /// Measures every probe set on `model` and writes the tables of `step` into `dir`, stamped
    /// with `tokens_seen` and the `wall_time` read when the measurement is done.
    pub fn evaluate_into(
        &self,
        model: &Gpt,
        dir: &RunDir,
        step: usize,
        tokens_seen: i64,
        wall_time: impl FnOnce() -> f64,
    ) -> Result<Evaluation> {
        let mut eval = self.evaluate(model);
        let started = std::time::Instant::now();
        let (step, wall_time) = (step as i64, wall_time());
        dir.write_density(step, tokens_seen, wall_time, &eval.rows)?;
        if !eval.quantile_rows.is_empty() {
            dir.write_quantiles(step, tokens_seen, wall_time, &eval.quantile_rows)?;
        }
        if !eval.sample_rows.is_empty() {
            dir.write_samples(step, &eval.sample_rows)?;
        }
        eval.timing.write = started.elapsed().as_secs_f64();
        Ok(eval)
    }

    /// The forward passes: every probe set's site tensors at every configured position, its
    /// answer statistics (`answer_stats`) and, when any site writes samples, each sample's
    /// losses `[2 * samples]` (`next_token_loss`, then `prompt_loss`: the baseline detectors a
    /// density score is compared with), all still on the device.
    fn forward_all(&self, model: &Gpt) -> (Vec<Measured>, Vec<(Tensor<1>, Option<Tensor<1>>)>) {
        let mut measured = Vec::new();
        let mut answers = Vec::new();
        for (p, probe) in self.sets.iter().enumerate() {
            let (logits, losses, sites) = forward(model, probe, self.batch_tokens, self.device);
            let scores = option_scores(model, probe, &logits, self.batch_tokens, self.device);
            let sample_losses = self
                .plan
                .writes_samples()
                .then(|| Tensor::cat(vec![losses.sequence.clone(), losses.prompt.clone()], 0));
            let stats = answer_stats(logits, losses, scores, probe, self.device);
            answers.push((stats, sample_losses));
            for site in named_sites(sites, &self.plan.sites, self.layers) {
                for &position in &self.plan.positions {
                    let vectors = vectors_at(&site.acts, position, probe.last_index());
                    measured.push(Measured {
                        probe: p,
                        layer: site.layer,
                        site: site.name.clone(),
                        position,
                        per_sample: self.plan.per_sample.covers(site.kind, position),
                        vectors,
                    });
                }
            }
        }
        (measured, answers)
    }

    /// The density, quantile and (with `per_sample`) sample rows of one measured tensor, in the
    /// config's metric order.
    fn push_rows(&self, eval: &mut Evaluation, m: &Measured, cols: &Columns, mut reduced: Reduced) {
        let probe = &self.sets[m.probe];
        let key = |metric: &MetricSpec| RowKey {
            probe: probe.name.clone(),
            shift_family: probe.family.name(),
            shift_level: probe.level,
            layer: m.layer,
            site: m.site.clone(),
            position: m.position.name(),
            metric: metric.to_string(),
        };
        let plan = self.plan;
        if m.per_sample {
            for metric in plan.metrics.iter().filter(|m| m.is_per_vector()) {
                let (key, c) = (key(metric), cols.column(metric));
                for (vector, values) in reduced.per_row.iter().enumerate() {
                    eval.sample_rows.push(SampleRow {
                        key: key.clone(),
                        vector: vector as i64,
                        value: values[c],
                    });
                }
            }
        }
        reduced
            .metrics
            .sort_by_key(|r| plan.metrics.iter().position(|m| *m == r.metric));
        for r in reduced.metrics {
            let key = key(&r.metric);
            for (&quantile, value) in plan.quantiles.iter().zip(r.quantiles) {
                eval.quantile_rows.push(QuantileRow {
                    key: key.clone(),
                    quantile,
                    value,
                    n: r.n,
                });
            }
            eval.rows.push(DensityRow {
                key,
                value: r.mean,
                std: r.std,
                n: r.n,
            });
        }
    }

    /// The `logits` rows of one probe set from its `answer_stats` read-back.
    fn push_answer_rows(&self, eval: &mut Evaluation, probe: &ProbeSet, stats: Vec<f32>) {
        let n = probe.samples() as i64;
        for (i, metric) in answer_metrics(probe).into_iter().enumerate() {
            let (value, std) = (stats[2 * i], stats[2 * i + 1]);
            eval.rows.push(DensityRow {
                key: self.logits_key(probe, metric),
                value: value as f64,
                std: std as f64,
                n,
            });
        }
        if let (Some(prior), true) = (self.prior, probe.has_answer) {
            let (value, std) = prior_stats(prior, probe);
            eval.rows.push(DensityRow {
                key: self.logits_key(probe, LogitsMetric::PriorAcc),
                value,
                std,
                n,
            });
        }
    }

    /// Each sample's `next_token_loss` and `prompt_loss` (`losses`: all of the first, then all
    /// of the second) as `samples` rows of the `logits` site, keyed as their means are in
    /// `push_answer_rows`, so `report` can score them as OOD detectors beside the density metrics.
    fn push_loss_samples(&self, eval: &mut Evaluation, probe: &ProbeSet, losses: Vec<f32>) {
        let metrics = [LogitsMetric::NextTokenLoss, LogitsMetric::PromptLoss];
        for (metric, values) in metrics.iter().zip(losses.chunks(probe.samples())) {
            let key = self.logits_key(probe, *metric);
            for (vector, &loss) in values.iter().enumerate() {
                eval.sample_rows.push(SampleRow {
                    key: key.clone(),
                    vector: vector as i64,
                    value: loss as f64,
                });
            }
        }
    }

    /// The key of a `logits` row of `probe`: the last layer, position `last`.
    fn logits_key(&self, probe: &ProbeSet, metric: LogitsMetric) -> RowKey {
        RowKey {
            probe: probe.name.clone(),
            shift_family: probe.family.name(),
            shift_level: probe.level,
            layer: self.layers as i32,
            site: LOGITS_SITE.into(),
            position: Position::Last.name(),
            metric: metric.name().into(),
        }
    }
}

/// One measured tensor, before it is reduced: which probe set, site and position it belongs to.
struct Measured {
    probe: usize,
    layer: i32,
    site: String,
    position: Position,
    /// Whether its per-vector table goes to `samples/`.
    per_sample: bool,
    /// `[vectors, width]`.
    vectors: Tensor<2>,
}

/// One metric of one measured tensor, reduced over its vectors.
struct MetricResult {
    metric: MetricSpec,
    mean: f64,
    std: f64,
    /// Finite vectors it was computed over.
    n: i64,
    /// At the plan's quantiles; empty for across-vector metrics.
    quantiles: Vec<f64>,
}

/// One measured tensor, reduced.
struct Reduced {
    metrics: Vec<MetricResult>,
    /// The per-vector table (`[vectors][columns]`), when it was read back: always on the host,
    /// from the kernels only for tensors that write samples.
    per_row: Vec<Vec<f64>>,
}

/// What is read back per measured tensor, derived once from the plan.
struct Reads<'a> {
    plan: &'a ProbePlan,
    cols: Columns,
    quantiles: Vec<f32>,
    /// The plan's across-vector metrics, in its order.
    across_metrics: Vec<MetricSpec>,
    /// The across-vector read-backs, each once: the active-fraction statistics for each distinct
    /// eps (`active_fraction@e` and `dead_fraction@e` share them), and `None` for the covariance
    /// that rankme needs.
    across_reads: Vec<Option<f64>>,
}

/// Which across-vector read-back a metric is computed from.
fn across_read(metric: &MetricSpec) -> Option<f64> {
    match *metric {
        MetricSpec::ActiveFraction(eps) | MetricSpec::DeadFraction(eps) => Some(eps),
        _ => None,
    }
}

/// `aggregate`'s read-back is `[columns, 3]`: per column the mean, std and finite count.
fn summary_of(summary: &[f32], column: usize) -> (f64, f64, i64) {
    let s = &summary[column * 3..column * 3 + 3];
    (s[0] as f64, s[1] as f64, s[2] as i64)
}

impl<'a> Reads<'a> {
    fn new(plan: &'a ProbePlan) -> Reads<'a> {
        let across_metrics: Vec<MetricSpec> = plan
            .metrics
            .iter()
            .filter(|m| !m.is_per_vector())
            .copied()
            .collect();
        let mut across_reads: Vec<Option<f64>> = Vec::new();
        for read in across_metrics.iter().map(across_read) {
            if !across_reads.contains(&read) {
                across_reads.push(read);
            }
        }
        Reads {
            plan,
            cols: Columns::for_metrics(&plan.metrics),
            quantiles: plan.quantiles.iter().map(|&q| q as f32).collect(),
            across_metrics,
            across_reads,
        }
    }

    /// Registers the kernels' read-backs of `m`, in the order `decode_kernels` takes them:
    /// quantiles (if any), the per-vector table (if `m` writes samples), the summary, then each
    /// across-vector read.
    fn register_kernels(&self, mut transaction: Transaction, m: &Measured) -> Transaction {
        let table = kernels::row_metrics(m.vectors.clone(), &self.cols);
        if !self.quantiles.is_empty() {
            transaction =
                transaction.register(kernels::column_quantiles(table.clone(), &self.quantiles));
        }
        if m.per_sample {
            transaction = transaction.register(table.clone());
        }
        transaction = transaction.register(kernels::aggregate(table.clone()));
        let valid = across::valid_rows(table);
        for read in &self.across_reads {
            transaction = transaction.register(match *read {
                Some(eps) => {
                    across::active_stats(m.vectors.clone(), valid.clone(), eps).reshape([1, 3])
                }
                None => across::covariance(m.vectors.clone(), valid.clone()),
            });
        }
        transaction
    }

    /// Decodes what `register_kernels` registered for `m`.
    fn decode_kernels(&self, next: &mut dyn FnMut() -> Vec<f32>, m: &Measured) -> Reduced {
        let width = m.vectors.dims()[1];
        let nq = self.quantiles.len();
        let q: Vec<f64> = if nq == 0 {
            Vec::new()
        } else {
            next().into_iter().map(f64::from).collect()
        };
        let mut per_row = Vec::new();
        if m.per_sample {
            let table: Vec<f64> = next().into_iter().map(f64::from).collect();
            per_row = table
                .chunks(self.cols.count())
                .map(<[f64]>::to_vec)
                .collect();
        }
        let summary = next();
        // Every per-vector column counts the same finite vectors; l1 is always computed.
        let (_, _, finite_vectors) = summary_of(&summary, Columns::L1);
        let mut metrics = Vec::new();
        for metric in self.plan.metrics.iter().filter(|m| m.is_per_vector()) {
            let c = self.cols.column(metric);
            let (mean, std, n) = summary_of(&summary, c);
            metrics.push(MetricResult {
                metric: *metric,
                mean,
                std,
                n,
                quantiles: q[c * nq..(c + 1) * nq].to_vec(),
            });
        }
        let reads: Vec<Vec<f32>> = self.across_reads.iter().map(|_| next()).collect();
        for metric in &self.across_metrics {
            let at = self
                .across_reads
                .iter()
                .position(|r| *r == across_read(metric))
                .expect("every across metric has its read");
            let v = &reads[at];
            let (mean, std) = match *metric {
                // active_stats: [mean active fraction, its std, dead fraction].
                MetricSpec::ActiveFraction(_) => (v[0] as f64, v[1] as f64),
                MetricSpec::DeadFraction(_) => (v[2] as f64, f64::NAN),
                _ => {
                    let cov: Vec<f64> = v.iter().map(|&c| f64::from(c)).collect();
                    let rank = if finite_vectors > 1 {
                        effective_rank(&cov, width)
                    } else {
                        f64::NAN
                    };
                    (rank, f64::NAN)
                }
            };
            metrics.push(MetricResult {
                metric: *metric,
                mean,
                std,
                n: finite_vectors,
                quantiles: Vec::new(),
            });
        }
        Reduced { metrics, per_row }
    }

    /// Reduces `m`'s read-back activations on the host: with `kernels::fast` (`CpuFast`), which
    /// computes only the costly columns the plan's metrics read, or with the f64 reference, whose
    /// results it matches within 1e-6.
    fn reduce_on_host(&self, data: Vec<f32>, m: &Measured, reduction: Reduction) -> Reduced {
        let width = m.vectors.dims()[1];
        let is_fast = reduction == Reduction::CpuFast;
        let per_row = if is_fast {
            let wanted = fast::Wanted::of(&self.plan.metrics);
            fast::matrix_metrics_of(&data, width, &self.cols, wanted)
        } else {
            reference::matrix_metrics(&data, width, &self.cols)
        };
        let mut metrics = Vec::new();
        for metric in &self.plan.metrics {
            let (s, quantiles) = if metric.is_per_vector() {
                let (c, qs) = (self.cols.column(metric), &self.plan.quantiles);
                if is_fast {
                    (
                        fast::aggregate(&per_row, c),
                        fast::quantiles(&per_row, c, qs),
                    )
                } else {
                    (
                        reference::aggregate(&per_row, c),
                        reference::quantiles(&per_row, c, qs),
                    )
                }
            } else if is_fast {
                let s = fast::across_vectors(&data, width, &per_row, metric);
                (s, Vec::new())
            } else {
                let s = reference::across_vectors(&data, width, &per_row, metric);
                (s, Vec::new())
            };
            metrics.push(MetricResult {
                metric: *metric,
                mean: s.mean,
                std: s.std,
                n: s.n as i64,
                quantiles,
            });
        }
        Reduced { metrics, per_row }
    }
}

/// `[samples, tokens, width]` site activations -> `[vectors, width]` at `position`: the last
/// prompt token of each sample, or every token (vector = sample * tokens + token).
pub fn vectors_at(acts: &Tensor<3>, position: Position, last: usize) -> Tensor<2> {
    let [n, t, d] = acts.dims();
    match position {
        Position::Last => acts
            .clone()
            .slice([0..n, last..last + 1, 0..d])
            .reshape([n, d]),
        Position::All => acts.clone().reshape([n * t, d]),
    }
}

/// Each sample's mean next-token losses `[samples]`.
pub struct Losses {
    /// Over every target of the sample (`LogitsMetric::NextTokenLoss`).
    pub sequence: Tensor<1>,
    /// Over the targets inside the prompt (`LogitsMetric::PromptLoss`).
    pub prompt: Tensor<1>,
}

/// Runs a probe set through the model in batches of about `batch_tokens` tokens; returns the
/// last-position logits `[samples, vocab]`, each sample's losses, and each site's activations
/// `[samples, tokens, width]`.
pub fn forward(
    model: &Gpt,
    probe: &ProbeSet,
    batch_tokens: usize,
    device: &Device,
) -> (Tensor<2>, Losses, Sites) {
    let (len, last) = (probe.len, probe.last_index());
    let per_batch = (batch_tokens / len).max(1);
    let mut logits = Vec::new();
    let mut losses = Vec::new();
    let mut prompt_losses = Vec::new();
    let mut parts: Vec<Sites> = Vec::new();
    for chunk in probe.tokens.chunks(per_batch * (len + 1)) {
        let n = chunk.len() / (len + 1);
        let mut inputs = Vec::with_capacity(n * len);
        let mut targets = Vec::with_capacity(n * len);
        for sample in chunk.chunks(len + 1) {
            inputs.extend(sample[..len].iter().map(|&t| t as i64));
            targets.extend(sample[1..].iter().map(|&t| t as i64));
        }
        let inputs = int_tensor(inputs, [n, len], device);
        let targets = int_tensor(targets, [n, len, 1], device);
        let (l, sites) = model.forward_with_sites(inputs);
        let v = l.dims()[2];
        let nll = -log_softmax(l.clone(), 2).gather(2, targets);
        // Positions 0..last predict the prompt's own tokens 1..=last.
        prompt_losses.push(if last > 0 {
            nll.clone()
                .slice([0..n, 0..last, 0..1])
                .mean_dim(1)
                .reshape([n])
        } else {
            Tensor::<1>::full([n], f32::NAN, device)
        });
        losses.push(nll.mean_dim(1).reshape([n]));
        logits.push(l.slice([0..n, last..last + 1, 0..v]).reshape([n, v]));
        parts.push(sites);
    }
    let cat = |pick: &dyn Fn(&Sites) -> Vec<Tensor<3>>| -> Vec<Tensor<3>> {
        let per_part: Vec<Vec<Tensor<3>>> = parts.iter().map(pick).collect();
        (0..per_part[0].len())
            .map(|i| Tensor::cat(per_part.iter().map(|p| p[i].clone()).collect(), 0))
            .collect()
    };
    let sites = Sites {
        attn_out: cat(&|s| s.attn_out.clone()),
        mlp_post: cat(&|s| s.mlp_post.clone()),
        resid_post: cat(&|s| s.resid_post.clone()),
        final_norm: cat(&|s| s.final_norm.clone().into_iter().collect())
            .into_iter()
            .next(),
    };
    let losses = Losses {
        sequence: Tensor::cat(losses, 0),
        prompt: Tensor::cat(prompt_losses, 0),
    };
    (Tensor::cat(logits, 0), losses, sites)
}

/// One measured site of a forward pass.
pub struct NamedSite {
    /// The block index, or the number of blocks for `final.norm`.
    pub layer: i32,
    pub kind: SiteKind,
    /// `blocks.{i}.{kind}` or `final.norm`.
    pub name: String,
    /// `[samples, tokens, width]`.
    pub acts: Tensor<3>,
}

/// The configured sites with their layer index and full name, in a stable order.
pub fn named_sites(sites: Sites, kinds: &[SiteKind], layers: usize) -> Vec<NamedSite> {
    let mut out = Vec::new();
    for layer in 0..layers {
        for &kind in kinds {
            let acts = match kind {
                SiteKind::ResidPost => &sites.resid_post[layer],
                SiteKind::MlpPost => &sites.mlp_post[layer],
                SiteKind::AttnOut => &sites.attn_out[layer],
                SiteKind::FinalNorm => continue,
            };
            out.push(NamedSite {
                layer: layer as i32,
                kind,
                name: format!("blocks.{layer}.{}", kind.suffix()),
                acts: acts.clone(),
            });
        }
    }
    if kinds.contains(&SiteKind::FinalNorm) {
        out.push(NamedSite {
            layer: layers as i32,
            kind: SiteKind::FinalNorm,
            name: SiteKind::FinalNorm.suffix().to_string(),
            acts: sites
                .final_norm
                .expect("the forward pass records final.norm"),
        });
    }
    out
}

/// The logits-site metrics of a probe set, in the order `answer_stats` computes them:
/// `next_token_loss` and `prompt_loss` always; `answer_loss` and `answer_acc` for rule-graph
/// answers; `choice_acc` for multiple choice.
pub fn answer_metrics(probe: &ProbeSet) -> Vec<LogitsMetric> {
    let mut metrics = vec![LogitsMetric::NextTokenLoss, LogitsMetric::PromptLoss];
    if probe.has_answer {
        metrics.extend([LogitsMetric::AnswerLoss, LogitsMetric::AnswerAcc]);
    }
    if probe.options.is_some() {
        metrics.push(LogitsMetric::ChoiceAcc);
    }
    metrics
}

/// For multiple choice, `[samples, k]`: each option's mean log-probability per token (minus its
/// length-normalised cross-entropy) as the continuation of the sample's input. Single-token
/// options read it off the last position's `logits`; longer ones take a forward pass per option.
fn option_scores(
    model: &Gpt,
    probe: &ProbeSet,
    logits: &Tensor<2>,
    batch_tokens: usize,
    device: &Device,
) -> Option<Tensor<2>> {
    let options = probe.options.as_ref()?;
    let (n, k, m, len) = (
        probe.samples(),
        probe.option_count(),
        probe.option_len,
        probe.len,
    );
    if m == 1 {
        let ids = int_tensor(options.iter().map(|&t| t as i64).collect(), [n, k], device);
        return Some(log_softmax(logits.clone(), 1).gather(1, ids));
    }
    // Row (i, j): sample i's input, then option j but its last token; the last m positions
    // predict option j's tokens.
    let read = len + m - 1;
    let per_batch = (batch_tokens / read).max(1);
    let rows: Vec<(usize, usize)> = (0..n).flat_map(|i| (0..k).map(move |j| (i, j))).collect();
    let mut scores = Vec::new();
    for chunk in rows.chunks(per_batch) {
        let (mut inputs, mut targets) = (Vec::new(), Vec::new());
        for &(i, j) in chunk {
            let option = &options[(i * k + j) * m..(i * k + j + 1) * m];
            inputs.extend(probe.sample(i)[..len].iter().map(|&t| t as i64));
            inputs.extend(option[..m - 1].iter().map(|&t| t as i64));
            targets.extend(option.iter().map(|&t| t as i64));
        }
        let b = chunk.len();
        let l = model.forward(int_tensor(inputs, [b, read], device));
        let v = l.dims()[2];
        let tail = l.slice([0..b, len - 1..read, 0..v]);
        let targets = int_tensor(targets, [b, m, 1], device);
        let logp = log_softmax(tail, 2).gather(2, targets);
        scores.push(logp.mean_dim(1).reshape([b]));
    }
    Some(Tensor::cat(scores, 0).reshape([n, k]))
}

/// `[2 * answer_metrics(probe).len()]`: the mean and sample std over samples of each metric.
/// Multiple choice picks the option with the highest score (`option_scores`: the lowest
/// length-normalised cross-entropy).
fn answer_stats(
    logits: Tensor<2>,
    losses: Losses,
    scores: Option<Tensor<2>>,
    probe: &ProbeSet,
    device: &Device,
) -> Tensor<1> {
    let n = probe.samples();
    let stats = |x: Tensor<2>| {
        let x = x.reshape([n]);
        let std = if n > 1 {
            x.clone().var(0).sqrt()
        } else {
            Tensor::<1>::from_floats([f32::NAN], device)
        };
        Tensor::cat(vec![x.mean().reshape([1]), std], 0)
    };
    let mut parts = vec![
        stats(losses.sequence.reshape([n, 1])),
        stats(losses.prompt.reshape([n, 1])),
    ];
    if probe.has_answer {
        let answers = int_tensor(
            (0..n).map(|i| probe.sample(i)[probe.len] as i64).collect(),
            [n, 1],
            device,
        );
        let loss = -log_softmax(logits.clone(), 1).gather(1, answers.clone());
        let correct = logits.clone().argmax(1).equal(answers).float();
        parts.extend([stats(loss), stats(correct)]);
    }
    if let (Some(scores), Some(correct)) = (scores, &probe.correct) {
        let correct = int_tensor(correct.iter().map(|&c| c as i64).collect(), [n, 1], device);
        parts.push(stats(scores.argmax(1).equal(correct).float()));
    }
    Tensor::cat(parts, 0)
}

/// `prior_acc` of an answered probe set: the mean and sample std over samples of whether the
/// prior's answer after the sample's last read token is the sample's answer (a token with no
/// prior answer counts as wrong).
pub fn prior_stats(prior: &Prior, probe: &ProbeSet) -> (f64, f64) {
    let n = probe.samples();
    let hits: Vec<f64> = (0..n)
        .map(|i| {
            let s = probe.sample(i);
            (prior.answer(s[probe.last_index()]) == Some(s[probe.len])) as u8 as f64
        })
        .collect();
    let mean = hits.iter().sum::<f64>() / n.max(1) as f64;
    let std = if n > 1 {
        (hits.iter().map(|h| (h - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
    } else {
        f64::NAN
    };
    (mean, std)
}

/// Token ids (or indices) as an Int tensor of `shape` on `device`.
fn int_tensor<const D: usize>(
    values: Vec<i64>,
    shape: [usize; D],
    device: &Device,
) -> Tensor<D, Int> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ModelConfig, ShiftFamily};

    /// Log-softmax in f64 of one row of logits.
    fn log_probs(row: &[f32]) -> Vec<f64> {
        let max = row.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
        let sum: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
        row.iter().map(|&x| x as f64 - max - sum.ln()).collect()
    }

    /// `prior_acc` of a set of held-out facts against a brute-force count over the training
    /// facts: the share of samples whose answer is the most common training tail of the
    /// sample's relation (ties: the smallest entity id).
    #[test]
    fn prior_acc_matches_a_brute_force_count_over_the_training_facts() {
        use crate::config::{DeductionConfig, RuleGraphConfig};
        use crate::data::rulegraph::KnowledgeBase;
        let kb = KnowledgeBase::generate(
            &RuleGraphConfig {
                entities: 30,
                relations: 3,
                deduction: Some(DeductionConfig::default()),
                ..RuleGraphConfig::default()
            },
            6,
        );
        let prior = Prior::new(&kb);
        let mut facts = kb.held_out.clone();
        facts.extend(kb.train.iter().step_by(7));
        let tokens: Vec<u32> = facts.iter().flat_map(|f| kb.sequence(f)).collect();
        let probe = ProbeSet {
            name: "p".into(),
            family: ShiftFamily::Hops,
            level: 2.0,
            len: 3,
            tokens,
            has_answer: true,
            options: None,
            option_len: 1,
            correct: None,
            distance: 0.0,
            novelty: 0.0,
        };
        let hits: Vec<f64> = facts
            .iter()
            .map(|fact| {
                let count = |tail: u32| {
                    kb.train
                        .iter()
                        .filter(|f| f.relation == fact.relation && f.tail == tail)
                        .count()
                };
                let most = (0..kb.entities as u32).map(count).max().unwrap();
                let first = (0..kb.entities as u32).find(|&t| count(t) == most).unwrap();
                (first == fact.tail) as u8 as f64
            })
            .collect();
        let n = hits.len() as f64;
        let mean = hits.iter().sum::<f64>() / n;
        let std = (hits.iter().map(|h| (h - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
        let (got_mean, got_std) = prior_stats(&prior, &probe);
        assert!(mean > 0.0 && mean < 1.0, "{mean}: a test that can tell");
        assert!((got_mean - mean).abs() < 1e-12, "{got_mean} vs {mean}");
        assert!((got_std - std).abs() < 1e-12, "{got_std} vs {std}");
    }

    /// next_token_loss, answer_loss, answer_acc and choice_acc against a direct computation from
    /// the model's logits, with samples split over several forward passes; options of one token
    /// (read off the last position) and of three (scored by their own forward passes).
    #[test]
    fn logits_metrics_match_a_direct_computation() {
        for option_len in [1, 3] {
            check_logits_metrics(option_len);
        }
    }

    fn check_logits_metrics(m: usize) {
        let device = Device::flex();
        let vocab = 11;
        let model = ModelConfig {
            layers: 1,
            d_model: 8,
            heads: 2,
            d_ff: 16,
            seq_len: 8,
            ..ModelConfig::default()
        }
        .init(vocab, &device);
        let (samples, len, k) = (5, 4, 3);
        let tokens: Vec<u32> = (0..samples * (len + 1))
            .map(|i| (i * 7 % vocab) as u32)
            .collect();
        let options: Vec<u32> = (0..samples * k * m)
            .map(|i| (i * 5 % vocab) as u32)
            .collect();
        let correct: Vec<u32> = (0..samples).map(|i| (i % k) as u32).collect();
        let probe = ProbeSet {
            name: "t".into(),
            family: ShiftFamily::Options,
            level: k as f64,
            len,
            tokens: tokens.clone(),
            has_answer: true,
            options: Some(options.clone()),
            option_len: m,
            correct: Some(correct.clone()),
            distance: 0.0,
            novelty: 0.0,
        };
        // Two samples (or two options) per forward pass: several passes.
        let (logits, losses, _) = forward(&model, &probe, 2 * len, &device);
        let scores = option_scores(&model, &probe, &logits, 2 * (len + m - 1), &device);
        let got: Vec<f32> = answer_stats(logits, losses, scores, &probe, &device)
            .into_data()
            .try_to_vec()
            .unwrap();

        // The logits of `sequence`, row by position.
        let logits_of = |sequence: &[u32]| -> Vec<Vec<f32>> {
            let t = sequence.len();
            let ids: Vec<i64> = sequence.iter().map(|&x| x as i64).collect();
            let all = model
                .forward(Tensor::<2, Int>::from_data(
                    TensorData::new(ids, [1, t]),
                    &device,
                ))
                .into_data()
                .try_to_vec::<f32>()
                .unwrap();
            all.chunks(vocab).map(<[f32]>::to_vec).collect()
        };
        let (mut next, mut prompt, mut answer) = (vec![], vec![], vec![]);
        let (mut acc, mut choice) = (vec![], vec![]);
        for i in 0..samples {
            let sample = &tokens[i * (len + 1)..(i + 1) * (len + 1)];
            let rows = logits_of(&sample[..len]);
            let per_position: Vec<f64> = (0..len)
                .map(|p| -log_probs(&rows[p])[sample[p + 1] as usize])
                .collect();
            next.push(per_position.iter().sum::<f64>() / len as f64);
            // The prompt is the first `len` tokens: positions 0..len-1 predict its own tokens.
            let last = probe.last_index();
            prompt.push(per_position[..last].iter().sum::<f64>() / last as f64);
            answer.push(per_position[len - 1]);
            let last = &rows[len - 1];
            let argmax = (0..vocab)
                .max_by(|&a, &b| last[a].total_cmp(&last[b]))
                .unwrap();
            acc.push((argmax == sample[len] as usize) as u8 as f64);
            // Each option: its tokens' mean log-probability after the sample's input.
            let score = |j: usize| -> f64 {
                let option = &options[(i * k + j) * m..(i * k + j + 1) * m];
                let mut sequence = sample[..len].to_vec();
                sequence.extend(&option[..m - 1]);
                let rows = logits_of(&sequence);
                (0..m)
                    .map(|t| log_probs(&rows[len - 1 + t])[option[t] as usize])
                    .sum::<f64>()
                    / m as f64
            };
            let best = (0..k)
                .max_by(|&a, &b| score(a).total_cmp(&score(b)))
                .unwrap();
            choice.push((best == correct[i] as usize) as u8 as f64);
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let expected = [
            mean(&next),
            mean(&prompt),
            mean(&answer),
            mean(&acc),
            mean(&choice),
        ];
        for (j, e) in expected.iter().enumerate() {
            let g = got[2 * j] as f64;
            assert!(
                (g - e).abs() < 1e-5 * (1.0 + e.abs()),
                "option_len {m}, metric {j}: {g} vs {e}"
            );
        }
        assert_eq!(got.len(), 10);
        assert!(
            expected[0] != expected[1] && expected[0] != expected[2] && expected[1] != expected[2],
            "the test cannot tell all positions, the prompt's and the last apart"
        );
    }
}
