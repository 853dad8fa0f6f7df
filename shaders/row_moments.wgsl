// row_moments.wgsl: every moment-type density metric of each activation vector, in one kernel.
//
// Prepended: common.wgsl (WG, red, is_nonfinite, nan, reduce_sum_segments).
//
// Layout and bindings (all storage, read_write as Burn's launcher declares them):
//   @binding(0) x:      f32 [rows, width], row-major, one activation vector per row.
//   @binding(1) out:    f32 [rows, COLS], row-major; COLS = 9 + N_ABS + N_REL, in the order of
//                       `Columns` (src/metrics.rs): nonfinite, l1, l2, hoyer,
//                       participation_ratio, eff_rank, eff_rank_l1, l0_mean_std, kurtosis,
//                       near_zero@eps (N_ABS of them), near_zero_rel@r (N_REL of them).
//   @binding(2) params: u32 [3 + N_ABS + N_REL]: rows, width, grid_x (workgroups in x), then the
//                       thresholds as f32 bit patterns.
//
// A workgroup of WG threads handles WG / SEG rows, one per aligned segment of SEG threads (SEG is
// about width / 4, so narrow rows share a workgroup and its barriers instead of leaving threads
// idle); the workgroup index is rebuilt from a 2-D grid (wid.y * grid_x + wid.x) so more than
// 65,535 workgroups fit in one dispatch. A segment strides over its row four times; when CACHED
// (the workgroup's rows fit in CACHE_LEN) the first pass copies the rows into workgroup memory and
// the later passes read them from there instead of global memory.
//   pass 1: max |h| and the count of non-finite entries (bit test: WGSL may assume no NaN/Inf,
//           so `v != v` is not reliable).
//   pass 2: with y = h / max|h| (so that h^4 neither overflows nor underflows in f32):
//           sum y, sum |y|, sum y^2, sum y^4.
//   pass 3: central moments sum (y - mean y)^2, (y - mean y)^4, sum (|y| - mean |y|)^2, and the
//           entropies sum p ln(p + 1e-10) with p = y^2 / sum y^2, sum q ln q with
//           q = |y| / sum |y| + 1e-10. Both are invariant to the scaling by max|h|.
//   pass 4: counts: |y| > mean|y| + std|y| (l0_mean_std), |h| <= eps, |h| <= r * max|h|.
// Each segment's thread 0 then finishes its row's metrics (formulas in src/metrics.rs) and writes
// NaN where a metric is undefined (zero norm, width 1 for hoyer, a constant row for kurtosis) or
// the row holds a NaN/Inf. Barriers sit only in uniform control flow: every branch on data
// happens in a segment's thread 0, and a segment past the last row computes nothing but still
// takes part in every barrier.

@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read_write> params: array<u32>;

const SEG: u32 = {{seg}}u;
const ROWS_PER_WG: u32 = WG / SEG;
const N_ABS: u32 = {{n_abs}}u;
const N_REL: u32 = {{n_rel}}u;
const CACHED: bool = {{cached}};
const CACHE_LEN: u32 = {{cache_len}}u;
const FIXED: u32 = 9u;
const COLS: u32 = FIXED + N_ABS + N_REL;
// l0_mean_std, then the near-zero counts, reduced four at a time.
const N_COUNTS: u32 = 1u + N_ABS + N_REL;
const COUNT_SLOTS: u32 = (N_COUNTS + 3u) / 4u * 4u;
// Kurtosis is undefined below this variance of h / max|h|: f32 cannot resolve the spread.
const MIN_KURTOSIS_VAR: f32 = 1e-8;

var<workgroup> shape: vec3<u32>;
var<workgroup> cache: array<f32, CACHE_LEN>;

// .x is reduced with max, .y with a sum, over each segment.
fn reduce_max_sum(lid: u32, v: vec2<f32>) -> vec2<f32> {
    red[lid] = vec4<f32>(v, 0.0, 0.0);
    workgroupBarrier();
    let t = lid % SEG;
    for (var s = SEG / 2u; s > 0u; s = s / 2u) {
        if (t < s) {
            let a = red[lid];
            let b = red[lid + s];
            red[lid] = vec4<f32>(max(a.x, b.x), a.y + b.y, 0.0, 0.0);
        }
        workgroupBarrier();
    }
    let r = red[lid - t].xy;
    workgroupBarrier();
    return r;
}

fn threshold(k: u32) -> f32 {
    return bitcast<f32>(params[3u + k]);
}

@compute @workgroup_size({{wg}}, 1, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    if (lid == 0u) {
        shape = vec3<u32>(params[0], params[1], params[2]);
    }
    let dims = workgroupUniformLoad(&shape);
    let rows = dims.x;
    let width = dims.y;
    let first_row = (wid.y * dims.z + wid.x) * ROWS_PER_WG;
    if (first_row >= rows) {
        return;
    }
    let g = lid / SEG;
    let t = lid % SEG;
    let row = first_row + g;
    let in_range = row < rows;
    // Past the last row, a segment strides over nothing.
    var len = 0u;
    if (in_range) {
        len = width;
    }
    let base = row * width;
    let cbase = g * width;
    let d = f32(width);

    // Pass 1: max |h| and non-finite count; fill the cache.
    var amax = 0.0;
    var nonfinite = 0.0;
    for (var j = t; j < len; j = j + SEG) {
        let v = x[base + j];
        if (CACHED) {
            cache[cbase + j] = v;
        }
        if (is_nonfinite(v)) {
            nonfinite = nonfinite + 1.0;
        } else {
            amax = max(amax, abs(v));
        }
    }
    let p1 = reduce_max_sum(lid, vec2<f32>(amax, nonfinite));
    let max_a = p1.x;
    var inv = 0.0;
    if (max_a > 0.0) {
        inv = 1.0 / max_a;
    }

    // Pass 2: raw sums of y = h / max|h| (non-finite entries count as 0; such rows report NaN).
    var s = vec4<f32>(0.0);
    for (var j = t; j < len; j = j + SEG) {
        var v = 0.0;
        if (CACHED) { v = cache[cbase + j]; } else { v = x[base + j]; }
        if (!is_nonfinite(v)) {
            let y = v * inv;
            let y2 = y * y;
            s = s + vec4<f32>(y, abs(y), y2, y2 * y2);
        }
    }
    let sums = reduce_sum_segments(lid, SEG, s);
    let mean_y = sums.x / d;
    let s1 = sums.y;
    let s2 = sums.z;
    let mean_a = s1 / d;
    var inv_s1 = 0.0;
    var inv_s2 = 0.0;
    if (s1 > 0.0) { inv_s1 = 1.0 / s1; }
    if (s2 > 0.0) { inv_s2 = 1.0 / s2; }

    // Pass 3: central moments and entropies.
    var c = vec4<f32>(0.0);
    var ent_l1 = 0.0;
    for (var j = t; j < len; j = j + SEG) {
        var v = 0.0;
        if (CACHED) { v = cache[cbase + j]; } else { v = x[base + j]; }
        if (!is_nonfinite(v)) {
            let y = v * inv;
            let dy = y - mean_y;
            let dy2 = dy * dy;
            let da = abs(y) - mean_a;
            let p = y * y * inv_s2;
            let q = abs(y) * inv_s1 + 1e-10;
            c = c + vec4<f32>(dy2, dy2 * dy2, da * da, p * log(p + 1e-10));
            ent_l1 = ent_l1 + q * log(q);
        }
    }
    let central = reduce_sum_segments(lid, SEG, c);
    let ent_l1_sum = reduce_sum_segments(lid, SEG, vec4<f32>(ent_l1, 0.0, 0.0, 0.0)).x;
    let std_a = sqrt(central.z / d);
    let l0_threshold = mean_a + std_a;

    // Pass 4: counts against thresholds.
    var counts: array<f32, COUNT_SLOTS>;
    for (var j = t; j < len; j = j + SEG) {
        var v = 0.0;
        if (CACHED) { v = cache[cbase + j]; } else { v = x[base + j]; }
        if (!is_nonfinite(v)) {
            let a = abs(v);
            if (a * inv > l0_threshold) {
                counts[0] = counts[0] + 1.0;
            }
            for (var k = 0u; k < N_ABS; k = k + 1u) {
                if (a <= threshold(k)) {
                    counts[1u + k] = counts[1u + k] + 1.0;
                }
            }
            for (var k = 0u; k < N_REL; k = k + 1u) {
                if (a <= threshold(N_ABS + k) * max_a) {
                    counts[1u + N_ABS + k] = counts[1u + N_ABS + k] + 1.0;
                }
            }
        }
    }
    let writer = t == 0u && in_range;
    let o = row * COLS;
    for (var k = 0u; k < COUNT_SLOTS; k = k + 4u) {
        let total = reduce_sum_segments(lid, SEG, vec4<f32>(counts[k], counts[k + 1u], counts[k + 2u], counts[k + 3u]));
        if (writer) {
            for (var i = 0u; i < 4u; i = i + 1u) {
                let slot = k + i;
                if (slot == 0u) {
                    out[o + 7u] = total[i] / d;
                } else if (slot < N_COUNTS) {
                    out[o + FIXED + slot - 1u] = total[i] / d;
                }
            }
        }
    }

    if (!writer) {
        return;
    }
    out[o + 1u] = s1 * max_a;
    out[o + 2u] = sqrt(s2) * max_a;
    out[o + 3u] = nan();
    out[o + 4u] = nan();
    out[o + 5u] = nan();
    out[o + 6u] = nan();
    out[o + 8u] = nan();
    if (s2 > 0.0) {
        if (width > 1u) {
            let sd = sqrt(d);
            out[o + 3u] = (sd - s1 / sqrt(s2)) / (sd - 1.0);
        }
        out[o + 4u] = s2 * s2 / sums.w / d;
        out[o + 5u] = exp(-central.w) / d;
        out[o + 6u] = exp(-ent_l1_sum) / d;
    }
    let m2 = central.x / d;
    if (m2 > MIN_KURTOSIS_VAR) {
        out[o + 8u] = (central.y / d) / (m2 * m2) - 3.0;
    }
    out[o] = p1.y;
    if (p1.y > 0.0) {
        for (var k = 1u; k < COLS; k = k + 1u) {
            out[o + k] = nan();
        }
    }
}
