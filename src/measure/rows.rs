//! The rows of the tables: density, quantile and sample rows from each measured tensor's
//! reduced metrics, and the `logits` rows from each probe set's answer statistics and losses.

use super::answers::{answer_metrics, prior_stats};
use super::forward::Measured;
use super::reduce::Reduced;
use super::{Evaluation, Probing};
use crate::data::probes::ProbeSet;
use crate::metrics::{LOGITS_SITE, LogitsMetric, MetricSpec, Position};
use crate::rundir::tables::{DensityRow, QuantileRow, RowKey, SampleRow};

impl Probing<'_> {
    /// The density, quantile and (with `per_sample`) sample rows of one measured tensor, in the
    /// config's metric order.
    pub(super) fn push_rows(&self, eval: &mut Evaluation, m: &Measured, mut reduced: Reduced) {
        let (probe, cols) = (&self.sets[m.probe], &self.readback.cols);
        let key = |metric: &MetricSpec| RowKey {
            probe: probe.name.clone(),
            shift_family: probe.family.name(),
            shift_level: probe.level,
            layer: m.layer,
            site: m.site.clone(),
            position: m.position.name(),
            metric: metric.to_string(),
        };
        let plan = &self.plan;
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
    pub(super) fn push_answer_rows(
        &self,
        eval: &mut Evaluation,
        probe: &ProbeSet,
        stats: Vec<f32>,
    ) {
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
    pub(super) fn push_loss_samples(
        &self,
        eval: &mut Evaluation,
        probe: &ProbeSet,
        losses: Vec<f32>,
    ) {
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
