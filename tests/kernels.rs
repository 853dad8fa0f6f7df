//! The WGSL density kernels against the f64 reference, on a real wgpu adapter (Mesa's software
//! Vulkan driver on machines without a GPU): every `Kernels` check of `densitrace::selftest`,
//! the list `densitrace selftest` runs, in its full form. Inputs and tolerances live there, with
//! the reasons for each.
//!
//! Under `CI` a missing adapter fails these tests (with what to install) instead of skipping them.

mod common;

use common::wgpu_run_device;
use densitrace::selftest::{self, CHECKS, Context, Family, Perturbation};

/// Runs the selftest check `name` on the wgpu adapter; fails with its table unless it passed
/// and compared something.
fn passes(name: &str) {
    let Some(device) = wgpu_run_device() else {
        return;
    };
    let result = selftest::run_check(selftest::check(name), &Context::new(device, false));
    let table = selftest::table(std::slice::from_ref(&result));
    assert!(!result.skipped(), "{name} was skipped on wgpu:\n{table}");
    assert!(result.passed(), "{name} failed:\n{table}");
    eprintln!("{table}");
}

/// One test per kernel check, so each fails on its own; `every_kernel_check_has_a_test` holds
/// this list to `CHECKS`.
macro_rules! kernel_checks {
    ($($test:ident => $name:literal,)*) => {
        $(
            #[test]
            fn $test() {
                passes($name);
            }
        )*
        const TESTED: &[&str] = &[$($name),*];
    };
}

kernel_checks! {
    row_metrics_match_the_reference_on_every_kind_and_width => "row metrics",
    aggregate_matches_the_reference_and_skips_nonfinite_vectors => "aggregate",
    quantiles_match_the_reference_in_workgroup_and_global_memory => "quantiles",
    across_vector_metrics_match_the_reference => "across-vector metrics",
    rows_beyond_one_dispatch_dimension_are_all_computed => "dispatch past 65,535 workgroups",
    iid_normal_vectors_reproduce_the_science_reference_table => "science table",
    metrics_are_invariant_to_scale_and_permutation => "scale and permutation",
    one_hot_and_constant_vectors_hit_the_extremes => "extremes",
}

#[test]
fn every_kernel_check_has_a_test() {
    let kernel_checks: Vec<&str> = CHECKS
        .iter()
        .filter(|c| c.family == Family::Kernels)
        .map(|c| c.name)
        .collect();
    assert_eq!(kernel_checks, TESTED);
}

/// A kernel comparison with one metric's reference values shifted fails, names that metric in
/// the failures and the table, and no other metric fails: the checks can catch a wrong kernel.
#[test]
fn a_perturbed_reference_fails_the_kernel_check_naming_its_metric() {
    let Some(device) = wgpu_run_device() else {
        return;
    };
    let mut context = Context::new(device, true);
    context.perturbation = Some(Perturbation {
        metric: "hoyer".into(),
        shift: 1e-3,
    });
    let result = selftest::run_check(selftest::check("row metrics"), &context);
    assert_eq!(result.failures(), vec!["row metrics: hoyer".to_string()]);
    let table = selftest::table(std::slice::from_ref(&result));
    let hoyer = table
        .lines()
        .find(|l| l.contains(" hoyer "))
        .unwrap_or_else(|| panic!("no hoyer row:\n{table}"));
    assert!(hoyer.contains("FAIL"), "{table}");
}
