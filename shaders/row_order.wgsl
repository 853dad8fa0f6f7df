// row_order.wgsl: the order-statistic density metrics of each activation vector, from a sorted
// copy of |h|: gini, max_over_median and topk_energy@f for each configured fraction.
//
// Prepended: common.wgsl, then bitonic.wgsl (the sort buffer and the sort).
//
// Layout and bindings (all storage, read_write as Burn's launcher declares them):
//   @binding(0) x:       f32 [rows, width], row-major, one activation vector per row.
//   @binding(1) out:     f32 [rows, OCOLS], row-major; OCOLS = 2 + N_TOPK: gini,
//                        max_over_median, then topk_energy for each k (the order part of
//                        `Columns` in src/metrics.rs).
//   @binding(2) scratch: f32 [workgroups, n_pad] (declared in bitonic.wgsl): each workgroup's sort
//                        buffer when the padded row does not fit in workgroup memory.
//   @binding(3) params:  u32 [5 + N_TOPK]: rows, width, n_pad (width rounded up to a power of
//                        two), workgroups, unused, then k for each top-k fraction (the host
//                        computes k = max(1, floor(f * width)) exactly as the reference does).
//
// Workgroups are persistent: workgroup w handles rows w R .. w R + R - 1, then those R x
// workgroups further on, and so on, where R = ROWS_PER_WG rows share the workgroup when their
// padded lengths fit in workgroup memory together (narrow rows), else R = 1. Each time:
//   1. each row's segment of WG / R threads loads its |h| into the sort buffer, padding to n_pad
//      with the largest f32 so padding sorts last;
//      a non-finite entry is counted (bit test: WGSL may assume no NaN/Inf) and loaded as 0;
//   2. one bitonic network sorts all R rows ascending (bitonic.wgsl);
//   3. with y = a / max a (so that a^2 neither overflows nor underflows in f32), reduce sum y,
//      sum y^2, sum (2i - d - 1) y_(i) (gini's numerator without its cancellation) and, for each
//      k, the sum of the k largest y^2.
// Each segment's thread 0 writes NaN where a metric is undefined (zero vector, zero median) and for every column
// of a row holding a NaN/Inf. Barriers sit only in uniform control flow.

@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read_write> params: array<u32>;

const N_TOPK: u32 = {{n_topk}}u;
const OCOLS: u32 = 2u + N_TOPK;
const TOPK_SLOTS: u32 = (N_TOPK + 3u) / 4u * 4u;
// Rows sorted together in one workgroup (only where they fit in workgroup memory), each summed
// by a segment of SEG threads.
const ROWS_PER_WG: u32 = {{rows_per_wg}}u;
const SEG: u32 = WG / ROWS_PER_WG;

var<workgroup> dims: vec4<u32>;

@compute @workgroup_size({{wg}}, 1, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    if (lid == 0u) {
        dims = vec4<u32>(params[0], params[1], params[2], params[3]);
    }
    let p = workgroupUniformLoad(&dims);
    let rows = p.x;
    let width = p.y;
    let n_pad = p.z;
    let workgroups = p.w;
    let d = f32(width);
    // The workgroup's sort buffer (in global scratch; workgroup memory ignores it).
    let sbase = wid.x * ROWS_PER_WG * n_pad;
    let g = lid / SEG;
    let t = lid % SEG;
    // This segment's row starts here in the sort buffer.
    let run = g * n_pad;

    for (var first = wid.x * ROWS_PER_WG; first < rows; first = first + workgroups * ROWS_PER_WG) {
        let row = first + g;
        let in_range = row < rows;
        var len = 0u;
        if (in_range) {
            len = width;
        }

        // 1. Load magnitudes, pad, count non-finite entries.
        var nonfinite = 0.0;
        for (var i = t; i < n_pad; i = i + SEG) {
            var v = PAD;
            if (i < len) {
                v = abs(x[row * width + i]);
                if (is_nonfinite(v)) {
                    nonfinite = nonfinite + 1.0;
                    v = 0.0;
                }
            }
            store_sorted(sbase, run + i, v);
        }
        sync_sorted();

        // 2. Sort every row of the workgroup ascending, in one network.
        bitonic_sort(lid, sbase, n_pad, ROWS_PER_WG * n_pad);

        // 3. Sums over the sorted magnitudes, scaled by the maximum.
        let max_a = load_sorted(sbase, run + width - 1u);
        var inv = 0.0;
        if (max_a > 0.0) {
            inv = 1.0 / max_a;
        }
        var s = vec4<f32>(0.0);
        for (var i = t; i < len; i = i + SEG) {
            let y = load_sorted(sbase, run + i) * inv;
            s = s + vec4<f32>(y, y * y, (2.0 * f32(i + 1u) - d - 1.0) * y, 0.0);
        }
        let sums = reduce_sum_segments(lid, SEG, vec4<f32>(s.xyz, nonfinite));
        let writer = t == 0u && in_range;
        let o = row * OCOLS;
        for (var tk = 0u; tk < TOPK_SLOTS; tk = tk + 4u) {
            var top = vec4<f32>(0.0);
            for (var c = 0u; c < 4u; c = c + 1u) {
                if (tk + c < N_TOPK) {
                    let top_start = width - params[5u + tk + c];
                    for (var i = top_start + t; i < len; i = i + SEG) {
                        let y = load_sorted(sbase, run + i) * inv;
                        top[c] = top[c] + y * y;
                    }
                }
            }
            let total = reduce_sum_segments(lid, SEG, top);
            if (writer) {
                for (var c = 0u; c < 4u; c = c + 1u) {
                    if (tk + c < N_TOPK) {
                        var v = nan();
                        if (sums.y > 0.0 && sums.w == 0.0) {
                            v = total[c] / sums.y;
                        }
                        out[o + 2u + tk + c] = v;
                    }
                }
            }
        }
        if (writer) {
            var gini = nan();
            var max_over_median = nan();
            if (sums.w == 0.0) {
                if (sums.x > 0.0) {
                    gini = sums.z / (d * sums.x);
                }
                var median = load_sorted(sbase, run + width / 2u);
                if (width % 2u == 0u) {
                    median = 0.5 * (load_sorted(sbase, run + width / 2u - 1u) + median);
                }
                if (median > 0.0) {
                    max_over_median = max_a / median;
                }
            }
            out[o] = gini;
            out[o + 1u] = max_over_median;
        }
        // The next rows reuse the sort buffer: everyone must be done reading it.
        sync_sorted();
    }
}
