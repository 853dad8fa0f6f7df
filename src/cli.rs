//! The command line's types: every command, flag and argument, with the doc comments `--help`
//! prints. `main.rs` dispatches on them; nothing here runs anything.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use densitrace::config::DeviceChoice;
use densitrace::metrics::Position;
use densitrace::report;

#[derive(Parser)]
#[command(
    version,
    about = "Measure activation density while pretraining a small transformer"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// What `densitrace sweep` does.
#[derive(Subcommand)]
pub enum SweepAction {
    /// Create a sweep from a sweep file and run its cells here, `--jobs` at a time, or submit it
    /// to Slurm as a job array (`--slurm`).
    Run {
        /// The sweep file (YAML).
        file: PathBuf,
        /// Cells at once on this machine (default: half the cores, at least 2 where there are 2).
        #[arg(long, value_name = "N", conflicts_with = "slurm")]
        jobs: Option<usize>,
        /// Directory the sweep directory is created under.
        #[arg(long, default_value = "runs")]
        out: PathBuf,
        /// Override a value of every cell's config, after the sweep file's `set` (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// Submit the sweep to Slurm as a job array (one task a cell) with sbatch, instead of
        /// running it here.
        #[arg(long)]
        slurm: bool,
        /// With --slurm: at most this many cells at once (the array's %P; default: all).
        #[arg(long, value_name = "P", requires = "slurm")]
        max_parallel: Option<usize>,
        /// With --slurm: an extra #SBATCH line, e.g. --sbatch-arg=--partition=gpu (repeatable).
        #[arg(
            long,
            value_name = "ARG",
            requires = "slurm",
            allow_hyphen_values = true
        )]
        sbatch_arg: Vec<String>,
        /// With --slurm: write slurm.sbatch but do not submit it.
        #[arg(long, requires = "slurm")]
        dry_run: bool,
    },
    /// Continue a sweep here: skip done cells, resume interrupted ones from their newest
    /// checkpoint, rerun failed ones.
    Resume {
        /// The sweep directory (OUT/<name>/<sweep_id>/).
        dir: PathBuf,
        /// Cells at once on this machine (default: half the cores, at least 2 where there are 2).
        #[arg(long, value_name = "N")]
        jobs: Option<usize>,
    },
    /// Print the table of a sweep's cells and their states.
    Status {
        /// The sweep directory.
        dir: PathBuf,
    },
    /// Run (or continue) one cell in the foreground: what each Slurm array task runs.
    Cell {
        /// The sweep directory.
        dir: PathBuf,
        /// The cell's index (the number its name starts with).
        index: usize,
    },
}

#[derive(Subcommand)]
pub enum Command {
    /// Pretrain with periodic density measurements; results land in OUT/<name>/<run_id>/.
    ///
    /// Exit codes: 0 completed, 1 an error while running (e.g. a file could not be written, or a
    /// checkpoint to resume from is corrupted: its content hash differs), 2 bad input (nothing
    /// written; also a run directory in use by another process), 3 the loss diverged, 130 stopped
    /// by SIGINT or SIGTERM (after a checkpoint; continue with --resume).
    Run {
        /// The experiment config (YAML); not with --resume.
        #[arg(required_unless_present = "resume", conflicts_with = "resume")]
        config: Option<PathBuf>,
        /// Continue the run in this directory from its newest complete checkpoint.
        #[arg(long, value_name = "RUN_DIR")]
        resume: Option<PathBuf>,
        /// Override a config value, e.g. --set train.steps=100 (repeatable; not with --resume).
        #[arg(long = "set", value_name = "KEY=VALUE", conflicts_with = "resume")]
        overrides: Vec<String>,
        /// Directory the run directory is created under.
        #[arg(long, default_value = "runs")]
        out: PathBuf,
        /// Write the run into exactly this directory (it must not exist) instead of
        /// OUT/<name>/<run_id>/; `densitrace sweep` names its cells' directories this way.
        #[arg(long, value_name = "DIR", conflicts_with_all = ["resume", "out"])]
        run_dir: Option<PathBuf>,
    },
    /// Run a grid of seeds and settings (a sweep file), here or on a Slurm cluster; each cell is
    /// an ordinary run under OUT/<name>/<sweep_id>/cells/.
    ///
    /// `sweep run FILE`, `sweep resume DIR`, `sweep status DIR`, `sweep cell DIR INDEX`. The
    /// earlier spellings (`sweep FILE`, `--resume DIR`, `--status DIR`, `--cell INDEX DIR`) still
    /// work for this release, hidden from --help.
    ///
    /// Exit codes: 0 every cell done (status, --slurm: printed or written), 1 a cell failed or
    /// diverged, or an error (e.g. sbatch refused the script), 2 bad input (nothing created; also
    /// two cells with the same config, a sweep or cell already being run by another live process),
    /// 130 stopped by SIGINT or SIGTERM (continue with `sweep resume`).
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Sweep {
        #[command(subcommand)]
        action: Option<SweepAction>,
        /// Old spelling of `sweep run FILE` (and, with --cell, of `sweep cell DIR INDEX`).
        #[arg(hide = true)]
        #[arg(required_unless_present_any = ["resume", "status"])]
        path: Option<PathBuf>,
        /// Continue this sweep: skip done cells, resume interrupted ones from their newest
        /// checkpoint, rerun failed ones.
        #[arg(long, value_name = "SWEEP_DIR", conflicts_with_all = ["path", "status", "slurm"], hide = true)]
        resume: Option<PathBuf>,
        /// Print the table of this sweep's cells and their states.
        #[arg(long, value_name = "SWEEP_DIR", conflicts_with_all = ["path", "slurm"], hide = true)]
        status: Option<PathBuf>,
        /// Run (or continue) only this cell of the sweep directory given as PATH: what each
        /// Slurm array task runs.
        #[arg(
            long,
            value_name = "INDEX",
            requires = "path",
            conflicts_with = "slurm",
            hide = true
        )]
        cell: Option<usize>,
        /// Cells at once on this machine (default: half the cores, at least 2 where there are 2).
        #[arg(long, value_name = "N", conflicts_with_all = ["status", "cell", "slurm"], hide = true)]
        jobs: Option<usize>,
        /// Directory the sweep directory is created under.
        #[arg(long, default_value = "runs", conflicts_with_all = ["resume", "status", "cell"], hide = true)]
        out: PathBuf,
        /// Override a value of every cell's config, after the sweep file's `set` (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE", conflicts_with_all = ["resume", "status", "cell"], hide = true)]
        overrides: Vec<String>,
        /// Create the sweep and submit it to Slurm as a job array (one task a cell) with sbatch.
        #[arg(long, hide = true)]
        slurm: bool,
        /// With --slurm: at most this many cells at once (the array's %P; default: all).
        #[arg(long, value_name = "P", requires = "slurm", hide = true)]
        max_parallel: Option<usize>,
        /// With --slurm: an extra #SBATCH line, e.g. --sbatch-arg=--partition=gpu (repeatable).
        #[arg(
            long,
            value_name = "ARG",
            requires = "slurm",
            allow_hyphen_values = true,
            hide = true
        )]
        sbatch_arg: Vec<String>,
        /// With --slurm: write slurm.sbatch but do not submit it.
        #[arg(long, requires = "slurm", hide = true)]
        dry_run: bool,
    },
    /// Check the config and its data (read, split, tokenized, probe sets drawn), print the
    /// resolved config and exit without training.
    ///
    /// Exit codes: 0 valid, 1 an unexpected error, 2 bad input.
    Check {
        config: PathBuf,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
    },
    /// Measure new probe sets on a finished run's final weights; results land in
    /// RUN_DIR/probes/<name>/ (density and quantiles tables, the drawn sets).
    ///
    /// Exit codes: 0 written, 1 an error (e.g. weights whose content hash differs from the one
    /// recorded: corrupted; or a file that cannot be written), 2 bad input.
    Probe {
        run_dir: PathBuf,
        /// YAML with `sets:` (as in a config's probes section) and optionally `samples:`.
        #[arg(long = "config", value_name = "PROBES_YAML")]
        config: PathBuf,
        /// The output folder's name under RUN_DIR/probes/ (default: the file's stem).
        #[arg(long)]
        name: Option<String>,
        /// Which weights: final, all (every kept checkpoint and the final weights), or a list
        /// of steps such as 500,1000.
        #[arg(long, default_value = "final")]
        steps: String,
    },
    /// Aggregate a run or a sweep into intervals, gaps, OOD-detection scores and trends, with
    /// figures and an index.html; computed from the tables already written (no model is run).
    ///
    /// Exit codes: 0 written (outputs it could not make are listed, and a run that did not
    /// complete or a missing evaluation is reported as incomplete), 1 the report could not be
    /// written (the error names the path; an existing report is left in place), 2 bad input
    /// (nothing written).
    Report {
        /// A run directory or a sweep directory.
        dir: PathBuf,
        /// Where to write the report (default: DIR/report; an existing report there is replaced).
        #[arg(short = 'o', long = "output", value_name = "REPORT_DIR")]
        output: Option<PathBuf>,
        /// The metric the figures and headline show (default: the runs' summary metric,
        /// topk_energy@0.05 if measured, else hoyer). The tables cover every metric.
        #[arg(long)]
        metric: Option<String>,
        /// The site the figures and headline show.
        #[arg(long, default_value = "final.norm")]
        site: String,
        /// The position the figures and headline show.
        #[arg(long, value_enum, default_value_t = Position::Last)]
        position: Position,
        /// Draw steps on a log scale (for log-spaced, Pythia-style schedules).
        #[arg(long)]
        log_x: bool,
        /// Bootstrap resamples per interval.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(100..))]
        resamples: u32,
        /// The bootstrap's seed: the same seed gives the same intervals.
        #[arg(long, default_value_t = 0)]
        bootstrap_seed: u64,
        /// How intervals over seeds are made: t (Student's t, the default: it holds its 95%
        /// from 5 seeds on in the coverage study of docs/reports.md), bca (the bias-corrected
        /// and accelerated bootstrap) or percentile (the plain bootstrap; too narrow below about
        /// 10 seeds).
        #[arg(long, value_enum, default_value_t = report::inference::IntervalMethod::T)]
        interval: report::inference::IntervalMethod,
        /// Which tests are corrected together (Holm and Benjamini-Hochberg): comma-separated
        /// columns that split the tests into families, and column=value terms that keep only
        /// the matching tests, e.g. 'step,site=final.norm,position=last'. Columns: table, cell,
        /// step, probe, shift_family, shift_level, layer, site, position, metric.
        #[arg(long, default_value = report::family::DEFAULT_FAMILY)]
        family: String,
        /// The sweep grid key whose values the paired contrasts compare, each against the
        /// key's first value (default: every grid key whose cells pair up on shared seeds).
        #[arg(long, value_name = "GRID_KEY")]
        contrast: Option<String>,
        /// Random draws for the permutation tests too large to enumerate (more than 16 seeds,
        /// or more than 8 shift levels); seeded by --bootstrap-seed.
        #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(100..))]
        permutations: u32,
    },
    /// Measure this machine: the density kernels against Burn ops and the host, the device's
    /// copy bandwidth, training throughput and the instrumentation's share of training time.
    /// Prints Markdown (the format BENCHMARKS.md documents).
    ///
    /// Exit codes: 0 measured, 1 an error (e.g. no device), 2 bad input.
    Bench {
        /// Which device to measure (auto: a hardware GPU if there is one, else the CPU backend).
        #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
        device: DeviceChoice,
        /// Two sizes, 3 runs each and the quickstart model only (under 2 minutes on llvmpipe);
        /// what CI runs.
        #[arg(long)]
        quick: bool,
        /// Also write the report as JSON to this file (its directory must exist).
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
    /// Check this machine's device before trusting it: every WGSL kernel against the f64
    /// reference (widths 1 to 8192, ties, zeros, huge, tiny and non-finite values), the model's
    /// forward pass and one training step, and a short run that may read back only summaries.
    /// Prints a table with each metric's largest error and its tolerance.
    ///
    /// Exit codes: 0 every check passed (skipped ones say why), 1 a check failed (named), 2 bad
    /// input or no such device (with what to install).
    Selftest {
        /// Which device to check (auto: a hardware GPU if there is one, else the CPU backend,
        /// where the WGSL kernels do not run and its fast f32 reduction is checked against the
        /// f64 reference instead).
        #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
        device: DeviceChoice,
        /// Smaller inputs and no 530,000-row dispatch check (about a minute on llvmpipe); what
        /// CI runs. The full form is what tests/kernels.rs runs.
        #[arg(long)]
        quick: bool,
        /// Also write the results as JSON to this file (its directory must exist).
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
    /// List every wgpu adapter with its backend and type; with none, say why (no Vulkan loader,
    /// no driver manifest) and what to install or set.
    ///
    /// Exit codes: 0 always (no adapter is reported, not an error).
    Devices,
    /// Write the raw activation vectors of one probe set at one site, from a run's final weights,
    /// as a float32 .npy file of shape [vectors, width].
    ///
    /// Exit codes: 0 written, 1 an error (e.g. final weights whose content hash differs from the
    /// one recorded: corrupted; or the file cannot be written), 2 bad input.
    Dump {
        run_dir: PathBuf,
        /// The probe set's name in the run's config.
        #[arg(long)]
        probe: String,
        /// The full site name, e.g. blocks.1.mlp.post or final.norm.
        #[arg(long)]
        site: String,
        /// Which token's vectors: the prompt's last, or every prompt token's.
        #[arg(long, value_enum, default_value_t = Position::Last)]
        position: Position,
        /// The shift level, for probe sets with several.
        #[arg(long)]
        level: Option<f64>,
        /// The .npy file to write.
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
    },
}
