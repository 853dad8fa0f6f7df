//! Slurm: a job array with one task a cell, each task running `densitrace sweep cell`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Result;

use super::record::SweepDir;
use crate::error::InputError;
use crate::rundir::write_atomic;

/// Writes `slurm.sbatch`: a job array with one task a cell, at most `max_parallel` at once, each
/// running `densitrace sweep cell SWEEP_DIR $SLURM_ARRAY_TASK_ID` with this binary.
pub fn write_sbatch(
    dir: &SweepDir,
    max_parallel: usize,
    sbatch_args: &[String],
) -> Result<PathBuf> {
    let record = dir.read()?;
    let exe = std::env::current_exe()?;
    let root = fs::canonicalize(&dir.root)?;
    let shown = root.display().to_string();
    if shown.contains(|c: char| c.is_whitespace() || c == '%') {
        return Err(InputError::Other(format!(
            "{shown}: Slurm's #SBATCH --output cannot name a path with spaces or '%'; choose \
             another --out"
        ))
        .into());
    }
    let mut script = format!(
        "#!/bin/bash\n#SBATCH --job-name=densitrace-{}\n#SBATCH --array=0-{}%{}\n#SBATCH --output={}/logs/slurm-%A_%a.out\n",
        record.name,
        record.cells.len() - 1,
        max_parallel.max(1),
        root.display()
    );
    for arg in sbatch_args {
        script.push_str(&format!("#SBATCH {arg}\n"));
    }
    script.push_str(&format!(
        "exec {} sweep cell {} \"$SLURM_ARRAY_TASK_ID\"\n",
        shell_quote(&exe.display().to_string()),
        shell_quote(&root.display().to_string())
    ));
    let path = dir.root.join("slurm.sbatch");
    write_atomic(&path, script.as_bytes())?;
    Ok(path)
}

/// Submits `slurm.sbatch` with `sbatch`; returns the job id.
pub fn submit(script: &Path) -> Result<String> {
    let out = Command::new("sbatch")
        .arg("--parsable")
        .arg(script)
        .output()
        .map_err(|e| InputError::Other(format!("cannot run sbatch (is Slurm installed?): {e}")))?;
    if !out.status.success() {
        anyhow::bail!(
            "sbatch refused {}: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Ok(id.split(';').next().unwrap_or("").to_string())
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}
