//! Runs that can be killed at any moment, resumed, and give the same numbers: SIGKILL at random
//! points, SIGINT, the run-directory lock, divergence and determinism, through the binary.

#[macro_use]
mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::cli::{
    assert_same_tables, finish, manifest, resume, run_dir, start, table, write_config,
};
use rand::{Rng, SeedableRng};

// The shared data and model (common::tiny_config!), then this file's own settings.
const CONFIG: &str = tiny_config!(
    "
name: crash
seed: 5
# 2 shards: resumes, repeats and thread counts below all run the batch's halves on threads
train: {steps: 4000, batch_size: 8, warmup_steps: 10, log_every: 7, shards: 2}
probes:
  every: 100
  samples: 16
  sites: [resid_post, final.norm]
  metrics: [l1, hoyer, topk_energy@0.1, nonfinite]
  sets:
    - {name: id, family: none}
    - {name: corrupt, family: token_corruption, levels: [0.5]}
checkpoint: {every: 50, keep_last: 2, major: [500]}
"
);

/// A completed 20-step run of CONFIG under `dir`.
fn finished_run(dir: &Path) -> PathBuf {
    let config = write_config(dir, CONFIG);
    let out = dir.join("runs");
    let output = finish(start(&config, &out, &["--set", "train.steps=20"]));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    run_dir(&out, "crash").unwrap()
}

#[test]
fn sigkill_at_random_points_then_resume_matches_an_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(tmp.path(), CONFIG);
    let reference_out = tmp.path().join("reference");
    let t0 = Instant::now();
    let out = finish(start(&config, &reference_out, &[]));
    // Kill points are drawn within the first half of an uninterrupted run's duration, so most
    // land mid-run whatever this machine's speed.
    let duration = t0.elapsed().as_millis() as u64;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reference = run_dir(&reference_out, "crash").unwrap();

    let killed_out = tmp.path().join("killed");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(20261125);
    let mut kills = 0;
    for _ in 0..4 {
        let mut child = match run_dir(&killed_out, "crash") {
            Some(run) => resume(&run),
            None => start(&config, &killed_out, &[]),
        };
        std::thread::sleep(Duration::from_millis(
            rng.random_range(duration / 10..duration / 2),
        ));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        finish(child);
        if let Some(run) = run_dir(&killed_out, "crash") {
            // Every Parquet file is complete and valid, whatever the moment of the kill.
            for name in ["density", "quantiles", "train"] {
                table(&run, name);
            }
        }
    }
    assert!(
        kills >= 2,
        "only {kills} kills landed mid-run: the run is too short for the test"
    );
    // Finish it, unless the last attempt already did (a completed run is not resumed).
    match run_dir(&killed_out, "crash") {
        Some(run) if manifest(&run)["status"] == "completed" => {}
        Some(run) => {
            let out = finish(resume(&run));
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        None => {
            let out = finish(start(&config, &killed_out, &[]));
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let run = run_dir(&killed_out, "crash").unwrap();
    assert_same_tables(&reference, &run);
    assert_eq!(manifest(&run)["status"], "completed");
    assert!(run.join("checkpoints/final/DONE").is_file());
    // keep_last 2 plus the major step 500.
    let mut kept: Vec<String> = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    kept.sort();
    assert_eq!(kept, ["final", "step-000500", "step-003950", "step-004000"]);
}

/// Starts a long run, waits for its first evaluation, sends `signal` and checks the stop.
fn stop_with(signal: i32) {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(tmp.path(), CONFIG);
    let out = tmp.path().join("runs");
    let child = start(&config, &out, &["--set", "train.steps=200000"]);
    // Wait for the first evaluation, then interrupt.
    let t0 = Instant::now();
    while run_dir(&out, "crash").is_none_or(|r| !r.join("density/step-000100").exists()) {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the run never reached step 100"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    unsafe { libc::kill(child.id() as i32, signal) };
    let output = finish(child);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("--resume"), "{stderr}");
    let run = run_dir(&out, "crash").unwrap();
    let m = manifest(&run);
    assert_eq!(m["status"], "interrupted");
    let checkpoints: Vec<PathBuf> = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(
        checkpoints.iter().any(|c| c.join("DONE").is_file()),
        "no complete checkpoint"
    );
    for name in ["density", "train"] {
        table(&run, name);
    }
}

#[test]
fn sigint_writes_a_checkpoint_and_exits_130() {
    stop_with(libc::SIGINT);
}

#[test]
fn sigterm_writes_a_checkpoint_and_exits_130() {
    stop_with(libc::SIGTERM);
}

#[test]
fn a_run_directory_in_use_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let run = finished_run(tmp.path());
    let held = File::options().write(true).open(run.join(".lock")).unwrap();
    held.lock().unwrap();
    let output = finish(resume(&run));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("in use by another densitrace process"),
        "{stderr}"
    );
    // Released with its holder: the next refusal is about the run itself, which is complete.
    drop(held);
    let output = finish(resume(&run));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("completed run: there is nothing to resume"),
        "{stderr}"
    );
}

#[test]
fn resume_refuses_what_is_not_a_run_or_was_edited() {
    let tmp = tempfile::tempdir().unwrap();
    let output = finish(resume(tmp.path()));
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("not a densitrace run directory"));

    let run = finished_run(tmp.path());
    let before = std::fs::read_dir(run.join("density")).unwrap().count();
    let yaml = std::fs::read_to_string(run.join("config.yaml")).unwrap();
    std::fs::write(run.join("config.yaml"), yaml.replace("seed: 5", "seed: 6")).unwrap();
    let output = finish(resume(&run));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("config.yaml") && stderr.contains("edited"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_dir(run.join("density")).unwrap().count(),
        before,
        "nothing deleted"
    );
}

#[test]
fn a_diverging_loss_stops_the_run_after_a_last_evaluation_and_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(tmp.path(), CONFIG);
    let out = tmp.path().join("runs");
    let overrides = [
        "train.lr=1e30",
        "train.min_lr=0",
        "train.warmup_steps=0",
        "train.grad_clip=0",
    ];
    let args: Vec<&str> = overrides.iter().flat_map(|o| ["--set", o]).collect();
    let output = finish(start(&config, &out, &args));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("not finite at step 2"), "{stderr}");
    let run = run_dir(&out, "crash").unwrap();
    let m = manifest(&run);
    assert_eq!(
        (m["status"].as_str(), m["diverged_at"].as_u64()),
        (Some("diverged"), Some(2))
    );
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run.join("checkpoints/step-000001/state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["diverged_at"], 2);
    // The last evaluation (the model after step 1) exists, its non-finite vectors counted.
    let density = table(&run, "density");
    let nonfinite: Vec<&String> = density
        .values()
        .filter(|r| r.contains("step=1 ") && r.contains("metric=nonfinite"))
        .collect();
    assert!(!nonfinite.is_empty(), "no evaluation at step 1");
}

#[test]
fn the_same_config_and_seed_give_identical_tables() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(tmp.path(), CONFIG);
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    for out in [&a, &b] {
        assert!(
            finish(start(&config, out, &["--set", "train.steps=300"]))
                .status
                .success()
        );
    }
    assert_same_tables(
        &run_dir(&a, "crash").unwrap(),
        &run_dir(&b, "crash").unwrap(),
    );
}

/// The README's reproducibility statement: on one machine the tables do not depend on how many
/// threads Burn's CPU backend and the fast reduction use (CONFIG's 2 shards always take one
/// thread each). The model is widened to the quickstart's
/// (d_model 128, d_ff 512, 192 tokens a step) so its matrix multiplies are large enough for
/// flex to split them over threads (192 x 128 x 512 is above its 192^3 threshold).
#[test]
fn the_tables_do_not_depend_on_the_thread_count() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(tmp.path(), CONFIG);
    let outs = [tmp.path().join("one"), tmp.path().join("two")];
    for (threads, out) in ["1", "2"].into_iter().zip(&outs) {
        let output = common::cli::bin()
            .env("RAYON_NUM_THREADS", threads)
            .args([
                "run",
                config.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ])
            .args(["--set", "train.steps=30", "--set", "train.batch_size=64"])
            .args(["--set", "model.d_model=128", "--set", "model.d_ff=512"])
            .args(["--set", "probes.every=10", "--set", "probes.samples=256"])
            .output()
            .unwrap();
        common::cli::assert_success(&output, &format!("a run on {threads} thread(s)"));
    }
    assert_same_tables(
        &run_dir(&outs[0], "crash").unwrap(),
        &run_dir(&outs[1], "crash").unwrap(),
    );
}

/// Overwrites 4 KiB (or half the file, if smaller) in the middle of `path`, keeping its size.
fn corrupt_in_place(path: &Path) -> Vec<u8> {
    let original = std::fs::read(path).unwrap();
    let mut bytes = original.clone();
    let n = 4096.min(bytes.len() / 2);
    let at = (bytes.len() - n) / 2;
    for b in &mut bytes[at..at + n] {
        *b = !*b;
    }
    std::fs::write(path, &bytes).unwrap();
    assert_eq!(
        std::fs::metadata(path).unwrap().len() as usize,
        original.len()
    );
    original
}

#[test]
fn corrupted_weights_of_unchanged_size_are_refused_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let run = finished_run(tmp.path());
    let final_dir = run.join("checkpoints/final");
    let done = std::fs::read_to_string(final_dir.join("DONE")).unwrap();
    assert!(
        done.contains("model.bpk") && done.contains("dt64"),
        "{done}"
    );
    let weights = final_dir.join("model.bpk");
    let original = corrupt_in_place(&weights);
    let npy = tmp.path().join("acts.npy");
    let dump = |npy: &Path| {
        common::cli::run_cli(&[
            "dump",
            run.to_str().unwrap(),
            "--probe",
            "id",
            "--site",
            "final.norm",
            "-o",
            npy.to_str().unwrap(),
        ])
    };
    let (code, stderr) = dump(&npy);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&weights.display().to_string()) && stderr.contains("corrupted"),
        "{stderr}"
    );
    assert!(!npy.exists());
    // Restored, it loads; and a DONE written before hashes were recorded (empty) loads unchecked.
    std::fs::write(&weights, &original).unwrap();
    let (code, stderr) = dump(&npy);
    assert_eq!(code, Some(0), "{stderr}");
    std::fs::write(final_dir.join("DONE"), b"").unwrap();
    let (code, stderr) = dump(&tmp.path().join("old.npy"));
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn a_corrupted_checkpoint_is_refused_by_resume_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(tmp.path(), CONFIG);
    let out = tmp.path().join("runs");
    let child = start(&config, &out, &["--set", "train.steps=200000"]);
    let t0 = Instant::now();
    while run_dir(&out, "crash").is_none_or(|r| !common::cli::has_checkpoint(&r)) {
        assert!(t0.elapsed() < Duration::from_secs(60), "no checkpoint");
        std::thread::sleep(Duration::from_millis(20));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let output = finish(child);
    assert_eq!(output.status.code(), Some(130));
    let run = run_dir(&out, "crash").unwrap();
    let mut newest: Vec<PathBuf> = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("DONE").is_file())
        .collect();
    newest.sort();
    let weights = newest.last().unwrap().join("model.bpk");
    corrupt_in_place(&weights);
    let output = finish(resume(&run));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&weights.display().to_string()) && stderr.contains("corrupted"),
        "{stderr}"
    );
}

#[test]
fn every_command_documents_every_exit_code_it_uses() {
    for (command, codes) in [
        ("run", &["0 ", "1 ", "2 ", "3 ", "130 "][..]),
        ("sweep", &["0 ", "1 ", "2 ", "130 "][..]),
        ("report", &["0 ", "1 ", "2 "][..]),
        ("dump", &["0 ", "1 ", "2 "][..]),
        ("probe", &["0 ", "1 ", "2 "][..]),
        ("check", &["0 ", "1 ", "2 "][..]),
        ("bench", &["0 ", "1 ", "2 "][..]),
        ("devices", &["0 "][..]),
    ] {
        let help = common::cli::expect_success(&[command, "--help"]);
        let codes_text = help
            .split("Exit codes:")
            .nth(1)
            .unwrap_or_else(|| panic!("{command} --help has no exit codes:\n{help}"));
        let codes_text = codes_text.split("\n\n").next().unwrap().replace('\n', " ");
        for code in codes {
            assert!(
                codes_text.contains(code),
                "{command} --help does not list exit code {code}: {codes_text}"
            );
        }
    }
}
