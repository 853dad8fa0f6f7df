//! Whole runs on a text source through the binary: a BPE run interrupted and resumed gives the
//! same tables as one that never stopped (its tokenizer reloaded, not retrained), and
//! `densitrace probe` measures new probe sets on the finished run.

mod common;

use common::cli::{bin, finish, resume, run_dir, start};

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use arrow::array::AsArray;
use arrow::datatypes::Float64Type;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

fn config_yaml(corpus: &Path) -> String {
    format!(
        "
name: text
seed: 4
device: cpu
data:
  source: {{kind: text, path: {}}}
  tokenizer: {{kind: bpe, vocab_size: 300}}
  context: 12
model: {{layers: 1, d_model: 16, heads: 2, d_ff: 32, seq_len: 24}}
train: {{steps: 600, batch_size: 4, warmup_steps: 5, log_every: 5}}
probes:
  every: 50
  samples: 24
  sites: [resid_post, final.norm]
  metrics: [l1, hoyer, topk_energy@0.1]
  sets:
    - {{name: id, family: none}}
    - {{name: noise, family: char_noise, levels: [0.1, 0.3]}}
    - {{name: long, family: length, levels: [2]}}
checkpoint: {{every: 20, keep_last: 2}}
",
        corpus.display()
    )
}

fn write_corpus(dir: &Path) -> PathBuf {
    let path = dir.join("corpus.txt");
    let text: String = (0..300)
        .map(|i| {
            format!(
                "sentence {} says that the {} {} is {} today\n",
                i,
                ["red", "old", "tall", "quiet"][i % 4],
                ["house", "river", "tree", "road", "cat"][i % 5],
                ["here", "gone", "near", "far", "warm", "cold"][i % 6]
            )
        })
        .collect();
    std::fs::write(&path, text).unwrap();
    path
}

/// (probe, level, site, position, metric, step) -> value, from every density file of a table.
fn density(dir: &Path) -> Vec<(String, u64)> {
    let mut rows = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("density"))
        .unwrap()
        .map(|e| e.unwrap().path().join("part-0.parquet"))
        .collect();
    files.sort();
    for path in files {
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap())
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let b = batch.unwrap();
            let text = |name: &str, i: usize| {
                b.column_by_name(name)
                    .unwrap()
                    .as_string::<i32>()
                    .value(i)
                    .to_string()
            };
            let float = |name: &str, i: usize| {
                b.column_by_name(name)
                    .unwrap()
                    .as_primitive::<Float64Type>()
                    .value(i)
            };
            for i in 0..b.num_rows() {
                let key = format!(
                    "{} {} {} {} {} {}",
                    text("probe", i),
                    float("shift_level", i),
                    text("site", i),
                    text("position", i),
                    text("metric", i),
                    path.parent()
                        .unwrap()
                        .file_name()
                        .unwrap()
                        .to_string_lossy()
                );
                rows.push((key, float("value", i).to_bits()));
            }
        }
    }
    rows
}

#[test]
fn an_interrupted_bpe_run_resumes_to_the_same_tables_with_its_saved_tokenizer() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = write_corpus(tmp.path());
    let config = tmp.path().join("text.yaml");
    std::fs::write(&config, config_yaml(&corpus)).unwrap();

    let reference_out = tmp.path().join("reference");
    let out = finish(start(&config, &reference_out, &[]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reference = run_dir(&reference_out, "text").unwrap();

    let out_dir = tmp.path().join("interrupted");
    let child = start(&config, &out_dir, &[]);
    let t0 = Instant::now();
    while run_dir(&out_dir, "text").is_none_or(|r| !r.join("checkpoints/step-000020/DONE").exists())
    {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no checkpoint at step 20"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = finish(child);
    let run = run_dir(&out_dir, "text").unwrap();
    let tokenizer = std::fs::read(run.join("tokenizer.json")).unwrap();
    let probes = std::fs::read(run.join("probes.json")).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(130),
        "the run was not interrupted: {stderr}"
    );
    // A corpus edited since the start is refused, touching nothing.
    let original = std::fs::read(&corpus).unwrap();
    std::fs::write(&corpus, [&original[..], b"one more line\n"].concat()).unwrap();
    let out = bin()
        .args(["run", "--resume", run.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("the data differs from what the run started with"),
        "{stderr}"
    );
    std::fs::write(&corpus, original).unwrap();
    {
        let out = finish(resume(&run));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        std::fs::read(run.join("tokenizer.json")).unwrap(),
        tokenizer
    );
    assert_eq!(std::fs::read(run.join("probes.json")).unwrap(), probes);
    // The same BPE vocabulary as the reference run's: training it is deterministic.
    assert_eq!(
        std::fs::read(reference.join("tokenizer.json")).unwrap(),
        tokenizer
    );
    let (a, b) = (density(&reference), density(&run));
    assert!(!a.is_empty());
    assert_eq!(a, b, "the resumed run's density table differs");
}

#[test]
fn probe_measures_new_sets_on_a_finished_run() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = write_corpus(tmp.path());
    let config = tmp.path().join("text.yaml");
    std::fs::write(&config, config_yaml(&corpus)).unwrap();
    let out_dir = tmp.path().join("runs");
    let out = finish(start(&config, &out_dir, &[]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = run_dir(&out_dir, "text").unwrap();

    let probes = tmp.path().join("later.yaml");
    std::fs::write(
        &probes,
        "samples: 8\nsets:\n  - {name: id, family: none}\n  - {name: words, family: word_noise, levels: [0.2, 0.5]}\n  - {name: random, family: random}\n",
    )
    .unwrap();
    let probe = |file: &Path, extra: &[&str]| {
        bin()
            .args([
                "probe",
                run.to_str().unwrap(),
                "--config",
                file.to_str().unwrap(),
            ])
            .args(extra)
            .output()
            .unwrap()
    };
    // A step without weights is refused; `all` is every kept checkpoint and the final weights.
    let out = probe(&probes, &["--steps", "7"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("step 7 has no weights in this run; it has [580, 600]"),
        "{stderr}"
    );
    assert!(!run.join("probes/later").exists());
    let out = probe(&probes, &["--steps", "all"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let measured = run.join("probes/later");
    let rows = density(&measured);
    let levels: std::collections::BTreeSet<String> = rows
        .iter()
        .map(|(k, _)| k.split(' ').take(2).collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        levels.into_iter().collect::<Vec<_>>(),
        ["id 0", "random 1", "words 0.2", "words 0.5"]
    );
    for step in ["step-000580", "step-000600"] {
        assert!(
            rows.iter()
                .any(|(k, _)| k.contains("next_token_loss") && k.ends_with(step)),
            "no rows at {step}"
        );
    }
    // The new `id` set is the first 8 samples of the run's own: same seed, same draw.
    let stored = |path: PathBuf| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    };
    let ours = stored(run.join("probes.json"));
    let later = stored(measured.join("probes.json"));
    let tokens = |v: &serde_json::Value| v["sets"][0]["tokens"].as_array().unwrap().clone();
    let (ours, later) = (tokens(&ours), tokens(&later));
    assert_eq!(later.len(), 8 * 13);
    assert_eq!(later[..], ours[..8 * 13]);

    // The same name again is refused, as is a file that asks for what the run cannot give.
    let out = probe(&probes, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("choose another --name"));
    let bad = tmp.path().join("bad.yaml");
    std::fs::write(&bad, "sets:\n  - {name: hops, family: hops}\n").unwrap();
    let out = probe(&bad, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("sets[0].family: family hops does not apply to data.source kind text"),
        "{stderr}"
    );
    assert!(!run.join("probes/bad").exists());

    // Stored probe sets that were edited are refused.
    let path = run.join("probes.json");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replacen("\"tokens\":[", "\"tokens\":[1,", 1)).unwrap();
    // dump reads probes.json through the same check as probe and --resume; it must refuse.
    let refused = || {
        let out = bin()
            .args([
                "dump",
                run.to_str().unwrap(),
                "--probe",
                "id",
                "--site",
                "final.norm",
                "-o",
            ])
            .arg(tmp.path().join("x.npy"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        stderr
    };
    let stderr = refused();
    assert!(
        stderr.contains("probes.json: the sets it holds hash to")
            && stderr.contains("were edited after the run started"),
        "{stderr}"
    );
    let error = stderr.lines().find(|l| l.starts_with("error:")).unwrap();
    assert!(!error.contains("  "), "a run of spaces in: {error}");

    // A probes.json from another run (its own hash differs from the manifest's) is named as such.
    let other = text.replacen("\"hash\":\"", "\"hash\":\"0", 1);
    std::fs::write(&path, other).unwrap();
    let stderr = refused();
    assert!(
        stderr.contains("not the probes.json this run wrote"),
        "{stderr}"
    );
}
