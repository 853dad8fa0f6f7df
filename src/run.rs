//! One run, end to end: check everything the user gave us, then create the run directory, train
//! with evaluations, write the final weights and print the summary table.
//!
//! All bad input (config, device, data) is found before the run directory exists.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use burn::module::Module;
use serde::Serialize;

use crate::config::Config;
use crate::data::{probes, rulegraph::KnowledgeBase};
use crate::device::{self, AdapterSummary};
use crate::error::InputError;
use crate::evaluate::evaluate;
use crate::progress::Progress;
use crate::sink::{DensityRow, RunDir};
use crate::train::{self, tokens_seen};

#[derive(Debug, Serialize)]
struct Manifest {
    densitrace_version: &'static str,
    git_revision: Option<String>,
    command_line: Vec<String>,
    run_id: String,
    seed: u64,
    device: DeviceRecord,
    vocab_size: usize,
    train_facts: usize,
    held_out_facts: usize,
    parameters: usize,
    start_time: String,
    end_time: Option<String>,
    status: &'static str,
    evaluations: Vec<EvaluationRecord>,
}

#[derive(Debug, Serialize)]
struct DeviceRecord {
    backend: &'static str,
    reason: String,
    adapter: Option<AdapterSummary>,
}

#[derive(Debug, Serialize)]
struct EvaluationRecord {
    step: usize,
    rows: usize,
    /// Bytes read back from the device for this evaluation.
    readback_bytes: u64,
    seconds: f64,
}

/// What a finished run leaves for its caller.
pub struct RunOutcome {
    pub dir: PathBuf,
    /// Every density row of the first and the last evaluation.
    pub first: Vec<DensityRow>,
    pub last: Vec<DensityRow>,
    /// The steps of the first and last evaluation.
    pub steps: (usize, usize),
}

pub fn run(config: &Config, out: &Path, command_line: Vec<String>) -> Result<RunOutcome> {
    let run_device = device::select(config.device)?;
    tracing::info!("{}", run_device.reason);
    let kb = KnowledgeBase::generate(config.rulegraph(), config.seed);
    let probe_sets = probes::build(config, &kb)?;
    let plan = config.probe_plan();
    tracing::info!(
        "rule graph: {} training facts, {} held out, vocabulary {}; {} probe sets",
        kb.train.len(),
        kb.held_out.len(),
        kb.vocab_size(),
        probe_sets.len()
    );

    let dir = RunDir::create(out, &config.name, config.seed).map_err(|e| {
        InputError::Other(format!(
            "cannot create a run directory under {}: {e}",
            out.display()
        ))
    })?;
    tracing::info!("run directory {}", dir.root.display());
    dir.write_atomic("config.yaml", config.to_yaml().as_bytes())?;
    let mut manifest = Manifest {
        densitrace_version: env!("CARGO_PKG_VERSION"),
        git_revision: git_revision(),
        command_line,
        run_id: dir.run_id.clone(),
        seed: config.seed,
        device: DeviceRecord {
            backend: run_device.backend,
            reason: run_device.reason.clone(),
            adapter: run_device.adapter.clone(),
        },
        vocab_size: kb.vocab_size(),
        train_facts: kb.train.len(),
        held_out_facts: kb.held_out.len(),
        parameters: 0,
        start_time: chrono::Utc::now().to_rfc3339(),
        end_time: None,
        status: "running",
        evaluations: Vec::new(),
    };
    let write_manifest = |m: &Manifest| {
        dir.write_atomic("manifest.json", serde_json::to_string_pretty(m)?.as_bytes())
    };
    write_manifest(&manifest)?;

    let started = Instant::now();
    let progress = Progress::new(config.train.steps);
    let mut first = None;
    let mut last = (0, Vec::new());
    let model = train::train(
        config,
        &kb,
        &run_device.device,
        &progress,
        |step, model, train_rows| {
            let t0 = Instant::now();
            manifest.parameters = model.num_params();
            let eval = evaluate(
                model,
                &probe_sets,
                &plan,
                config.model.layers,
                config.probes.batch_size,
                &run_device.device,
                run_device.measures_on_device(),
            );
            let wall = started.elapsed().as_secs_f64();
            let tokens = tokens_seen(&config.train, step);
            dir.write_density(step as i64, tokens, wall, &eval.rows)?;
            if !eval.quantile_rows.is_empty() {
                dir.write_quantiles(step as i64, tokens, wall, &eval.quantile_rows)?;
            }
            if !eval.sample_rows.is_empty() {
                dir.write_samples(step as i64, &eval.sample_rows)?;
            }
            if !train_rows.is_empty() {
                dir.write_train(step as i64, train_rows)?;
            }
            let seconds = t0.elapsed().as_secs_f64();
            tracing::info!(
                "step {step}: evaluated {} probe sets in {seconds:.2}s, {} rows, {} bytes read back",
                probe_sets.len(),
                eval.rows.len(),
                eval.readback_bytes
            );
            manifest.evaluations.push(EvaluationRecord {
                step,
                rows: eval.rows.len(),
                readback_bytes: eval.readback_bytes,
                seconds,
            });
            write_manifest(&manifest)?;
            if first.is_none() {
                first = Some((step, eval.rows.clone()));
            }
            last = (step, eval.rows);
            Ok(())
        },
    )?;
    drop(progress);

    let checkpoint = dir.root.join("checkpoints/final");
    std::fs::create_dir_all(&checkpoint)?;
    model
        .save_file(checkpoint.join("model.bpk"))
        .with_context(|| format!("saving the final weights to {}", checkpoint.display()))?;
    dir.write_atomic("checkpoints/final/DONE", b"")?;

    manifest.end_time = Some(chrono::Utc::now().to_rfc3339());
    manifest.status = "completed";
    write_manifest(&manifest)?;
    Ok(RunOutcome {
        dir: dir.root,
        steps: (first.as_ref().map_or(0, |f| f.0), last.0),
        first: first.map(|f| f.1).unwrap_or_default(),
        last: last.1,
    })
}

fn git_revision() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The end-of-run table: per probe set and level, a final-norm metric at the first and last
/// evaluation (position `last`), with the answer accuracy beside it.
pub fn summary_table(outcome: &RunOutcome, metric: &str) -> String {
    let pick = |rows: &[DensityRow], probe: &str, level: f64, site: &str, metric: &str| {
        rows.iter()
            .find(|r| {
                r.probe == probe
                    && r.shift_level == level
                    && r.site == site
                    && r.position == "last"
                    && r.metric == metric
            })
            .map(|r| r.value)
    };
    let mut keys: Vec<(String, f64)> = Vec::new();
    for r in &outcome.last {
        if !keys
            .iter()
            .any(|(p, l)| *p == r.probe && *l == r.shift_level)
        {
            keys.push((r.probe.clone(), r.shift_level));
        }
    }
    let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
    let mut out = format!(
        "{:<12} {:>6}  {:>12} {:>12} {:>9}  {:>9}\n",
        "probe",
        "level",
        format!("step {}", outcome.steps.0),
        format!("step {}", outcome.steps.1),
        "change",
        "accuracy"
    );
    for (probe, level) in keys {
        let a = pick(&outcome.first, &probe, level, "final.norm", metric);
        let b = pick(&outcome.last, &probe, level, "final.norm", metric);
        let change = a.zip(b).map(|(a, b)| b - a);
        let acc = pick(&outcome.last, &probe, level, "logits", "answer_acc");
        out.push_str(&format!(
            "{probe:<12} {level:>6}  {:>12} {:>12} {:>9}  {:>9}\n",
            fmt(a),
            fmt(b),
            change.map_or("-".into(), |c| format!("{c:+.4}")),
            fmt(acc)
        ));
    }
    out
}
