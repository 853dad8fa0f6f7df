//! Bad data through the binary: every case exits 2 before training, names the file (and the line
//! where there is one), and leaves no run directory behind.

use std::path::Path;
use std::sync::Arc;

mod common;

use common::cli::bin;

use arrow::array::{ArrayRef, Int64Array, StringArray};

/// A config around `data`, with a tiny model of `seq_len` 32.
fn config(data: &str, sets: &str) -> String {
    format!(
        "
name: bad
device: cpu
data:
{data}
model: {{layers: 1, d_model: 16, heads: 2, d_ff: 32, seq_len: 32}}
train: {{steps: 2, batch_size: 2}}
probes:
  every: 1
  samples: 4
  sets:
{sets}
"
    )
}

const ID: &str = "    - {name: id, family: none}";

/// Runs `densitrace run` on `yaml` in `dir`; returns (exit code, stderr) and checks no run
/// directory was created.
fn run(dir: &Path, yaml: &str) -> (Option<i32>, String) {
    let path = dir.join("config.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = dir.join("runs");
    let result = bin()
        .args([
            "run",
            path.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(!out.exists(), "a run directory was created for:\n{yaml}");
    (
        result.status.code(),
        String::from_utf8_lossy(&result.stderr).into_owned(),
    )
}

fn text(dir: &Path, name: &str, body: &[u8]) -> String {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&path, body).unwrap();
    path.display().to_string()
}

/// Several KB of plain text, enough documents to split.
fn good_text() -> Vec<u8> {
    (0..400)
        .map(|i| format!("line {i} of a plain text corpus for the model to read\n"))
        .collect::<String>()
        .into_bytes()
}

#[test]
fn bad_data_exits_2_naming_the_file_and_line_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = text(d, "good.txt", &good_text());
    let empty = text(d, "empty.txt", b"");
    let mut invalid = good_text();
    invalid.splice(300..300, [b'\n', 0xff, 0xfe, b'\n']);
    let invalid_utf8 = text(d, "latin1.txt", &invalid);
    let line_of_invalid = 1 + invalid[..301].iter().filter(|&&b| b == b'\n').count();
    std::fs::create_dir(d.join("nothing")).unwrap();
    text(d, "blank/a.txt", b"");
    let jsonl_bad = text(d, "bad.jsonl", b"{\"text\": \"ok\"}\n{\"text\": oops}\n");
    let jsonl_missing = text(
        d,
        "missing.jsonl",
        b"{\"text\": \"ok\"}\n\n{\"body\": \"x\"}\n",
    );
    let jsonl_number = text(d, "number.jsonl", b"{\"text\": 42}\n");
    let pq = d.join("table.parquet");
    common::write_parquet(
        &pq,
        vec![
            (
                "text",
                Arc::new(StringArray::from(vec!["a", "b"])) as ArrayRef,
            ),
            ("count", Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef),
        ],
    );
    let pq = pq.display().to_string();

    let source = |s: &str| format!("  source: {s}");
    let cases: Vec<(&str, String, Vec<String>)> = vec![
        (
            "missing path",
            config(&source("{kind: text, path: no/such/file.txt}"), ID),
            vec![
                "no/such/file.txt".into(),
                "no such file or directory".into(),
            ],
        ),
        (
            "empty file",
            config(&source(&format!("{{kind: text, path: {empty}}}")), ID),
            vec![empty.clone(), "the file is empty".into()],
        ),
        (
            "glob matching nothing",
            config(&source("{kind: text, path: \"corpus/*.md\"}"), ID),
            vec!["corpus/*.md".into(), "the glob matches no file".into()],
        ),
        (
            "directory with no files",
            config(&source("{kind: text, path: nothing}"), ID),
            vec!["nothing".into(), "holds no file".into()],
        ),
        (
            "directory with no text",
            config(&source("{kind: text, path: blank}"), ID),
            vec!["blank".into(), "no text".into()],
        ),
        (
            "invalid UTF-8 under char",
            config(
                &format!(
                    "{}\n  tokenizer: {{kind: char}}",
                    source(&format!("{{kind: text, path: {invalid_utf8}}}"))
                ),
                ID,
            ),
            vec![
                invalid_utf8.clone(),
                format!("line {line_of_invalid}: invalid UTF-8"),
            ],
        ),
        (
            "invalid UTF-8 under bpe",
            config(
                &format!(
                    "{}\n  tokenizer: {{kind: bpe, vocab_size: 300}}",
                    source(&format!("{{kind: text, path: {invalid_utf8}}}"))
                ),
                ID,
            ),
            vec![
                invalid_utf8.clone(),
                format!("line {line_of_invalid}: invalid UTF-8"),
            ],
        ),
        (
            "invalid UTF-8 under word",
            config(
                &format!(
                    "{}\n  tokenizer: {{kind: word}}",
                    source(&format!("{{kind: text, path: {invalid_utf8}}}"))
                ),
                ID,
            ),
            vec![
                invalid_utf8.clone(),
                format!("line {line_of_invalid}: invalid UTF-8"),
            ],
        ),
        (
            "a JSONL line that is not JSON",
            config(
                &source(&format!("{{kind: jsonl, path: {jsonl_bad}, field: text}}")),
                ID,
            ),
            vec![jsonl_bad.clone(), "line 2: not JSON".into()],
        ),
        (
            "a JSONL line without the field",
            config(
                &source(&format!(
                    "{{kind: jsonl, path: {jsonl_missing}, field: text}}"
                )),
                ID,
            ),
            vec![jsonl_missing.clone(), "line 3: no field \"text\"".into()],
        ),
        (
            "a JSONL field that is not a string",
            config(
                &source(&format!(
                    "{{kind: jsonl, path: {jsonl_number}, field: text}}"
                )),
                ID,
            ),
            vec![
                jsonl_number.clone(),
                "line 1: field \"text\" is not a string".into(),
            ],
        ),
        (
            "a Parquet file without the column",
            config(
                &source(&format!("{{kind: parquet, path: {pq}, column: body}}")),
                ID,
            ),
            vec![
                pq.clone(),
                "no column \"body\"".into(),
                "[\"text\", \"count\"]".into(),
            ],
        ),
        (
            "a Parquet column that is not strings",
            config(
                &source(&format!("{{kind: parquet, path: {pq}, column: count}}")),
                ID,
            ),
            vec![
                pq.clone(),
                "column \"count\" is Int64, not a string column".into(),
            ],
        ),
        (
            "a vocabulary larger than the model's embedding",
            config(
                &format!(
                    "{}\n  tokenizer: {{kind: byte}}",
                    source(&format!("{{kind: text, path: {good}}}"))
                ),
                ID,
            )
            .replace("seq_len: 32}", "seq_len: 32, vocab_size: 100}"),
            vec![
                "model.vocab_size".into(),
                "257 tokens, more than the model's 100 embedding rows".into(),
            ],
        ),
        (
            "a BPE vocabulary larger than the model's embedding",
            config(
                &format!(
                    "{}\n  tokenizer: {{kind: bpe, vocab_size: 1000}}",
                    source(&format!("{{kind: text, path: {good}}}"))
                ),
                ID,
            )
            .replace("seq_len: 32}", "seq_len: 32, vocab_size: 500}"),
            vec![
                "data.tokenizer.vocab_size".into(),
                "larger than model.vocab_size (500)".into(),
            ],
        ),
    ];
    for (what, yaml, needles) in &cases {
        let (code, stderr) = run(d, yaml);
        assert_eq!(code, Some(2), "{what}: exit code; stderr: {stderr}");
        for needle in needles {
            assert!(
                stderr.contains(needle.as_str()),
                "{what}: {stderr:?} does not mention {needle:?}"
            );
        }
    }
}

#[test]
fn a_corpus_shorter_than_one_sequence_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Two records of a few bytes: it splits, but the training part is shorter than 33 tokens.
    let path = text(d, "tiny.jsonl", b"{\"t\": \"abc\"}\n{\"t\": \"def\"}\n");
    let yaml = config(
        &format!("  source: {{kind: jsonl, path: {path}, field: t}}\n  context: 32"),
        ID,
    );
    let (code, stderr) = run(d, &yaml);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("shorter than one sequence of data.context + 1 = 33 tokens"),
        "{stderr}"
    );
    // One document cannot be split into training and held-out parts.
    let path = text(d, "one.jsonl", b"{\"t\": \"abc\"}\n");
    let yaml = config(
        &format!("  source: {{kind: jsonl, path: {path}, field: t}}"),
        ID,
    );
    let (code, stderr) = run(d, &yaml);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("1 document(s) cannot be split"), "{stderr}");
    // Held-out text too short for a probe window.
    let body: String = (0..12)
        .map(|i| format!("{{\"t\": \"record {i} with words\"}}\n"))
        .collect();
    let path = text(d, "few.jsonl", body.as_bytes());
    let yaml = config(
        &format!("  source: {{kind: jsonl, path: {path}, field: t}}\n  context: 32"),
        ID,
    );
    let (code, stderr) = run(d, &yaml);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("too few places"), "{stderr}");
}

#[test]
fn check_reads_the_data_too() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    let check = |yaml: &str| {
        std::fs::write(&path, yaml).unwrap();
        bin()
            .args(["check", path.to_str().unwrap()])
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let out = check(&config("  source: {kind: text, path: missing.txt}", ID));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("missing.txt: no such file or directory"),
        "{stderr}"
    );
    let good = text(dir.path(), "good.txt", &good_text());
    let out = check(&config(
        &format!("  source: {{kind: text, path: {good}}}"),
        ID,
    ));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("byte tokenizer, vocabulary 257; 1 probe sets"),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("kind: text"));
}
