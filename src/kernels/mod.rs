//! Density kernels: WGSL sources in `shaders/`, launched through Burn's backend extension, each
//! with the f64 reference (`reference`) it is tested against; and `fast`, the f32 CPU reduction
//! beside the reference that `device: cpu` measures with, tested against it the same way.
//!
//! `summarize` is what an evaluation calls: `[vectors, width]` activations in, a `[columns, 3]`
//! tensor of (mean, std, n) out, all on the device, so only that small tensor is read back.

pub mod across;
pub mod fast;
pub mod reference;
mod wgsl;

use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, backend_extension};
use burn::tensor::{Shape, Tensor};

use crate::metrics::Columns;

/// The density operations a backend must provide to measure on the device. CubeCL's runtimes
/// implement them (the WGSL kernels run on its wgpu runtime); the generated `Fusion` wrapper
/// records each call as an opaque custom op in Burn's lazy graph.
#[backend_extension(Cube, Fusion)]
pub trait DensityOps: Backend {
    /// `[rows, width]` -> `[rows, cols.moments_count()]`: every moment-type metric of every row.
    #[fusion(dtype = x, shape = moments_shape(x, cols))]
    fn row_moments(x: FloatTensor<Self>, cols: Columns) -> FloatTensor<Self>;

    /// `[rows, width]` -> `[rows, cols.order_count()]`: every order statistic of every row.
    #[fusion(dtype = x, shape = order_shape(x, cols))]
    fn row_order(x: FloatTensor<Self>, cols: Columns) -> FloatTensor<Self>;

    /// `[rows, columns]` per-vector table -> `[columns, quantiles.len()]`.
    #[fusion(dtype = table, shape = quantiles_shape(table, quantiles))]
    fn column_quantiles(table: FloatTensor<Self>, quantiles: Vec<f32>) -> FloatTensor<Self>;

    /// `[rows, columns]` per-vector table -> `[columns, 3]` of (mean, std, n).
    #[fusion(dtype = table, shape = aggregate_shape(table))]
    fn aggregate(table: FloatTensor<Self>) -> FloatTensor<Self>;
}

fn moments_shape(x: &Shape, cols: &Columns) -> Shape {
    Shape::new([x[0], cols.moments_count()])
}

fn order_shape(x: &Shape, cols: &Columns) -> Shape {
    Shape::new([x[0], cols.order_count()])
}

fn quantiles_shape(table: &Shape, quantiles: &[f32]) -> Shape {
    Shape::new([table[1], quantiles.len()])
}

fn aggregate_shape(table: &Shape) -> Shape {
    Shape::new([table[1], 3])
}

/// Per-vector metrics of each row of `x` in `cols`' layout, on the device: the moments kernel's
/// columns, then (when an order statistic is asked for) the order kernel's.
pub fn row_metrics(x: Tensor<2>, cols: &Columns) -> Tensor<2> {
    let moments = Tensor::from_dispatch(Dispatch::row_moments(
        x.clone().into_dispatch(),
        cols.clone(),
    ));
    if !cols.order {
        return moments;
    }
    let order = Tensor::from_dispatch(Dispatch::row_order(x.into_dispatch(), cols.clone()));
    Tensor::cat(vec![moments, order], 1)
}

/// Column-wise (mean, std, n) of a per-vector table, on the device.
pub fn aggregate(table: Tensor<2>) -> Tensor<2> {
    Tensor::from_dispatch(Dispatch::aggregate(table.into_dispatch()))
}

/// Column-wise quantiles (numpy's linear interpolation) of a per-vector table, on the device.
pub fn column_quantiles(table: Tensor<2>, quantiles: &[f32]) -> Tensor<2> {
    Tensor::from_dispatch(Dispatch::column_quantiles(
        table.into_dispatch(),
        quantiles.to_vec(),
    ))
}

/// `[vectors, width]` activations -> `[cols.count(), 3]` summaries, without leaving the device.
pub fn summarize(x: Tensor<2>, cols: &Columns) -> Tensor<2> {
    aggregate(row_metrics(x, cols))
}
