//! The fast CPU reduction: the same per-vector table, aggregates, quantiles and across-vector
//! metrics as `reference`, from the f32 activations as they are read back, for `device: cpu`.
//!
//! `reference` is the definition, written to be obviously right: it copies every row into f64
//! vectors, sorts every row for the order statistics and every column for the quantiles, and takes
//! two scalar logarithms per entry. This module computes the same numbers with less work, and
//! `tests` (below) hold it to the reference column by column:
//! - no copies of rows: each f32 entry is widened to f64 where it is used, four at a time
//!   (`wide::f64x4`, portable SIMD), and sums run in f64 lanes whose order is fixed, so results
//!   do not depend on the thread count. Squares and fourth powers stay in f64, where 1e30^4 and
//!   1e-30^4 are representable and f32 would overflow or underflow;
//! - a few passes over the row while it sits in L1 (at most 8192 x 4 bytes): sums, then the
//!   central moments around the means (two passes, as the reference, so kurtosis and the spread
//!   behind `l0_mean_std` are as well conditioned as there), then the counts;
//! - one logarithm per entry for both entropies instead of two, four at a time (`wide`'s
//!   vectorised ln; `entropy_sums`), and only when `eff_rank` or `eff_rank_l1` is measured
//!   (`Wanted`);
//! - order statistics by selection (`select_nth_unstable`) on the magnitudes' bit patterns in a
//!   per-thread scratch buffer: top-k energy and the median need only the k largest entries and
//!   the middle one. Only `gini` needs the whole order; it sorts, and only when it is measured.
//!   Non-negative finite f32 values order as their bits do, as u32, which a radix sort puts in
//!   order in a few linear passes (`radix_sort`);
//! - quantiles by selection of the two order statistics each one interpolates between;
//! - active and dead fractions by counting per neuron while reading rows in order.
//!
//! NaN and Inf are handled as in the reference: a row holding one gets its non-finite count and
//! NaN everywhere else, and is left out of every aggregate and across-vector metric.

use std::cmp::Ordering;

use rayon::prelude::*;
use wide::f64x4;

use super::reference::{self, MIN_KURTOSIS_VAR};
use crate::metrics::{Columns, MetricSpec, Summary};

/// The aggregate over rows is one linear pass already; the fast path shares the reference's.
pub use super::reference::aggregate;

/// The offset inside the entropies' logarithms, as in `metrics.rs`'s definitions.
const ENTROPY_EPS: f64 = 1e-10;

/// Interleaved counters per count: independent chains the compiler can keep in SIMD lanes.
const LANES: usize = 8;

/// Which of the table's costly columns to compute: the two entropies (a logarithm per entry),
/// `gini` (a full sort of each row) and `max_over_median` (a selection of the median). An
/// evaluation reads only the columns of its configured metrics, so the others are left NaN
/// rather than computed. Every other column is cheap and always computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wanted {
    /// `eff_rank` and `eff_rank_l1`.
    pub entropies: bool,
    pub gini: bool,
    pub max_over_median: bool,
}

impl Wanted {
    /// Every column, as the reference computes them.
    pub const ALL: Wanted = Wanted {
        entropies: true,
        gini: true,
        max_over_median: true,
    };

    /// The columns `metrics` read.
    pub fn of(metrics: &[MetricSpec]) -> Wanted {
        let has = |m: MetricSpec| metrics.contains(&m);
        Wanted {
            entropies: has(MetricSpec::EffRank) || has(MetricSpec::EffRankL1),
            gini: has(MetricSpec::Gini),
            max_over_median: has(MetricSpec::MaxOverMedian),
        }
    }
}

/// What every row of one width needs, worked out once per matrix rather than once per row.
struct RowPlan<'a> {
    cols: &'a Columns,
    wanted: Wanted,
    /// (column offset within the order columns, k) of each top-k fraction, by ascending k.
    topk: Vec<(usize, usize)>,
    /// Without gini: the ascending positions of the sorted magnitudes that the median and the
    /// top-k sums read, which a selection must place.
    positions: Vec<usize>,
}

impl<'a> RowPlan<'a> {
    fn new(cols: &'a Columns, wanted: Wanted, d: usize) -> Self {
        let mut topk: Vec<(usize, usize)> = cols
            .topk_counts(d)
            .into_iter()
            .enumerate()
            .map(|(i, k)| (Columns::ORDER_FIXED + i, k))
            .collect();
        topk.sort_by_key(|&(_, k)| k);
        let mut positions: Vec<usize> = topk.iter().map(|&(_, k)| d - k).collect();
        if wanted.max_over_median {
            positions.extend([(d - 1) / 2, d / 2]);
        }
        positions.sort_unstable();
        positions.dedup();
        RowPlan {
            cols,
            wanted,
            topk,
            positions,
        }
    }
}

/// Per-vector metrics of every row of a row-major `[rows, width]` matrix, every column computed:
/// `reference::matrix_metrics`'s table.
pub fn matrix_metrics(data: &[f32], width: usize, cols: &Columns) -> Vec<Vec<f64>> {
    matrix_metrics_of(data, width, cols, Wanted::ALL)
}

/// As `matrix_metrics`, with the costly columns `wanted` leaves out set to NaN. Rows are spread
/// over the machine's cores; each row's values do not depend on how.
pub fn matrix_metrics_of(
    data: &[f32],
    width: usize,
    cols: &Columns,
    wanted: Wanted,
) -> Vec<Vec<f64>> {
    let plan = RowPlan::new(cols, wanted, width);
    // One magnitude buffer per rayon task, reused by all its rows.
    data.par_chunks(width)
        .map_init(Vec::new, |magnitudes, row| {
            row_metrics_with(row, &plan, magnitudes)
        })
        .collect()
}

/// One row's metrics in `cols`' layout: `reference::row_metrics`'s values.
pub fn row_metrics(row: &[f32], cols: &Columns) -> Vec<f64> {
    let plan = RowPlan::new(cols, Wanted::ALL, row.len());
    row_metrics_with(row, &plan, &mut Vec::new())
}

/// Four entries widened to f64.
fn widen(chunk: &[f32]) -> f64x4 {
    f64x4::new([
        chunk[0] as f64,
        chunk[1] as f64,
        chunk[2] as f64,
        chunk[3] as f64,
    ])
}

/// Sums of the first pass over a finite row.
struct RawSums {
    /// sum |h|, sum h, sum h^2, sum h^4, max |h|.
    l1: f64,
    sum: f64,
    s2: f64,
    s4: f64,
    max_a: f64,
}

fn raw_sums(row: &[f32]) -> RawSums {
    let zero = f64x4::splat(0.0);
    let (mut l1, mut sum, mut s2, mut s4, mut max_a) = (zero, zero, zero, zero, zero);
    let chunks = row.chunks_exact(4);
    let tail = chunks.remainder();
    for chunk in chunks {
        let h = widen(chunk);
        let h2 = h * h;
        l1 += h.abs();
        sum += h;
        s2 += h2;
        s4 += h2 * h2;
        max_a = max_a.max(h.abs());
    }
    let mut sums = RawSums {
        l1: l1.reduce_add(),
        sum: sum.reduce_add(),
        s2: s2.reduce_add(),
        s4: s4.reduce_add(),
        max_a: max_a.to_array().into_iter().fold(0.0, f64::max),
    };
    for &x in tail {
        let h = x as f64;
        sums.l1 += h.abs();
        sums.sum += h;
        sums.s2 += h * h;
        sums.s4 += h * h * h * h;
        sums.max_a = sums.max_a.max(h.abs());
    }
    sums
}

/// Second pass: sum (|h| - mean_a)^2, sum (h - mean_h)^2 and sum (h - mean_h)^4.
fn central_sums(row: &[f32], mean_a: f64, mean_h: f64) -> (f64, f64, f64) {
    let zero = f64x4::splat(0.0);
    let (mut va, mut c2, mut c4) = (zero, zero, zero);
    let (mean_a4, mean_h4) = (f64x4::splat(mean_a), f64x4::splat(mean_h));
    let chunks = row.chunks_exact(4);
    let tail = chunks.remainder();
    for chunk in chunks {
        let h = widen(chunk);
        let da = h.abs() - mean_a4;
        let dh = h - mean_h4;
        let dh2 = dh * dh;
        va += da * da;
        c2 += dh2;
        c4 += dh2 * dh2;
    }
    let (mut va, mut c2, mut c4) = (va.reduce_add(), c2.reduce_add(), c4.reduce_add());
    for &x in tail {
        let h = x as f64;
        let (da, dh) = (h.abs() - mean_a, h - mean_h);
        va += da * da;
        c2 += dh * dh;
        c4 += dh * dh * dh * dh;
    }
    (va, c2, c4)
}

/// How many entries satisfy `keep`, in interleaved counters the compiler can vectorise.
fn count(row: &[f32], keep: impl Fn(f32) -> bool) -> usize {
    let mut n = [0u32; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (j, &x) in chunk.iter().enumerate() {
            n[j] += keep(x) as u32;
        }
    }
    let tail = tail.iter().filter(|&&x| keep(x)).count();
    n.iter().map(|&c| c as usize).sum::<usize>() + tail
}

/// ln(1 + x) for 0 <= x <= 0.1 by its series to x^4; the truncation error is below x^5 / 5.
fn ln_1p_series(x: f64x4) -> f64x4 {
    let (one, half, third, quarter) = (
        f64x4::splat(1.0),
        f64x4::splat(0.5),
        f64x4::splat(1.0 / 3.0),
        f64x4::splat(0.25),
    );
    x * (one - x * (half - x * (third - x * quarter)))
}

/// The two entropy sums of a row with s2 > 0 and l1 > 0, as the reference defines them:
/// sum p ln(p + eps) with p = h^2 / s2, and sum q ln q with q = |h| / l1 + eps (eff_rank and
/// eff_rank_l1 before exp and / d). Zeros add 0 to the first and eps ln eps to the second.
///
/// The reference takes two logarithms per entry. With a = |h| > 0 both are ln a plus known
/// terms: ln(p + eps) = 2 ln a - ln s2 + ln(1 + x_p) with x_p = eps / p, and
/// ln q = ln a - ln l1 + ln(1 + x_q) with x_q = eps l1 / a. Where both ratios are at most 0.1, a
/// short series gives ln(1 + x), and a term is then off by at most p x_p^5 / 5 = eps x_p^4 / 5
/// <= 2e-15 (the same for q), so a sum of 8192 terms by 2e-11: far inside the 1e-6 the tests
/// hold it to. Four entries go at a time through `wide`'s vectorised ln; a group holding a zero
/// or an entry that small (p < 1e-9) takes both logarithms directly instead.
fn entropy_sums(row: &[f32], s2: f64, l1: f64) -> (f64, f64) {
    let splat = f64x4::splat;
    let (eps, limit) = (splat(ENTROPY_EPS), splat(0.1));
    let (inv_s2, inv_l1) = (splat(1.0 / s2), splat(1.0 / l1));
    let (ln_s2, ln_l1) = (splat(s2.ln()), splat(l1.ln()));
    let (eps_s2, eps_l1) = (splat(ENTROPY_EPS * s2), splat(ENTROPY_EPS * l1));
    let (mut entropy, mut entropy_l1) = (splat(0.0), splat(0.0));
    let chunks = row.chunks_exact(4);
    let tail = chunks.remainder();
    for chunk in chunks {
        let a = widen(chunk).abs();
        let p = a * a * inv_s2;
        let inv_a = splat(1.0) / a;
        let x_p = eps_s2 * inv_a * inv_a;
        let x_q = eps_l1 * inv_a;
        let q = a * inv_l1 + eps;
        if (x_p.simd_le(limit) & x_q.simd_le(limit)).all() {
            let ln_a = a.ln();
            entropy += p * (ln_a + ln_a - ln_s2 + ln_1p_series(x_p));
            entropy_l1 += q * (ln_a - ln_l1 + ln_1p_series(x_q));
        } else {
            entropy += p * (p + eps).ln();
            entropy_l1 += q * q.ln();
        }
    }
    let (mut entropy, mut entropy_l1) = (entropy.reduce_add(), entropy_l1.reduce_add());
    for &x in tail {
        let h = x as f64;
        let p = h * h / s2;
        entropy += p * (p + ENTROPY_EPS).ln();
        let q = h.abs() / l1 + ENTROPY_EPS;
        entropy_l1 += q * q.ln();
    }
    (entropy, entropy_l1)
}

/// One row's table entries; `magnitudes` is the caller's reusable buffer for the order statistics.
fn row_metrics_with(row: &[f32], plan: &RowPlan, magnitudes: &mut Vec<u32>) -> Vec<f64> {
    let (cols, wanted) = (plan.cols, plan.wanted);
    let mut out = vec![f64::NAN; cols.count()];
    let nonfinite = count(row, |x| !x.is_finite());
    out[Columns::NONFINITE] = nonfinite as f64;
    if nonfinite > 0 {
        return out;
    }
    let d = row.len() as f64;
    let raw = raw_sums(row);
    let RawSums {
        l1, s2, s4, max_a, ..
    } = raw;

    out[Columns::L1] = l1;
    out[Columns::L2] = s2.sqrt();
    if s2 > 0.0 {
        if d > 1.0 {
            out[Columns::HOYER] = (d.sqrt() - l1 / s2.sqrt()) / (d.sqrt() - 1.0);
        }
        out[Columns::PARTICIPATION_RATIO] = s2 * s2 / s4 / d;
        if wanted.entropies {
            let (entropy, entropy_l1) = entropy_sums(row, s2, l1);
            out[Columns::EFF_RANK] = (-entropy).exp() / d;
            out[Columns::EFF_RANK_L1] = (-entropy_l1).exp() / d;
        }
    }

    let mean_a = l1 / d;
    let mean_h = raw.sum / d;
    let (var_a, c2, c4) = central_sums(row, mean_a, mean_h);
    let threshold = mean_a + (var_a / d).sqrt();
    out[Columns::L0_MEAN_STD] = count(row, |x| (x.abs() as f64) > threshold) as f64 / d;
    let (m2, m4) = (c2 / d, c4 / d);
    if max_a > 0.0 && m2 / (max_a * max_a) > MIN_KURTOSIS_VAR {
        out[Columns::KURTOSIS] = m4 / (m2 * m2) - 3.0;
    }

    // Both sides are f32 values, so comparing in f32 is comparing in f64, as the reference does.
    for (i, &eps) in cols.near_zero.iter().enumerate() {
        out[Columns::FIXED + i] = count(row, |x| x.abs() <= eps) as f64 / d;
    }
    for (i, &r) in cols.near_zero_rel.iter().enumerate() {
        let bound = r as f64 * max_a;
        out[Columns::FIXED + cols.near_zero.len() + i] =
            count(row, |x| (x.abs() as f64) <= bound) as f64 / d;
    }
    if cols.order {
        let sums = (l1, s2, max_a);
        order_statistics(
            row,
            plan,
            sums,
            magnitudes,
            &mut out[cols.moments_count()..],
        );
    }
    out
}

/// gini, max_over_median and the top-k energies of a finite row with sums (l1, energy = sum h^2,
/// max |h|), from its magnitudes: sorted when gini is wanted, else only partitioned at the
/// positions the median and the top-k sums read.
fn order_statistics(
    row: &[f32],
    plan: &RowPlan,
    (l1, energy, max_a): (f64, f64, f64),
    magnitudes: &mut Vec<u32>,
    out: &mut [f64],
) {
    let d = row.len();
    // |h| as bits: clearing the sign bit is the absolute value, and for finite non-negative f32
    // the bit patterns order as the values do.
    magnitudes.clear();
    magnitudes.extend(row.iter().map(|x| x.to_bits() & 0x7fff_ffff));
    let value = |bits: u32| f32::from_bits(bits) as f64;

    if plan.wanted.gini {
        // The second half of the buffer is the radix sort's spare room.
        magnitudes.resize(2 * d, 0);
        let (keys, spare) = magnitudes.split_at_mut(d);
        radix_sort(keys, spare);
        magnitudes.truncate(d);
        if l1 > 0.0 {
            out[Columns::GINI] = rank_weighted_sum(magnitudes) / (d as f64 * l1);
        }
    } else {
        select_at(magnitudes, 0, &plan.positions, &u32::cmp);
    }

    if plan.wanted.max_over_median {
        // (d - 1) / 2 and d / 2 are the same entry for odd d: numpy's median either way.
        let median = (value(magnitudes[(d - 1) / 2]) + value(magnitudes[d / 2])) / 2.0;
        if median > 0.0 {
            out[Columns::MAX_OVER_MEDIAN] = max_a / median;
        }
    }
    if energy > 0.0 {
        // The k largest are the tail from position d - k; the tails nest (ascending k), so each
        // k adds the entries between its start and the previous one's.
        let (mut top, mut from) = (0.0, d);
        for &(column, k) in &plan.topk {
            top += magnitudes[d - k..from]
                .iter()
                .map(|&bits| value(bits) * value(bits))
                .sum::<f64>();
            from = d - k;
            out[column] = top / energy;
        }
    }
}

/// Sorts keys ascending, as `sort_unstable` does (u32 keys have one sorted order), by a
/// least-significant-digit radix sort: 8 bits a pass, back and forth between `keys` and `spare`
/// (as long as `keys`). One pass counts every digit, then each digit that is not the same for
/// every key takes one stable scatter: at most 4 linear passes where a comparison sort takes about
/// log2(d) per key. Short rows, where setting up 256 buckets costs more, are sorted by comparison.
fn radix_sort(keys: &mut [u32], spare: &mut [u32]) {
    const SHORTEST: usize = 64;
    let n = keys.len();
    if n < SHORTEST {
        keys.sort_unstable();
        return;
    }
    let mut counts = [[0u32; 256]; 4];
    for &key in keys.iter() {
        for (pass, count) in counts.iter_mut().enumerate() {
            count[(key >> (8 * pass)) as usize & 0xff] += 1;
        }
    }
    // Where the keys are now: `keys` (true) or `spare`.
    let mut in_keys = true;
    for (pass, count) in counts.iter().enumerate() {
        if count.iter().any(|&c| c as usize == n) {
            continue;
        }
        let mut next = [0u32; 256];
        let mut start = 0;
        for (next, &c) in next.iter_mut().zip(count) {
            *next = start;
            start += c;
        }
        if in_keys {
            scatter(keys, spare, 8 * pass as u32, &mut next);
        } else {
            scatter(spare, keys, 8 * pass as u32, &mut next);
        }
        in_keys = !in_keys;
    }
    if !in_keys {
        keys.copy_from_slice(spare);
    }
}

/// One radix pass: each key of `from`, in order, to the next free slot of its digit in `to`.
fn scatter(from: &[u32], to: &mut [u32], shift: u32, next: &mut [u32; 256]) {
    for &key in from {
        let digit = (key >> shift) as usize & 0xff;
        to[next[digit] as usize] = key;
        next[digit] += 1;
    }
}

/// sum (2i - d - 1) a_(i) over the sorted magnitudes' bits, i = 1..d: gini's numerator.
fn rank_weighted_sum(sorted: &[u32]) -> f64 {
    let d = sorted.len() as f64;
    let value = |bits: u32| f32::from_bits(bits) as f64;
    // The weights of four consecutive ranks, from i = 1, advancing by 8 per step of 4.
    let mut weight = f64x4::new([1.0 - d, 3.0 - d, 5.0 - d, 7.0 - d]);
    let mut sum = f64x4::splat(0.0);
    let chunks = sorted.chunks_exact(4);
    let tail = chunks.remainder();
    for chunk in chunks {
        let a = f64x4::new([
            value(chunk[0]),
            value(chunk[1]),
            value(chunk[2]),
            value(chunk[3]),
        ]);
        sum += weight * a;
        weight += f64x4::splat(8.0);
    }
    let mut sum = sum.reduce_add();
    let done = sorted.len() - tail.len();
    for (i, &bits) in tail.iter().enumerate() {
        sum += (2.0 * (done + i + 1) as f64 - d - 1.0) * value(bits);
    }
    sum
}

/// Puts at each of the ascending `positions` (indices into the whole slice, of which `values`
/// starts at `offset`) the element a full sort would put there, everything before it no greater
/// and everything after no smaller: `select_nth_unstable` at the middle position, then the same
/// on each side, so m positions cost about log2(m) linear passes instead of a sort.
fn select_at<T>(
    values: &mut [T],
    offset: usize,
    positions: &[usize],
    cmp: &impl Fn(&T, &T) -> Ordering,
) {
    if positions.is_empty() {
        return;
    }
    let mid = positions.len() / 2;
    let at = positions[mid] - offset;
    let (below, _, above) = values.select_nth_unstable_by(at, cmp);
    select_at(below, offset, &positions[..mid], cmp);
    select_at(above, offset + at + 1, &positions[mid + 1..], cmp);
}

/// `reference::quantiles`: numpy's linear interpolation over the column's valid values, from
/// the two order statistics each quantile needs instead of a sorted copy.
pub fn quantiles(per_row: &[Vec<f64>], column: usize, qs: &[f64]) -> Vec<f64> {
    let mut values: Vec<f64> = per_row
        .iter()
        .filter(|r| column == Columns::NONFINITE || r[Columns::NONFINITE] == 0.0)
        .map(|r| r[column])
        .filter(|v| v.is_finite())
        .collect();
    let n = values.len();
    if n == 0 {
        return vec![f64::NAN; qs.len()];
    }
    let bounds = |q: f64| {
        let pos = q * (n - 1) as f64;
        let lo = pos.floor() as usize;
        (pos, lo, (lo + 1).min(n - 1))
    };
    let mut positions: Vec<usize> = qs
        .iter()
        .flat_map(|&q| {
            let (_, lo, hi) = bounds(q);
            [lo, hi]
        })
        .collect();
    positions.sort_unstable();
    positions.dedup();
    select_at(&mut values, 0, &positions, &f64::total_cmp);
    qs.iter()
        .map(|&q| {
            let (pos, lo, hi) = bounds(q);
            values[lo] + (pos - lo as f64) * (values[hi] - values[lo])
        })
        .collect()
}

/// `reference::across_vectors`: `active_fraction@eps` and `dead_fraction@eps` count each
/// neuron's active entries row by row (in parallel blocks of rows; integer counts, so the result
/// is exact and the same on any core count). `rankme` is the reference's: its cost is the d x d
/// covariance's spectrum in f64, which f32 would not reproduce to 1e-6.
pub fn across_vectors(
    data: &[f32],
    width: usize,
    per_row: &[Vec<f64>],
    metric: &MetricSpec,
) -> Summary {
    let eps = match *metric {
        MetricSpec::ActiveFraction(eps) | MetricSpec::DeadFraction(eps) => eps,
        MetricSpec::Rankme => return reference::across_vectors(data, width, per_row, metric),
        _ => panic!("{metric} is a per-vector metric"),
    };
    const BLOCK: usize = 256;
    let counts = data
        .par_chunks(width * BLOCK)
        .zip(per_row.par_chunks(BLOCK))
        .map(|(rows, metrics)| {
            let mut counts = vec![0u32; width];
            let mut finite = 0u64;
            for (row, m) in rows.chunks(width).zip(metrics) {
                if m[Columns::NONFINITE] != 0.0 {
                    continue;
                }
                finite += 1;
                for (c, &x) in counts.iter_mut().zip(row) {
                    *c += ((x.abs() as f64) > eps) as u32;
                }
            }
            (counts, finite)
        })
        .reduce(
            || (vec![0u32; width], 0),
            |(mut a, n), (b, m)| {
                a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
                (a, n + m)
            },
        );
    let (counts, n) = counts;
    let per_neuron: Vec<f64> = counts.iter().map(|&c| c as f64 / n as f64).collect();
    match *metric {
        MetricSpec::ActiveFraction(_) => Summary {
            n,
            ..reference::summarize(&per_neuron)
        },
        _ => Summary {
            mean: per_neuron.iter().filter(|&&f| f == 0.0).count() as f64 / width as f64,
            std: f64::NAN,
            n,
        },
    }
}

/// The fast reduction against the f64 reference, column by column, on the WGSL kernels' test
/// rows (tests/kernels.rs) plus extremes of scale, at widths 1 to 8192.
///
/// Tolerances, and why:
/// - NaN where the reference has NaN, and nowhere else;
/// - counts (`nonfinite`, `l0_mean_std`, `near_zero*`) exactly: the same entries are compared
///   with the same thresholds (`l0_mean_std`'s may differ in its last bit, and no test row puts
///   an entry there);
/// - every other column within 1e-6 relative: only the order of the f64 sums differs (8 lanes
///   instead of one chain, selection order instead of sorted order), which moves a sum of 8192
///   terms by about 1e-12 relative, plus `wide`'s ln (an ulp or two from libm's) and the
///   entropies' series (at most 2e-11 in the exponent, `entropy_sums`);
/// - plus 1e-9 absolute for the dimensionless ratios that are differences of nearly equal terms
///   and can be 0 (hoyer and gini of a constant row: sqrt(d) - l1/l2, a weighted sum that cancels),
///   where a relative bound means nothing; kurtosis relative to m4/m2^2 = kurtosis + 3, since the
///   excess subtracts 3 (as the kernels' tests do). l1 and l2 get no absolute slack: they are sums
///   of same-signed terms and 0 only when every entry is.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::selftest::normal;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn columns() -> Columns {
        // As tests/kernels.rs: 1.0 and 0.5 * max|h| land exactly on entries of the "ties in
        // magnitude" rows, so `<=` against `<` is tested; top-k up to the whole row.
        Columns {
            near_zero: vec![1e-3, 0.5, 1.0],
            near_zero_rel: vec![0.01, 0.5],
            order: true,
            topk: vec![0.01, 0.05, 0.1, 0.5, 1.0],
        }
    }

    const WIDTHS: [usize; 9] = [1, 2, 3, 7, 64, 127, 1000, 4096, 8192];

    /// The rows `densitrace selftest` and tests/kernels.rs hold every reduction to (normal,
    /// scaled, shifted, sparse, heavy-tailed, one-hot, constant, zeros, ties, huge, tiny, NaN and
    /// infinities), and extremes of scale and sign that an f32 host path meets and the GPU
    /// kernels' tests leave out.
    fn test_rows(width: usize, seed: u64) -> Vec<(&'static str, Vec<f32>)> {
        let mut rows = crate::selftest::adversarial_rows(width, seed);
        let mut r = ChaCha8Rng::seed_from_u64(seed ^ 0xfa57);
        rows.push(("constant -1e30", vec![-1e30; width]));
        let huge_and_tiny = (0..width)
            .map(|i| {
                let sign = if r.random_bool(0.5) { -1.0 } else { 1.0 };
                sign * if i % 3 == 0 { 1e30 } else { 1e-30 }
            })
            .collect();
        rows.push(("huge and tiny, mixed signs", huge_and_tiny));
        let alternating = (0..width)
            .map(|i| if i % 2 == 0 { 1e20 } else { -1e20 })
            .collect();
        rows.push(("alternating signs", alternating));
        let subnormal = (0..width).map(|_| normal(&mut r) * 1e-40).collect();
        rows.push(("subnormal", subnormal));
        rows.push(("largest finite", vec![f32::MAX; width]));
        rows
    }

    fn is_count(column: usize, cols: &Columns) -> bool {
        column == Columns::NONFINITE
            || column == Columns::L0_MEAN_STD
            || (Columns::FIXED..cols.moments_count()).contains(&column)
    }

    /// Checks one value against the reference's (the module's doc says why these tolerances).
    fn check(column: usize, cols: &Columns, got: f64, want: f64) -> Result<(), String> {
        if want.is_nan() || got.is_nan() {
            return if want.is_nan() && got.is_nan() {
                Ok(())
            } else {
                Err(format!("got {got}, want {want}"))
            };
        }
        let tolerance = if is_count(column, cols) {
            0.0
        } else if column == Columns::L1 || column == Columns::L2 {
            1e-6 * want.abs()
        } else if column == Columns::KURTOSIS {
            1e-6 * (want.abs() + 3.0)
        } else {
            1e-6 * want.abs() + 1e-9
        };
        if (got - want).abs() <= tolerance {
            Ok(())
        } else {
            Err(format!(
                "got {got:e}, want {want:e}, tolerance {tolerance:e}"
            ))
        }
    }

    /// Compares `got` (a table in `cols`' layout) with the reference on `rows`, on the columns
    /// `wanted` asks for; the others must be NaN.
    fn compare(
        rows: &[(&str, Vec<f32>)],
        got: &[Vec<f64>],
        cols: &Columns,
        wanted: Wanted,
        failures: &mut Vec<String>,
    ) {
        let names = cols.names();
        let order = cols.moments_count();
        let skipped = |c: usize| {
            (!wanted.entropies && (c == Columns::EFF_RANK || c == Columns::EFF_RANK_L1))
                || (!wanted.gini && c == order + Columns::GINI)
                || (!wanted.max_over_median && c == order + Columns::MAX_OVER_MEDIAN)
        };
        for ((kind, row), got) in rows.iter().zip(got) {
            let want = reference::row_metrics(row, cols);
            assert_eq!(got.len(), want.len());
            for (c, (&g, &w)) in got.iter().zip(&want).enumerate() {
                let result = if skipped(c) {
                    if g.is_nan() {
                        Ok(())
                    } else {
                        Err(format!("{g}: not wanted, so NaN"))
                    }
                } else {
                    check(c, cols, g, w)
                };
                if let Err(e) = result {
                    failures.push(format!("width {}, {kind}, {}: {e}", row.len(), names[c]));
                }
            }
        }
    }

    fn assert_none(failures: Vec<String>) {
        assert!(
            failures.is_empty(),
            "{} mismatches:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }

    /// The radix sort gives `sort_unstable`'s order at every length around its cut-over and on
    /// the keys the rows make: magnitudes of zeros, subnormals, huge values, ties, one repeated
    /// key (every pass skipped), and keys spread over all 31 bits.
    #[test]
    fn radix_sort_orders_like_sort_unstable() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let magnitude = |x: f32| x.to_bits() & 0x7fff_ffff;
        for n in [0, 1, 2, 63, 64, 65, 100, 128, 512, 1000, 8192] {
            let rows: Vec<Vec<u32>> = vec![
                (0..n).map(|_| rng.random::<u32>() >> 1).collect(),
                (0..n).map(|_| magnitude(normal(&mut rng))).collect(),
                (0..n).map(|_| rng.random_range(0..4u32) << 20).collect(),
                vec![magnitude(-2.5); n],
                (0..n)
                    .map(|i| match i % 5 {
                        0 => 0,
                        1 => magnitude(-1e-42),
                        2 => magnitude(3e38),
                        3 => magnitude(-1.0),
                        _ => magnitude(1e-30),
                    })
                    .collect(),
            ];
            for row in rows {
                let mut want = row.clone();
                want.sort_unstable();
                let mut got = row.clone();
                let mut spare = vec![0; n];
                radix_sort(&mut got, &mut spare);
                assert_eq!(got, want, "length {n}");
            }
        }
    }

    /// Every column, every kind of row, every width: with gini (rows sorted) and without it
    /// (rows only partitioned around the median and the top-k positions), and with nothing
    /// costly (top-k alone).
    #[test]
    fn fast_rows_match_the_reference_on_every_kind_and_width() {
        let cols = columns();
        let mut failures = Vec::new();
        let selection = Wanted {
            gini: false,
            ..Wanted::ALL
        };
        let cheapest = Wanted {
            entropies: false,
            gini: false,
            max_over_median: false,
        };
        for (i, &width) in WIDTHS.iter().enumerate() {
            let rows = test_rows(width, i as u64);
            let data: Vec<f32> = rows.iter().flat_map(|(_, r)| r.iter().copied()).collect();
            for wanted in [Wanted::ALL, selection, cheapest] {
                let got = matrix_metrics_of(&data, width, &cols, wanted);
                assert_eq!(got.len(), rows.len());
                compare(&rows, &got, &cols, wanted, &mut failures);
            }
        }
        assert_none(failures);
    }

    /// Random rows under random column layouts (thresholds, top-k fractions that collide at
    /// small widths), to reach layouts the fixed ones do not.
    #[test]
    fn fast_rows_match_the_reference_under_random_layouts() {
        let mut r = ChaCha8Rng::seed_from_u64(11);
        let mut failures = Vec::new();
        for round in 0..40 {
            let width = WIDTHS[round % WIDTHS.len()].min(1000);
            let cols = Columns {
                near_zero: vec![r.random::<f32>() * 0.5],
                near_zero_rel: vec![r.random::<f32>()],
                order: true,
                topk: (0..r.random_range(1..4))
                    .map(|_| r.random_range(0.001..=1.0))
                    .collect(),
            };
            let wanted = Wanted {
                entropies: r.random_bool(0.5),
                gini: r.random_bool(0.5),
                max_over_median: r.random_bool(0.5),
            };
            let rows: Vec<(&str, Vec<f32>)> = (0..8)
                .map(|_| {
                    let scale = 10f32.powi(r.random_range(-20..20));
                    (
                        "random",
                        (0..width).map(|_| normal(&mut r) * scale).collect(),
                    )
                })
                .collect();
            let data: Vec<f32> = rows.iter().flat_map(|(_, r)| r.iter().copied()).collect();
            let got = matrix_metrics_of(&data, width, &cols, wanted);
            compare(&rows, &got, &cols, wanted, &mut failures);
        }
        assert_none(failures);
    }

    /// The entropy sums themselves, closer than the table's 1e-6 can see: at d = 8192 the
    /// reference's own eps moves eff_rank_l1 by only about d eps = 8e-7, so a series that lost
    /// its eps term would still pass there. Against the two logarithms per entry, within 1e-10
    /// in the exponent (the series' bound is 2e-11; the rest is rounding).
    #[test]
    fn entropy_sums_match_two_logarithms_per_entry() {
        for (i, &width) in WIDTHS.iter().enumerate() {
            for (kind, row) in test_rows(width, 50 + i as u64) {
                let (l1, s2) = row.iter().fold((0.0, 0.0), |(l1, s2), &x| {
                    let h = x as f64;
                    (l1 + h.abs(), s2 + h * h)
                });
                if !(s2 > 0.0 && s2.is_finite()) {
                    continue;
                }
                let (mut want, mut want_l1) = (0.0, 0.0);
                for &x in &row {
                    let h = x as f64;
                    let p = h * h / s2;
                    want += p * (p + ENTROPY_EPS).ln();
                    let q = h.abs() / l1 + ENTROPY_EPS;
                    want_l1 += q * q.ln();
                }
                let (got, got_l1) = entropy_sums(&row, s2, l1);
                assert!(
                    (got - want).abs() < 1e-10 && (got_l1 - want_l1).abs() < 1e-10,
                    "width {width}, {kind}: {got} vs {want}, {got_l1} vs {want_l1}"
                );
            }
        }
    }

    #[test]
    fn wanted_follows_the_configured_metrics() {
        let of = |names: &[&str]| {
            let metrics: Vec<MetricSpec> = names.iter().map(|s| s.parse().unwrap()).collect();
            Wanted::of(&metrics)
        };
        assert_eq!(
            of(&["topk_energy@0.05", "hoyer"]),
            Wanted {
                entropies: false,
                gini: false,
                max_over_median: false
            }
        );
        assert_eq!(of(&["eff_rank_l1", "gini", "max_over_median"]), Wanted::ALL);
    }

    /// A per-vector table like an evaluation's: some rows non-finite, some values undefined,
    /// ties, and the column of non-finite counts.
    fn table(rows: usize, r: &mut ChaCha8Rng) -> Vec<Vec<f64>> {
        (0..rows)
            .map(|_| {
                let nonfinite = if r.random_bool(0.1) { 1.0 } else { 0.0 };
                let value = match r.random_range(0..5) {
                    0 => f64::NAN,
                    1 => 0.5,
                    2 => -0.0,
                    _ => normal(r) as f64 * 1e3,
                };
                vec![nonfinite, value]
            })
            .collect()
    }

    /// Quantiles come from the same two order statistics and the same formula as the
    /// reference's, so they agree exactly.
    #[test]
    fn fast_quantiles_equal_the_reference() {
        let mut r = ChaCha8Rng::seed_from_u64(5);
        let qs = [0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0, 0.333];
        for rows in [0, 1, 2, 3, 5, 64, 1000, 8192] {
            let per_row = table(rows, &mut r);
            for column in [Columns::NONFINITE, 1] {
                let got = quantiles(&per_row, column, &qs);
                let want = reference::quantiles(&per_row, column, &qs);
                for (g, w) in got.iter().zip(&want) {
                    assert!(
                        g == w || (g.is_nan() && w.is_nan()),
                        "{rows} rows, column {column}: {got:?} vs {want:?}"
                    );
                }
            }
            assert!(quantiles(&per_row, 1, &[]).is_empty());
        }
    }

    /// Active and dead fractions count the same entries over the same finite rows: exactly the
    /// reference's values, NaN rows left out, on every width.
    #[test]
    fn fast_across_vector_metrics_equal_the_reference() {
        let cols = columns();
        for (i, &width) in WIDTHS.iter().enumerate() {
            let mut r = ChaCha8Rng::seed_from_u64(100 + i as u64);
            // More rows than one parallel block, some non-finite, some dead neurons.
            let rows = 600;
            let mut data: Vec<f32> = (0..rows * width)
                .map(|j| if j % width == 0 { 0.0 } else { normal(&mut r) })
                .collect();
            data[3 * width] = f32::NAN;
            data[400 * width + width / 2] = f32::INFINITY;
            let per_row = reference::matrix_metrics(&data, width, &cols);
            for name in [
                "active_fraction@0",
                "active_fraction@0.5",
                "dead_fraction@0",
                "dead_fraction@3",
                "rankme",
            ] {
                let metric: MetricSpec = name.parse().unwrap();
                if metric == MetricSpec::Rankme && width > 1000 {
                    continue; // the reference's own code path; its eigensolver is slow at 4096
                }
                let got = across_vectors(&data, width, &per_row, &metric);
                let want = reference::across_vectors(&data, width, &per_row, &metric);
                let same = |a: f64, b: f64| a == b || (a.is_nan() && b.is_nan());
                assert!(
                    same(got.mean, want.mean) && same(got.std, want.std) && got.n == want.n,
                    "width {width}, {name}: {got:?} vs {want:?}"
                );
            }
        }
        // No finite row at all.
        let data = vec![f32::NAN; 8];
        let per_row = reference::matrix_metrics(&data, 4, &cols);
        let metric = MetricSpec::DeadFraction(0.0);
        let got = across_vectors(&data, 4, &per_row, &metric);
        let want = reference::across_vectors(&data, 4, &per_row, &metric);
        assert_eq!((got.mean, got.n), (want.mean, want.n));
    }

    /// `select_at` places every asked-for position as a sort would.
    #[test]
    fn selection_places_positions_as_a_sort_does() {
        let mut r = ChaCha8Rng::seed_from_u64(3);
        for n in [1usize, 2, 5, 100, 1001] {
            let values: Vec<u32> = (0..n).map(|_| r.random_range(0..20)).collect();
            let mut sorted = values.clone();
            sorted.sort_unstable();
            let mut positions: Vec<usize> = (0..4).map(|_| r.random_range(0..n)).collect();
            positions.extend([0, n - 1]);
            positions.sort_unstable();
            positions.dedup();
            let mut selected = values.clone();
            select_at(&mut selected, 0, &positions, &u32::cmp);
            for &p in &positions {
                assert_eq!(selected[p], sorted[p], "n {n}, position {p}");
                assert!(selected[..p].iter().all(|&v| v <= sorted[p]));
                assert!(selected[p..].iter().all(|&v| v >= sorted[p]));
            }
        }
    }
}
