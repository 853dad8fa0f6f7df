// column_quantiles.wgsl: the configured quantiles of each per-vector metric over a probe set's
// vectors, with numpy's default ("linear") interpolation.
//
// Prepended: common.wgsl, table.wgsl (the table binding and `valid`), then bitonic.wgsl (the
// sort buffer and the sort).
//
// Layout and bindings (all storage, read_write as Burn's launcher declares them):
//   @binding(0) m:       f32 [rows, cols], row-major: the per-vector table (column 0 holds each
//                        vector's non-finite count), as aggregate.wgsl reads it.
//   @binding(1) out:     f32 [cols, NQ], row-major: the quantiles of each column.
//   @binding(2) scratch: f32 [cols, n_pad] (declared in bitonic.wgsl): each column's sort buffer
//                        when n_pad exceeds workgroup memory.
//   @binding(3) params:  u32 [3 + NQ]: rows, cols, n_pad (rows rounded up to a power of two),
//                        then each quantile as an f32 bit pattern.
//
// One workgroup handles one column (workgroup_id.x). The values that take part are those
// aggregate.wgsl averages (finite; outside column 0, from a vector with no NaN/Inf); the others
// and the padding load as PAD and sort last, so the n valid values lead the sorted buffer.
// Quantile q: pos = q (n - 1), value = s[floor(pos)] + frac(pos) (s[ceil(pos)] - s[floor(pos)]);
// NaN when n = 0.

@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read_write> params: array<u32>;

const NQ: u32 = {{nq}}u;

var<workgroup> dims: vec3<u32>;

@compute @workgroup_size({{wg}}, 1, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    if (lid == 0u) {
        dims = vec3<u32>(params[0], params[1], params[2]);
    }
    let p = workgroupUniformLoad(&dims);
    let rows = p.x;
    let cols = p.y;
    let n_pad = p.z;
    let col = wid.x;
    if (col >= cols) {
        return;
    }
    let base = col * n_pad;

    var count = 0.0;
    for (var i = lid; i < n_pad; i = i + WG) {
        var v = PAD;
        if (i < rows && valid(i, col, cols)) {
            v = m[i * cols + col];
            count = count + 1.0;
        }
        store_sorted(base, i, v);
    }
    let n = reduce_sum(lid, vec4<f32>(count, 0.0, 0.0, 0.0)).x;
    sync_sorted();
    bitonic_sort(lid, base, n_pad, n_pad);

    if (lid == 0u) {
        for (var k = 0u; k < NQ; k = k + 1u) {
            var v = nan();
            if (n > 0.0) {
                let pos = bitcast<f32>(params[3u + k]) * (n - 1.0);
                let lo = u32(floor(pos));
                let hi = min(lo + 1u, u32(n) - 1u);
                let a = load_sorted(base, lo);
                v = a + (pos - f32(lo)) * (load_sorted(base, hi) - a);
            }
            out[col * NQ + k] = v;
        }
    }
}
