//! Tests of `inference` and `dist` against scipy and statsmodels (the fixtures of
//! `scripts/report_fixtures.py`), and the intervals' coverage against simulation.

use super::*;
use crate::report::dist;
use crate::report::fixtures::{fixtures, floats};
use crate::report::stats::{Bootstrap, SplitMix64};

fn cases(key: &str) -> Vec<serde_json::Value> {
    let all = fixtures();
    let cases = all[key].as_array().unwrap().clone();
    assert!(cases.len() >= 4, "{key}: {} cases", cases.len());
    cases
}

/// `ours` agrees with `theirs` to `tol` relative (absolute near 0).
fn close(ours: f64, theirs: f64, tol: f64) -> bool {
    (ours - theirs).abs() <= tol * theirs.abs().max(1e-300) || (ours - theirs).abs() <= 1e-300
}

fn assert_close(what: &str, ours: f64, theirs: f64, tol: f64) {
    assert!(
        close(ours, theirs, tol),
        "{what}: {ours:e} vs scipy {theirs:e}"
    );
}

#[test]
fn normal_and_t_distributions_match_scipy() {
    for c in cases("ndtr") {
        let x = c["x"].as_f64().unwrap();
        assert_close(
            &format!("ndtr({x})"),
            dist::ndtr(x),
            c["value"].as_f64().unwrap(),
            1e-13,
        );
    }
    for c in cases("ndtri") {
        let p = c["p"].as_f64().unwrap();
        assert_close(
            &format!("ndtri({p})"),
            dist::ndtri(p),
            c["value"].as_f64().unwrap(),
            1e-12,
        );
    }
    for c in cases("t_sf") {
        let (t, df) = (c["t"].as_f64().unwrap(), c["df"].as_f64().unwrap());
        let want = c["value"].as_f64().unwrap();
        assert_close(&format!("t_sf({t}, {df})"), dist::t_sf(t, df), want, 1e-11);
    }
    for c in cases("t_ppf") {
        let (q, df) = (c["q"].as_f64().unwrap(), c["df"].as_f64().unwrap());
        let want = c["value"].as_f64().unwrap();
        assert_close(
            &format!("t_ppf({q}, {df})"),
            dist::t_ppf(q, df),
            want,
            1e-11,
        );
    }
}

/// The interval `e` has the case's `lo` and `hi` to 1e-10 relative.
fn assert_bounds(name: &str, e: Estimate, case: &serde_json::Value) {
    assert_close(
        &format!("{name} lo"),
        e.lo,
        case["lo"].as_f64().unwrap(),
        1e-10,
    );
    assert_close(
        &format!("{name} hi"),
        e.hi,
        case["hi"].as_f64().unwrap(),
        1e-10,
    );
}

#[test]
fn t_intervals_and_tests_match_scipy() {
    let boot = Bootstrap {
        resamples: 100,
        seed: 0,
    };
    for c in cases("t_interval") {
        let name = c["name"].as_str().unwrap();
        let x = floats(&c["x"]);
        assert_bounds(name, mean_interval(&x, IntervalMethod::T, boot), &c);
    }
}

#[test]
fn bca_matches_scipy_from_the_same_replicates() {
    for c in cases("bca") {
        let name = c["name"].as_str().unwrap();
        let (x, reps) = (floats(&c["x"]), floats(&c["replicates"]));
        // scipy's own estimate (numpy's mean), ties taken bit for bit as scipy does.
        assert_bounds(
            name,
            bca_from(&x, c["mean"].as_f64().unwrap(), &reps, 0.0),
            &c,
        );
    }
}

/// With our own resampling the BCa interval matches scipy's 200,000-resample interval to Monte
/// Carlo precision (a few percent of the interval's width at 20,000 resamples).
#[test]
fn bca_agrees_with_scipy_to_monte_carlo_precision() {
    let boot = Bootstrap {
        resamples: 20_000,
        seed: 4,
    };
    for c in cases("bca_mc") {
        let name = c["name"].as_str().unwrap();
        let x = floats(&c["x"]);
        let e = mean_interval(&x, IntervalMethod::Bca, boot);
        let (lo, hi) = (c["lo"].as_f64().unwrap(), c["hi"].as_f64().unwrap());
        let width = hi - lo;
        assert!(
            (e.lo - lo).abs() < 0.06 * width && (e.hi - hi).abs() < 0.06 * width,
            "{name}: [{}, {}] vs scipy [{lo}, {hi}]",
            e.lo,
            e.hi
        );
    }
}

const MC: MonteCarlo = MonteCarlo {
    draws: 20_000,
    seed: 1,
};

#[test]
fn sign_flips_match_scipys_exact_permutation_test() {
    for c in cases("sign_flip") {
        let name = c["name"].as_str().unwrap();
        let p = sign_flip_p(&floats(&c["d"]), MC);
        assert_close(name, p, c["p"].as_f64().unwrap(), 1e-12);
    }
}

/// Above 16 values the test is drawn; it then agrees with exact enumeration to Monte Carlo
/// precision, which this checks by brute force on 18 values.
#[test]
fn drawn_sign_flips_approximate_the_exact_test() {
    let d: Vec<f64> = (0..18).map(|i| (i as f64 * 0.37).sin() + 0.15).collect();
    let observed: f64 = d.iter().sum();
    let mut extreme = 0u64;
    for mask in 0u64..(1 << 18) {
        let s: f64 = d
            .iter()
            .enumerate()
            .map(|(i, x)| if mask >> i & 1 == 1 { -x } else { *x })
            .sum();
        extreme += (s.abs() >= observed.abs() - 1e-9) as u64;
    }
    let exact = extreme as f64 / (1u64 << 18) as f64;
    let drawn = sign_flip_p(&d, MC);
    let se = (exact * (1.0 - exact) / MC.draws as f64).sqrt();
    assert!(
        (drawn - exact).abs() < 4.0 * se + 1e-4,
        "{drawn} vs {exact}"
    );
}

#[test]
fn trend_permutation_tests_match_scipy_and_brute_force() {
    for c in cases("spearman_perm") {
        let name = c["name"].as_str().unwrap();
        let t = trend_test(&floats(&c["x"]), &[floats(&c["y"])], MC);
        assert_close(name, t.per_seed_p[0], c["p"].as_f64().unwrap(), 1e-12);
        assert_close(name, t.combined_p, c["p"].as_f64().unwrap(), 1e-12);
    }
    for c in cases("stratified_trend") {
        let name = c["name"].as_str().unwrap();
        let ys: Vec<Vec<f64>> = c["ys"].as_array().unwrap().iter().map(floats).collect();
        let t = trend_test(&floats(&c["x"]), &ys, MC);
        let mean_rho = t.rhos.iter().sum::<f64>() / t.rhos.len() as f64;
        assert_close(name, mean_rho, c["mean_rho"].as_f64().unwrap(), 1e-12);
        assert_close(name, t.combined_p, c["p"].as_f64().unwrap(), 1e-12);
    }
}

/// Above 8 levels the trend test is drawn; with 9 levels and one seed it approximates the
/// exact p of the permutation null, here the share of orders at least as extreme.
#[test]
fn drawn_trend_tests_are_close_to_exact_ones() {
    let x: Vec<f64> = (0..9).map(|i| i as f64).collect();
    let y = vec![0.1, 0.3, 0.2, 0.5, 0.4, 0.35, 0.7, 0.6, 0.9];
    let drawn = trend_test(&x, std::slice::from_ref(&y), MC);
    let exact = rho_null(&x, &y);
    let observed = (drawn.rhos[0] * RHO_GRID).round() as i64;
    let p: f64 = exact
        .iter()
        .filter(|(v, _)| v.abs() >= observed.abs() - 1)
        .map(|(_, p)| p)
        .sum();
    let se = (p * (1.0 - p) / MC.draws as f64).sqrt();
    assert!(
        (drawn.per_seed_p[0] - p).abs() < 4.0 * se + 1e-4,
        "{} vs {p}",
        drawn.per_seed_p[0]
    );
}

#[test]
fn single_run_tests_match_scipy() {
    for c in cases("welch") {
        let name = c["name"].as_str().unwrap();
        let p = welch_p(&floats(&c["a"]), &floats(&c["b"]));
        assert_close(name, p, c["p"].as_f64().unwrap(), 1e-9);
    }
    for c in cases("mann_whitney") {
        let name = c["name"].as_str().unwrap();
        let p = mann_whitney_p(&floats(&c["id"]), &floats(&c["shifted"]));
        assert_close(name, p, c["p"].as_f64().unwrap(), 1e-9);
    }
    for c in cases("spearman_t") {
        let name = c["name"].as_str().unwrap();
        let (x, y) = (floats(&c["x"]), floats(&c["y"]));
        let p = spearman_t_p(stats::spearman(&x, &y), x.len());
        assert_close(name, p, c["p"].as_f64().unwrap(), 1e-9);
    }
}

#[test]
fn holm_and_benjamini_hochberg_match_statsmodels() {
    for c in cases("multipletests") {
        let name = c["name"].as_str().unwrap();
        let p = floats(&c["p"]);
        assert_eq!(p.len(), floats(&c["holm"]).len(), "{name}");
        assert_eq!(p.len(), floats(&c["bh"]).len(), "{name}");
        for (ours, theirs) in holm(&p).iter().zip(floats(&c["holm"])) {
            assert_close(&format!("{name} holm"), *ours, theirs, 1e-12);
        }
        for (ours, theirs) in benjamini_hochberg(&p).iter().zip(floats(&c["bh"])) {
            assert_close(&format!("{name} bh"), *ours, theirs, 1e-12);
        }
    }
    // Undefined p-values are not tests: they stay NaN and do not enlarge the family.
    let adjusted = holm(&[0.01, f64::NAN, 0.04]);
    assert!(adjusted[1].is_nan());
    assert_close("holm with a NaN", adjusted[0], 0.02, 1e-15);
}

/// The data of the coverage study: `Normal`, or right-skewed `Gamma4` (shape 4, skewness 1)
/// and `Exponential` (skewness 2); each with a known mean.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Shape {
    Normal,
    Gamma4,
    Exponential,
}

impl Shape {
    fn mean(self) -> f64 {
        match self {
            Shape::Normal => 0.0,
            Shape::Gamma4 => 4.0,
            Shape::Exponential => 1.0,
        }
    }
    fn draw(self, rng: &mut SplitMix64) -> f64 {
        let mut uniform = || ((rng.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        match self {
            Shape::Normal => {
                let (u, v) = (uniform(), uniform());
                (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
            }
            Shape::Gamma4 => (0..4).map(|_| -uniform().ln()).sum(),
            Shape::Exponential => -uniform().ln(),
        }
    }
}

/// The share of `experiments` simulated experiments of `n` values whose 95% interval by
/// `method` covers the true mean.
pub(crate) fn coverage(method: IntervalMethod, shape: Shape, n: usize, experiments: usize) -> f64 {
    let mut rng = SplitMix64(0xC0FE ^ (n as u64) << 8);
    let mut covered = 0;
    for e in 0..experiments {
        let values: Vec<f64> = (0..n).map(|_| shape.draw(&mut rng)).collect();
        let boot = Bootstrap {
            resamples: 1000,
            seed: e as u64,
        };
        let i = mean_interval(&values, method, boot);
        covered += (i.lo <= shape.mean() && shape.mean() <= i.hi) as usize;
    }
    covered as f64 / experiments as f64
}

/// The default interval (Student's t) holds its 95% from 5 seeds on, for normal and for skewed
/// (gamma, skewness 1) per-seed values: each coverage within [0.92, 0.97] over 4,000 simulated
/// experiments (standard error about 0.0035).
#[test]
fn the_default_interval_covers_at_small_n() {
    for shape in [Shape::Normal, Shape::Gamma4] {
        for n in [5, 10, 20] {
            let c = coverage(IntervalMethod::T, shape, n, 4000);
            assert!((0.92..=0.97).contains(&c), "{shape:?}, n {n}: coverage {c}");
        }
    }
}

/// The coverage table of docs/reports.md:
/// `cargo test --release --lib coverage_table -- --ignored --nocapture`.
#[test]
#[ignore]
fn coverage_table() {
    println!("| data | n | t | bca | percentile |");
    println!("| --- | --- | --- | --- | --- |");
    for shape in [Shape::Normal, Shape::Gamma4, Shape::Exponential] {
        for n in [3, 5, 10, 20] {
            let c: Vec<String> = [
                IntervalMethod::T,
                IntervalMethod::Bca,
                IntervalMethod::Percentile,
            ]
            .into_iter()
            .map(|m| format!("{:.3}", coverage(m, shape, n, 4000)))
            .collect();
            println!("| {shape:?} | {n} | {} |", c.join(" | "));
        }
    }
}
