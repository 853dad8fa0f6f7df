// bitonic.wgsl: prepended to the kernels that sort (row_order, column_quantiles), after
// common.wgsl. One workgroup sorts n (a power of two) values ascending, in workgroup memory when
// SHARED (n <= SHARED_LEN), else in its own slice scratch[base .. base + n] of global memory.
// Unused slots are filled with PAD, the largest f32, so they sort last.

@group(0) @binding(2) var<storage, read_write> scratch: array<f32>;

const SHARED: bool = {{shared}};
const SHARED_LEN: u32 = {{shared_len}}u;
const PAD: f32 = 3.40282347e38;

var<workgroup> buf: array<f32, SHARED_LEN>;

fn load_sorted(base: u32, i: u32) -> f32 {
    if (SHARED) {
        return buf[i];
    }
    return scratch[base + i];
}

fn store_sorted(base: u32, i: u32, v: f32) {
    if (SHARED) {
        buf[i] = v;
    } else {
        scratch[base + i] = v;
    }
}

// A barrier that also orders the sort buffer's memory.
fn sync_sorted() {
    if (SHARED) {
        workgroupBarrier();
    } else {
        storageBarrier();
    }
}

// Sorts `total / n` runs of n values (n a power of two, the runs end to end from `base`), each
// ascending: log2(n) (log2(n) + 1) / 2 stages; in each, a thread compares and swaps the pairs
// (i, i ^ j) with i < i ^ j that it owns, and a barrier ends the stage. Pairs never cross a run
// (j < n and runs are n-aligned); the last merge (k = n) is ascending in every run. Call from
// uniform control flow, after the values are stored and synced.
fn bitonic_sort(lid: u32, base: u32, n: u32, total: u32) {
    for (var k = 2u; k <= n; k = k << 1u) {
        for (var j = k >> 1u; j > 0u; j = j >> 1u) {
            for (var i = lid; i < total; i = i + WG) {
                let l = i ^ j;
                if (l > i) {
                    let a = load_sorted(base, i);
                    let b = load_sorted(base, l);
                    if ((a > b) == ((i & k) == 0u || k == n)) {
                        store_sorted(base, i, b);
                        store_sorted(base, l, a);
                    }
                }
            }
            sync_sorted();
        }
    }
}

