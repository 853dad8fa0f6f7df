//! Running cells here: each one a child `densitrace run` process, `--jobs` at a time (a local
//! sweep), or one in the foreground (a Slurm array task), supervised and recorded.

use std::collections::BTreeMap;
use std::fs;
use std::io::IsTerminal;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::record::{Cell, CellState, SweepDir, counts};
use crate::error::{Exit, InputError};
use crate::rundir::{self, RunDir, RunStatus};

/// Set in a cell's environment: its run then stops after a checkpoint however many signals come.
pub const SUPERVISED_ENV: &str = "DENSITRACE_SWEEP_CELL";

/// What a cell needs next.
enum Next {
    /// Its run already ended this way (with this exit); nothing to run.
    Ended(CellState, Exit),
    Run(Command),
}

/// How a sweep command ended.
pub struct SweepOutcome {
    /// The sweep directory.
    pub dir: PathBuf,
    /// Cells per state.
    pub counts: BTreeMap<&'static str, usize>,
    /// Whether a signal stopped it.
    pub interrupted: bool,
}

impl SweepOutcome {
    /// Success when every cell is done, Interrupted when stopped by a signal, Failure otherwise.
    pub fn exit(&self) -> Exit {
        if self.interrupted {
            Exit::Interrupted
        } else if self.counts.keys().all(|s| *s == CellState::Done.name()) {
            Exit::Success
        } else {
            Exit::Failure
        }
    }
}

impl SweepDir {
    /// What to do for `cell` now, from its run directory: nothing if its run already ended
    /// (completed or diverged), `run --resume` if it holds a run that can continue, else a fresh
    /// run (after removing what a run killed before writing its manifest left, unless a live run
    /// holds it). A manifest that cannot be read is an error: nothing is deleted.
    fn next(&self, cell: &Cell) -> Result<Next> {
        let run_dir = self.root.join(&cell.dir);
        let dir = RunDir::at(run_dir.clone());
        let mut command = Command::new(this_executable()?);
        // argv[0] as the user started it, not /proc/self/exe: the run's manifest records it.
        command.arg0(std::env::current_exe()?);
        // A cell's run treats a second SIGINT/SIGTERM as the first: a Ctrl-C on the terminal
        // reaches it and the sweep forwards SIGTERM too, and it must still checkpoint.
        command.env(SUPERVISED_ENV, "1");
        if dir.path(rundir::MANIFEST).exists() {
            let manifest = dir.read_manifest()?;
            match manifest.status {
                RunStatus::Completed => return Ok(Next::Ended(CellState::Done, Exit::Success)),
                RunStatus::Diverged => {
                    return Ok(Next::Ended(CellState::Diverged, Exit::Diverged));
                }
                RunStatus::Running | RunStatus::Interrupted => {
                    command.arg("run").arg("--resume").arg(&run_dir)
                }
            };
        } else {
            if run_dir.exists() {
                // Held by a live run that has not written its manifest yet: leave it alone.
                let lock = dir.lock()?;
                drop(lock);
                fs::remove_dir_all(&run_dir)?;
            }
            command
                .arg("run")
                .arg(self.config_path(cell))
                .arg("--run-dir")
                .arg(&run_dir);
        }
        Ok(Next::Run(command))
    }

    /// Starts `cell`'s run with its output appended to the cell's log (earlier attempts stay).
    fn start(&self, cell: &Cell) -> Result<Option<Child>> {
        match self.next(cell)? {
            Next::Ended(state, exit) => {
                self.set_state(cell.index, state, Some(exit.code().into()), None);
                Ok(None)
            }
            Next::Run(mut command) => {
                let log = fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.log_path(cell))?;
                let child = command
                    .stdin(Stdio::null())
                    .stdout(log.try_clone()?)
                    .stderr(log)
                    .spawn()
                    .context("starting a cell's densitrace run")?;
                self.set_state(cell.index, CellState::Running, None, None);
                Ok(Some(child))
            }
        }
    }
}

/// Cells at once when `--jobs` is not given: half the cores, but at least 2 where there are 2.
/// One run's CPU backend spreads over every core yet keeps them only partly busy: on 2 cores, 2
/// cells at once finish a sweep 1.74x faster than 1 (BENCHMARKS.md). On more cores, half of them
/// keeps the runs' thread pools from fighting.
pub fn default_jobs() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores / 2).max(cores.min(2))
}

/// Runs every cell that is not done (or diverged), `jobs` at a time, until all have run or `stop`
/// is set (then the running cells are sent SIGTERM: they checkpoint and exit 130).
pub fn run_local(dir: &SweepDir, jobs: usize, stop: &AtomicBool) -> Result<SweepOutcome> {
    let _sweep_lock = dir.lock_sweep(true)?;
    // Write the cells' states as reconciled with their runs (a killed sweep's `running` cells
    // become `interrupted`).
    dir.update(|_| ())?;
    let record = dir.read()?;
    let mut todo: Vec<Cell> = record
        .cells
        .iter()
        .filter(|c| !c.state.is_final())
        .cloned()
        .collect();
    todo.reverse(); // pop() takes them in index order
    let total = record.cells.len();
    let mut finished = total - todo.len();
    eprintln!(
        "running {} of {total} cells, {jobs} at a time (--jobs); logs in {}",
        todo.len(),
        dir.root.join("logs").display()
    );
    let bar = indicatif::ProgressBar::new(total as u64);
    if std::io::stderr().is_terminal() {
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} cells {elapsed}")
                .expect("a valid template"),
        );
        bar.set_position(finished as u64);
    } else {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut running: Vec<(Cell, Child, Instant, fs::File)> = Vec::new();
    let mut interrupted = false;
    loop {
        if stop.load(Ordering::SeqCst) && !interrupted {
            interrupted = true;
            for (_, child, _, _) in &running {
                // SAFETY: kill(2) on a child's pid; a child that already exited is a no-op.
                unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            }
        }
        while !interrupted && running.len() < jobs {
            let Some(cell) = todo.pop() else { break };
            // A cell that cannot start is that cell's failure, not the sweep's: the others go on.
            let cell_lock = match dir.lock_cell(&cell) {
                Ok(lock) => lock,
                Err(e) => {
                    finished += 1;
                    bar.suspend(|| eprintln!("{}: left alone: {e}", cell.name));
                    continue;
                }
            };
            match dir.start(&cell) {
                Ok(Some(child)) => running.push((cell, child, Instant::now(), cell_lock)),
                Ok(None) => {
                    finished += 1;
                    bar.set_position(finished as u64);
                }
                Err(e) => {
                    dir.set_state(cell.index, CellState::Failed, None, None);
                    finished += 1;
                    bar.suspend(|| eprintln!("{}: cannot start: {e:#}", cell.name));
                }
            }
        }
        if running.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        let mut i = 0;
        while i < running.len() {
            let Some(status) = running[i].1.try_wait().ok().flatten() else {
                i += 1;
                continue;
            };
            let (cell, _, started, cell_lock) = running.swap_remove(i);
            let wall = started.elapsed().as_secs_f64();
            dir.set_state(
                cell.index,
                CellState::from_exit(status.code()),
                status.code(),
                Some(wall),
            );
            drop(cell_lock);
            // As recorded, reconciled with its run (a run that completed is done).
            let state = dir.read().map_or(CellState::from_exit(status.code()), |r| {
                r.cells[cell.index].state
            });
            finished += 1;
            bar.set_position(finished as u64);
            bar.suspend(|| {
                println!(
                    "[{finished}/{total}] {} {} in {wall:.1} s{}",
                    cell.name,
                    state.name(),
                    match state {
                        CellState::Done | CellState::Interrupted => String::new(),
                        _ => format!(
                            " (exit {:?}; log: {})",
                            status.code(),
                            dir.log_path(&cell).display()
                        ),
                    }
                )
            });
        }
    }
    bar.finish_and_clear();
    Ok(SweepOutcome {
        dir: dir.root.clone(),
        counts: counts(&dir.read()?),
        interrupted,
    })
}

/// Runs (or continues) cell `index` in the foreground: what one Slurm array task does.
pub fn run_cell(dir: &SweepDir, index: usize, stop: &AtomicBool) -> Result<SweepOutcome> {
    let record = dir.read()?;
    let cell = record.cells.get(index).cloned().ok_or_else(|| {
        InputError::Other(format!(
            "cell {index}: the sweep has cells 0..={}",
            record.cells.len() - 1
        ))
    })?;
    let _sweep_lock = dir.lock_sweep(false)?;
    let cell_lock = dir.lock_cell(&cell)?;
    // Read again under the locks (another process may have finished the cell meanwhile), and
    // write the states as reconciled with the runs.
    dir.update(|_| ())?;
    let mut state = dir.read()?.cells[index].state;
    if !state.is_final() {
        if let Some(mut child) = dir.start(&cell)? {
            let started = Instant::now();
            let mut forwarded = false;
            let status = loop {
                if let Some(status) = child.try_wait()? {
                    break status;
                }
                // Slurm may signal only this process (sbatch --signal=B:...): pass it on once.
                if stop.load(Ordering::SeqCst) && !forwarded {
                    forwarded = true;
                    // SAFETY: kill(2) on our child's pid.
                    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
                }
                std::thread::sleep(Duration::from_millis(100));
            };
            let wall = started.elapsed().as_secs_f64();
            dir.set_state(
                index,
                CellState::from_exit(status.code()),
                status.code(),
                Some(wall),
            );
            drop(cell_lock);
            state = dir.read()?.cells[index].state;
            println!("{} {} in {wall:.1} s", cell.name, state.name());
        } else {
            state = dir.read()?.cells[index].state;
        }
    }
    Ok(SweepOutcome {
        dir: dir.root.clone(),
        counts: BTreeMap::from([(state.name(), 1)]),
        interrupted: state == CellState::Interrupted,
    })
}

/// The binary every local cell runs: the sweep's own. On Linux that is `/proc/self/exe`, which
/// still names this process's binary after the file on disk was rebuilt or removed (a
/// `cargo build` during a sweep would otherwise leave every later cell unable to start); else
/// the path it was started from.
fn this_executable() -> std::io::Result<PathBuf> {
    let own = Path::new("/proc/self/exe");
    if own.exists() {
        Ok(own.to_path_buf())
    } else {
        std::env::current_exe()
    }
}
