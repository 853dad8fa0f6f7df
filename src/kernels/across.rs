//! Metrics across a probe set's vectors, on the device with Burn tensor ops (no WGSL needed:
//! they are column reductions and one matmul). Vectors holding a NaN or Inf are left out, as
//! they are from every per-vector aggregate; `valid` is `[rows, 1]`, 1 for a finite vector.
//! The f64 reference is `reference::across_vectors`.

use burn::prelude::*;

use crate::metrics::Columns;

/// `[rows, 1]`: 1 where the per-vector table says the vector is finite, else 0.
pub fn valid_rows(table: Tensor<2>) -> Tensor<2> {
    let rows = table.dims()[0];
    table
        .slice([0..rows, Columns::NONFINITE..Columns::NONFINITE + 1])
        .equal_elem(0.0)
        .float()
}

/// `[3]`: the mean and sample std over neurons of each neuron's active fraction (a_i > eps),
/// and the fraction of neurons never active.
pub fn active_stats(x: Tensor<2>, valid: Tensor<2>, eps: f64) -> Tensor<1> {
    let n = valid.clone().sum().reshape([1, 1]);
    let per_neuron = (x.abs().greater_elem(eps).float() * valid).sum_dim(0) / n;
    let d = per_neuron.dims()[1];
    let per_neuron = per_neuron.reshape([d]);
    let std = if d > 1 {
        per_neuron.clone().var(0).sqrt()
    } else {
        Tensor::from_floats([f32::NAN], &per_neuron.device())
    };
    let dead = per_neuron.clone().equal_elem(0.0).float().mean();
    Tensor::cat(
        vec![per_neuron.mean().reshape([1]), std, dead.reshape([1])],
        0,
    )
}

/// `[d, d]`: the covariance (centred, n - 1) of the finite vectors.
pub fn covariance(x: Tensor<2>, valid: Tensor<2>) -> Tensor<2> {
    let [rows, d] = x.dims();
    let invalid = valid.clone().equal_elem(0.0).expand([rows, d]);
    let x = x.mask_fill(invalid, 0.0);
    let n = valid.clone().sum().reshape([1, 1]);
    let mean = x.clone().sum_dim(0) / n.clone();
    let centred = (x - mean) * valid;
    centred.clone().transpose().matmul(centred) / (n - 1.0)
}
