//! Bad configs are caught before any work starts, and every message names the field path.

mod common;

use common::cli::bin;

use densitrace::config::Config;
use densitrace::error::InputError;

const GOOD: &str = include_str!("../experiments/quickstart.yaml");

fn error_of(yaml: &str, overrides: &[&str]) -> String {
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    match Config::from_yaml(yaml, "test.yaml", &overrides) {
        Ok(_) => panic!("expected an error for overrides {overrides:?}"),
        Err(e) => e.to_string(),
    }
}

/// `densitrace run CONFIG --out OUT`: its exit code and stderr.
fn run_cli(config: &std::path::Path, out: &std::path::Path) -> (Option<i32>, String) {
    run_cli_with(config, out, &[])
}

/// `run_cli` with these environment variables set.
fn run_cli_with(
    config: &std::path::Path,
    out: &std::path::Path,
    env: &[(&str, &str)],
) -> (Option<i32>, String) {
    let result = bin()
        .envs(env.iter().copied())
        .args([
            "run",
            config.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    (
        result.status.code(),
        String::from_utf8_lossy(&result.stderr).into_owned(),
    )
}

fn assert_names(message: &str, needles: &[&str]) {
    for n in needles {
        assert!(message.contains(n), "{message:?} does not mention {n:?}");
    }
}

#[test]
fn the_quickstart_config_is_valid_and_round_trips_through_yaml() {
    let config = Config::from_yaml(GOOD, "quickstart.yaml", &[]).unwrap();
    let again = Config::from_yaml(&config.to_yaml(), "resolved.yaml", &[]).unwrap();
    assert_eq!(config, again);
}

#[test]
fn unknown_key_names_its_parent_path_and_the_key() {
    let yaml = GOOD.replace("  layers: 2", "  layerz: 2");
    assert_names(&error_of(&yaml, &[]), &["test.yaml", "model", "layerz"]);
}

#[test]
fn wrong_type_names_the_field_path() {
    let yaml = GOOD.replace("steps: 3000", "steps: many");
    assert_names(&error_of(&yaml, &[]), &["train.steps", "invalid type"]);
    let yaml = GOOD.replace("levels: [0.1, 0.25, 0.5, 1.0]", "levels: lots");
    assert_names(&error_of(&yaml, &[]), &["probes.sets[2].levels"]);
}

#[test]
fn overrides_are_type_checked_like_the_file() {
    assert_names(
        &error_of(GOOD, &["train.steps=abc"]),
        &["train.steps", "invalid type"],
    );
    assert_names(&error_of(GOOD, &["train.stepz=5"]), &["train", "stepz"]);
    assert_names(
        &error_of(GOOD, &["train.steps"]),
        &["--set train.steps", "KEY=VALUE"],
    );
    assert_names(
        &error_of(GOOD, &["probes.sets[9].name=x"]),
        &["out of range"],
    );
    assert_names(
        &error_of(GOOD, &["probes.every=0"]),
        &["probes.every", "at least 1"],
    );
    let ok = Config::from_yaml(
        GOOD,
        "q.yaml",
        &[
            "train.steps=7".into(),
            "device=cpu".into(),
            "probes.sets[2].levels=[0.3]".into(),
        ],
    )
    .unwrap();
    assert_eq!(ok.train.steps, 7);
    assert_eq!(ok.probes.sets[2].levels, Some(vec![0.3]));
}

#[test]
fn invalid_values_name_the_field_path() {
    let cases: &[(&str, &[&str])] = &[
        ("model.heads=3", &["model.heads", "do not divide"]),
        ("model.layers=0", &["model.layers"]),
        ("model.d_model=0", &["model.d_model"]),
        ("train.batch_size=0", &["train.batch_size"]),
        ("train.shards=0", &["train.shards", "within [1, "]),
        (
            "train.shards=65",
            &["train.shards", "train.batch_size = 64"],
        ),
        ("train.lr=-1", &["train.lr"]),
        ("model.dropout=1.5", &["model.dropout"]),
        (
            "probes.metrics=[hoyer, sparsity]",
            &["probes.metrics[1]", "unknown metric"],
        ),
        (
            "probes.metrics=[near_zero@abc]",
            &["probes.metrics[0]", "not a number"],
        ),
        (
            "probes.sites=[resid_pre]",
            &["probes.sites[0]", "unknown site"],
        ),
        ("probes.positions=[first]", &["probes.positions[0]"]),
        (
            "probes.sets[0].family=noise",
            &["probes.sets[0].family", "unknown variant"],
        ),
        (
            "probes.sets[2].levels=[1.5]",
            &["probes.sets[2].levels[0]", "fraction"],
        ),
        (
            "probes.sets[1].levels=[7]",
            &["probes.sets[1].levels[0]", "hop count"],
        ),
        (
            "probes.sets[1].name=id",
            &["probes.sets[1].name", "used twice"],
        ),
        ("device=gpu", &["device", "unknown variant"]),
        (
            "data.source.kind=poetry",
            &["data.source", "unknown variant"],
        ),
        (
            "data.source.kind=text",
            &[
                "data.source",
                "unknown field `derived_train_fraction`, expected `path`",
            ],
        ),
        (
            "probes.sets[0].family=char_noise",
            &[
                "probes.sets[0].family",
                "does not apply to data.source kind rulegraph",
            ],
        ),
        ("data.tokenizer.kind=bpe", &["data.tokenizer"]),
        ("data.source.max_hops=1", &["data.source.max_hops"]),
    ];
    for (set, needles) in cases {
        assert_names(&error_of(GOOD, &[set]), needles);
    }
}

#[test]
fn malformed_yaml_is_a_file_error() {
    match Config::from_yaml("name: [unclosed", "broken.yaml", &[]) {
        Err(InputError::File { file, message }) => {
            assert_eq!(file, "broken.yaml");
            assert!(message.contains("invalid YAML"), "{message}");
        }
        other => panic!("expected a file error, got {other:?}"),
    }
}

/// DENSITRACE_CPU_BACKEND (src/device.rs) may only name a CPU backend this binary was built with;
/// anything else is bad input, named, before a run directory exists.
#[test]
fn an_unknown_cpu_backend_exits_2_naming_the_variable_and_creates_no_run_directory() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("quickstart.yaml");
    std::fs::write(&config, GOOD.replace("device: auto", "device: cpu")).unwrap();
    let out = dir.path().join("runs");
    let (code, stderr) = run_cli_with(&config, &out, &[("DENSITRACE_CPU_BACKEND", "abacus")]);
    assert_eq!(code, Some(2), "stderr: {stderr}");
    assert_names(&stderr, &["DENSITRACE_CPU_BACKEND=abacus", "flex"]);
    assert!(!out.exists(), "a run directory was created");
}

#[test]
fn the_cli_exits_2_names_the_field_and_creates_no_run_directory() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.yaml");
    std::fs::write(&config, GOOD.replace("heads: 4", "heads: 3")).unwrap();
    let out = dir.path().join("runs");
    let (code, stderr) = run_cli(&config, &out);
    assert_eq!(code, Some(2), "stderr: {stderr}");
    assert!(
        stderr.contains("model.heads") && stderr.contains("bad.yaml"),
        "stderr: {stderr}"
    );
    assert!(
        !out.exists(),
        "a run directory was created for a bad config"
    );

    let missing = bin()
        .args(["check", "no/such/config.yaml"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no/such/config.yaml"));
}

#[test]
fn check_prints_the_resolved_config_with_overrides() {
    let result = bin()
        .args([
            "check",
            concat!(env!("CARGO_MANIFEST_DIR"), "/experiments/quickstart.yaml"),
            "--set",
            "train.steps=42",
        ])
        .output()
        .unwrap();
    assert_eq!(result.status.code(), Some(0));
    let printed = String::from_utf8(result.stdout).unwrap();
    let config = Config::from_yaml(&printed, "printed", &[]).unwrap();
    assert_eq!(config.train.steps, 42);
}

/// Each malformed config, run through the CLI: exit code 2, a message naming the field (or the
/// file), and no run directory.
#[test]
fn malformed_configs_exit_2_name_the_field_and_leave_nothing() {
    let cases: Vec<(&str, String, &str)> = vec![
        ("malformed YAML", "name: [unclosed".into(), "invalid YAML"),
        ("empty file", "".into(), "empty"),
        (
            "unknown top-level key",
            format!("{GOOD}\ntrian: {{steps: 5}}\n"),
            "trian",
        ),
        (
            "unknown nested key",
            GOOD.replace("  layers: 2", "  layerz: 2"),
            "layerz",
        ),
        (
            "wrong type",
            GOOD.replace("steps: 3000", "steps: many"),
            "train.steps",
        ),
        (
            "wrong type in a list item",
            GOOD.replace("levels: [0.1, 0.25, 0.5, 1.0]", "levels: lots"),
            "probes.sets[2].levels",
        ),
        (
            "negative size",
            GOOD.replace("d_model: 128", "d_model: -4"),
            "model.d_model",
        ),
        (
            "zero layers",
            GOOD.replace("layers: 2", "layers: 0"),
            "model.layers",
        ),
        (
            "heads do not divide d_model",
            GOOD.replace("heads: 4", "heads: 3"),
            "model.heads",
        ),
        (
            "zero evaluation interval",
            GOOD.replace("every: 100", "every: 0"),
            "probes.every",
        ),
        (
            "unknown metric",
            GOOD.replace("metrics: [topk_energy@0.01,", "metrics: [sparsity,"),
            "probes.metrics[0]",
        ),
        (
            "metric parameter out of range",
            GOOD.replace("metrics: [topk_energy@0.01,", "metrics: [topk_energy@2,"),
            "probes.metrics[0]",
        ),
        (
            "unknown shift family",
            GOOD.replace("family: random", "family: noise"),
            "probes.sets[3].family",
        ),
        (
            "corruption level out of range",
            GOOD.replace("levels: [0.1, 0.25, 0.5, 1.0]", "levels: [0.1, 1.5]"),
            "probes.sets[2].levels[1]",
        ),
        (
            "hop level outside the graph",
            GOOD.replace("family: hops}", "family: hops, levels: [7]}"),
            "probes.sets[1].levels[0]",
        ),
        (
            "duplicate probe set name",
            GOOD.replace("name: random, family", "name: id, family"),
            "probes.sets[3].name",
        ),
        (
            "min_lr above lr",
            GOOD.replace("min_lr: 0.0002", "min_lr: 0.5"),
            "train.min_lr",
        ),
        (
            "max_hops below min_hops",
            GOOD.replace("max_hops: 5", "max_hops: 1"),
            "data.source.max_hops",
        ),
        (
            "fraction above 1",
            GOOD.replace("derived_train_fraction: 0.5", "derived_train_fraction: 1.5"),
            "data.source.derived_train_fraction",
        ),
        (
            "unknown device",
            GOOD.replace("device: auto", "device: gpu"),
            "device",
        ),
        (
            "quantile out of range",
            GOOD.replace("quantiles: [0.05,", "quantiles: [1.05,"),
            "probes.quantiles[0]",
        ),
        (
            "no checkpoints kept",
            GOOD.replace("  keep_last: 2", "  keep_last: 0"),
            "checkpoint.keep_last",
        ),
        (
            "duplicate key",
            format!("{GOOD}\ncheckpoint: {{every: 10}}\n"),
            "duplicate mapping key: checkpoint",
        ),
        (
            "unknown data source",
            GOOD.replace("kind: rulegraph", "kind: poems"),
            "data.source",
        ),
        (
            "bad run name",
            GOOD.replace("name: quickstart", "name: a/b"),
            "name",
        ),
        (
            "no held-out facts to probe",
            GOOD.replace("derived_train_fraction: 0.5", "derived_train_fraction: 1.0"),
            "probes.sets[1]",
        ),
    ];
    assert!(cases.len() >= 20);
    let dir = tempfile::tempdir().unwrap();
    for (what, yaml, needle) in &cases {
        assert_ne!(yaml.as_str(), GOOD, "{what}: the replacement did not apply");
        let config = dir.path().join("bad.yaml");
        std::fs::write(&config, yaml).unwrap();
        let out = dir.path().join("runs");
        let (code, stderr) = run_cli(&config, &out);
        assert_eq!(code, Some(2), "{what}: {stderr}");
        assert!(
            stderr.contains(needle),
            "{what}: {stderr:?} does not name {needle:?}"
        );
        assert!(!out.exists(), "{what}: a run directory was created");
    }

    // An output directory that cannot be created: its parent is a file.
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, "").unwrap();
    let result = bin()
        .args([
            "run",
            concat!(env!("CARGO_MANIFEST_DIR"), "/experiments/quickstart.yaml"),
        ])
        .args([
            "--out",
            blocker.join("runs").to_str().unwrap(),
            "--set",
            "train.steps=1",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cannot create a run directory"), "{stderr}");
}

/// `reference` and `matched_to` (probe sets compared with, or matched to, another set): each bad
/// use exits 2 through the CLI, names the field, and leaves no run directory. The last cases are
/// found only when the sets are drawn (a target that ends in a token no training fact ends in),
/// which also happens before the run directory exists.
#[test]
fn bad_references_and_matched_sets_exit_2_name_the_field_and_leave_nothing() {
    const LAST: &str = "    - {name: random, family: random}";
    assert!(GOOD.contains(LAST));
    let with = |extra: &str| GOOD.replace(LAST, &format!("{LAST}\n{extra}"));
    let cases: Vec<(&str, String, &[&str])> = vec![
        (
            "reference to an unknown set",
            GOOD.replace(LAST, "    - {name: random, family: random, reference: nope}"),
            &["probes.sets[3].reference", "\"nope\""],
        ),
        (
            "reference to itself",
            GOOD.replace(LAST, "    - {name: random, family: random, reference: random}"),
            &["probes.sets[3].reference", "itself"],
        ),
        (
            "matched_to on a shifted family",
            GOOD.replace(LAST, "    - {name: random, family: random, matched_to: id}"),
            &["probes.sets[3].matched_to", "family none"],
        ),
        (
            "matched_to an unknown set",
            with("    - {name: m, family: none, matched_to: nope}"),
            &["probes.sets[4].matched_to", "\"nope\""],
        ),
        (
            "matched_to itself",
            with("    - {name: m, family: none, matched_to: m}"),
            &["probes.sets[4].matched_to", "itself"],
        ),
        (
            "matched_to a matched set",
            with(
                "    - {name: m1, family: none, matched_to: hops}\n    \
                 - {name: m2, family: none, matched_to: m1}",
            ),
            &["probes.sets[5].matched_to", "itself matched"],
        ),
        (
            "matched_to with levels",
            with("    - {name: m, family: none, matched_to: hops, levels: [2]}"),
            &["probes.sets[4].levels", "matched_to"],
        ),
        (
            "matched_to with samples",
            with("    - {name: m, family: none, matched_to: hops, samples: 10}"),
            &["probes.sets[4].samples", "matched_to"],
        ),
        (
            "matched_to on a grammar",
            "name: g\ndata:\n  source: {kind: grammar, symbols: 32, documents: 40, length: 100}\n  \
             context: 8\nprobes:\n  every: 5\n  samples: 8\n  sets:\n    \
             - {name: id, family: none}\n    - {name: m, family: none, matched_to: id}\n"
                .to_string(),
            &["probes.sets[1].matched_to", "rule graph", "grammar"],
        ),
        (
            "matched to random prompts, whose last tokens are mostly entities",
            with("    - {name: m, family: none, matched_to: random}"),
            &[
                "probes.sets[4].matched_to",
                "\"random\"",
                "level 1",
                "token",
                "entity",
            ],
        ),
        (
            "matched to fully corrupted prompts",
            with("    - {name: m, family: none, matched_to: corrupt}"),
            &["probes.sets[4].matched_to", "\"corrupt\"", "entity"],
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (what, yaml, needles) in &cases {
        assert_ne!(yaml.as_str(), GOOD, "{what}: the replacement did not apply");
        let config = dir.path().join("bad.yaml");
        std::fs::write(&config, yaml).unwrap();
        let out = dir.path().join("runs");
        let (code, stderr) = run_cli(&config, &out);
        assert_eq!(code, Some(2), "{what}: {stderr}");
        for needle in *needles {
            assert!(
                stderr.contains(needle),
                "{what}: {stderr:?} does not name {needle:?}"
            );
        }
        assert!(!out.exists(), "{what}: a run directory was created");
    }
}

/// The two documented uses validate: a matched reference for `hops`, and a negative control.
#[test]
fn the_documented_matched_sets_are_valid() {
    let yaml = GOOD.replace(
        "    - {name: hops, family: hops}",
        "    - {name: id_hops, family: none, matched_to: hops}\n    \
         - {name: hops, family: hops, reference: id_hops}\n    \
         - {name: id_again, family: none, matched_to: id, reference: id}",
    );
    assert_ne!(yaml, GOOD);
    let config = Config::from_yaml(&yaml, "matched.yaml", &[]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.probes.reference_of("hops"), Some("id_hops"));
    assert_eq!(config.probes.reference_of("id_again"), Some("id"));
    assert_eq!(config.probes.reference_of("id"), None);
    let again = Config::from_yaml(&config.to_yaml(), "resolved.yaml", &[]).unwrap();
    assert_eq!(again, config);
}

const DEDUCTION: &str = include_str!("../experiments/deduction.yaml");

/// The deduction block and `token_replace`: each bad value exits 2 before anything is created,
/// naming the field.
#[test]
fn bad_deduction_and_token_replace_configs_exit_2_name_the_field_and_leave_nothing() {
    let grammar = include_str!("../experiments/grammar.yaml");
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "no training heads",
            DEDUCTION.replace("shown_fraction: 0.6", "shown_fraction: 0.0"),
            "data.source.deduction.shown_fraction",
        ),
        (
            "rounds to no training heads",
            DEDUCTION.replace("shown_fraction: 0.6", "shown_fraction: 0.001"),
            "data.source.deduction.shown_fraction",
        ),
        (
            "no held-out heads",
            DEDUCTION.replace("shown_fraction: 0.6", "shown_fraction: 1.0"),
            "data.source.deduction.shown_fraction",
        ),
        (
            "rounds to no held-out heads",
            DEDUCTION.replace("shown_fraction: 0.6", "shown_fraction: 0.999"),
            "data.source.deduction.shown_fraction",
        ),
        (
            "no aliases for a deducible set",
            DEDUCTION.replace("aliases: 8 ", "aliases: 0 "),
            "probes.sets[1].family",
        ),
        (
            "no random relations for a non-deducible set",
            DEDUCTION.replace("random_derived: 8 ", "random_derived: 0 "),
            "probes.sets[3].family",
        ),
        (
            "an empty deduction block's relations",
            DEDUCTION
                .replace("aliases: 8 ", "aliases: 0 ")
                .replace("random_derived: 8 ", "random_derived: 0 "),
            "data.source.deduction.aliases",
        ),
        (
            "a deducible set without the deduction block",
            GOOD.replace(
                "    - {name: random, family: random}",
                "    - {name: random, family: random}\n    - {name: ded, family: deducible}",
            ),
            "probes.sets[4].family",
        ),
        (
            "an unknown deduction field",
            DEDUCTION.replace("aliases: 8 ", "aliasez: 8 "),
            "aliasez",
        ),
        (
            "hops without rule chains",
            DEDUCTION.replace(
                "    - {name: random, family: random}",
                "    - {name: random, family: random}\n    - {name: hops, family: hops}",
            ),
            "probes.sets[7]",
        ),
        (
            "token_replace longer than the prompt",
            DEDUCTION.replace("levels: [1, 2]}", "levels: [1, 3]}"),
            "probes.sets[5].levels[1]",
        ),
        (
            "token_replace of part of a token",
            DEDUCTION.replace("levels: [1, 2]}", "levels: [1.5]}"),
            "probes.sets[5].levels[0]",
        ),
        (
            "token_replace without levels",
            DEDUCTION.replace(", levels: [1, 2]}", "}"),
            "probes.sets[5].levels",
        ),
        (
            "token_replace longer than a window",
            grammar.replace(
                "    - {name: random, family: random}",
                "    - {name: random, family: random}\n    \
                 - {name: replace, family: token_replace, levels: [32, 33]}",
            ),
            "levels[1]",
        ),
        (
            "unigram_replace longer than a window",
            grammar.replace(
                "    - {name: random, family: random}",
                "    - {name: random, family: random}\n    \
                 - {name: familiar, family: unigram_replace, levels: [1, 33]}",
            ),
            "levels[1]",
        ),
        (
            "unigram_replace on the rule graph",
            GOOD.replace(
                "    - {name: random, family: random}",
                "    - {name: random, family: random}\n    \
                 - {name: familiar, family: unigram_replace, levels: [1]}",
            ),
            "probes.sets[4].family",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (what, yaml, needle) in &cases {
        assert!(
            yaml != DEDUCTION && yaml != GOOD && yaml != grammar,
            "{what}: the replacement did not apply"
        );
        let config = dir.path().join("bad.yaml");
        std::fs::write(&config, yaml).unwrap();
        let out = dir.path().join("runs");
        let (code, stderr) = run_cli(&config, &out);
        assert_eq!(code, Some(2), "{what}: {stderr}");
        assert!(
            stderr.contains(needle),
            "{what}: {stderr:?} does not name {needle:?}"
        );
        assert!(!out.exists(), "{what}: a run directory was created");
    }
}

/// Without the deduction block a rule graph resolves to exactly what it did before: the block is
/// never written.
#[test]
fn a_rule_graph_without_deduction_writes_no_deduction_block() {
    let config = Config::from_yaml(GOOD, "quickstart.yaml", &[]).unwrap();
    assert!(!config.to_yaml().contains("deduction"));
    let config = Config::from_yaml(DEDUCTION, "deduction.yaml", &[]).unwrap();
    let again = Config::from_yaml(&config.to_yaml(), "resolved.yaml", &[]).unwrap();
    assert_eq!(config, again);
}
