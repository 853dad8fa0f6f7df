//! The exact GELU, 0.5 x (1 + erf(x / sqrt 2)), with Burn's bits and one erf per element.
//!
//! Burn's autodiff keeps a GELU's input and, in the backward pass, asks the backend for
//! `gelu_backward(x, grad)`, which on the CPU backend (flex) computes erf(x / sqrt 2) again. erf
//! is scalar `libm` code and was 11% of the CPU train step (BENCHMARKS.md, "Where the CPU train
//! step's time goes"), half of it spent recomputing what the forward pass had. Here, on the CPU
//! backend, the forward pass keeps the erf it computed, and the backward pass uses it: every other
//! f32 operation is flex's, in flex's order, so activations and gradients are bit for bit Burn's
//! (`tests` below). Everywhere else (wgpu, the benchmark-only CPU backends, other dtypes) it is
//! Burn's `gelu`.

use std::f32::consts::{PI, SQRT_2};

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::ActivationOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, backend_extension};
use burn::prelude::*;
use burn::tensor::DType;

/// GELU as one operation that a backend can differentiate its own way.
#[backend_extension(Flex, Autodiff)]
pub trait GeluOnce: Backend {
    fn gelu_once(x: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// Without autodiff there is no backward pass to save erf for: Burn's own.
impl GeluOnce for Flex {
    fn gelu_once(x: FloatTensor<Self>) -> FloatTensor<Self> {
        <Flex as ActivationOps<Flex>>::gelu(x)
    }
}

/// The backward pass of one GELU: its input and erf(input / sqrt 2), both contiguous.
#[derive(Debug)]
struct GeluBackward;

impl Backward<Flex, 1> for GeluBackward {
    type State = (FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (x, erf) = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |grad| {
            backward(&x, &erf, &contiguous(grad))
        });
    }
}

impl<C: CheckpointStrategy> GeluOnce for Autodiff<Flex, C> {
    fn gelu_once(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let (x, node) = x.into_parts();
        // Compute-bound: the state is kept, never recomputed, under any checkpointing strategy.
        match GeluBackward.prepare::<C>([node]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                #[cfg(test)]
                tests::TRACKED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let x = contiguous(x);
                let (output, erf) = forward(&x);
                prep.finish((x, erf), output)
            }
            OpsKind::UnTracked(prep) => prep.finish(Flex::gelu_once(x)),
        }
    }
}

/// GELU of `x`: on the CPU backend in f32 through `GeluOnce`, elsewhere Burn's `gelu`.
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if x.device().inner() == Device::flex() && x.dtype() == DType::F32 {
        Tensor::from_dispatch(Dispatch::gelu_once(x.into_dispatch()))
    } else {
        burn::tensor::activation::gelu(x)
    }
}

/// `x` itself when its values are one contiguous run, else a contiguous copy.
fn contiguous(x: FlexTensor) -> FlexTensor {
    if x.as_slice::<f32>().is_some() {
        x
    } else {
        x.to_contiguous()
    }
}

/// The f32 values of a tensor that `contiguous` returned, in row-major order.
fn values(x: &FlexTensor) -> &[f32] {
    x.as_slice::<f32>().expect("a contiguous f32 tensor")
}

/// A contiguous tensor of `x`'s shape holding `values`.
fn tensor_like(x: &FlexTensor, values: Vec<f32>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, x.layout().shape().clone()))
}

/// GELU of a contiguous `x` and erf(x / sqrt 2), computed as flex's `gelu` computes them (with `libm`'s erff,
/// the one flex calls).
fn forward(x: &FlexTensor) -> (FlexTensor, FlexTensor) {
    let xs = values(x);
    let erf: Vec<f32> = xs.iter().map(|&x| libm::erff(x / SQRT_2)).collect();
    let output = xs
        .iter()
        .zip(&erf)
        .map(|(&x, &erf)| 0.5 * x * (1.0 + erf))
        .collect();
    (tensor_like(x, output), tensor_like(x, erf))
}

/// The gradient of GELU's input from its output's (all three contiguous), as flex's
/// `gelu_backward` computes it, with the forward pass's erf in place of a second call.
fn backward(x: &FlexTensor, erf: &FlexTensor, grad: &FlexTensor) -> FlexTensor {
    let inv_sqrt_2pi: f32 = 1.0 / (2.0 * PI).sqrt();
    let (xs, erfs, grads) = (values(x), values(erf), values(grad));
    let input_grad = xs
        .iter()
        .zip(erfs.iter())
        .zip(grads.iter())
        .map(|((&x, &erf), &g)| {
            let cdf = 0.5 * (1.0 + erf);
            let pdf = inv_sqrt_2pi * (-0.5 * x * x).exp();
            g * (cdf + x * pdf)
        })
        .collect();
    tensor_like(x, input_grad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// How many GELUs took the path that keeps erf, so that a test can check `gelu` takes it.
    pub(super) static TRACKED: AtomicUsize = AtomicUsize::new(0);

    /// Inputs that have broken activations: zeros of both signs, subnormals, libm's erf switch
    /// points (|x| / sqrt 2 near 0.84375, 1.25, 2.857 and 6), values where GELU underflows or
    /// equals x, infinities and NaN; then a sweep over [-10, 10].
    fn adversarial() -> Vec<f32> {
        let mut xs = vec![
            0.0,
            -0.0,
            1e-40,
            -1e-40,
            1e-30,
            -1e-7,
            0.84375 * SQRT_2,
            -0.84375 * SQRT_2,
            1.25 * SQRT_2,
            -1.25 * SQRT_2,
            2.857_143 * SQRT_2,
            6.0 * SQRT_2,
            -6.0 * SQRT_2,
            -14.0,
            -40.0,
            40.0,
            3e38,
            -3e38,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
        ];
        // 21 + 3990 values: 7 rows of 573, so that the tests can transpose them.
        xs.extend((0..3990).map(|i| -10.0 + i as f32 * 0.005_13));
        xs
    }

    fn bits(t: Tensor<2>) -> Vec<u32> {
        let values = t.into_data().try_into_vec::<f32>().unwrap();
        values.iter().map(|v| v.to_bits()).collect()
    }

    /// Panics at the first element whose bits differ, naming it.
    fn assert_same_bits(ours: Tensor<2>, burns: Tensor<2>, inputs: &[f32], what: &str) {
        let (a, b) = (bits(ours), bits(burns));
        assert_eq!(a.len(), b.len(), "{what}: lengths");
        if let Some(i) = (0..a.len()).find(|&i| a[i] != b[i]) {
            panic!(
                "{what}: at x = {:e}, {:e} here, {:e} in Burn",
                inputs[i],
                f32::from_bits(a[i]),
                f32::from_bits(b[i])
            );
        }
    }

    /// The output and the input's gradient, under autodiff on the CPU backend, equal Burn's
    /// `gelu` bit for bit on adversarial inputs, for a contiguous input and for a transposed one;
    /// and `gelu` took the path that keeps erf (else this would compare Burn's with itself).
    #[test]
    fn gelu_and_its_gradient_match_burns_bit_for_bit() {
        let device = Device::flex().autodiff();
        let xs = adversarial();
        let n = xs.len();
        // The upstream gradient: pseudo-random, with zeros, a huge and a NaN among them.
        let upstream: Vec<f32> = (0..n)
            .map(|i| match i % 97 {
                0 => 0.0,
                1 => -0.0,
                2 => 1e30,
                3 => f32::NAN,
                _ => ((i * 7919) % 1000) as f32 / 250.0 - 2.0,
            })
            .collect();
        for transposed in [false, true] {
            let run = |activation: fn(Tensor<2>) -> Tensor<2>| {
                let x = Tensor::<1>::from_floats(xs.as_slice(), &device).require_grad();
                let upstream = Tensor::<1>::from_floats(upstream.as_slice(), &device);
                let (x2, u2) = if transposed {
                    (
                        x.clone().reshape([n / 7, 7]).transpose(),
                        upstream.reshape([n / 7, 7]).transpose(),
                    )
                } else {
                    (x.clone().reshape([7, n / 7]), upstream.reshape([7, n / 7]))
                };
                let y = activation(x2);
                let grads = (y.clone() * u2).sum().backward();
                let grad = x.grad(&grads).expect("x has a gradient");
                (y.inner(), grad.reshape([1, n]))
            };
            let before = TRACKED.load(Ordering::SeqCst);
            let (ours, our_grad) = run(gelu);
            assert!(
                TRACKED.load(Ordering::SeqCst) > before,
                "gelu under autodiff on the CPU backend did not take the path that keeps erf"
            );
            let (burns, burn_grad) = run(burn::tensor::activation::gelu);
            let order: Vec<f32> = if transposed {
                // The output's row-major order walks the input's columns.
                (0..7)
                    .flat_map(|row| (0..n / 7).map(move |column| column * 7 + row))
                    .map(|i| xs[i])
                    .collect()
            } else {
                xs.clone()
            };
            let what = if transposed {
                "transposed"
            } else {
                "contiguous"
            };
            assert_same_bits(ours, burns, &order, &format!("output, {what}"));
            assert_same_bits(our_grad, burn_grad, &xs, &format!("gradient, {what}"));
        }
    }

    /// Without autodiff, `gelu` is Burn's.
    #[test]
    fn untracked_gelu_is_burns() {
        let device = Device::flex();
        let xs = adversarial();
        let x = Tensor::<1>::from_floats(xs.as_slice(), &device).reshape([1, xs.len()]);
        assert_same_bits(
            gelu(x.clone()),
            burn::tensor::activation::gelu(x),
            &xs,
            "no autodiff",
        );
    }
}
