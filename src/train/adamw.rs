//! AdamW in one pass over each parameter on the CPU backend, with the same bits as Burn's.
//!
//! Burn's `AdamW` runs each parameter's update as about a dozen tensor ops (two moments, their
//! bias corrections, the square root, the decay, the step). On the CPU backend each op is a pass
//! over memory and a fresh allocation, while the other core waits. `FusedAdamW` does the same
//! arithmetic element by element in one loop, which the compiler vectorises (BENCHMARKS.md, "A
//! fused AdamW"). Every f32 operation is the one Burn's CPU backend (flex) performs, in the same
//! order, with the same roundings of the f64 learning rate and decay. So the parameters and
//! moments come out bit for bit the same (the tests below and
//! `train::tests::fused_adamw_matches_burns_bit_for_bit`), and its state is Burn's `AdamWState`,
//! so checkpoints read and write as before. On every other device (wgpu, and the
//! benchmark-only CPU backends) it hands the step to Burn's `AdamW`.

use burn::optim::{AdamW, AdamWConfig, AdamWState, AdaptiveMomentumState, LearningRate, Optimizer};
use burn::prelude::*;

/// Burn's default, stated so that both paths use the same value.
const EPSILON: f32 = 1e-5;

/// Burn's AdamW with these settings: what every device but the CPU backend runs, and what
/// the tests hold `FusedAdamW` to.
pub fn burn_adamw(beta_1: f32, beta_2: f32, weight_decay: f32) -> AdamW {
    AdamWConfig::new()
        .with_beta_1(beta_1)
        .with_beta_2(beta_2)
        .with_epsilon(EPSILON)
        .with_weight_decay(weight_decay)
        .build()
}

/// AdamW (no AMSGrad, no cautious decay), fused on the CPU backend.
#[derive(Clone)]
pub struct FusedAdamW {
    beta_1: f32,
    beta_2: f32,
    weight_decay: f32,
    /// The same optimizer as Burn builds it, for the devices the fused loop does not serve.
    burn: AdamW,
}

impl FusedAdamW {
    pub fn new(beta_1: f32, beta_2: f32, weight_decay: f32) -> Self {
        Self {
            beta_1,
            beta_2,
            weight_decay,
            burn: burn_adamw(beta_1, beta_2, weight_decay),
        }
    }
}

/// The per-element constants of one step, each computed as Burn computes it.
#[derive(Clone, Copy)]
struct StepConstants {
    beta_1: f32,
    beta_2: f32,
    /// 1 - beta, in f32.
    factor_1: f32,
    factor_2: f32,
    /// The bias corrections 1 - beta^t, in f32 (`powi`, as Burn).
    correction_1: f32,
    correction_2: f32,
    /// 1 - lr * weight_decay, rounded from f64 once, as the backend rounds a scalar; `None` when
    /// the decay rate is zero, where Burn skips the multiply.
    keep: Option<f32>,
    /// The learning rate rounded to f32.
    lr: f32,
}

impl StepConstants {
    /// Parameters `p`, gradients `g` and moments `m`, `v` (read only when `CONTINUING`) to their
    /// values after the step. The order of operations is Burn's (see its `adamw.rs`); the two
    /// branches are constants so that the loop has none and vectorises.
    fn update<const CONTINUING: bool, const DECAY: bool>(
        &self,
        p: &mut [f32],
        g: &[f32],
        m: &mut [f32],
        v: &mut [f32],
    ) {
        let keep = self.keep.unwrap_or(1.0);
        for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
            // A first step computes g * (1 - beta) alone, not 0 * beta + that: the sum would
            // turn a -0 into +0.
            if CONTINUING {
                *m = *m * self.beta_1 + g * self.factor_1;
                *v = *v * self.beta_2 + (g * g) * self.factor_2;
            } else {
                *m = g * self.factor_1;
                *v = (g * g) * self.factor_2;
            }
            let m_hat = *m / self.correction_1;
            let v_hat = *v / self.correction_2;
            let delta = m_hat / (v_hat.sqrt() + EPSILON);
            let decayed = if DECAY { *p * keep } else { *p };
            *p = decayed - delta * self.lr;
        }
    }

    /// `update` with its constants chosen.
    fn run(&self, continuing: bool, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        match (continuing, self.keep.is_some()) {
            (true, true) => self.update::<true, true>(p, g, m, v),
            (true, false) => self.update::<true, false>(p, g, m, v),
            (false, true) => self.update::<false, true>(p, g, m, v),
            (false, false) => self.update::<false, false>(p, g, m, v),
        }
    }
}

impl Optimizer for FusedAdamW {
    type State<const D: usize> = AdamWState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        let device = tensor.device();
        if device != Device::flex() {
            return self.burn.step(lr, tensor, grad, state);
        }
        let time = state.as_ref().map_or(1, |s| s.momentum.time + 1);
        let decay_rate = lr * self.weight_decay as f64;
        let constants = StepConstants {
            beta_1: self.beta_1,
            beta_2: self.beta_2,
            factor_1: 1.0 - self.beta_1,
            factor_2: 1.0 - self.beta_2,
            correction_1: 1f32 - self.beta_1.powi(time as i32),
            correction_2: 1f32 - self.beta_2.powi(time as i32),
            keep: (decay_rate != 0.0).then_some((1.0 - decay_rate) as f32),
            lr: lr as f32,
        };
        let shape = tensor.shape();
        let mut p = floats(tensor);
        let g = floats(grad);
        let continuing = state.is_some();
        let (mut m, mut v) = match state {
            Some(s) => (floats(s.momentum.moment_1), floats(s.momentum.moment_2)),
            None => (vec![0.0; p.len()], vec![0.0; p.len()]),
        };
        constants.run(continuing, &mut p, &g, &mut m, &mut v);
        let tensor =
            |values: Vec<f32>| Tensor::from_data(TensorData::new(values, shape.clone()), &device);
        let momentum = AdaptiveMomentumState {
            time,
            moment_1: tensor(m),
            moment_2: tensor(v),
            max_moment_2: None,
        };
        (tensor(p), Some(AdamWState { momentum }))
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D> {
        AdamW::to_device(state, device)
    }
}

/// Gradients that have broken optimizers: zeros of both signs, a subnormal, tiny and huge values
/// (1e20's square overflows f32 to infinity). The tests here and in `train.rs` cycle through them.
#[cfg(test)]
pub(super) const ADVERSARIAL_GRADS: [f32; 8] = [0.0, -0.0, 1e-30, 3e-39, -3e-7, 0.5, -2.0, 1e20];

/// A tensor's values, in row-major order.
fn floats<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
    tensor
        .into_data()
        .try_into_vec::<f32>()
        .expect("the CPU backend trains in f32")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Panics at the first element whose bits differ, naming it.
    fn assert_same_bits(a: &Tensor<2>, b: &Tensor<2>, what: &str) {
        let (a, b) = (floats(a.clone()), floats(b.clone()));
        if let Some(i) = (0..a.len()).find(|&i| a[i].to_bits() != b[i].to_bits()) {
            panic!(
                "{what}: element {i} is {:e} fused, {:e} in Burn",
                a[i], b[i]
            );
        }
    }

    /// One parameter through five steps of each optimizer, with and without decay: the
    /// parameter, both moments and the step count come out bit for bit the same after every
    /// step. The first step's gradients are adversarial (zeros of both signs, a subnormal, tiny
    /// and huge values, a square that overflows to infinity), because a first step that summed
    /// 0 * beta + g * (1 - beta) would store +0 where Burn stores -0; the others pseudo-random.
    #[test]
    fn one_parameter_and_its_moments_match_burns_bit_for_bit() {
        let device = Device::flex();
        let n = 1000;
        let mut seed = 12345u64;
        let mut random = |scale: f32| -> Vec<f32> {
            (0..n)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale
                })
                .collect()
        };
        let tensor =
            |values: Vec<f32>| Tensor::<2>::from_data(TensorData::new(values, [20, 50]), &device);
        for weight_decay in [0.0, 0.1] {
            let fused = FusedAdamW::new(0.9, 0.95, weight_decay);
            let burn = burn_adamw(0.9, 0.95, weight_decay);
            let mut start = random(2.0);
            start[..4].copy_from_slice(&[0.0, -0.0, 1e-30, -1e30]);
            let (mut fused_p, mut fused_state) = (tensor(start.clone()), None);
            let (mut burn_p, mut burn_state) = (tensor(start), None);
            for step in 1..=5 {
                let grad = match step {
                    1 => tensor(
                        (0..n)
                            .map(|i| ADVERSARIAL_GRADS[i % ADVERSARIAL_GRADS.len()])
                            .collect(),
                    ),
                    _ => tensor(random(0.1)),
                };
                let lr = 1e-3 * step as f64;
                (fused_p, fused_state) = fused.step(lr, fused_p, grad.clone(), fused_state);
                (burn_p, burn_state) = burn.step(lr, burn_p, grad, burn_state);
                let (f, b) = (
                    &fused_state.as_ref().unwrap().momentum,
                    &burn_state.as_ref().unwrap().momentum,
                );
                let at = format!("weight decay {weight_decay}, step {step}");
                assert_same_bits(&fused_p, &burn_p, &format!("parameter, {at}"));
                assert_same_bits(&f.moment_1, &b.moment_1, &format!("first moment, {at}"));
                assert_same_bits(&f.moment_2, &b.moment_2, &format!("second moment, {at}"));
                assert_eq!(f.time, b.time, "{at}");
            }
        }
    }
}
