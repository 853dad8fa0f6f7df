//! The training loop, in the style of Burn's custom-training-loop example: AdamW, linear warm-up
//! then cosine decay, a fixed step budget, seeded data order. It knows nothing about sinks: it
//! hands each logged step and each evaluation point to the caller.

use std::time::Instant;

use anyhow::Result;
use burn::grad_clipping::GradientClippingConfig;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;

use crate::config::{Config, TrainConfig};
use crate::data::rulegraph::{FactStream, KnowledgeBase, PROMPT_LEN};
use crate::model::Gpt;
use crate::progress::Progress;
use crate::sink::TrainRow;

/// Linear warm-up to `lr` over `warmup_steps`, then cosine decay to `min_lr` at the last step.
pub fn learning_rate(t: &TrainConfig, step: usize) -> f64 {
    if step <= t.warmup_steps {
        return t.lr * step as f64 / t.warmup_steps.max(1) as f64;
    }
    let decay_steps = (t.steps - t.warmup_steps).max(1) as f64;
    let progress = ((step - t.warmup_steps) as f64 / decay_steps).min(1.0);
    t.min_lr + 0.5 * (t.lr - t.min_lr) * (1.0 + (std::f64::consts::PI * progress).cos())
}

/// Steps at which the probes run: 0, every `every` steps, and the last step.
pub fn is_eval_step(step: usize, every: usize, last: usize) -> bool {
    step == 0 || step % every == 0 || step == last
}

/// Tokens the model has been trained on after `step` steps.
pub fn tokens_seen(t: &TrainConfig, step: usize) -> i64 {
    (step * t.batch_size * PROMPT_LEN) as i64
}

/// Trains a fresh model; at every evaluation step, step 0 included, calls `on_eval` with the model
/// without autodiff and the train rows logged since the previous call. Returns the trained model.
pub fn train(
    config: &Config,
    kb: &KnowledgeBase,
    device: &Device,
    progress: &Progress,
    mut on_eval: impl FnMut(usize, &Gpt, &[TrainRow]) -> Result<()>,
) -> Result<Gpt> {
    let t = &config.train;
    let device = device.clone().autodiff();
    device.seed(config.seed);
    let mut model = config.model.init(kb.vocab_size(), &device);
    let mut optimizer = AdamWConfig::new()
        .with_beta_1(t.beta1 as f32)
        .with_beta_2(t.beta2 as f32)
        .with_weight_decay(t.weight_decay as f32)
        .with_grad_clipping(
            (t.grad_clip > 0.0).then(|| GradientClippingConfig::Norm(t.grad_clip as f32)),
        )
        .init();
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let mut stream = FactStream::new(kb.train.len(), config.seed);
    let started = Instant::now();

    let mut logged_rows = Vec::new();
    on_eval(0, &model.valid(), &logged_rows)?;
    let mut window = (Instant::now(), 0usize);
    for step in 1..=t.steps {
        let (inputs, targets) = batch(kb, &stream.next_batch(t.batch_size), &device);
        let logits = model.forward(inputs);
        let [b, len, vocab] = logits.dims();
        let loss = loss_fn.forward(logits.reshape([b * len, vocab]), targets.reshape([b * len]));
        let logged = step % t.log_every == 0 || step == t.steps;
        let loss_value = logged.then(|| loss.clone());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let lr = learning_rate(t, step);
        model = optimizer.step(lr, model, grads);

        if let Some(loss) = loss_value {
            // Reading the loss waits for the device, so the rate covers finished work.
            let loss = loss.into_scalar::<f32>() as f64;
            let tokens = ((step - window.1) * t.batch_size * PROMPT_LEN) as f64;
            let tokens_per_s = tokens / window.0.elapsed().as_secs_f64();
            window = (Instant::now(), step);
            progress.train_step(step, loss, tokens_per_s);
            logged_rows.push(TrainRow {
                step: step as i64,
                tokens_seen: tokens_seen(t, step),
                loss,
                lr,
                tokens_per_s,
                wall_time: started.elapsed().as_secs_f64(),
            });
        } else {
            progress.set_step(step);
        }
        if is_eval_step(step, config.probes.every, t.steps) {
            on_eval(step, &model.valid(), &logged_rows)?;
            logged_rows.clear();
            window.0 = Instant::now();
        }
    }
    Ok(model.valid())
}

/// Inputs `BOS head relation` and their next tokens `head relation tail`, each `[batch, 3]`.
fn batch(
    kb: &KnowledgeBase,
    indices: &[usize],
    device: &Device,
) -> (Tensor<2, Int>, Tensor<2, Int>) {
    let mut inputs = Vec::with_capacity(indices.len() * PROMPT_LEN);
    let mut targets = Vec::with_capacity(indices.len() * PROMPT_LEN);
    for &i in indices {
        let fact = &kb.train[i];
        let prompt = kb.prompt(fact);
        inputs.extend(prompt.iter().map(|&t| t as i64));
        targets.extend(prompt[1..].iter().map(|&t| t as i64));
        targets.push(kb.answer(fact) as i64);
    }
    let shape = [indices.len(), PROMPT_LEN];
    (
        Tensor::from_data(TensorData::new(inputs, shape), device),
        Tensor::from_data(TensorData::new(targets, shape), device),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn evaluations_include_first_and_last_step() {
        let steps: Vec<usize> = (0..=25).filter(|&s| is_eval_step(s, 10, 25)).collect();
        assert_eq!(steps, vec![0, 10, 20, 25]);
    }
}
