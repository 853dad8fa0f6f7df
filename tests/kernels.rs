//! The WGSL density kernels against the f64 reference, on a real wgpu adapter (Mesa's software
//! Vulkan driver on machines without a GPU).
//!
//! Tolerances: 1e-4 relative (plus 1e-6 absolute, for values that are 0) for every continuous
//! metric; kurtosis relative to m4/m2^2 = kurtosis + 3, since the excess subtracts 3; counting
//! metrics (l0_mean_std, near_zero*) within one element (1/d), as an f32 threshold can land on the
//! other side of an entry than the f64 one.

mod common;

use burn::tensor::{Device, Tensor, TensorData};
use common::{normal, rng, wgpu_device};
use densitrace::kernels::{self, reference};
use densitrace::metrics::{Columns, MetricSpec};
use densitrace::report::iid::{SCIENCE_TABLE, SCIENCE_TABLE_METRICS};
use rand::Rng;
use rand::seq::SliceRandom;

fn columns() -> Columns {
    // 1.0 and 0.5 * max|h| = 1.0 land exactly on entries of the "ties in magnitude" rows, so
    // `<=` versus `<` is tested.
    Columns {
        near_zero: vec![1e-3, 0.5, 1.0],
        near_zero_rel: vec![0.01, 0.5],
        order: true,
        topk: vec![0.01, 0.05, 0.1, 0.5, 1.0],
    }
}

fn upload(data: &[f32], rows: usize, width: usize, device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(data.to_vec(), [rows, width]), device)
}

fn download(t: Tensor<2>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().unwrap()
}

/// Counting metrics: l0_mean_std and the near-zero fractions.
fn is_count(column: usize) -> bool {
    column == Columns::L0_MEAN_STD || (Columns::FIXED..columns().moments_count()).contains(&column)
}

/// Checks one kernel value against the reference; returns a message on mismatch.
fn check(column: usize, width: usize, got: f32, want: f64) -> Result<(), String> {
    let got = got as f64;
    if want.is_nan() || got.is_nan() {
        return if want.is_nan() && got.is_nan() {
            Ok(())
        } else {
            Err(format!("got {got}, want {want}"))
        };
    }
    let tolerance = if is_count(column) {
        1.0 / width as f64 + 1e-6
    } else if column == Columns::KURTOSIS {
        1e-4 * (want.abs() + 3.0)
    } else {
        1e-4 * want.abs() + 1e-6
    };
    if (got - want).abs() <= tolerance {
        Ok(())
    } else {
        Err(format!("got {got}, want {want}, tolerance {tolerance:e}"))
    }
}

/// Rows of every kind the kernels must handle, for one width.
fn test_rows(width: usize, seed: u64) -> Vec<(&'static str, Vec<f32>)> {
    let mut r = rng(seed);
    let normal_row =
        |r: &mut rand_chacha::ChaCha8Rng| (0..width).map(|_| normal(r)).collect::<Vec<f32>>();
    let mut rows = Vec::new();
    rows.push(("normal", normal_row(&mut r)));
    rows.push((
        "normal scaled 1e-3",
        normal_row(&mut r).iter().map(|x| x * 1e-3).collect(),
    ));
    rows.push((
        "normal shifted",
        normal_row(&mut r).iter().map(|x| x + 3.0).collect(),
    ));
    rows.push((
        "sparse with exact zeros",
        normal_row(&mut r)
            .into_iter()
            .map(|x| if r.random_bool(0.7) { 0.0 } else { x })
            .collect(),
    ));
    rows.push((
        "heavy-tailed (Cauchy)",
        (0..width)
            .map(|_| normal(&mut r) / normal(&mut r).abs().max(1e-3))
            .collect(),
    ));
    let mut one_hot = vec![0.0; width];
    one_hot[r.random_range(0..width)] = -2.5;
    rows.push(("one-hot", one_hot));
    rows.push(("constant", vec![0.3; width]));
    rows.push(("all zero", vec![0.0; width]));
    rows.push((
        "ties in magnitude",
        (0..width)
            .map(|_| [-2.0, -1.0, 1.0, 2.0][r.random_range(0..4)])
            .collect(),
    ));
    for (name, bad) in [
        ("with NaN", f32::NAN),
        ("with +Inf", f32::INFINITY),
        ("with -Inf", f32::NEG_INFINITY),
    ] {
        let mut row = normal_row(&mut r);
        row[r.random_range(0..width)] = bad;
        rows.push((name, row));
    }
    rows
}

#[test]
fn row_moments_match_the_reference_on_every_kind_and_width() {
    let Some(device) = wgpu_device() else { return };
    let cols = columns();
    let mut failures = Vec::new();
    for (i, &width) in [1usize, 2, 127, 128, 1000, 2048, 2049, 4096, 8192]
        .iter()
        .enumerate()
    {
        let rows = test_rows(width, i as u64);
        let data: Vec<f32> = rows.iter().flat_map(|(_, r)| r.iter().copied()).collect();
        let got = download(kernels::row_metrics(
            upload(&data, rows.len(), width, &device),
            &cols,
        ));
        for (r, (kind, row)) in rows.iter().enumerate() {
            let want = reference::row_metrics(row, &cols);
            for (c, w) in want.iter().enumerate() {
                if let Err(e) = check(c, width, got[r * cols.count() + c], *w) {
                    failures.push(format!("width {width}, {kind}, column {c}: {e}"));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn aggregate_matches_the_reference_and_skips_nonfinite_vectors() {
    let Some(device) = wgpu_device() else { return };
    let cols = columns();
    let (rows, width) = (777, 96);
    let mut r = rng(42);
    let mut data: Vec<f32> = (0..rows * width).map(|_| normal(&mut r) * 2.0).collect();
    for row in [3usize, 100, 500] {
        data[row * width + 7] = f32::NAN;
    }
    for row in [10usize, 11] {
        data[row * width..(row + 1) * width].fill(0.0);
    }
    let summary = download(kernels::summarize(
        upload(&data, rows, width, &device),
        &cols,
    ));
    let per_row = reference::matrix_metrics(&data, width, &cols);
    for c in 0..cols.count() {
        let want = reference::aggregate(&per_row, c);
        let (mean, std, n) = (summary[c * 3], summary[c * 3 + 1], summary[c * 3 + 2]);
        assert_eq!(n as u64, want.n, "column {c}: n");
        assert!(
            ((mean as f64) - want.mean).abs() <= 1e-4 * want.mean.abs() + 1e-6,
            "column {c}: mean {mean} vs {}",
            want.mean
        );
        assert!(
            ((std as f64) - want.std).abs() <= 1e-3 * want.std.abs() + 1e-6,
            "column {c}: std {std} vs {}",
            want.std
        );
    }
    // The three NaN rows are out of every metric but `nonfinite`; the zero rows lack hoyer.
    assert_eq!(summary[Columns::L1 * 3 + 2] as usize, rows - 3);
    assert_eq!(summary[Columns::HOYER * 3 + 2] as usize, rows - 5);
    assert_eq!(summary[Columns::NONFINITE * 3 + 2] as usize, rows);
}

#[test]
fn quantiles_match_the_reference_in_workgroup_and_global_memory() {
    let Some(device) = wgpu_device() else { return };
    let cols = columns();
    let qs = [0.0, 0.05, 0.25, 0.5, 0.95, 1.0];
    let qs32: Vec<f32> = qs.iter().map(|&q| q as f32).collect();
    // 777 vectors sort in workgroup memory (padded to 1024); 5000 in global memory (8192).
    for (rows, width) in [(777usize, 40usize), (5000, 24)] {
        let mut r = rng(rows as u64);
        let mut data: Vec<f32> = (0..rows * width).map(|_| normal(&mut r)).collect();
        data[5 * width] = f32::INFINITY;
        data[9 * width..10 * width].fill(0.0);
        let table = kernels::row_metrics(upload(&data, rows, width, &device), &cols);
        let got = download(kernels::column_quantiles(table, &qs32));
        let per_row = reference::matrix_metrics(&data, width, &cols);
        for c in 0..cols.count() {
            let want = reference::quantiles(&per_row, c, &qs);
            for (k, w) in want.iter().enumerate() {
                let g = got[c * qs.len() + k] as f64;
                let tolerance = if is_count(c) {
                    1.0 / width as f64
                } else {
                    1e-4 * w.abs() + 1e-5
                };
                assert!(
                    (g - w).abs() <= tolerance || (g.is_nan() && w.is_nan()),
                    "{rows} rows, column {c}, q {}: {g} vs {w}",
                    qs[k]
                );
            }
        }
    }
}

#[test]
fn across_vector_metrics_match_the_reference() {
    let Some(device) = wgpu_device() else { return };
    let cols = columns();
    let (rows, width) = (300, 48);
    let mut r = rng(11);
    // ReLU-like vectors with a low-rank part; neurons 0..5 never fire; one vector holds a NaN.
    let basis: Vec<f32> = (0..3 * width).map(|_| normal(&mut r)).collect();
    let mut data = Vec::with_capacity(rows * width);
    for _ in 0..rows {
        let c: Vec<f32> = (0..3).map(|_| normal(&mut r)).collect();
        for i in 0..width {
            let v = (0..3).map(|k| c[k] * basis[k * width + i]).sum::<f32>() + 0.1 * normal(&mut r);
            data.push(if i < 5 { 0.0 } else { v.max(0.0) });
        }
    }
    data[17 * width + 9] = f32::NAN;
    let x = upload(&data, rows, width, &device);
    let table = kernels::row_metrics(x.clone(), &cols);
    let per_row = reference::matrix_metrics(&data, width, &cols);
    let valid = kernels::across::valid_rows(table);
    let stats = kernels::across::active_stats(x.clone(), valid.clone(), 0.2)
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let active = reference::across_vectors(
        &data,
        width,
        &per_row,
        &"active_fraction@0.2".parse().unwrap(),
    );
    let dead = reference::across_vectors(
        &data,
        width,
        &per_row,
        &"dead_fraction@0.2".parse().unwrap(),
    );
    assert!(
        (stats[0] as f64 - active.mean).abs() < 1e-5,
        "active mean {} vs {}",
        stats[0],
        active.mean
    );
    assert!(
        (stats[1] as f64 - active.std).abs() < 1e-4,
        "active std {} vs {}",
        stats[1],
        active.std
    );
    assert!(
        (stats[2] as f64 - dead.mean).abs() < 1e-6,
        "dead {} vs {}",
        stats[2],
        dead.mean
    );
    assert!(
        (dead.mean - 5.0 / 48.0).abs() < 1e-12,
        "the five silent neurons are dead"
    );
    assert_eq!(active.n, rows as u64 - 1);

    let cov: Vec<f64> = download(kernels::across::covariance(x, valid))
        .into_iter()
        .map(f64::from)
        .collect();
    let rank = densitrace::metrics::effective_rank(&cov, width);
    let want = reference::across_vectors(&data, width, &per_row, &MetricSpec::Rankme).mean;
    assert!(
        (rank - want).abs() <= 1e-3 * want,
        "rankme {rank} vs {want}"
    );
    assert!(
        want > 1.0 && want < 10.0,
        "a rank-3 signal plus noise: {want}"
    );
}

#[test]
fn rows_beyond_one_dispatch_dimension_are_all_computed() {
    let Some(device) = wgpu_device() else { return };
    let cols = columns();
    // The moments kernel packs 8 rows of width 5 into a workgroup and the order kernel loops over
    // rows, so crossing 65,535 workgroups takes more than 8 x 65,535 rows.
    let (rows, width) = (530_000, 5);
    let mut r = rng(7);
    let data: Vec<f32> = (0..rows * width).map(|_| normal(&mut r)).collect();
    let got = download(kernels::row_metrics(
        upload(&data, rows, width, &device),
        &cols,
    ));
    for row in [
        0,
        65_535,
        65_536,
        524_279,
        524_280,
        524_287,
        524_288,
        rows - 1,
    ] {
        let want = reference::row_metrics(&data[row * width..(row + 1) * width], &cols);
        for (c, w) in want.iter().enumerate() {
            check(c, width, got[row * cols.count() + c], *w)
                .unwrap_or_else(|e| panic!("row {row}, column {c}: {e}"));
        }
    }
}

#[test]
fn iid_normal_vectors_reproduce_the_science_reference_table() {
    let Some(device) = wgpu_device() else { return };
    // docs/science.md, "Reference values on i.i.d. N(0,1) vectors": every column of the table.
    let names = SCIENCE_TABLE_METRICS;
    let metrics: Vec<MetricSpec> = names.iter().map(|s| s.parse().unwrap()).collect();
    let cols = Columns::for_metrics(&metrics);
    for (d, expected) in SCIENCE_TABLE {
        let mut r = rng(d as u64);
        let data: Vec<f32> = (0..2000 * d).map(|_| normal(&mut r)).collect();
        let summary = download(kernels::summarize(upload(&data, 2000, d, &device), &cols));
        for (metric, want) in metrics.iter().zip(expected) {
            let got = summary[cols.column(metric) * 3] as f64;
            assert!(
                (got - want).abs() <= 0.005,
                "d {d}, {metric}: {got:.4} vs table {want}"
            );
        }
    }
}

#[test]
fn metrics_are_invariant_to_scale_and_permutation() {
    let Some(device) = wgpu_device() else { return };
    let cols = columns();
    let width = 300;
    let mut r = rng(9);
    let row: Vec<f32> = (0..width)
        .map(|_| normal(&mut r) / normal(&mut r).abs().max(0.1))
        .collect();
    let scaled: Vec<f32> = row.iter().map(|x| x * 37.5).collect();
    let mut permuted = row.clone();
    permuted.shuffle(&mut r);
    let data: Vec<f32> = [row, scaled, permuted].concat();
    let got = download(kernels::row_metrics(
        upload(&data, 3, width, &device),
        &cols,
    ));
    let m = cols.count();
    for c in 0..m {
        let base = got[c] as f64;
        for (variant, v) in [("scaled", got[m + c]), ("permuted", got[2 * m + c])] {
            let changes_with_scale = c == Columns::L1 || c == Columns::L2;
            // near_zero@eps has an absolute threshold: scaling moves entries across it.
            let absolute_threshold =
                (Columns::FIXED..Columns::FIXED + cols.near_zero.len()).contains(&c);
            if variant == "scaled" && (changes_with_scale || absolute_threshold) {
                continue;
            }
            check(c, width, v, base).unwrap_or_else(|e| panic!("{variant}, column {c}: {e}"));
        }
    }
    // l1 and l2 scale linearly.
    check(
        Columns::L1,
        width,
        got[m + Columns::L1],
        got[Columns::L1] as f64 * 37.5,
    )
    .unwrap();
    check(
        Columns::L2,
        width,
        got[m + Columns::L2],
        got[Columns::L2] as f64 * 37.5,
    )
    .unwrap();
}

#[test]
fn one_hot_and_constant_vectors_hit_the_extremes() {
    let Some(device) = wgpu_device() else { return };
    let cols = columns();
    let order = cols.moments_count();
    for width in [2usize, 127, 1000, 4096, 8192] {
        let mut one_hot = vec![0.0f32; width];
        one_hot[width / 3] = 4.0;
        let constant = vec![-1.5f32; width];
        let got = download(kernels::row_metrics(
            upload(&[one_hot, constant].concat(), 2, width, &device),
            &cols,
        ));
        let (hot, flat) = got.split_at(cols.count());
        let d = width as f32;
        let close = |a: f32, b: f32, what: &str| {
            assert!(
                (a - b).abs() <= 1e-5 * b.abs().max(1.0),
                "width {width}, {what}: {a} vs {b}"
            )
        };
        close(hot[Columns::HOYER], 1.0, "one-hot hoyer");
        close(hot[Columns::EFF_RANK], 1.0 / d, "one-hot eff_rank");
        close(hot[order + Columns::GINI], (d - 1.0) / d, "one-hot gini");
        for t in 0..cols.topk.len() {
            close(
                hot[order + Columns::ORDER_FIXED + t],
                1.0,
                "one-hot top-k energy",
            );
        }
        close(flat[Columns::HOYER], 0.0, "constant hoyer");
        close(flat[order + Columns::GINI], 0.0, "constant gini");
        close(
            flat[order + Columns::MAX_OVER_MEDIAN],
            1.0,
            "constant max/median",
        );
    }
}
