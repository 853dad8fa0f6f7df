//! The `densitrace` command line: parses it (the types are in `cli.rs`) and dispatches each
//! command to the library.

mod cli;

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Parser;
use cli::{Cli, Command, SweepAction};
use densitrace::config::Config;
use densitrace::data::{Dataset, probes};
use densitrace::error::{Exit, InputError};
use densitrace::run::{Destination, Finish, RunOutcome};
use densitrace::{bench, device, dump, progress, report, run, selftest, summary, sweep};

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
        } => writable_json(json.as_deref())
            .and_then(|()| bench::bench(bench::BenchOptions { device, quick }))
            .and_then(|report| {
                print!("{}", report.markdown());
                write_json(json.as_deref(), &report)
            }),
        Command::Selftest {
            device,
            quick,
            json,
        } => writable_json(json.as_deref())
            .and_then(|()| selftest::selftest(selftest::SelftestOptions { device, quick }))
            .and_then(|report| {
                print!("{}", report.table());
                write_json(json.as_deref(), &report)?;
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

/// Writes `bench`'s or `selftest`'s report to `--json FILE`, when given.
fn write_json(
    path: Option<&std::path::Path>,
    report: &impl serde::Serialize,
) -> anyhow::Result<()> {
    let Some(path) = path else { return Ok(()) };
    let text = serde_json::to_string_pretty(report)?;
    std::fs::write(path, text)
        .map_err(|e| InputError::Other(format!("--json {}: {e}", path.display())).into())
}

/// Bad input (exit 2) unless `--json FILE` can be created: its directory must exist and it must
/// not be a directory. Checked before any work, so a typo costs nothing and leaves nothing behind.
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
/// point it at a private one (mode 0700 under the temporary directory, one per user, used only if
/// this user owns it), so the probe finds no display and says nothing. Called first in `main`, before any thread exists, which is
/// what makes changing the environment sound.
fn private_runtime_dir() {
    let usable = std::env::var_os("XDG_RUNTIME_DIR").is_some_and(|d| PathBuf::from(d).is_dir());
    if usable {
        return;
    }
    // SAFETY: getuid(2) cannot fail and has no side effects.
    let uid = unsafe { libc::getuid() };
    let dir = std::env::temp_dir().join(format!("densitrace-runtime-{uid}"));
    let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
    // Whether it was made now or by an earlier run, use it only if it is a real directory (not a
    // link) that this user owns and nobody else can enter: /tmp is shared, and another user could
    // have made the name first.
    let private = std::fs::symlink_metadata(&dir).is_ok_and(|m| {
        m.file_type().is_dir() && m.uid() == uid && m.permissions().mode() & 0o777 == 0o700
    });
    if private {
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
