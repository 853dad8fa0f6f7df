//! `densitrace probe`: new probe sets measured on a finished run's final weights, so shifts can
//! be swapped after training. The sets come from a YAML file (`sets:` as in a config's `probes`,
//! optionally `samples:`), are drawn from the run's data with the run's seed and saved tokenizer,
//! and land in their own tables under `RUN_DIR/probes/<name>/`, beside the run's own:
//!
//! ```text
//! probes/<name>/probes.yaml                        the file as given
//! probes/<name>/probes.json                        the drawn sets (token ids) and their hash
//! probes/<name>/density/step-NNNNNN/part-0.parquet the density table's schema, at the final step
//! probes/<name>/quantiles/step-NNNNNN/part-0.parquet
//! ```
//!
//! The output folder is written under a temporary name and renamed when complete, so a failed or
//! interrupted command leaves nothing under `<name>`.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use serde::Deserialize;

use crate::config::{self, ProbeSetConfig};
use crate::data::probes;
use crate::device;
use crate::error::InputError;
use crate::measure::Probing;
use crate::rundir::staged::StagedDir;
use crate::rundir::{self, FinishedRun, RunDir};
use crate::train::tokens_seen;

/// A `densitrace probe` file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProbeFile {
    /// Overrides the run's `probes.samples`.
    #[serde(default)]
    samples: Option<usize>,
    sets: Vec<ProbeSetConfig>,
}

/// What the command wrote.
pub struct ProbeOutcome {
    pub dir: PathBuf,
    pub sets: usize,
    pub steps: Vec<usize>,
    pub rows: usize,
}

/// Which weights to measure.
#[derive(Debug, Clone, PartialEq)]
pub enum Steps {
    /// The final weights.
    Final,
    /// Every complete checkpoint and the final weights.
    All,
    /// These steps (each a checkpoint, or the last step).
    List(Vec<usize>),
}

impl std::str::FromStr for Steps {
    type Err = String;
    fn from_str(s: &str) -> Result<Steps, String> {
        match s {
            "final" => Ok(Steps::Final),
            "all" => Ok(Steps::All),
            list => list
                .split(',')
                .map(|x| x.trim().parse::<usize>())
                .collect::<Result<Vec<_>, _>>()
                .map(Steps::List)
                .map_err(|_| format!("{s:?}: expected final, all, or steps like 500,1000")),
        }
    }
}

pub fn probe(
    run_dir: &Path,
    file: &Path,
    name: Option<&str>,
    steps: &Steps,
) -> Result<ProbeOutcome> {
    let origin = file.display().to_string();
    let yaml = fs::read_to_string(file).map_err(|e| InputError::File {
        file: origin.clone(),
        message: format!("cannot read: {e}"),
    })?;
    let request: ProbeFile = config::typed(config::yaml_tree(&yaml, &origin)?, &origin)?;
    let run = FinishedRun::open(run_dir)?;
    let mut config = run.config.clone();
    if let Some(samples) = request.samples {
        config.probes.samples = samples;
    }
    let mut issues = config.validate_sets(&request.sets, "sets");
    if request.samples == Some(0) {
        issues.push(("samples".into(), "must be at least 1".into()));
    }
    if !issues.is_empty() {
        return Err(InputError::Fields {
            file: origin,
            issues,
        }
        .into());
    }
    let name = match name {
        Some(n) => n.to_string(),
        None => file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "probes".into()),
    };
    if !config::is_folder_name(&name) {
        return Err(InputError::Other(format!(
            "--name {name:?}: use only letters, digits, '-', '_' and '.' (not leading)"
        ))
        .into());
    }
    let out = run_dir.join(rundir::PROBE_OUTPUTS).join(&name);
    if out.exists() {
        return Err(
            InputError::Other(format!("{} exists: choose another --name", out.display())).into(),
        );
    }

    let device = device::select(config.device)?;
    tracing::info!("{}", device.reason);
    let data = run.reload_dataset(&config)?;
    let sets = probes::build(&config, &request.sets, &data)?;
    let prior = data.prior();
    let available = run.steps_with_weights()?;
    let steps = match steps {
        Steps::Final => vec![config.train.steps],
        Steps::All => available.clone(),
        Steps::List(list) => {
            if let Some(missing) = list.iter().find(|s| !available.contains(s)) {
                return Err(InputError::Other(format!(
                    "--steps: step {missing} has no weights in this run; it has {available:?}"
                ))
                .into());
            }
            list.clone()
        }
    };

    let staged = StagedDir::create(
        run_dir
            .join(rundir::PROBE_OUTPUTS)
            .join(format!(".{name}.tmp")),
    )?;
    let dir = RunDir::writing_for(staged.path().to_path_buf(), &run.dir);
    dir.write_atomic("probes.yaml", yaml.as_bytes())?;
    dir.save_probes(rundir::PROBES, &sets)?;
    let probing = Probing::new(&config, &device, &sets, prior.as_ref());
    let t0 = Instant::now();
    let mut rows = 0;
    for &step in &steps {
        let model = run.model_at(step, &device.device)?;
        // wall_time: seconds since this command started.
        let tokens = tokens_seen(&config, step);
        let eval =
            probing.evaluate_into(&model, &dir, step, tokens, || t0.elapsed().as_secs_f64())?;
        tracing::info!(
            "step {step}: {} probe sets, {} rows",
            sets.len(),
            eval.rows.len()
        );
        rows += eval.rows.len();
    }
    staged.commit(&out)?;
    Ok(ProbeOutcome {
        dir: out,
        sets: sets.len(),
        steps,
        rows,
    })
}
