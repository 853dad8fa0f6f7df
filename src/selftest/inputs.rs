//! The checks' inputs: seeded normal draws, the widths and columns the reduction checks cover,
//! and the adversarial rows every reduction must handle.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::metrics::Columns;

/// A standard normal draw (Box-Muller).
pub fn normal(rng: &mut ChaCha8Rng) -> f32 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

pub(super) fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

pub(super) fn normals(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| normal(rng)).collect()
}

/// The widths every kernel check covers: 1 and 2, each side of a power of two, the workgroup
/// cache's 2048 and past it, and the widest models' 8192.
pub(super) const WIDTHS: [usize; 9] = [1, 2, 127, 128, 1000, 2048, 2049, 4096, 8192];

/// Columns whose thresholds land exactly on entries of the "ties in magnitude" rows (1.0, and
/// 0.5 * max|h| = 1.0), so `<=` against `<` is tested.
pub(super) fn test_columns() -> Columns {
    Columns {
        near_zero: vec![1e-3, 0.5, 1.0],
        near_zero_rel: vec![0.01, 0.5],
        order: true,
        topk: vec![0.01, 0.05, 0.1, 0.5, 1.0],
    }
}

/// Rows of every kind the kernels must handle, for one width.
pub fn adversarial_rows(width: usize, seed: u64) -> Vec<(&'static str, Vec<f32>)> {
    let mut r = rng(seed);
    let mut rows = vec![
        ("normal", normals(&mut r, width)),
        (
            "normal x 1e-3",
            normals(&mut r, width).iter().map(|x| x * 1e-3).collect(),
        ),
        (
            "normal + 3",
            normals(&mut r, width).iter().map(|x| x + 3.0).collect(),
        ),
    ];
    let sparse = normals(&mut r, width)
        .into_iter()
        .map(|x| if r.random_bool(0.7) { 0.0 } else { x })
        .collect();
    rows.push(("sparse with exact zeros", sparse));
    let cauchy = (0..width)
        .map(|_| normal(&mut r) / normal(&mut r).abs().max(1e-3))
        .collect();
    rows.push(("heavy-tailed (Cauchy)", cauchy));
    let mut one_hot = vec![0.0; width];
    one_hot[r.random_range(0..width)] = -2.5;
    rows.push(("one-hot", one_hot));
    rows.push(("constant", vec![0.3; width]));
    rows.push(("all zero", vec![0.0; width]));
    let ties = (0..width)
        .map(|_| [-2.0, -1.0, 1.0, 2.0][r.random_range(0..4)])
        .collect();
    rows.push(("ties in magnitude", ties));
    // Where h^2 and h^4 overflow and underflow f32 unless the kernels scale by max|h|.
    rows.push((
        "huge (normal x 1e30)",
        normals(&mut r, width).iter().map(|x| x * 1e30).collect(),
    ));
    rows.push((
        "tiny (normal x 1e-30)",
        normals(&mut r, width).iter().map(|x| x * 1e-30).collect(),
    ));
    for (name, bad) in [
        ("with NaN", f32::NAN),
        ("with +Inf", f32::INFINITY),
        ("with -Inf", f32::NEG_INFINITY),
    ] {
        let mut row = normals(&mut r, width);
        row[r.random_range(0..width)] = bad;
        rows.push((name, row));
    }
    rows
}
