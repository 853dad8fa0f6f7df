//! The training loop, in the style of Burn's custom-training-loop example: AdamW (biases and
//! norms exempt from decay), global-norm gradient clipping, linear warm-up then cosine decay, a fixed step budget, seeded data order. It knows nothing about the run directory's tables:
//! it hands evaluations and checkpoints to `TrainHooks`, and it can start from a checkpoint.
//!
//! Reproducibility: Burn's RNG is reseeded from (seed, step) before every step and the data order
//! is a function of the seed, so a run resumed from a checkpoint at step C computes the same
//! steps after C as a run that never stopped (bit-identical on the CPU backend; see
//! docs/running.md).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::Result;
use burn::module::{Module, ModuleVisitor, Param, ParamGroup};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{GradientsParams, ModuleOptimizer, Optimizer};
use burn::prelude::*;

use crate::config::{Config, DecayParams, TrainConfig};
use crate::data::{Batches, Dataset};
use crate::device::RunDevice;
use crate::model::Gpt;
use crate::progress::Progress;
use crate::rundir::tables::TrainRow;
use crate::seed::derive_seed;

mod adamw;
use adamw::FusedAdamW;

/// Why a checkpoint is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointReason {
    Scheduled,
    /// A stop was requested (SIGINT or SIGTERM).
    Interrupted,
    /// The loss went non-finite at the given step.
    Diverged(usize),
}

/// What the loop hands its caller. Each call gets the train rows logged since the previous call
/// to either hook, so no row is lost or written twice.
pub trait TrainHooks {
    /// At every evaluation step, step 0 included, with the model without autodiff.
    fn evaluate(&mut self, step: usize, model: &Gpt, train_rows: &[TrainRow]) -> Result<()>;
    /// At every checkpoint step, on a stop request and on divergence.
    fn checkpoint(
        &mut self,
        step: usize,
        model: &Gpt,
        optimizer: &ModuleOptimizer,
        train_rows: &[TrainRow],
        reason: CheckpointReason,
    ) -> Result<()>;
}

/// How the loop ended.
// One value per run: the size difference between the variants costs nothing worth a Box.
#[allow(clippy::large_enum_variant)]
pub enum Outcome {
    Completed(Gpt),
    /// Stopped by request after this step, with a checkpoint there.
    Interrupted(usize),
    /// The loss was non-finite at this step; the model before it was evaluated and checkpointed.
    Diverged(usize),
}

/// Where training starts: a fresh model at step 0, or a checkpoint.
pub struct Start {
    pub step: usize,
    pub model: Gpt,
    pub optimizer: ModuleOptimizer,
    /// Seconds of wall time already spent (continued in the train table).
    pub wall_time: f64,
}

/// Linear warm-up to `lr` over `warmup_steps`, then cosine decay to `min_lr` at the last step.
pub fn learning_rate(t: &TrainConfig, step: usize) -> f64 {
    if step <= t.warmup_steps {
        return t.lr * step as f64 / t.warmup_steps.max(1) as f64;
    }
    let decay_steps = (t.steps - t.warmup_steps).max(1) as f64;
    let progress = ((step - t.warmup_steps) as f64 / decay_steps).min(1.0);
    t.min_lr + 0.5 * (t.lr - t.min_lr) * (1.0 + (std::f64::consts::PI * progress).cos())
}

/// Steps at which the probes run: 0, the configured schedule, and the last step.
pub fn is_eval_step(config: &Config, step: usize) -> bool {
    step == 0
        || step == config.train.steps
        || scheduled(step, config.probes.every, config.probes.log_spaced)
}

/// Tokens the model has been trained on after `step` steps.
pub fn tokens_seen(config: &Config, step: usize) -> i64 {
    (step * config.train.batch_size * config.context()) as i64
}

/// A fresh model and optimizer on the autodiff version of `device`, initialised from the seed.
pub fn fresh_start(config: &Config, vocab_size: usize, device: &Device) -> Start {
    let device = device.clone().autodiff();
    device.seed(config.seed);
    Start {
        step: 0,
        model: config.model.init(vocab_size, &device),
        optimizer: optimizer(&config.train),
        wall_time: 0.0,
    }
}

/// AdamW as the config describes it, with no state yet: `FusedAdamW`, Burn's AdamW in one pass
/// per parameter on the CPU backend and Burn's own elsewhere. Clipping is not Burn's (which clips
/// each tensor by its own norm) but `clip_global_norm`, before the step.
pub fn optimizer(t: &TrainConfig) -> ModuleOptimizer {
    grouped(t, |decay| {
        FusedAdamW::new(t.beta1 as f32, t.beta2 as f32, decay as f32)
    })
}

/// One AdamW for the parameters that decay and one without decay for those `t.decay` exempts,
/// each from `adamw(weight_decay)`.
fn grouped<O: Optimizer>(t: &TrainConfig, adamw: impl Fn(f64) -> O) -> ModuleOptimizer {
    let optimizer = ModuleOptimizer::from(adamw(t.weight_decay));
    match t.decay {
        DecayParams::All => optimizer,
        // The model's rank-1 parameters are exactly the Linear biases and the LayerNorm gammas
        // and betas (model.rs: every norm's field name ends in `norm`).
        DecayParams::Matrices => optimizer.with_group(
            ParamGroup::from_any_predicates(vec!["bias", "norm"]),
            adamw(0.0),
            None,
        ),
    }
}

/// Sums the squares of every gradient of a module's float parameters.
struct SquaredNorm<'a> {
    grads: &'a GradientsParams,
    sum: Option<Tensor<1>>,
}

impl ModuleVisitor for SquaredNorm<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(grad) = self.grads.get::<D>(param.id) {
            let squares = grad.powi_scalar(2).sum();
            self.sum = Some(match self.sum.take() {
                Some(sum) => sum + squares,
                None => squares,
            });
        }
    }
}

/// Multiplies every gradient of a module's float parameters by `factor` (`[1]`, on the device).
struct ScaleGrads<'a> {
    grads: &'a mut GradientsParams,
    factor: Tensor<1>,
}

impl ModuleVisitor for ScaleGrads<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(grad) = self.grads.remove::<D>(param.id) {
            let factor = self.factor.clone().unsqueeze::<D>();
            self.grads.register(param.id, grad * factor);
        }
    }
}

/// PyTorch's `torch.nn.utils.clip_grad_norm_` (nanoGPT's clipping): the L2 norm of all of
/// `model`'s gradients together; when `max_norm` > 0, every gradient is scaled by
/// min(1, max_norm / (norm + 1e-6)). As in PyTorch, the factor stays on the device, so clipping
/// never waits for it; returns the norm before clipping (`[1]`, on the device; `None` without
/// gradients), for the caller to read when it logs.
pub fn clip_global_norm(
    model: &impl Module,
    grads: &mut GradientsParams,
    max_norm: f64,
) -> Option<Tensor<1>> {
    let mut squared = SquaredNorm { grads, sum: None };
    model.visit(&mut squared);
    let norm = squared.sum?.sqrt();
    if max_norm > 0.0 {
        let factor = (norm.clone().add_scalar(1e-6).recip() * max_norm).clamp_max(1.0);
        model.visit(&mut ScaleGrads { grads, factor });
    }
    Some(norm)
}

/// Trains from `start` to `train.steps`, or until `stop` is set or the loss diverges.
pub fn train(
    config: &Config,
    data: &Dataset,
    device: &RunDevice,
    start: Start,
    progress: &Progress,
    stop: &AtomicBool,
    hooks: &mut impl TrainHooks,
) -> Result<Outcome> {
    let t = &config.train;
    // Shards run on threads of their own on the CPU backend, where one step keeps about one core
    // busy; on a GPU one after the other. Dropout draws from the device's one seeded generator,
    // which threads would draw from in no fixed order, so with dropout they take turns too.
    let concurrent = device.backend == "cpu" && config.model.dropout == 0.0;
    // Each concurrent shard gets a rayon pool of one thread, so Burn's CPU backend runs its ops
    // within the shard instead of also splitting the larger ones over the cores the shards
    // already fill, which measured faster (BENCHMARKS.md, "Both cores on one step"). The
    // backend's results do not depend on its thread count, so neither do the tables.
    let pools = if concurrent && t.shards > 1 {
        shard_pools(t.shards)?
    } else {
        Vec::new()
    };
    let device = device.device.clone().autodiff();
    let Start {
        step: first,
        mut model,
        mut optimizer,
        wall_time,
    } = start;
    let mut batches = Batches::new(data, config, first);
    let started = Instant::now() - std::time::Duration::from_secs_f64(wall_time);
    let mut rows = Vec::new();
    if first == 0 {
        hooks.evaluate(0, &model.valid(), &rows)?;
    }
    progress.set_step(first);

    let mut window = (Instant::now(), first);
    for step in first + 1..=t.steps {
        device.seed(derive_seed(config.seed, &format!("step/{step}")));
        let (inputs, targets) = batch(&mut batches, step, &device);
        let (loss, mut grads) = loss_and_grads(&model, inputs, targets, t.shards, &pools);
        // Reading the loss every step waits for the device; it is what lets a NaN name its step.
        let loss_value = loss.into_scalar::<f32>() as f64;
        if !loss_value.is_finite() {
            let before = step - 1;
            tracing::error!("the loss is {loss_value} at step {step}: stopping as diverged");
            hooks.evaluate(before, &model.valid(), &rows)?;
            rows.clear();
            hooks.checkpoint(
                before,
                &model,
                &optimizer,
                &rows,
                CheckpointReason::Diverged(step),
            )?;
            return Ok(Outcome::Diverged(step));
        }
        let grad_norm = clip_global_norm(&model, &mut grads, t.grad_clip);
        let lr = learning_rate(t, step);
        let logged = step % t.log_every == 0 || step == t.steps;
        // Read only when the row is logged: a read-back waits for the device.
        let grad_norm = match grad_norm.filter(|_| logged) {
            Some(norm) => norm.into_scalar::<f32>() as f64,
            None => f64::NAN,
        };
        model = optimizer.step(lr, model, grads);

        if logged {
            let tokens = (tokens_seen(config, step) - tokens_seen(config, window.1)) as f64;
            let tokens_per_s = tokens / window.0.elapsed().as_secs_f64();
            window = (Instant::now(), step);
            progress.train_step(step, loss_value, tokens_per_s);
            rows.push(TrainRow {
                step: step as i64,
                tokens_seen: tokens_seen(config, step),
                loss: loss_value,
                grad_norm,
                lr,
                tokens_per_s,
                wall_time: started.elapsed().as_secs_f64(),
            });
        } else {
            progress.set_step(step);
        }
        if is_eval_step(config, step) {
            hooks.evaluate(step, &model.valid(), &rows)?;
            rows.clear();
            window.0 = Instant::now();
        }
        let stopping = stop.load(Ordering::SeqCst) && step < t.steps;
        if scheduled(step, config.checkpoint.every, config.checkpoint.log_spaced) || stopping {
            let reason = if stopping {
                CheckpointReason::Interrupted
            } else {
                CheckpointReason::Scheduled
            };
            hooks.checkpoint(step, &model, &optimizer, &rows, reason)?;
            rows.clear();
            window.0 = Instant::now();
        }
        if stopping {
            return Ok(Outcome::Interrupted(step));
        }
    }
    Ok(Outcome::Completed(model.valid()))
}

/// The mean next-token cross-entropy of a batch, `[1]`, and its gradients, from `shards`
/// contiguous slices of the batch. Each slice's mean loss is weighted by its share of the batch, so
/// the sum of the slices' losses and gradients is the whole batch's mean and its gradient (equal
/// up to rounding: the sums over the batch are split in `shards` parts). Each slice runs through
/// its own fork of the model (same parameters and ids, its own autodiff leaves), so the slices'
/// graphs share nothing: given one `pools` entry per slice, each slice runs on a thread of its
/// own inside its pool; without, one after the other.
fn loss_and_grads(
    model: &Gpt,
    inputs: Tensor<2, Int>,
    targets: Tensor<2, Int>,
    shards: usize,
    pools: &[rayon::ThreadPool],
) -> (Tensor<1>, GradientsParams) {
    let [batch, _] = inputs.dims();
    if shards <= 1 {
        let (loss, grads) = slice_loss_and_grads(model, inputs, targets, None);
        return (loss, GradientsParams::from_grads(grads, model));
    }
    let device = inputs.device();
    // As equal as they can be: the first batch % shards slices take one row more.
    let sizes: Vec<usize> = (0..shards)
        .map(|i| batch / shards + usize::from(i < batch % shards))
        .collect();
    let slices: Vec<_> = inputs
        .split_with_sizes(sizes.clone(), 0)
        .into_iter()
        .zip(targets.split_with_sizes(sizes, 0))
        .map(|(inputs, targets)| {
            let share = inputs.dims()[0] as f64 / batch as f64;
            (model.clone(), inputs, targets, share)
        })
        .collect();
    // Forking (fresh autodiff leaves for every parameter) is part of each slice's job, so that
    // concurrent slices fork at once.
    let run = |(model, inputs, targets, share): (Gpt, _, _, f64)| {
        let model = model.fork(&device);
        let (loss, grads) = slice_loss_and_grads(&model, inputs, targets, Some(share));
        (loss, GradientsParams::from_grads(grads, &model))
    };
    let results: Vec<(Tensor<1>, GradientsParams)> = if pools.len() == slices.len() {
        in_pools(pools, slices, &run)
    } else {
        slices.into_iter().map(run).collect()
    };
    let mut results = results.into_iter();
    let (mut loss, mut grads) = results.next().expect("at least one shard");
    for (shard_loss, mut shard_grads) in results {
        loss = loss + shard_loss;
        model.visit(&mut AddGrads {
            into: &mut grads,
            from: &mut shard_grads,
        });
    }
    (loss, grads)
}

/// `run` on each of `jobs`, all at once, job i on the thread of `pools[i]`; the results in the
/// jobs' order. The pools' threads live as long as the loop, so a step starts no thread.
fn in_pools<T: Send, R: Send>(
    pools: &[rayon::ThreadPool],
    jobs: Vec<T>,
    run: &(impl Fn(T) -> R + Sync),
) -> Vec<R> {
    assert_eq!(pools.len(), jobs.len(), "one pool for each job");
    let mut results: Vec<Option<R>> = jobs.iter().map(|_| None).collect();
    // Each pool's scope holds the next one's, so the innermost returns only when every pool's
    // job has finished; the calling thread only waits.
    fn spawn_each<'a, T: Send, R: Send>(
        pools: &[rayon::ThreadPool],
        mut work: Vec<(T, &'a mut Option<R>)>,
        run: &'a (impl Fn(T) -> R + Sync),
    ) {
        let (Some((job, slot)), Some((pool, rest))) = (work.pop(), pools.split_last()) else {
            return;
        };
        pool.in_place_scope(|scope| {
            scope.spawn(move |_| *slot = Some(run(job)));
            spawn_each(rest, work, run);
        });
    }
    spawn_each(
        pools,
        jobs.into_iter().zip(results.iter_mut()).collect(),
        run,
    );
    results
        .into_iter()
        .map(|r| r.expect("every pool ran its job"))
        .collect()
}

/// One rayon pool of one thread for each of `shards` slices: what `loss_and_grads` runs them in
/// to run them at once.
fn shard_pools(shards: usize) -> Result<Vec<rayon::ThreadPool>, rayon::ThreadPoolBuildError> {
    (0..shards)
        .map(|_| rayon::ThreadPoolBuilder::new().num_threads(1).build())
        .collect()
}

/// One slice's mean cross-entropy, times `share` when given, and the gradients of that.
fn slice_loss_and_grads(
    model: &Gpt,
    inputs: Tensor<2, Int>,
    targets: Tensor<2, Int>,
    share: Option<f64>,
) -> (Tensor<1>, burn::tensor::Gradients) {
    let loss_fn = CrossEntropyLossConfig::new().init(&inputs.device());
    let logits = model.forward(inputs);
    let [b, len, vocab] = logits.dims();
    let mut loss = loss_fn.forward(logits.reshape([b * len, vocab]), targets.reshape([b * len]));
    if let Some(share) = share {
        loss = loss.mul_scalar(share);
    }
    let grads = loss.backward();
    (loss.detach(), grads)
}

/// Adds every gradient in `from` to the same parameter's in `into`.
struct AddGrads<'a> {
    into: &'a mut GradientsParams,
    from: &'a mut GradientsParams,
}

impl ModuleVisitor for AddGrads<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(grad) = self.from.remove::<D>(param.id) {
            let sum = match self.into.remove::<D>(param.id) {
                Some(into) => into + grad,
                None => grad,
            };
            self.into.register(param.id, sum);
        }
    }
}

/// The inputs and next-token targets of `step`, each `[batch, tokens]`.
fn batch(batches: &mut Batches, step: usize, device: &Device) -> (Tensor<2, Int>, Tensor<2, Int>) {
    let (inputs, targets, tokens) = batches.next(step);
    let shape = [inputs.len() / tokens, tokens];
    (
        Tensor::from_data(TensorData::new(inputs, shape), device),
        Tensor::from_data(TensorData::new(targets, shape), device),
    )
}

/// Steps of a schedule: every `every` steps, plus 1, 2, 4, ... below `every` when `log_spaced`.
pub fn scheduled(step: usize, every: usize, log_spaced: bool) -> bool {
    every > 0
        && step > 0
        && (step.is_multiple_of(every) || (log_spaced && step < every && step.is_power_of_two()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelConfig;
    use burn::module::ParamId;

    fn tiny_model(device: &Device) -> Gpt {
        ModelConfig {
            layers: 1,
            d_model: 8,
            heads: 2,
            d_ff: 16,
            seq_len: 4,
            ..ModelConfig::default()
        }
        .init(7, device)
    }

    /// Registers, for the k-th float parameter, a gradient of its shape filled with 0.1 (k + 1);
    /// keeps each fill and the sum of squares they make.
    struct FillGrads<'a> {
        grads: &'a mut GradientsParams,
        device: Device,
        fills: Vec<(ParamId, f64)>,
        squares: f64,
    }

    impl ModuleVisitor for FillGrads<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let value = 0.1 * (self.fills.len() + 1) as f64;
            let shape = param.val().shape();
            self.squares += shape.num_elements() as f64 * value * value;
            self.grads
                .register(param.id, Tensor::<D>::full(shape, value, &self.device));
            self.fills.push((param.id, value));
        }
    }

    /// Every gradient's values, by parameter.
    struct ReadGrads<'a> {
        grads: &'a GradientsParams,
        values: Vec<(ParamId, Vec<f32>)>,
    }

    impl ModuleVisitor for ReadGrads<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let grad = self.grads.get::<D>(param.id).unwrap();
            self.values
                .push((param.id, grad.into_data().try_to_vec::<f32>().unwrap()));
        }
    }

    fn filled(model: &Gpt) -> (GradientsParams, Vec<(ParamId, f64)>, f64) {
        let mut grads = GradientsParams::new();
        let mut fill = FillGrads {
            grads: &mut grads,
            device: Device::flex(),
            fills: Vec::new(),
            squares: 0.0,
        };
        model.visit(&mut fill);
        let (fills, squares) = (fill.fills, fill.squares);
        (grads, fills, squares)
    }

    /// Against the norm computed by hand from the fills: sqrt(sum over parameters of
    /// elements x fill^2), and every gradient scaled by max_norm / (norm + 1e-6) (PyTorch's
    /// clip_grad_norm_), only when the norm is above max_norm.
    #[test]
    fn clipping_uses_the_global_norm_of_all_gradients() {
        let model = tiny_model(&Device::flex().autodiff());
        for max_norm in [1.0, 1e6, 0.0] {
            let (mut grads, fills, squares) = filled(&model);
            assert!(fills.len() > 10, "every parameter has a gradient");
            let norm = clip_global_norm(&model, &mut grads, max_norm)
                .unwrap()
                .into_scalar::<f32>() as f64;
            let want = squares.sqrt();
            assert!((norm - want).abs() <= 1e-5 * want, "{norm} vs {want}");
            let factor = if max_norm > 0.0 && max_norm < want {
                max_norm / (want + 1e-6)
            } else {
                1.0
            };
            let mut read = ReadGrads {
                grads: &grads,
                values: Vec::new(),
            };
            model.visit(&mut read);
            for ((id, values), (fill_id, fill)) in read.values.iter().zip(&fills) {
                assert_eq!(id, fill_id);
                for &v in values {
                    assert!(
                        (v as f64 - fill * factor).abs() <= 1e-6 * fill,
                        "{v} vs {}",
                        fill * factor
                    );
                }
            }
        }
    }

    /// Every float parameter's values, by path (the module names entered down to it).
    #[derive(Default)]
    struct Values {
        path: Vec<String>,
        values: Vec<(String, Vec<f32>)>,
    }

    impl ModuleVisitor for Values {
        fn enter_module(&mut self, name: &str, _container_type: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let data = param.val().into_data().convert::<f32>();
            self.values
                .push((self.path.join("."), data.try_to_vec::<f32>().unwrap()));
        }
    }

    fn values(model: &Gpt) -> Vec<(String, Vec<f32>)> {
        let mut v = Values::default();
        model.visit(&mut v);
        v.values
    }

    /// With zero gradients AdamW's step is its decoupled decay alone: a decayed parameter is
    /// multiplied by 1 - lr x weight_decay, an exempt one stays. `matrices` exempts exactly the
    /// rank-1 parameters (biases and LayerNorm gammas and betas); `all` exempts none.
    #[test]
    fn weight_decay_skips_biases_and_norms_by_default() {
        let device = Device::flex().autodiff();
        for decay in [DecayParams::Matrices, DecayParams::All] {
            let model = tiny_model(&device);
            let before = values(&model);
            let inputs =
                Tensor::<2, Int>::from_data(TensorData::new(vec![1i64, 2, 3], [1, 3]), &device);
            let loss = model.forward(inputs).sum().mul_scalar(0.0);
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            let t = TrainConfig {
                weight_decay: 0.5,
                decay,
                ..TrainConfig::default()
            };
            let after = values(&optimizer(&t).step(0.1, model, grads));
            let (mut decayed, mut kept) = (0, 0);
            for ((path, b), (same, a)) in before.iter().zip(&after) {
                assert_eq!(path, same);
                let rank1 =
                    path.ends_with("bias") || path.ends_with("gamma") || path.ends_with("beta");
                let factor = if decay == DecayParams::Matrices && rank1 {
                    kept += 1;
                    1.0
                } else {
                    decayed += 1;
                    0.95
                };
                for (x, y) in b.iter().zip(a) {
                    assert!(
                        (x * factor - y).abs() <= 1e-6 * x.abs().max(1e-3),
                        "{path}: {x} -> {y}"
                    );
                }
            }
            assert!(decayed > 4, "{decay:?}");
            if decay == DecayParams::Matrices {
                assert!(kept > 4);
            }
        }
    }

    /// Every gradient's values in `model`'s parameter order.
    fn grad_values(model: &Gpt, grads: &GradientsParams) -> Vec<Vec<f32>> {
        let mut read = ReadGrads {
            grads,
            values: Vec::new(),
        };
        model.visit(&mut read);
        read.values.into_iter().map(|(_, v)| v).collect()
    }

    /// Splitting the batch changes only the rounding: against the whole batch, the loss and every
    /// gradient agree within 1e-5 (relative to the largest entry of the gradient) for 2 and 3
    /// shards (5 sequences: slices of 3 + 2 and 2 + 2 + 1), and the shards' threads add nothing
    /// of their own: concurrent and one-after-the-other give the same bits.
    #[test]
    fn sharded_steps_compute_the_whole_batch_gradient() {
        let device = Device::flex().autodiff();
        device.seed(3);
        let model = tiny_model(&device);
        let tokens: Vec<i64> = (0..5 * 4).map(|i| (i * 3 % 7) as i64).collect();
        let targets: Vec<i64> = (0..5 * 4).map(|i| (i * 5 % 7) as i64).collect();
        let batch = || {
            (
                Tensor::<2, Int>::from_data(TensorData::new(tokens.clone(), [5, 4]), &device),
                Tensor::<2, Int>::from_data(TensorData::new(targets.clone(), [5, 4]), &device),
            )
        };
        let step = |shards, concurrent: bool| {
            let (inputs, targets) = batch();
            let pools = if concurrent {
                shard_pools(shards).unwrap()
            } else {
                Vec::new()
            };
            let (loss, grads) = loss_and_grads(&model, inputs, targets, shards, &pools);
            (loss.into_scalar::<f32>(), grad_values(&model, &grads))
        };
        let (whole_loss, whole) = step(1, false);
        assert!(whole.len() > 10 && whole.iter().all(|g| !g.is_empty()));
        for shards in [2, 3] {
            let (loss, grads) = step(shards, true);
            assert!(
                (loss - whole_loss).abs() <= 1e-5 * whole_loss.abs(),
                "{loss} vs {whole_loss}"
            );
            for (g, w) in grads.iter().zip(&whole) {
                let scale = w.iter().fold(0f32, |m, x| m.max(x.abs()));
                assert!(scale > 0.0, "every parameter gets a gradient");
                for (a, b) in g.iter().zip(w) {
                    assert!((a - b).abs() <= 1e-5 * scale, "{shards} shards: {a} vs {b}");
                }
            }
            let (serial_loss, serial) = step(shards, false);
            assert_eq!(serial_loss.to_bits(), loss.to_bits());
            assert_eq!(serial, grads, "{shards} shards, concurrent against serial");
        }
    }

    /// The fused AdamW against Burn's, on the CPU backend: the same parameters, to the bit, after
    /// every one of six steps, for both decay settings, with a learning rate that changes every
    /// step, real gradients, and a step whose gradients hold zeros of both signs, tiny and huge
    /// values (a square that overflows to infinity among them). The moments are compared bit for
    /// bit in `adamw.rs`'s own test, one parameter at a time.
    #[test]
    fn fused_adamw_matches_burns_bit_for_bit() {
        let device = Device::flex().autodiff();
        for decay in [DecayParams::Matrices, DecayParams::All] {
            let t = TrainConfig {
                weight_decay: 0.1,
                decay,
                ..TrainConfig::default()
            };
            let burns =
                |decay: f64| adamw::burn_adamw(t.beta1 as f32, t.beta2 as f32, decay as f32);
            let mut fused = (tiny_model(&device), optimizer(&t));
            let mut burn = (fused.0.clone(), grouped(&t, burns));
            for step in 1..=6 {
                let lr = 1e-3 * step as f64 / 3.0;
                let grads = |model: &Gpt| {
                    if step == 4 {
                        return adversarial_grads(model);
                    }
                    let inputs = Tensor::<2, Int>::from_data(
                        TensorData::new(vec![1i64, 2, 3, (step % 7) as i64], [1, 4]),
                        &device,
                    );
                    let loss = model.forward(inputs).powi_scalar(2).sum();
                    GradientsParams::from_grads(loss.backward(), model)
                };
                let (fused_grads, burn_grads) = (grads(&fused.0), grads(&burn.0));
                fused.0 = fused.1.step(lr, fused.0, fused_grads);
                burn.0 = burn.1.step(lr, burn.0, burn_grads);
                let bits = |model: &Gpt| -> Vec<(String, Vec<u32>)> {
                    let to_bits = |(path, v): (String, Vec<f32>)| {
                        (path, v.iter().map(|x| x.to_bits()).collect())
                    };
                    values(model).into_iter().map(to_bits).collect()
                };
                let (a, b) = (bits(&fused.0), bits(&burn.0));
                assert!(a.len() > 10);
                for ((path, a), (_, b)) in a.iter().zip(&b) {
                    assert!(a == b, "{decay:?}, step {step}: {path} differs");
                }
            }
        }
    }

    /// For every parameter, gradients that cycle through `adamw::ADVERSARIAL_GRADS`.
    fn adversarial_grads(model: &Gpt) -> GradientsParams {
        struct Adversarial(GradientsParams);
        impl ModuleVisitor for Adversarial {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                let shape = param.val().shape();
                let values: Vec<f32> = adamw::ADVERSARIAL_GRADS
                    .iter()
                    .copied()
                    .cycle()
                    .take(shape.num_elements())
                    .collect();
                let grad = Tensor::<D>::from_data(TensorData::new(values, shape), &Device::flex());
                self.0.register(param.id, grad);
            }
        }
        let mut adversarial = Adversarial(GradientsParams::new());
        model.visit(&mut adversarial);
        adversarial.0
    }

    #[test]
    fn learning_rate_warms_up_then_decays_to_the_floor() {
        let t = TrainConfig {
            steps: 100,
            warmup_steps: 10,
            lr: 1e-3,
            min_lr: 1e-4,
            ..TrainConfig::default()
        };
        assert!((learning_rate(&t, 5) - 5e-4).abs() < 1e-12);
        assert!((learning_rate(&t, 10) - 1e-3).abs() < 1e-12);
        assert!((learning_rate(&t, 100) - 1e-4).abs() < 1e-12);
        assert!(learning_rate(&t, 50) < 1e-3 && learning_rate(&t, 50) > 1e-4);
    }

    #[test]
    fn evaluations_include_first_and_last_step_and_the_log_spaced_ones() {
        let yaml = include_str!("../experiments/quickstart.yaml");
        let mut config = Config::from_yaml(yaml, "q", &[]).unwrap();
        config.train.steps = 25;
        config.probes.every = 10;
        let steps: Vec<usize> = (0..=25).filter(|&s| is_eval_step(&config, s)).collect();
        assert_eq!(steps, vec![0, 10, 20, 25]);
        config.probes.log_spaced = true;
        let steps: Vec<usize> = (0..=25).filter(|&s| is_eval_step(&config, s)).collect();
        assert_eq!(steps, vec![0, 1, 2, 4, 8, 10, 20, 25]);
    }

    #[test]
    fn log_spaced_schedules_are_dense_early() {
        let steps: Vec<usize> = (0..=2100).filter(|&s| scheduled(s, 1000, true)).collect();
        assert_eq!(
            steps,
            vec![1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 2000]
        );
        let plain: Vec<usize> = (0..=25).filter(|&s| scheduled(s, 10, false)).collect();
        assert_eq!(plain, vec![10, 20]);
        assert!(
            !(0..100).any(|s| scheduled(s, 0, true)),
            "every: 0 schedules nothing"
        );
    }
}
