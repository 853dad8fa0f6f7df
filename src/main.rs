//! The `densitrace` command line.

use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Parser, Subcommand};
use densitrace::config::{Config, DeviceChoice};
use densitrace::data::{Dataset, probes};
use densitrace::error::{Exit, InputError};
use densitrace::metrics::Position;
use densitrace::run::{Destination, Finish, RunOutcome};
use densitrace::{bench, device, dump, progress, report, run, selftest, summary, sweep};

#[derive(Parser)]
#[command(
    version,
    about = "Measure activation density while pretraining a small transformer"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// What `densitrace sweep` does.
#[derive(Subcommand)]
enum SweepAction {
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
enum Command {
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
        /// Also write the report as JSON to this file.
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

/// Set by SIGINT/SIGTERM: the training loop finishes its step, checkpoints and stops.
static STOP: AtomicBool = AtomicBool::new(false);

fn main() -> ExitCode {
    private_runtime_dir();
    progress::init_logging();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run {
            config,
            resume,
            overrides,
            out,
            run_dir,
        } => {
            stop_on_signals("stopping after this step (a second signal exits at once)");
            let command_line = std::env::args().collect();
            let destination = match run_dir {
                Some(dir) => Destination::Exactly(dir),
                None => Destination::Under(out),
            };
            let outcome = match (config, resume) {
                (_, Some(dir)) => run::resume(&dir, command_line, &STOP),
                (Some(path), None) => Config::load(&path, &overrides)
                    .map_err(anyhow::Error::from)
                    .and_then(|c| run::run(&c, &destination, command_line, &STOP)),
                (None, None) => unreachable!("clap requires a config or --resume"),
            };
            match outcome {
                Ok(outcome) => return finish(outcome),
                Err(e) => Err(e),
            }
        }
        Command::Sweep {
            action,
            path,
            resume,
            status,
            cell,
            jobs,
            out,
            overrides,
            mut slurm,
            mut max_parallel,
            mut sbatch_arg,
            mut dry_run,
        } => {
            // Each subcommand as the flags of the earlier spelling it replaces, so both take one
            // path below.
            let (path, resume, status, cell, jobs, out, overrides) = match action {
                None => (path, resume, status, cell, jobs, out, overrides),
                Some(SweepAction::Run {
                    file,
                    jobs,
                    out,
                    overrides,
                    slurm: s,
                    max_parallel: m,
                    sbatch_arg: a,
                    dry_run: d,
                }) => {
                    (slurm, max_parallel, sbatch_arg, dry_run) = (s, m, a, d);
                    (Some(file), None, None, None, jobs, out, overrides)
                }
                Some(SweepAction::Resume { dir, jobs }) => {
                    (None, Some(dir), None, None, jobs, out, overrides)
                }
                Some(SweepAction::Status { dir }) => {
                    (None, None, Some(dir), None, jobs, out, overrides)
                }
                Some(SweepAction::Cell { dir, index }) => {
                    (Some(dir), None, None, Some(index), jobs, out, overrides)
                }
            };
            let outcome = (|| -> anyhow::Result<Option<sweep::SweepOutcome>> {
                if let Some(dir) = status {
                    let (dir, _) = sweep::SweepDir::open_to_read(&dir)?;
                    print!("{}", sweep::status_table(&dir)?);
                    return Ok(None);
                }
                let path = path.or(resume.clone()).expect("clap requires a path");
                if let Some(index) = cell {
                    stop_on_signals("stopping the cell after this step");
                    return sweep::run_cell(&sweep::SweepDir::open(&path)?, index, &STOP).map(Some);
                }
                let dir = match resume {
                    Some(_) => sweep::SweepDir::open(&path)?,
                    None => sweep::create(&path, &overrides, &out)?,
                };
                if slurm {
                    let parallel = max_parallel.unwrap_or(dir.cell_count()?);
                    let script = sweep::write_sbatch(&dir, parallel, &sbatch_arg)?;
                    println!("wrote {}", script.display());
                    if !dry_run {
                        let job = sweep::submit(&script)?;
                        println!(
                            "submitted job array {job}; follow it with: densitrace sweep status {}",
                            dir.root.display()
                        );
                    }
                    return Ok(None);
                }
                stop_on_signals("stopping the sweep: its running cells checkpoint and stop");
                let jobs = jobs.unwrap_or_else(sweep::default_jobs).max(1);
                sweep::run_local(&dir, jobs, &STOP).map(Some)
            })();
            match outcome {
                Ok(None) => Ok(()),
                Ok(Some(outcome)) => {
                    let counts: Vec<String> = outcome
                        .counts
                        .iter()
                        .map(|(s, n)| format!("{n} {s}"))
                        .collect();
                    println!(
                        "cells: {}; sweep: {}",
                        counts.join(", "),
                        outcome.dir.display()
                    );
                    if outcome.exit() == Exit::Interrupted {
                        eprintln!(
                            "interrupted; continue with: densitrace sweep resume {}",
                            outcome.dir.display()
                        );
                    }
                    return outcome.exit().into();
                }
                Err(e) => Err(e),
            }
        }
        Command::Check { config, overrides } => Config::load(&config, &overrides)
            .map_err(anyhow::Error::from)
            .and_then(|c| {
                // Read the data and draw the probe sets too, so bad data fails here, not at run.
                let data = Dataset::prepare(&c, None)?;
                let sets = probes::build(&c, &c.probes.sets, &data)?;
                print!("{}", c.to_yaml());
                eprintln!("data: {}; {} probe sets", data.describe(), sets.len());
                Ok(())
            }),
        Command::Dump {
            run_dir,
            probe,
            site,
            position,
            level,
            output,
        } => dump::dump(&dump::DumpRequest {
            run_dir: &run_dir,
            probe: &probe,
            site: &site,
            position,
            level,
            out: &output,
        })
        .map(|shape| {
            println!(
                "wrote {} ({} x {} float32)",
                output.display(),
                shape[0],
                shape[1]
            )
        }),
        Command::Probe {
            run_dir,
            config,
            name,
            steps,
        } => steps
            .parse()
            .map_err(|e: String| anyhow::Error::from(InputError::Other(format!("--steps {e}"))))
            .and_then(|steps| densitrace::probe::probe(&run_dir, &config, name.as_deref(), &steps))
            .map(|o| {
                println!(
                    "measured {} probe sets at steps {:?} ({} density rows): {}",
                    o.sets,
                    o.steps,
                    o.rows,
                    o.dir.display()
                );
            }),
        Command::Report {
            dir,
            output,
            metric,
            site,
            position,
            log_x,
            resamples,
            bootstrap_seed,
            interval,
            family,
            contrast,
            permutations,
        } => {
            let command_line: Vec<String> = std::env::args().collect();
            report::family::FamilySpec::parse(&family)
                .map_err(anyhow::Error::from)
                .and_then(|family| {
                    report::report(&report::ReportRequest {
                        dir: &dir,
                        out: output.as_deref(),
                        metric: metric.as_deref(),
                        site: &site,
                        position: position.name(),
                        log_x,
                        settings: report::tables::Settings {
                            boot: report::stats::Bootstrap {
                                resamples: resamples as usize,
                                seed: bootstrap_seed,
                            },
                            interval,
                            mc: report::inference::MonteCarlo {
                                draws: permutations as usize,
                                seed: bootstrap_seed,
                            },
                            family,
                            contrast,
                        },
                        command_line: command_line.join(" "),
                    })
                })
                .map(|o| {
                    print!("{}", o.headline);
                    for m in &o.missing {
                        println!("not made: {m}");
                    }
                    println!(
                        "report: {} ({} files; open index.html)",
                        o.dir.display(),
                        o.files.len()
                    );
                })
        }
        Command::Bench {
            device,
            quick,
            json,
        } => bench::bench(bench::BenchOptions { device, quick }).and_then(|report| {
            print!("{}", report.markdown());
            if let Some(path) = json {
                let text = serde_json::to_string_pretty(&report)?;
                std::fs::write(&path, text)
                    .map_err(|e| InputError::Other(format!("--json {}: {e}", path.display())))?;
            }
            Ok(())
        }),
        Command::Selftest {
            device,
            quick,
            json,
        } => writable_json(json.as_deref())
            .and_then(|()| selftest::selftest(selftest::SelftestOptions { device, quick }))
            .and_then(|report| {
                print!("{}", report.table());
                if let Some(path) = &json {
                    let text = serde_json::to_string_pretty(&report)?;
                    std::fs::write(path, text).map_err(|e| {
                        InputError::Other(format!("--json {}: {e}", path.display()))
                    })?;
                }
                let failures = report.failures();
                if !failures.is_empty() {
                    anyhow::bail!("selftest failed: {}", failures.join("; "));
                }
                Ok(())
            }),
        Command::Devices => {
            let adapters = device::list_adapters();
            if adapters.is_empty() {
                println!("{}", device::no_adapter_help());
            } else if !device::has_usable_adapter() {
                println!(
                    "none of these adapters is on Vulkan, Metal or DX12, which densitrace needs:\n{}",
                    device::explain_no_adapter()
                );
            }
            for a in adapters {
                println!(
                    "{:<40} backend {:<8} type {:<14} driver {} {}",
                    a.name, a.backend, a.device_type, a.driver, a.driver_info
                );
            }
            Ok(())
        }
    };
    match result {
        Ok(()) => Exit::Success.into(),
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.chain().any(|c| c.downcast_ref::<InputError>().is_some()) {
                Exit::BadInput.into()
            } else {
                Exit::Failure.into()
            }
        }
    }
}

/// Bad input unless `--json FILE` can be created: its directory must exist. Checked before any
/// work, so a typo costs nothing and leaves nothing behind.
fn writable_json(path: Option<&std::path::Path>) -> anyhow::Result<()> {
    let Some(path) = path else { return Ok(()) };
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => std::path::Path::new("."),
    };
    if !parent.is_dir() {
        return Err(InputError::Other(format!(
            "--json {}: the directory {} does not exist",
            path.display(),
            parent.display()
        ))
        .into());
    }
    if path.is_dir() {
        return Err(InputError::Other(format!("--json {}: is a directory", path.display())).into());
    }
    Ok(())
}

/// On a headless machine Mesa's Vulkan drivers look for a Wayland display and, with
/// `XDG_RUNTIME_DIR` unset, print "error: XDG_RUNTIME_DIR is invalid or not set in the
/// environment", which reads like a failure of ours. Where it is unset or names no directory,
/// point it at a private one (mode 0700 under the temporary directory, one per user), so the probe
/// finds no display and says nothing. Called first in `main`, before any thread exists, which is
/// what makes changing the environment sound.
fn private_runtime_dir() {
    let usable = std::env::var_os("XDG_RUNTIME_DIR").is_some_and(|d| PathBuf::from(d).is_dir());
    if usable {
        return;
    }
    // SAFETY: getuid(2) cannot fail and has no side effects.
    let uid = unsafe { libc::getuid() };
    let dir = std::env::temp_dir().join(format!("densitrace-runtime-{uid}"));
    let private = std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .or_else(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists if dir.is_dir() => Ok(()),
            _ => Err(e),
        });
    if private.is_ok() {
        // SAFETY: no other thread exists yet (see above), so nothing reads the environment while
        // it changes.
        unsafe { std::env::set_var("XDG_RUNTIME_DIR", &dir) };
    }
}

/// SIGINT/SIGTERM set STOP (the loops stop cleanly, after a checkpoint); a second one exits.
///
/// In a sweep's cell (`sweep::SUPERVISED_ENV` set) a second signal is the sweep forwarding the
/// terminal's Ctrl-C, so it does not exit: the run still stops after its checkpoint.
fn stop_on_signals(message: &'static str) {
    let supervised = std::env::var_os(sweep::SUPERVISED_ENV).is_some();
    let installed = ctrlc::set_handler(move || {
        if STOP.swap(true, Ordering::SeqCst) && !supervised {
            eprintln!("second signal: exiting now");
            std::process::exit(Exit::Interrupted.code().into());
        }
        eprintln!("{message}");
    });
    if let Err(e) = installed {
        tracing::warn!("cannot handle SIGINT/SIGTERM: {e}");
    }
}

/// Prints the summary table of a run that ended, and turns its ending into the exit code.
fn finish(outcome: RunOutcome) -> ExitCode {
    if !outcome.last.is_empty() {
        println!(
            "\n{} of final.norm at the last prompt token, first and last evaluation \
             (loss: mean next-token loss; accuracy: multiple choice, else the answer's; both at the last):",
            outcome.summary_metric
        );
        print!("{}", summary::summary_table(&outcome));
    }
    println!("results: {}", outcome.dir.display());
    match outcome.finish {
        Finish::Completed => Exit::Success.into(),
        Finish::Interrupted(step) => {
            eprintln!(
                "interrupted after step {step}; continue with: densitrace run --resume {}",
                outcome.dir.display()
            );
            Exit::Interrupted.into()
        }
        Finish::Diverged(step) => {
            eprintln!(
                "error: the loss is not finite at step {step}: the run diverged (the model before \
                 that step is evaluated and checkpointed in {})",
                outcome.dir.display()
            );
            Exit::Diverged.into()
        }
    }
}
