//! `densitrace sweep`: a grid of seeds and settings from one YAML file, each cell an ordinary run.
//!
//! ```yaml
//! name: activation-seeds
//! config: ../quickstart.yaml        # relative to the sweep file
//! set: {train.steps: 2000}          # optional overrides applied to every cell
//! grid:                             # cartesian product, keys exactly as for --set
//!   seed: [1, 2, 3, 4, 5]
//!   model.activation: [relu, gelu, silu]
//! ```
//!
//! ```text
//! <out>/<name>/<sweep_id>/
//!   sweep.yaml                       the sweep file as given
//!   sweep.json                       the cells: overrides, run directory, state, exit code, time
//!   configs/007-seed=3,model.activation=silu.yaml    each cell's resolved config
//!   cells/007-seed=3,model.activation=silu/          each cell's run directory (as `run` writes)
//!   logs/007-seed=3,model.activation=silu.log        each cell's stdout and stderr, appended
//!   sweep.json.lock                  the lock every change of sweep.json is made under
//!   sweep.lock                       held while a process runs the sweep: exclusively by a
//!                                    local sweep (or `sweep resume`), shared by each
//!                                    `sweep cell` task
//!   locks/007-....lock               held by the process that runs (supervises) that cell
//!   slurm.sbatch                     with --slurm: the job array, one task a cell
//! ```
//!
//! Every cell's config is resolved and validated before anything is created. Each cell runs as a
//! child `densitrace run` process, so a cell that fails or diverges stops only itself, and a
//! killed sweep is continued cell by cell with the runs' own `--resume`. `sweep.json` is only
//! changed under an OS lock (`sweep.json.lock`), so cells finishing at once, in this process or in
//! Slurm tasks, never lose each other's state.
//!
//! Two processes never run one sweep or one cell at once: a local sweep holds `sweep.lock`
//! exclusively, so a second `sweep resume` (or a `sweep cell` task) is refused with exit 2; each
//! `sweep cell` task holds it shared and its cell's lock exclusively, so a second `sweep cell` on a
//! cell being run is refused with exit 2 and changes nothing. The locks are OS locks, released
//! when their holder dies. Every read of `sweep.json` reconciles each cell with its run: a run whose manifest says
//! completed (or diverged) is `done` (`diverged`) whatever was recorded, and a `running` cell whose
//! lock nobody holds (its process was killed) is `interrupted`.
//!
//! One job a file: `plan` reads the sweep file and resolves its cells; `record` owns the sweep
//! directory, `sweep.json` and the locks; `local` runs and supervises cells here; `slurm` writes
//! and submits the job array.

mod local;
mod plan;
mod record;
mod slurm;

pub use local::{SUPERVISED_ENV, SweepOutcome, default_jobs, run_cell, run_local};
pub use plan::{override_label, shown};
pub use record::{
    Cell, CellState, SWEEP_JSON, SWEEP_YAML, SweepDir, SweepLock, SweepRecord, create, status_table,
};
pub use slurm::{submit, write_sbatch};
