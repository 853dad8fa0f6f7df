//! Launches the WGSL kernels of `shaders/` on CubeCL's wgpu runtime.

use burn::backend::wgpu::{CubeBackend, CubeTensor, KernelSource, SourceKernel, SourceTemplate};
use burn::tensor::{DType, Shape};
use burn_cubecl::cubecl::prelude::KernelId;
use burn_cubecl::cubecl::server::KernelArguments;
use burn_cubecl::cubecl::{CubeCount, CubeDim};
use burn_cubecl::kernel::into_contiguous;

use super::DensityOps;
use crate::metrics::Columns;

const COMMON: &str = include_str!("../../shaders/common.wgsl");
const BITONIC: &str = include_str!("../../shaders/bitonic.wgsl");

/// A kernel's source: common.wgsl, bitonic.wgsl where the kernel sorts, then its own file.
fn shader(kernel: &str, wg: u32, sort: Option<bool>) -> SourceTemplate {
    let mut source = SourceTemplate::new(COMMON).register("wg", wg.to_string());
    if let Some(shared) = sort {
        source = source
            .add_template(BITONIC)
            .register("shared", shared.to_string())
            .register("shared_len", if shared { CACHE_LEN } else { 1 }.to_string());
    }
    source.add_template(kernel)
}

/// Rows up to this width are cached in workgroup memory (8 KiB of f32, well inside WebGPU's
/// guaranteed 16 KiB together with the reduction buffer).
const CACHE_LEN: usize = 2048;
/// The most workgroups one dispatch dimension may hold (WebGPU's guaranteed limit).
const MAX_GRID: usize = 65_535;
/// The order kernel's global sort buffers (rows wider than CACHE_LEN) stay under this many bytes;
/// fewer workgroups then loop over more rows each.
const SCRATCH_BYTES: usize = 64 << 20;

struct RowMomentsKernel {
    wg: u32,
    n_abs: usize,
    n_rel: usize,
    cached: bool,
}

impl KernelSource for RowMomentsKernel {
    fn source(&self) -> SourceTemplate {
        shader(
            include_str!("../../shaders/row_moments.wgsl"),
            self.wg,
            None,
        )
        .register("n_abs", self.n_abs.to_string())
        .register("n_rel", self.n_rel.to_string())
        .register("cached", self.cached.to_string())
        .register(
            "cache_len",
            if self.cached { CACHE_LEN } else { 1 }.to_string(),
        )
    }

    fn id(&self) -> KernelId {
        KernelId::new::<Self>().info((self.wg, self.n_abs, self.n_rel, self.cached))
    }

    fn lang(&self) -> &'static str {
        "wgsl"
    }
}

struct RowOrderKernel {
    wg: u32,
    n_topk: usize,
    shared: bool,
}

impl KernelSource for RowOrderKernel {
    fn source(&self) -> SourceTemplate {
        shader(
            include_str!("../../shaders/row_order.wgsl"),
            self.wg,
            Some(self.shared),
        )
        .register("n_topk", self.n_topk.to_string())
    }

    fn id(&self) -> KernelId {
        KernelId::new::<Self>().info((self.wg, self.n_topk, self.shared))
    }

    fn lang(&self) -> &'static str {
        "wgsl"
    }
}

struct QuantilesKernel {
    wg: u32,
    nq: usize,
    shared: bool,
}

impl KernelSource for QuantilesKernel {
    fn source(&self) -> SourceTemplate {
        shader(
            include_str!("../../shaders/column_quantiles.wgsl"),
            self.wg,
            Some(self.shared),
        )
        .register("nq", self.nq.to_string())
    }

    fn id(&self) -> KernelId {
        KernelId::new::<Self>().info((self.wg, self.nq, self.shared))
    }

    fn lang(&self) -> &'static str {
        "wgsl"
    }
}

struct AggregateKernel {
    wg: u32,
}

impl KernelSource for AggregateKernel {
    fn source(&self) -> SourceTemplate {
        shader(include_str!("../../shaders/aggregate.wgsl"), self.wg, None)
    }

    fn id(&self) -> KernelId {
        KernelId::new::<Self>().info(self.wg)
    }

    fn lang(&self) -> &'static str {
        "wgsl"
    }
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

impl DensityOps for CubeBackend {
    fn row_moments(x: CubeTensor, cols: Columns) -> CubeTensor {
        let x = f32_tensor(x);
        let (rows, width) = (x.meta.shape()[0], x.meta.shape()[1]);
        let out = output(&x, Shape::new([rows, cols.moments_count()]));
        if rows == 0 || width == 0 {
            return out;
        }
        let grid_x = rows.min(MAX_GRID);
        let grid_y = rows.div_ceil(MAX_GRID);
        let mut params = vec![rows as u32, width as u32, grid_x as u32];
        params.extend(cols.near_zero.iter().map(|e| e.to_bits()));
        params.extend(cols.near_zero_rel.iter().map(|r| r.to_bits()));
        let params = x.client.create_from_slice(bytemuck::cast_slice(&params));

        let kernel = RowMomentsKernel {
            wg: workgroup_size(width),
            n_abs: cols.near_zero.len(),
            n_rel: cols.near_zero_rel.len(),
            cached: width <= CACHE_LEN,
        };
        let cube_dim = CubeDim::new_1d(kernel.wg);
        x.client.launch(
            Box::new(SourceKernel::new(kernel, cube_dim)),
            CubeCount::Static(grid_x as u32, grid_y as u32, 1),
            KernelArguments::new().with_buffers(vec![
                x.handle.binding(),
                out.handle.clone().binding(),
                params.binding(),
            ]),
        );
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
        let workgroups = if shared {
            rows.min(MAX_GRID)
        } else {
            rows.min((SCRATCH_BYTES / (n_pad * 4)).max(1))
        };
        let scratch = x
            .client
            .empty(if shared { 4 } else { workgroups * n_pad * 4 });
        let mut params = vec![
            rows as u32,
            width as u32,
            n_pad as u32,
            workgroups as u32,
            0,
        ];
        params.extend(cols.topk_counts(width).into_iter().map(|k| k as u32));
        let params = x.client.create_from_slice(bytemuck::cast_slice(&params));

        let kernel = RowOrderKernel {
            wg: workgroup_size(n_pad),
            n_topk: cols.topk.len(),
            shared,
        };
        let cube_dim = CubeDim::new_1d(kernel.wg);
        x.client.launch(
            Box::new(SourceKernel::new(kernel, cube_dim)),
            CubeCount::Static(workgroups as u32, 1, 1),
            KernelArguments::new().with_buffers(vec![
                x.handle.binding(),
                out.handle.clone().binding(),
                scratch.binding(),
                params.binding(),
            ]),
        );
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
        let mut params = vec![rows as u32, cols as u32, n_pad as u32];
        params.extend(quantiles.iter().map(|q| q.to_bits()));
        let params = table
            .client
            .create_from_slice(bytemuck::cast_slice(&params));
        let kernel = QuantilesKernel {
            wg: workgroup_size(n_pad),
            nq: quantiles.len(),
            shared,
        };
        let cube_dim = CubeDim::new_1d(kernel.wg);
        table.client.launch(
            Box::new(SourceKernel::new(kernel, cube_dim)),
            CubeCount::Static(cols as u32, 1, 1),
            KernelArguments::new().with_buffers(vec![
                table.handle.binding(),
                out.handle.clone().binding(),
                scratch.binding(),
                params.binding(),
            ]),
        );
        out
    }

    fn aggregate(table: CubeTensor) -> CubeTensor {
        let table = f32_tensor(table);
        let (rows, cols) = (table.meta.shape()[0], table.meta.shape()[1]);
        let out = output(&table, Shape::new([cols, 3]));
        if cols == 0 {
            return out;
        }
        let params = [rows as u32, cols as u32];
        let params = table
            .client
            .create_from_slice(bytemuck::cast_slice(&params));
        let kernel = AggregateKernel {
            wg: workgroup_size(rows),
        };
        let cube_dim = CubeDim::new_1d(kernel.wg);
        table.client.launch(
            Box::new(SourceKernel::new(kernel, cube_dim)),
            CubeCount::Static(cols as u32, 1, 1),
            KernelArguments::new().with_buffers(vec![
                table.handle.binding(),
                out.handle.clone().binding(),
                params.binding(),
            ]),
        );
        out
    }
}
