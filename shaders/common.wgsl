// common.wgsl: prepended to every density kernel (src/kernels/wgsl.rs composes the sources).
// WG threads per workgroup (a power of two); `red` is the reduction buffer.

const WG: u32 = {{wg}}u;

var<workgroup> red: array<vec4<f32>, WG>;

// Non-finite test on the bits: WGSL lets implementations assume no NaN/Inf, so `v != v` and
// comparisons with infinity are not reliable.
fn is_nonfinite(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7f800000u) == 0x7f800000u;
}

fn nan() -> f32 {
    return bitcast<f32>(0x7fc00000u);
}

// Tree sums over aligned segments of `seg` threads (a power of two dividing WG): every thread
// gets its segment's total. Call from uniform control flow, with the same `seg` everywhere.
fn reduce_sum_segments(lid: u32, seg: u32, v: vec4<f32>) -> vec4<f32> {
    red[lid] = v;
    workgroupBarrier();
    let t = lid % seg;
    for (var s = seg / 2u; s > 0u; s = s / 2u) {
        if (t < s) {
            red[lid] = red[lid] + red[lid + s];
        }
        workgroupBarrier();
    }
    let r = red[lid - t];
    workgroupBarrier();
    return r;
}

// Tree sum over the workgroup; every thread gets the total. Call from uniform control flow.
fn reduce_sum(lid: u32, v: vec4<f32>) -> vec4<f32> {
    return reduce_sum_segments(lid, WG, v);
}

