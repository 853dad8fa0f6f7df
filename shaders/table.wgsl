// table.wgsl: prepended (after common.wgsl) to the kernels that reduce the per-vector table over
// vectors, aggregate.wgsl and column_quantiles.wgsl, so both take part the same values.
//
// @binding(0) m: f32 [rows, cols], row-major: the per-vector table (column 0 holds each vector's
// non-finite count).

@group(0) @binding(0) var<storage, read_write> m: array<f32>;

// A value takes part when it is finite (bit test) and, outside column 0, when its vector's
// non-finite count is 0; column 0 itself counts every vector.
fn valid(r: u32, col: u32, cols: u32) -> bool {
    let v = m[r * cols + col];
    return !is_nonfinite(v) && (col == 0u || m[r * cols] == 0.0);
}

