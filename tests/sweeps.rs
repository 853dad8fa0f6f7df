//! `densitrace sweep` through the binary: a grid of tiny runs locally, killed and resumed, failed
//! cells rerun, stopped by SIGTERM, bad sweep files refused, and the same grid on a real
//! single-node Slurm (scripts/slurm-local; `.ci/run` starts it).

#[macro_use]
mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::cli::{assert_same_tables, bin, expect_success, manifest, run_cli};

// The shared data and model (common::tiny_config!), then this file's own settings.
const BASE: &str = tiny_config!(
    "
name: tiny
seed: 1
train: {steps: 60, batch_size: 8, warmup_steps: 5, log_every: 5}
probes:
  every: 20
  samples: 16
  sites: [resid_post, final.norm]
  metrics: [l1, hoyer, topk_energy@0.1]
  sets:
    - {name: id, family: none}
    - {name: corrupt, family: token_corruption, levels: [0.5]}
checkpoint: {every: 10, keep_last: 2}
"
);

const SWEEP: &str = "
name: grid
config: base.yaml
set: {train.steps: 40}
grid:
  seed: [1, 2]
  model.activation: [relu, gelu]
";

const CELLS: [&str; 4] = [
    "000-seed=1,model.activation=relu",
    "001-seed=1,model.activation=gelu",
    "002-seed=2,model.activation=relu",
    "003-seed=2,model.activation=gelu",
];

/// Writes base.yaml and the sweep file (`sweep` text) into `dir`; returns the sweep file.
fn write_sweep(dir: &Path, sweep: &str) -> PathBuf {
    std::fs::write(dir.join("base.yaml"), BASE).unwrap();
    let path = dir.join("sweep.yaml");
    std::fs::write(&path, sweep).unwrap();
    path
}

/// The one sweep directory under `out/grid`.
fn sweep_dir(out: &Path) -> PathBuf {
    let dirs: Vec<PathBuf> = std::fs::read_dir(out.join("grid"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs.into_iter().next().unwrap()
}

fn record(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("sweep.json")).unwrap()).unwrap()
}

fn states(dir: &Path) -> Vec<String> {
    record(dir)["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["state"].as_str().unwrap().to_string())
        .collect()
}

/// The sweep directory under `out/grid` once `ready` holds for it (within 120 s).
fn wait_for(out: &Path, what: &str, ready: impl Fn(&Path) -> bool) -> PathBuf {
    let t0 = Instant::now();
    loop {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "waited 120 s for {what}"
        );
        let dir = std::fs::read_dir(out.join("grid"))
            .ok()
            .and_then(|mut entries| entries.next())
            .map(|e| e.unwrap().path());
        if let Some(dir) = dir.filter(|d| ready(d)) {
            return dir;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `densitrace sweep FILE --out OUT --jobs N` in the background, in a process group of its own
/// (its cells join it), so a test can signal the sweep alone or the whole group.
fn spawn_sweep(file: &Path, out: &Path, jobs: usize) -> std::process::Child {
    bin()
        .args([
            "sweep",
            "run",
            file.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .args(["--jobs", &jobs.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap()
}

/// The sweep `file` created under `out/grid` (every cell's config validated) and not run:
/// `--slurm --dry-run` writes the array script without submitting it. Spelled the earlier way
/// (`sweep FILE`, without `run`), which stays a hidden alias for one release.
fn create_without_running(file: &Path, out: &Path) -> PathBuf {
    expect_success(&[
        "sweep",
        file.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--slurm",
        "--dry-run",
    ]);
    sweep_dir(out)
}

/// A complete 4-cell sweep under `tmp/name`, run locally two cells at a time.
fn local_sweep(tmp: &Path, name: &str) -> PathBuf {
    let file = write_sweep(tmp, SWEEP);
    let out = tmp.join(name);
    let stdout = expect_success(&[
        "sweep",
        "run",
        file.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--jobs",
        "2",
    ]);
    assert!(stdout.contains("cells: 4 done"), "{stdout}");
    sweep_dir(&out)
}

#[test]
fn a_local_sweep_runs_every_cell_as_an_ordinary_run() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = local_sweep(tmp.path(), "out");
    assert_eq!(states(&dir), ["done"; 4]);
    for (cell, name) in record(&dir)["cells"].as_array().unwrap().iter().zip(CELLS) {
        assert_eq!(cell["name"], name);
        assert_eq!(cell["exit_code"], 0);
        assert_eq!(
            manifest(&dir.join("cells").join(name))["status"],
            "completed"
        );
    }
    // A cell is exactly what `densitrace run` writes for its resolved config: the same run
    // started by hand gives the same numbers, and `probe`/`dump` work on the cell as on any run.
    let cell = dir.join("cells").join(CELLS[3]);
    let alone = tmp.path().join("alone");
    let config = dir.join("configs").join(format!("{}.yaml", CELLS[3]));
    expect_success(&[
        "run",
        config.to_str().unwrap(),
        "--run-dir",
        alone.to_str().unwrap(),
    ]);
    assert_same_tables(&cell, &alone);
    let yaml = std::fs::read_to_string(cell.join("config.yaml")).unwrap();
    assert!(
        yaml.contains("seed: 2") && yaml.contains("activation: gelu") && yaml.contains("steps: 40")
    );
    let npy = tmp.path().join("acts.npy");
    expect_success(&[
        "dump",
        cell.to_str().unwrap(),
        "--probe",
        "id",
        "--site",
        "final.norm",
        "-o",
        npy.to_str().unwrap(),
    ]);

    let status = expect_success(&["sweep", "status", dir.to_str().unwrap()]);
    assert!(
        status.contains(CELLS[2]) && status.contains("4 cells: 4 done"),
        "{status}"
    );
}

#[test]
fn a_sweep_keeps_running_its_own_binary_after_the_file_is_replaced() {
    // What `cargo build` does to a sweep started from target/release: the binary's file goes
    // away while cells are still to start. Every cell must still run, with the sweep's binary.
    let tmp = tempfile::tempdir().unwrap();
    let file = write_sweep(tmp.path(), SWEEP);
    let out = tmp.path().join("out");
    let copy = tmp.path().join("densitrace-copy");
    let original = match std::env::var_os("DENSITRACE_BIN") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(env!("CARGO_BIN_EXE_densitrace")),
    };
    std::fs::copy(&original, &copy).unwrap();
    let child = std::process::Command::new(&copy)
        .args([
            "sweep",
            file.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .args(["--jobs", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let dir = wait_for(&out, "a cell to start", |d| {
        d.join("sweep.json").exists() && states(d).iter().any(|s| s == "running")
    });
    std::fs::remove_file(&copy).unwrap();
    let after = states(&dir);
    assert!(
        after.iter().any(|s| s == "pending"),
        "cells were still to start when the binary went: {after:?}"
    );
    let done = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&done.stdout);
    assert!(
        done.status.success() && stdout.contains("cells: 4 done"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert_eq!(states(&sweep_dir(&out)), ["done"; 4]);
    // Each cell's manifest names the binary as it was started, not /proc/self/exe.
    for name in CELLS {
        let line = manifest(&dir.join("cells").join(name))["command_line"].to_string();
        assert!(line.contains("densitrace-copy"), "{line}");
    }
}

#[test]
fn a_killed_sweep_resumes_every_cell_to_the_same_tables() {
    let tmp = tempfile::tempdir().unwrap();
    let reference = local_sweep(tmp.path(), "reference");

    // Longer cells, killed (the sweep and its runs, SIGKILL to the process group) once some
    // are done and others running.
    let file = write_sweep(tmp.path(), SWEEP);
    let out = tmp.path().join("killed");
    let mut child = spawn_sweep(&file, &out, 1);
    // Kill once the second cell or a later one is running, after its first checkpoint.
    let dir = wait_for(&out, "a later cell's checkpoint", |dir| {
        let Ok(text) = std::fs::read(dir.join("sweep.json")) else {
            return false;
        };
        let Ok(r) = serde_json::from_slice::<serde_json::Value>(&text) else {
            return false;
        };
        let cells = r["cells"].as_array().unwrap();
        let running = cells.iter().position(|c| c["state"] == "running");
        running.is_some_and(|i| {
            i >= 1 && common::cli::has_checkpoint(&dir.join("cells").join(CELLS[i]))
        })
    });
    assert!(
        child.try_wait().unwrap().is_none(),
        "the sweep ended before it was killed"
    );
    unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
    child.wait().unwrap();
    let before = states(&dir);
    assert!(before.contains(&"running".to_string()), "{before:?}");
    assert_eq!(before[0], "done", "{before:?}");
    // When each cell that finished before the kill started: a rerun would start it anew.
    let started = |name: &str| manifest(&dir.join("cells").join(name))["start_time"].clone();
    let done_before: Vec<(&str, serde_json::Value)> = CELLS
        .iter()
        .zip(&before)
        .filter(|(_, s)| *s == "done")
        .map(|(c, _)| (*c, started(c)))
        .collect();

    let stdout = expect_success(&["sweep", "resume", dir.to_str().unwrap()]);
    assert!(stdout.contains("cells: 4 done"), "{stdout}");
    for (name, state) in CELLS.iter().zip(&before) {
        let cell = dir.join("cells").join(name);
        assert_same_tables(&reference.join("cells").join(name), &cell);
        let m = manifest(&cell);
        // The killed cell continued from its checkpoint; the others ran once.
        let resumes = m["resumes"].as_array().unwrap().len();
        assert_eq!(resumes, usize::from(state == "running"), "{name}: {m}");
    }
    // Done cells were not run again.
    for (name, start) in done_before {
        assert_eq!(started(name), start, "{name} ran again");
    }
    // Resuming a finished sweep runs nothing and says so.
    let stdout = expect_success(&["sweep", "resume", dir.to_str().unwrap()]);
    assert!(stdout.contains("cells: 4 done"), "{stdout}");
}

#[test]
fn failed_cells_are_recorded_and_rerun_by_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("corpus.txt");
    let text: String = (0..200)
        .map(|i| {
            format!(
                "line {i} of a small corpus about {} things\n",
                ["red", "old", "tall"][i % 3]
            )
        })
        .collect();
    std::fs::write(&corpus, &text).unwrap();
    let file = write_sweep(tmp.path(), SWEEP);
    let base = BASE
        .replace(
            "{kind: rulegraph, entities: 20, relations: 3, rules: 4, min_hops: 2, max_hops: 3}",
            &format!("{{kind: text, path: {}}}\n  context: 8", corpus.display()),
        )
        .replace("seq_len: 4", "seq_len: 8");
    std::fs::write(tmp.path().join("base.yaml"), base).unwrap();
    let out = tmp.path().join("out");
    let dir = create_without_running(&file, &out);
    assert_eq!(states(&dir), ["pending"; 4]);

    // The corpus disappears: every cell fails (its run exits 2), the sweep exits 1.
    std::fs::rename(&corpus, tmp.path().join("moved.txt")).unwrap();
    let (code, _) = run_cli(&["sweep", "--resume", dir.to_str().unwrap(), "--jobs", "2"]);
    assert_eq!(code, Some(1));
    assert_eq!(states(&dir), ["failed"; 4]);
    assert_eq!(record(&dir)["cells"][0]["exit_code"], 2);
    let log = std::fs::read_to_string(dir.join("logs").join(format!("{}.log", CELLS[0]))).unwrap();
    assert!(log.contains("corpus.txt"), "{log}");

    // Restored, a resume reruns them all.
    std::fs::rename(tmp.path().join("moved.txt"), &corpus).unwrap();
    let stdout = expect_success(&["sweep", "--resume", dir.to_str().unwrap(), "--jobs", "2"]);
    assert!(stdout.contains("cells: 4 done"), "{stdout}");
}

/// Stops a long sweep with `signal`, sent to the sweep alone or (`group`, as a terminal's Ctrl-C
/// does) to the sweep and its cells; the running cells must checkpoint and be recorded
/// interrupted, the others stay pending.
fn stop_with(signal: i32, group: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let file = write_sweep(
        tmp.path(),
        &SWEEP.replace("train.steps: 40", "train.steps: 1000000"),
    );
    let out = tmp.path().join("out");
    let child = spawn_sweep(&file, &out, 2);
    let dir = wait_for(&out, "checkpoints of the first two cells", |dir| {
        CELLS[..2]
            .iter()
            .all(|c| common::cli::has_checkpoint(&dir.join("cells").join(c)))
    });
    let pid = child.id() as i32;
    unsafe { libc::kill(if group { -pid } else { pid }, signal) };
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("sweep resume"), "{stderr}");
    assert_eq!(states(&dir)[..2], ["interrupted", "interrupted"]);
    assert_eq!(states(&dir)[2..], ["pending", "pending"]);
    for cell in &CELLS[..2] {
        let m = manifest(&dir.join("cells").join(cell));
        assert_eq!(m["status"], "interrupted", "{cell}: {m}");
    }
}

#[test]
fn sigterm_stops_the_running_cells_after_a_checkpoint() {
    stop_with(libc::SIGTERM, false);
}

#[test]
fn ctrl_c_on_the_terminal_stops_the_running_cells_after_a_checkpoint() {
    stop_with(libc::SIGINT, true);
}

#[test]
fn bad_sweeps_exit_2_naming_file_and_key_and_create_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: &[(&str, &[&str])] = &[
        (
            &SWEEP.replace("model.activation:", "model.activaton:"),
            &["sweep.yaml", "activaton"],
        ),
        (
            &SWEEP.replace("[1, 2]", "[1, two]"),
            &["sweep.yaml", "seed=\"two\"", "seed"],
        ),
        (
            &SWEEP.replace("[1, 2]", "[]"),
            &["sweep.yaml", "grid.seed", "empty"],
        ),
        (
            &SWEEP.replace("set: {train.steps: 40}", "set: {seed: 3}"),
            &["sweep.yaml", "grid.seed", "also in `set`"],
        ),
        (
            &SWEEP.replace("base.yaml", "missing.yaml"),
            &["sweep.yaml", "missing.yaml"],
        ),
        (
            &SWEEP.replace("name: grid", "name: a/b"),
            &["sweep.yaml", "name"],
        ),
        (&SWEEP.replace("grid:", "grids:"), &["sweep.yaml", "grids"]),
    ];
    for (i, (sweep, needles)) in cases.iter().enumerate() {
        let file = write_sweep(tmp.path(), sweep);
        let out = tmp.path().join(format!("out{i}"));
        let (code, stderr) = run_cli(&[
            "sweep",
            file.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        assert_eq!(code, Some(2), "case {i}: {stderr}");
        for needle in *needles {
            assert!(
                stderr.contains(needle),
                "case {i}: {needle:?} not in {stderr}"
            );
        }
        assert!(!out.exists(), "case {i}: created {}", out.display());
    }

    // --resume and --cell on what is not a sweep, a sweep file edited since, a cell out of range.
    let (code, stderr) = run_cli(&["sweep", "--resume", tmp.path().to_str().unwrap()]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("not a densitrace sweep directory"),
        "{stderr}"
    );
    let file = write_sweep(tmp.path(), SWEEP);
    let out = tmp.path().join("dry");
    let dir = create_without_running(&file, &out);
    let (code, stderr) = run_cli(&["sweep", "--cell", "4", dir.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("cell 4:") && stderr.contains("0..=3"),
        "{stderr}"
    );
    let yaml = dir.join("sweep.yaml");
    std::fs::write(&yaml, SWEEP.replace("[1, 2]", "[1, 2, 3]")).unwrap();
    let (code, stderr) = run_cli(&["sweep", "--resume", dir.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("sweep.yaml") && stderr.contains("edited"),
        "{stderr}"
    );
    assert_eq!(states(&dir), ["pending"; 4], "nothing ran");
}

/// Whether a Slurm controller answers. Under `CI` it must (`.ci/run` starts
/// scripts/slurm-local); elsewhere the test says loudly that it skipped.
fn slurm_is_up() -> bool {
    let up = std::process::Command::new("timeout")
        .args(["5", "sinfo", "-h", "-o", "%T"])
        .output()
        .is_ok_and(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .any(|l| l == "idle" || l == "mixed")
        });
    if !up {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set and the Slurm test needs a running Slurm: run scripts/slurm-local"
        );
        eprintln!("SKIPPED: no Slurm controller answers (start one with scripts/slurm-local)");
    }
    up
}

#[test]
fn a_sweep_on_slurm_gives_the_same_tables_as_run_locally() {
    if !slurm_is_up() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let reference = local_sweep(tmp.path(), "local");
    let file = write_sweep(tmp.path(), SWEEP);
    let out = tmp.path().join("slurm");
    let stdout = expect_success(&[
        "sweep",
        file.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--slurm",
        "--max-parallel",
        "2",
    ]);
    assert!(stdout.contains("submitted job array"), "{stdout}");
    let dir = sweep_dir(&out);
    let script = std::fs::read_to_string(dir.join("slurm.sbatch")).unwrap();
    assert!(script.contains("#SBATCH --array=0-3%2"), "{script}");
    let t0 = Instant::now();
    while states(&dir) != ["done"; 4] {
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "the Slurm array did not finish in 300 s: {:?}",
            states(&dir)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    for name in CELLS {
        assert_same_tables(
            &reference.join("cells").join(name),
            &dir.join("cells").join(name),
        );
    }
}

/// The shipped sweep files: every cell resolves and validates, a cell runs (shortened), and the
/// report reads what ran.
#[test]
fn shipped_sweeps_resolve_and_their_cells_run() {
    let tmp = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("experiments/sweeps"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty());
    for file in files {
        let out = tmp.path().join(file.file_stem().unwrap());
        // Shortened; the grid as shipped.
        let stdout = expect_success(&[
            "sweep",
            file.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--set",
            "train.steps=4",
            "--set",
            "probes.every=4",
            "--set",
            "device=cpu",
            "--set",
            "probes.samples=64",
            "--slurm",
            "--dry-run",
        ]);
        assert!(stdout.contains("wrote"), "{stdout}");
        let name = std::fs::read_dir(&out)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let dir = std::fs::read_dir(&name)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let cells = record(&dir)["cells"].as_array().unwrap().len();
        let last = (cells - 1).to_string();
        for cell in ["0", last.as_str()] {
            let stdout = expect_success(&["sweep", "cell", dir.to_str().unwrap(), cell]);
            assert!(
                stdout.contains(" done in "),
                "{}: cell {cell}: {stdout}",
                file.display()
            );
        }
        // The report of the cells that ran; the others are listed as left out.
        expect_success(&["report", dir.to_str().unwrap()]);
        let html = std::fs::read_to_string(dir.join("report/index.html")).unwrap();
        assert!(html.contains("Left out"), "{}", file.display());
    }
}

#[test]
fn repeated_grid_values_are_refused_at_plan_time_naming_the_cells() {
    let tmp = tempfile::tempdir().unwrap();
    let file = write_sweep(
        tmp.path(),
        "name: grid\nconfig: base.yaml\ngrid:\n  seed: [1, 2, 1]\n",
    );
    let out = tmp.path().join("out");
    let (code, stderr) = run_cli(&[
        "sweep",
        file.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("000-seed=1")
            && stderr.contains("002-seed=1")
            && stderr.contains("same config"),
        "{stderr}"
    );
    assert!(!out.exists(), "nothing is created");
}

/// A sweep whose cell 0 runs for a long time and cell 1 briefly, created and not run.
fn long_and_short(tmp: &Path) -> PathBuf {
    let file = write_sweep(
        tmp,
        "name: grid\nconfig: base.yaml\ngrid:\n  train.steps: [200000, 20]\n",
    );
    create_without_running(&file, &tmp.join("out"))
}

fn sweep_cli(args: &[&str], dir: &Path) -> (Option<i32>, String) {
    let mut all = args.to_vec();
    all.push(dir.to_str().unwrap());
    run_cli(&all)
}

#[test]
fn a_sweep_held_by_another_process_is_refused_and_left_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = long_and_short(tmp.path());
    // Another process runs the whole sweep: held here, as a live `sweep --resume` holds it.
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("sweep.lock"))
        .unwrap();
    lock.lock().unwrap();
    for args in [&["sweep", "--resume"][..], &["sweep", "--cell", "1"][..]] {
        let (code, stderr) = sweep_cli(args, &dir);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("another live densitrace process"),
            "{stderr}"
        );
    }
    assert_eq!(states(&dir), ["pending", "pending"]);
    assert!(!dir.join("cells").join("001-train.steps=20").exists());
    drop(lock);
    // Free again: the short cell runs.
    let (code, stderr) = sweep_cli(&["sweep", "--cell", "1"], &dir);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(states(&dir), ["pending", "done"]);
}

#[test]
fn a_cell_run_by_a_live_process_is_refused_and_never_recorded_failed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = long_and_short(tmp.path());
    // A real `sweep --cell 0` on the long cell, then a second one and a --resume while it runs.
    let first = bin()
        .args(["sweep", "--cell", "0", dir.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while states(&dir)[0] != "running" {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "cell 0 never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, stderr) = sweep_cli(&["sweep", "--cell", "0"], &dir);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("cell 0") && stderr.contains("another live"),
        "{stderr}"
    );
    let (code, stderr) = sweep_cli(&["sweep", "--resume"], &dir);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(states(&dir)[0], "running");
    let status = expect_success(&["sweep", "--status", dir.to_str().unwrap()]);
    assert!(status.contains("1 running"), "{status}");
    unsafe { libc::kill(first.id() as i32, libc::SIGTERM) };
    let out = first.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(states(&dir)[0], "interrupted");

    // A cell whose run completed is done, whatever a process recorded (what the race used to
    // leave: `failed`, exit 2, beside a completed manifest).
    let (code, stderr) = sweep_cli(&["sweep", "--cell", "1"], &dir);
    assert_eq!(code, Some(0), "{stderr}");
    let mut record = record(&dir);
    record["cells"][1]["state"] = "failed".into();
    record["cells"][1]["exit_code"] = 2.into();
    std::fs::write(dir.join("sweep.json"), record.to_string()).unwrap();
    let status = expect_success(&["sweep", "--status", dir.to_str().unwrap()]);
    assert!(
        !status.contains("failed") && status.contains("1 done"),
        "{status}"
    );
    let (code, stderr) = sweep_cli(&["sweep", "--cell", "1"], &dir);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(states(&dir)[1], "done");
}

#[test]
fn a_killed_sweep_shows_its_cells_interrupted_not_running() {
    let tmp = tempfile::tempdir().unwrap();
    let file = write_sweep(
        tmp.path(),
        "name: grid\nconfig: base.yaml\nset: {train.steps: 200000}\ngrid:\n  seed: [1, 2]\n",
    );
    let out = tmp.path().join("out");
    let mut sweep = spawn_sweep(&file, &out, 2);
    let dir = wait_for(&out, "both cells running", |d| {
        d.join("sweep.json").is_file()
            && std::fs::read(d.join("sweep.json"))
                .ok()
                .and_then(|t| serde_json::from_slice::<serde_json::Value>(&t).ok())
                .is_some_and(|r| {
                    r["cells"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .all(|c| c["state"] == "running")
                })
    });
    // SIGKILL to the whole group: the sweep and its cells die without recording anything.
    unsafe { libc::kill(-(sweep.id() as i32), libc::SIGKILL) };
    sweep.wait().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let status = expect_success(&["sweep", "--status", dir.to_str().unwrap()]);
    assert!(
        status.contains("2 cells: 2 interrupted") && !status.contains("running"),
        "{status}"
    );
}
