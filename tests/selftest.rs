//! `densitrace selftest` as a user runs it: bad input exits 2 before any work, names what is
//! wrong and writes nothing; on the CPU backend it passes, says which check it skipped and why,
//! and writes its JSON.

mod common;

use common::cli::bin;

fn selftest(args: &[&str]) -> (Option<i32>, String, String) {
    let out = bin().arg("selftest").args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_unknown_device_exits_2_naming_it_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("selftest.json");
    let (code, _, stderr) = selftest(&["--device", "tpu", "--json", json.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{stderr}");
    for needle in ["--device", "tpu", "auto", "wgpu", "cpu"] {
        assert!(
            stderr.contains(needle),
            "{stderr:?} does not mention {needle:?}"
        );
    }
    assert!(!json.exists());
}

#[test]
fn json_into_a_missing_directory_exits_2_before_any_check() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir");
    let json = missing.join("selftest.json");
    let started = std::time::Instant::now();
    let (code, stdout, stderr) = selftest(&["--device", "cpu", "--json", json.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--json"), "{stderr}");
    assert!(stderr.contains(&missing.display().to_string()), "{stderr}");
    assert!(stdout.is_empty(), "no check ran: {stdout}");
    assert!(!missing.exists());
    assert!(
        started.elapsed().as_secs() < 20,
        "it checked before working"
    );
}

/// `bench` takes the same `--json` and refuses the same bad path before it measures anything.
#[test]
fn bench_json_into_a_missing_directory_exits_2_before_measuring() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir");
    let json = missing.join("bench.json");
    let started = std::time::Instant::now();
    let out = bin()
        .args(["bench", "--device", "cpu", "--quick", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&missing.display().to_string()), "{stderr}");
    assert!(out.stdout.is_empty(), "nothing was measured");
    assert!(!missing.exists());
    assert!(
        started.elapsed().as_secs() < 20,
        "it checked before working"
    );
}

/// The CPU backend: its host reduction against the reference, the model and a short run pass;
/// the wgpu-only dispatch check is reported as skipped with its reason, never as passed.
#[test]
fn the_cpu_backend_passes_and_reports_what_it_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("selftest.json");
    let (code, stdout, stderr) = selftest(&[
        "--device",
        "cpu",
        "--quick",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let dispatch = stdout
        .lines()
        .find(|l| l.starts_with("dispatch past 65,535 workgroups"))
        .unwrap_or_else(|| panic!("no dispatch line:\n{stdout}"));
    assert!(
        dispatch.contains("skipped: the CPU backend runs no WGSL kernels"),
        "{dispatch}"
    );
    assert!(stdout.contains("0 failed"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["backend"], "cpu");
    let checks = report["checks"].as_array().unwrap();
    let status = |name: &str| {
        checks
            .iter()
            .find(|c| c["check"] == name)
            .unwrap_or_else(|| panic!("no {name} in the JSON"))["outcome"]["status"]
            .clone()
    };
    assert_eq!(status("dispatch past 65,535 workgroups"), "skipped");
    assert_eq!(status("row metrics"), "ran");
    assert_eq!(status("extremes"), "ran");
    assert_eq!(status("train step"), "ran");
    assert_eq!(status("end-to-end run"), "ran");
}
