//! One evaluation, orchestrated: every probe set through the model (`forward`), every site and
//! position reduced to (mean, std, n) per metric (`reduce`), and the rows of the tables built
//! from what came back (`rows`), with each probe set's next-token loss (and, where the set has
//! them, the answer's loss and accuracy and the multiple-choice accuracy: `answers`).
//!
//! On a wgpu device the activations never leave it: the WGSL kernels reduce each
//! `[vectors, width]` site tensor to a `[columns, 3]` summary, and all summaries of the evaluation
//! come back in one `Transaction`. On the CPU backend the activations are read back and reduced
//! on the host by `kernels::fast`, or, with `probes.reduction: reference` (on either device), by
//! the f64 reference. `readback_bytes` counts what crossed, either way.

pub mod answers;
pub mod forward;
pub mod reduce;
mod rows;

use anyhow::Result;
use burn::prelude::*;

use crate::config::{Config, ProbePlan};
use crate::data::probes::ProbeSet;
use crate::data::rulegraph::Prior;
use crate::device::RunDevice;
use crate::metrics::Position;
use crate::model::Gpt;
use crate::rundir::RunDir;
use crate::rundir::tables::{DensityRow, QuantileRow, SampleRow};

use forward::Measured;
use reduce::{ReadbackPlan, Reads, Reduced, Reduction};

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

/// What one evaluation measures, and where: the probe sets, the plan (sites, positions, metrics,
/// quantiles) and the reduction.
/// Built only by `Probing::new`, so the reduction and the read-back plan always agree.
pub struct Probing<'a> {
    sets: &'a [ProbeSet],
    plan: ProbePlan,
    /// The model's blocks: `final.norm` and `logits` rows carry this as their layer.
    layers: usize,
    /// Probe tokens per forward pass.
    batch_tokens: usize,
    device: &'a Device,
    /// The rule graph's frequency prior: each answered set gets a `prior_acc` row beside its
    /// `answer_acc`. `None` for documents.
    prior: Option<&'a Prior>,
    /// The reduction, and what each evaluation reads back for it, derived once from the plan.
    readback: ReadbackPlan,
}

impl<'a> Probing<'a> {
    /// `config`'s evaluation of `sets` on `device`: its probe plan and batch size, reduced as
    /// `probes.reduction` chooses on that device (`Reduction::for_config`).
    pub fn new(
        config: &Config,
        device: &'a RunDevice,
        sets: &'a [ProbeSet],
        prior: Option<&'a Prior>,
    ) -> Probing<'a> {
        let plan = config.probe_plan();
        let reduction = Reduction::for_config(device, config.probes.reduction);
        Probing {
            sets,
            readback: ReadbackPlan::new(&plan, reduction),
            plan,
            layers: config.model.layers,
            batch_tokens: config.probes.batch_size,
            device: &device.device,
            prior,
        }
    }

    /// Who turns the activations into metrics (the manifest records its name).
    pub fn reduction(&self) -> Reduction {
        self.readback.reduction
    }

    /// Measures every probe set on `model`.
    pub fn evaluate(&self, model: &Gpt) -> Evaluation {
        let started = std::time::Instant::now();
        let (measured, answers) = self.forward_all(model);
        let forward = started.elapsed().as_secs_f64();

        // Everything the evaluation needs comes back in one transaction, decoded by the same
        // recorded entries that registered it.
        let read = self.readback.register(&measured, &answers).execute();
        let mut eval = Evaluation {
            rows: Vec::new(),
            quantile_rows: Vec::new(),
            sample_rows: Vec::new(),
            readback_bytes: read.bytes,
            timing: EvaluationTiming {
                forward,
                ..EvaluationTiming::default()
            },
        };
        for (m, reduced) in measured
            .iter()
            .zip(self.reduce_all(&measured, read.tensors))
        {
            self.push_rows(&mut eval, m, reduced);
        }
        for (probe, reads) in self.sets.iter().zip(read.sets) {
            self.push_answer_rows(&mut eval, probe, reads.stats);
            if let Some(losses) = reads.losses {
                self.push_loss_samples(&mut eval, probe, losses);
            }
        }
        eval.timing.reduce = started.elapsed().as_secs_f64() - forward;
        eval
    }

    /// Reduces every measured tensor from its read-backs, in `measured`'s order. On the host, a
    /// `last` tensor whose probe set and site are measured at `all` too takes its per-vector
    /// table from that tensor's: the rows of each sample's last prompt token are the same vectors,
    /// so the same values, and are not computed twice (a quarter of the quickstart's per-vector
    /// work). Its aggregates, quantiles and across-vector metrics are its own, as before.
    fn reduce_all(&self, measured: &[Measured], reads: Vec<Reads>) -> Vec<Reduced> {
        let twin = |m: &Measured| {
            if !self.readback.reduction.on_host() || m.position != Position::Last {
                return None;
            }
            measured.iter().position(|o| {
                o.position == Position::All
                    && (o.probe, o.layer, &o.site) == (m.probe, m.layer, &m.site)
            })
        };
        let twins: Vec<Option<usize>> = measured.iter().map(twin).collect();
        let mut reads: Vec<Option<Reads>> = reads.into_iter().map(Some).collect();
        let mut reduced: Vec<Option<Reduced>> = measured.iter().map(|_| None).collect();
        for (i, m) in measured.iter().enumerate() {
            if twins[i].is_none() {
                let reads = reads[i].take().expect("one read-back per tensor");
                reduced[i] = Some(self.readback.reduce(reads, m, None));
            }
        }
        for (i, m) in measured.iter().enumerate() {
            let Some(all) = twins[i] else { continue };
            let all_rows = &reduced[all].as_ref().expect("reduced above").per_row;
            let samples = m.vectors.dims()[0];
            let tokens = all_rows.len() / samples;
            assert_eq!(tokens * samples, all_rows.len(), "all = samples x tokens");
            let last = self.sets[m.probe].last_index();
            let rows = (0..samples)
                .map(|s| all_rows[s * tokens + last].clone())
                .collect();
            let reads = reads[i].take().expect("one read-back per tensor");
            reduced[i] = Some(self.readback.reduce(reads, m, Some(rows)));
        }
        reduced
            .into_iter()
            .map(|r| r.expect("every tensor reduced"))
            .collect()
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
}
