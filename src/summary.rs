//! The table `densitrace run` prints when a run ends: per probe set and level, the headline
//! metric of `final.norm` at the last token at the first and last evaluation, with the loss and
//! accuracy beside it.

use crate::metrics::{LOGITS_SITE, LogitsMetric, Position, SiteKind};
use crate::run::RunOutcome;
use crate::rundir::tables::DensityRow;

/// The end-of-run table: per probe set and level, a final-norm metric at the first and last
/// evaluation (position `last`), with the answer accuracy beside it.
pub fn summary_table(outcome: &RunOutcome) -> String {
    let metric = outcome.summary_metric.as_str();
    let pick = |rows: &[DensityRow], probe: &str, level: f64, site: &str, metric: &str| {
        rows.iter()
            .map(|r| (&r.key, r.value))
            .find(|(k, _)| {
                k.probe == probe
                    && k.shift_level == level
                    && k.site == site
                    && k.position == Position::Last.name()
                    && k.metric == metric
            })
            .map(|(_, value)| value)
    };
    let mut keys: Vec<(String, f64)> = Vec::new();
    for k in outcome.last.iter().map(|r| &r.key) {
        if !keys
            .iter()
            .any(|(p, l)| *p == k.probe && *l == k.shift_level)
        {
            keys.push((k.probe.clone(), k.shift_level));
        }
    }
    let final_norm = SiteKind::FinalNorm.suffix();
    let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
    let mut out = format!(
        "{:<12} {:>6}  {:>12} {:>12} {:>9}  {:>9} {:>9}\n",
        "probe",
        "level",
        format!("step {}", outcome.steps.0),
        format!("step {}", outcome.steps.1),
        "change",
        "loss",
        "accuracy"
    );
    for (probe, level) in keys {
        let a = pick(&outcome.first, &probe, level, final_norm, metric);
        let b = pick(&outcome.last, &probe, level, final_norm, metric);
        let change = a.zip(b).map(|(a, b)| b - a);
        let logits = |m: LogitsMetric| pick(&outcome.last, &probe, level, LOGITS_SITE, m.name());
        let loss = logits(LogitsMetric::NextTokenLoss);
        let acc = logits(LogitsMetric::ChoiceAcc).or_else(|| logits(LogitsMetric::AnswerAcc));
        out.push_str(&format!(
            "{probe:<12} {level:>6}  {:>12} {:>12} {:>9}  {:>9} {:>9}\n",
            fmt(a),
            fmt(b),
            change.map_or("-".into(), |c| format!("{c:+.4}")),
            fmt(loss),
            fmt(acc)
        ));
    }
    out
}
