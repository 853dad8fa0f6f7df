//! Launches the WGSL kernels of `shaders/` on CubeCL's wgpu runtime.
//!
//! Every kernel is one `Wgsl`: its file, the shared preludes it needs and the values substituted
//! into its `{{placeholders}}`. Its source is common.wgsl, its preludes (table.wgsl: the
//! per-vector table and which of its values take part; bitonic.wgsl: the sort), then its own
//! file; its compile-cache id covers the kernel and every substituted value.

use burn::backend::wgpu::{CubeBackend, CubeTensor, KernelSource, SourceKernel, SourceTemplate};
use burn::tensor::{DType, Shape};
use burn_cubecl::cubecl::prelude::KernelId;
use burn_cubecl::cubecl::server::{Handle, KernelArguments};
use burn_cubecl::cubecl::{CubeCount, CubeDim};
use burn_cubecl::kernel::into_contiguous;

use super::DensityOps;
use crate::metrics::Columns;

const COMMON: &str = include_str!("../../shaders/common.wgsl");
const BITONIC: &str = include_str!("../../shaders/bitonic.wgsl");
const TABLE: &str = include_str!("../../shaders/table.wgsl");
const ROW_MOMENTS: &str = include_str!("../../shaders/row_moments.wgsl");
const ROW_ORDER: &str = include_str!("../../shaders/row_order.wgsl");
const COLUMN_QUANTILES: &str = include_str!("../../shaders/column_quantiles.wgsl");
const AGGREGATE: &str = include_str!("../../shaders/aggregate.wgsl");

/// Rows up to this width are cached (and sorted) in workgroup memory: 8 KiB of f32, well inside
/// WebGPU's guaranteed 16 KiB together with the reduction buffer.
const CACHE_LEN: usize = 2048;
/// The moments kernel's workgroup: 256 threads, split into one segment per row.
const MOMENTS_WG: usize = 256;
/// The order kernel's workgroup: 256 threads, split into one segment per row it sorts.
const ORDER_WG: usize = 256;
/// The most workgroups one dispatch dimension may hold (WebGPU's guaranteed limit).
const MAX_GRID: usize = 65_535;
/// The order kernel's global sort buffers (rows wider than CACHE_LEN) stay under this many bytes;
/// fewer workgroups then loop over more rows each.
const SCRATCH_BYTES: usize = 64 << 20;

struct Wgsl {
    /// Names the kernel in its id (its sources are compile-time constants).
    name: &'static str,
    /// Shared sources between common.wgsl and the kernel's own, in order.
    preludes: &'static [&'static str],
    source: &'static str,
    wg: u32,
    values: Vec<(&'static str, String)>,
}

impl KernelSource for Wgsl {
    fn source(&self) -> SourceTemplate {
        let mut source = SourceTemplate::new(COMMON).register("wg", self.wg.to_string());
        for prelude in self.preludes {
            source = source.add_template(*prelude);
        }
        let mut source = source.add_template(self.source);
        for (name, value) in &self.values {
            source = source.register(*name, value.clone());
        }
        source
    }

    fn id(&self) -> KernelId {
        KernelId::new::<Self>().info((self.name, self.wg, self.values.clone()))
    }

    fn lang(&self) -> &'static str {
        "wgsl"
    }
}

/// bitonic.wgsl's values: sort in workgroup memory (`shared`) or in global scratch.
fn sort_values(shared: bool) -> [(&'static str, String); 2] {
    [
        ("shared", shared.to_string()),
        ("shared_len", if shared { CACHE_LEN } else { 1 }.to_string()),
    ]
}

/// A power-of-two workgroup size that is not much wider than the work it strides over.
fn workgroup_size(extent: usize) -> u32 {
    extent.next_power_of_two().clamp(32, 256) as u32
}

fn f32_tensor(x: CubeTensor) -> CubeTensor {
    assert_eq!(x.dtype, DType::F32, "density kernels take f32 activations");
    into_contiguous(x)
}

fn output(like: &CubeTensor, shape: Shape) -> CubeTensor {
    let handle = like.client.empty(shape.num_elements() * DType::F32.size());
    CubeTensor::new_contiguous(
        like.client.clone(),
        like.device.clone(),
        shape,
        handle,
        DType::F32,
    )
}

/// Launches `kernel` over a grid of `workgroups` with these buffers, bound in order
/// (`@binding(0)`, `@binding(1)`, ...).
fn launch(on: &CubeTensor, kernel: Wgsl, workgroups: (usize, usize), buffers: Vec<Handle>) {
    let cube_dim = CubeDim::new_1d(kernel.wg);
    on.client.launch(
        Box::new(SourceKernel::new(kernel, cube_dim)),
        CubeCount::Static(workgroups.0 as u32, workgroups.1 as u32, 1),
        KernelArguments::new().with_buffers(buffers.into_iter().map(Handle::binding).collect()),
    );
}

fn params(on: &CubeTensor, values: &[u32]) -> Handle {
    on.client.create_from_slice(bytemuck::cast_slice(values))
}

impl DensityOps for CubeBackend {
    fn row_moments(x: CubeTensor, cols: Columns) -> CubeTensor {
        let x = f32_tensor(x);
        let (rows, width) = (x.meta.shape()[0], x.meta.shape()[1]);
        let out = output(&x, Shape::new([rows, cols.moments_count()]));
        if rows == 0 || width == 0 {
            return out;
        }
        // A segment of about width / 4 threads per row, several narrow rows per workgroup: they
        // share one chain of barriers instead of each leaving most of a workgroup idle.
        let seg = (width.next_power_of_two() / 4).clamp(32, MOMENTS_WG);
        let rows_per_wg = MOMENTS_WG / seg;
        let workgroups = rows.div_ceil(rows_per_wg);
        let grid_x = workgroups.min(MAX_GRID);
        let mut values = vec![rows as u32, width as u32, grid_x as u32];
        values.extend(cols.near_zero.iter().map(|e| e.to_bits()));
        values.extend(cols.near_zero_rel.iter().map(|r| r.to_bits()));
        let cached = rows_per_wg * width <= CACHE_LEN;
        let kernel = Wgsl {
            name: "row_moments",
            preludes: &[],
            source: ROW_MOMENTS,
            wg: MOMENTS_WG as u32,
            values: vec![
                ("seg", seg.to_string()),
                ("n_abs", cols.near_zero.len().to_string()),
                ("n_rel", cols.near_zero_rel.len().to_string()),
                ("cached", cached.to_string()),
                ("cache_len", if cached { CACHE_LEN } else { 1 }.to_string()),
            ],
        };
        let buffers = vec![x.handle.clone(), out.handle.clone(), params(&x, &values)];
        launch(&x, kernel, (grid_x, workgroups.div_ceil(MAX_GRID)), buffers);
        out
    }

    fn row_order(x: CubeTensor, cols: Columns) -> CubeTensor {
        let x = f32_tensor(x);
        let (rows, width) = (x.meta.shape()[0], x.meta.shape()[1]);
        let out = output(&x, Shape::new([rows, cols.order_count()]));
        if rows == 0 || width == 0 {
            return out;
        }
        let n_pad = width.next_power_of_two();
        let shared = n_pad <= CACHE_LEN;
        // Narrow rows are sorted several to a workgroup (one network, fewer barriers per row);
        // each keeps a segment of at least 32 threads for its sums.
        let rows_per_wg = if shared {
            (CACHE_LEN / n_pad).clamp(1, ORDER_WG / 32)
        } else {
            1
        };
        let workgroups = if shared {
            rows.div_ceil(rows_per_wg).min(MAX_GRID)
        } else {
            rows.min((SCRATCH_BYTES / (n_pad * 4)).max(1))
        };
        let scratch = x
            .client
            .empty(if shared { 4 } else { workgroups * n_pad * 4 });
        let mut values = vec![
            rows as u32,
            width as u32,
            n_pad as u32,
            workgroups as u32,
            0,
        ];
        values.extend(cols.topk_counts(width).into_iter().map(|k| k as u32));
        let kernel = Wgsl {
            name: "row_order",
            preludes: &[BITONIC],
            source: ROW_ORDER,
            wg: ORDER_WG as u32,
            values: [
                ("n_topk", cols.topk.len().to_string()),
                ("rows_per_wg", rows_per_wg.to_string()),
            ]
            .into_iter()
            .chain(sort_values(shared))
            .collect(),
        };
        let buffers = vec![
            x.handle.clone(),
            out.handle.clone(),
            scratch,
            params(&x, &values),
        ];
        launch(&x, kernel, (workgroups, 1), buffers);
        out
    }

    fn column_quantiles(table: CubeTensor, quantiles: Vec<f32>) -> CubeTensor {
        let table = f32_tensor(table);
        let (rows, cols) = (table.meta.shape()[0], table.meta.shape()[1]);
        let out = output(&table, Shape::new([cols, quantiles.len()]));
        if cols == 0 || quantiles.is_empty() {
            return out;
        }
        let n_pad = rows.max(1).next_power_of_two();
        let shared = n_pad <= CACHE_LEN;
        let scratch = table
            .client
            .empty(if shared { 4 } else { cols * n_pad * 4 });
        let mut values = vec![rows as u32, cols as u32, n_pad as u32];
        values.extend(quantiles.iter().map(|q| q.to_bits()));
        let kernel = Wgsl {
            name: "column_quantiles",
            preludes: &[TABLE, BITONIC],
            source: COLUMN_QUANTILES,
            wg: workgroup_size(n_pad),
            values: [("nq", quantiles.len().to_string())]
                .into_iter()
                .chain(sort_values(shared))
                .collect(),
        };
        let buffers = vec![
            table.handle.clone(),
            out.handle.clone(),
            scratch,
            params(&table, &values),
        ];
        launch(&table, kernel, (cols, 1), buffers);
        out
    }

    fn aggregate(table: CubeTensor) -> CubeTensor {
        let table = f32_tensor(table);
        let (rows, cols) = (table.meta.shape()[0], table.meta.shape()[1]);
        let out = output(&table, Shape::new([cols, 3]));
        if cols == 0 {
            return out;
        }
        let kernel = Wgsl {
            name: "aggregate",
            preludes: &[TABLE],
            source: AGGREGATE,
            wg: workgroup_size(rows),
            values: Vec::new(),
        };
        let values = [rows as u32, cols as u32];
        let buffers = vec![
            table.handle.clone(),
            out.handle.clone(),
            params(&table, &values),
        ];
        launch(&table, kernel, (cols, 1), buffers);
        out
    }
}
