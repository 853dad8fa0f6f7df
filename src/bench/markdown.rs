//! The Markdown rendering of a `densitrace bench` report (the format BENCHMARKS.md documents).

use super::BenchReport;
use crate::measure::reduce::Reduction;

impl BenchReport {
    /// The report as Markdown (the format BENCHMARKS.md documents).
    pub fn markdown(&self) -> String {
        let opt = |v: Option<f64>, digits: usize| match v {
            Some(v) => format!("{v:.digits$}"),
            None => "-".into(),
        };
        let mut out = String::new();
        out.push_str(&format!(
            "# densitrace bench{}\n\nadapter: {}\n\n",
            if self.quick { " --quick" } else { "" },
            self.adapter
        ));
        out.push_str(&format!(
            "## Density kernels\n\nmedian of {} runs after {} warm-up runs; each run reads its result back. \
             copy: an element-wise copy on the device (read + write); share: the kernels' read \
             GB/s over the copy's.{}\n\n",
            self.repeats,
            self.warmup,
            if self.backend == "wgpu" {
                " host: the f64 reference; host fast: `kernels::fast` (fast speed-up: host over host fast)."
            } else {
                " On the CPU backend only the host reductions run (the kernels need wgpu): the f64 \
                 reference (host) and `kernels::fast` (host fast; fast speed-up: host over host fast)."
            }
        ));
        out.push_str(
            "| family | vectors x width | MB | copy GB/s | WGSL ms | WGSL GB/s | share of copy | Burn ops ms | WGSL speed-up | host ms | WGSL speed-up | host fast ms | fast speed-up |\n\
             | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
        );
        for r in &self.kernels {
            let speedup = |other: Option<f64>| match (other, r.wgsl_ms) {
                (Some(o), Some(w)) => format!("{:.1}x", o / w),
                _ => "-".into(),
            };
            out.push_str(&format!(
                "| {} | {} x {} | {:.1} | {} | {} | {} | {} | {} | {} | {:.2} | {} | {:.2} | {:.1}x |\n",
                r.family,
                r.vectors,
                r.width,
                r.mb,
                opt(r.copy_gb_s, 2),
                opt(r.wgsl_ms, 2),
                opt(r.wgsl_gb_s, 2),
                r.share_of_copy
                    .map_or("-".into(), |s| format!("{:.0}%", s * 100.0)),
                opt(r.burn_ms, 2),
                speedup(r.burn_ms),
                r.host_ms,
                speedup(Some(r.host_ms)),
                r.host_fast_ms,
                r.host_ms / r.host_fast_ms,
            ));
        }
        out.push_str(
            "\n## Training and instrumentation\n\nms/step: median after the warm-up steps, from the run's train table. \
             evaluation: the config's probe sets once (after a first, warm-up evaluation). \
             share: evaluations x evaluation time over steps x step time, at the config's full schedule.\n\n\
             forward / metrics / writes: where the evaluation's seconds go (on wgpu the forward passes are only queued; \
             the device's work is in metrics, which waits for the read-back).\n\n\
             | model | parameters | tokens/step | steps timed | ms/step | tokens/s | evaluation s | forward / metrics / writes s | evaluations / steps | instrumentation share |\n\
             | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
        );
        for t in &self.training {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {:.2} | {:.0} | {:.2} | {:.2} / {:.2} / {:.2} | {} / {} | {:.1}% |\n",
                t.model,
                t.parameters,
                t.tokens_per_step,
                t.steps_timed,
                t.ms_per_step,
                t.tokens_per_s,
                t.evaluation_s,
                t.forward_s,
                t.metrics_s,
                t.write_s,
                t.schedule_evaluations,
                t.schedule_steps,
                t.instrumentation_share * 100.0
            ));
        }
        if !self.evaluations.is_empty() {
            out.push_str(
                "\n## Evaluation split by reduction (CPU backend)\n\n\
                 The trained model's probe sets evaluated with `kernels::fast` (`probes.reduction: fast`, \
                 the default) and with the f64 reference (`probes.reduction: reference`), alternating in \
                 this process; medians over the rounds. metrics: the read-back and the reduction.\n\n\
                 | model | reduction | rounds | forward s | metrics s | metrics / forward | metrics speed-up |\n\
                 | --- | --- | --- | --- | --- | --- | --- |\n",
            );
            for e in &self.evaluations {
                let reference = self
                    .evaluations
                    .iter()
                    .find(|r| r.model == e.model && r.reduction == Reduction::Reference.name())
                    .map_or(f64::NAN, |r| r.metrics_s);
                out.push_str(&format!(
                    "| {} | {} | {} | {:.3} | {:.3} | {:.2} | {:.1}x |\n",
                    e.model,
                    e.reduction,
                    e.rounds,
                    e.forward_s,
                    e.metrics_s,
                    e.metrics_s / e.forward_s,
                    reference / e.metrics_s,
                ));
            }
        }
        out
    }
}
