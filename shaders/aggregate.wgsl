// aggregate.wgsl: mean, sample std and n of each per-vector metric over a probe set's vectors.
//
// Prepended: common.wgsl (WG, red, is_nonfinite, nan, reduce_sum), then table.wgsl (the table
// binding and `valid`, which values take part).
//
// Layout and bindings (all storage, read_write as Burn's launcher declares them):
//   @binding(0) m:      f32 [rows, cols], row-major: the per-vector table of row_moments.wgsl,
//                       column 0 holding each vector's non-finite count.
//   @binding(1) out:    f32 [cols, 3], row-major: (mean, std, n) per column.
//   @binding(2) params: u32 [2]: rows, cols.
//
// One workgroup handles one column (workgroup_id.x), over the values `valid` admits. Two passes
// over the column: the mean, then the sum of squared deviations (stabler in f32 than sum of
// squares minus square of sum). std uses n - 1 and is NaN for n < 2; mean is NaN for n = 0. n is
// exact in f32 up to 2^24 vectors.

@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read_write> params: array<u32>;

var<workgroup> shape: vec2<u32>;

@compute @workgroup_size({{wg}}, 1, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    if (lid == 0u) {
        shape = vec2<u32>(params[0], params[1]);
    }
    let dims = workgroupUniformLoad(&shape);
    let rows = dims.x;
    let cols = dims.y;
    let col = wid.x;
    if (col >= cols) {
        return;
    }

    var acc = vec2<f32>(0.0);
    for (var r = lid; r < rows; r = r + WG) {
        if (valid(r, col, cols)) {
            acc = acc + vec2<f32>(m[r * cols + col], 1.0);
        }
    }
    let total = reduce_sum(lid, vec4<f32>(acc, 0.0, 0.0));
    let n = total.y;
    var mean = 0.0;
    if (n > 0.0) {
        mean = total.x / n;
    }

    var dev = 0.0;
    for (var r = lid; r < rows; r = r + WG) {
        if (valid(r, col, cols)) {
            let e = m[r * cols + col] - mean;
            dev = dev + e * e;
        }
    }
    let ss = reduce_sum(lid, vec4<f32>(dev, 0.0, 0.0, 0.0)).x;

    if (lid == 0u) {
        out[col * 3u] = mean;
        out[col * 3u + 1u] = nan();
        out[col * 3u + 2u] = n;
        if (n == 0.0) {
            out[col * 3u] = nan();
        }
        if (n > 1.0) {
            out[col * 3u + 1u] = sqrt(ss / (n - 1.0));
        }
    }
}
