//! The model checks (`Family::Model`): the GPT's forward pass on the device against the CPU
//! backend, and one AdamW step with global-norm clipping.

use anyhow::Result;
use burn::module::{Module, ModuleVisitor, Param};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::GradientsParams;
use burn::prelude::*;
use rand::Rng;

use super::inputs::rng;
use super::reduction::download;
use super::{Context, Limit, Ran, number};
use crate::config::{ModelConfig, TrainConfig};
use crate::model::Gpt;
use crate::train::{clip_global_norm, optimizer};

/// A small GPT for the model checks: one block has every layer kind. Its sizes are the
/// end-to-end run's (`TINY_RUN`), so on a fresh machine the kernels compiled and tuned here serve
/// that run too (on llvmpipe, compiling and tuning is most of these checks' time).
fn small_model() -> (ModelConfig, usize) {
    let model = ModelConfig {
        layers: 1,
        d_model: 16,
        heads: 2,
        d_ff: 32,
        seq_len: 4,
        ..ModelConfig::default()
    };
    (model, 29)
}

/// `[batch, len]` token ids below `vocab`, from `seed`.
fn tokens(batch: usize, len: usize, vocab: usize, seed: u64, device: &Device) -> Tensor<2, Int> {
    let mut r = rng(seed);
    let ids: Vec<i64> = (0..batch * len)
        .map(|_| r.random_range(0..vocab as i64))
        .collect();
    Tensor::from_data(TensorData::new(ids, [batch, len]), device)
}

pub(super) fn forward_pass(context: &Context) -> Result<Ran> {
    if !context.device.measures_on_device() {
        return Ok(Ran::Skipped(
            "the chosen device is the CPU backend, the reference this check compares with".into(),
        ));
    }
    let (config, vocab) = small_model();
    let cpu = Device::flex();
    cpu.seed(5);
    let model = config.init(vocab, &cpu);
    // The end-to-end run's probe batches: 16 samples of the rule graph's 3-token prompts.
    let (batch, len) = (16, 3);
    let want = download(model.forward(tokens(batch, len, vocab, 6, &cpu)));
    let device = &context.device.device;
    let on_device = model.to_device(device);
    let got = download(on_device.forward(tokens(batch, len, vocab, 6, device)));
    // Two blocks of f32 matrix products summed in another order: agreement to about 1e-5 of the
    // logits' scale is expected; 1e-4 leaves room for fused kernels, not for a wrong result.
    let scale = want.iter().fold(0.0f64, |m, &w| m.max(f64::from(w).abs()));
    let tolerance = 1e-4 * scale.max(1.0);
    let mut tally = context.tally();
    for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
        tally.compare("logits", g.into(), w.into(), tolerance, || {
            format!("{batch} x {len} x {vocab} logits, entry {i}")
        });
    }
    Ok(Ran::Compared(tally))
}

/// Every float parameter's values, in visiting order.
#[derive(Default)]
struct ParameterValues(Vec<f32>);

impl ModuleVisitor for ParameterValues {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.0.extend(download(param.val()));
    }
}

fn parameter_values(model: &Gpt) -> Vec<f32> {
    let mut values = ParameterValues::default();
    model.visit(&mut values);
    values.0
}

pub(super) fn train_step(context: &Context) -> Result<Ran> {
    let (config, vocab) = small_model();
    let device = context.device.device.clone().autodiff();
    device.seed(5);
    let model = config.init(vocab, &device);
    // The end-to-end run's training batches: 8 sequences of 3 tokens.
    let (batch, len) = (8, 3);
    let inputs = tokens(batch, len, vocab, 6, &device);
    let targets = tokens(batch, len, vocab, 7, &device);
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let loss_of = |model: &Gpt| {
        let logits = model.forward(inputs.clone());
        loss_fn.forward(
            logits.reshape([batch * len, vocab]),
            targets.clone().reshape([batch * len]),
        )
    };
    let loss = loss_of(&model);
    let before = f64::from(loss.clone().into_scalar::<f32>());
    let mut grads = GradientsParams::from_grads(loss.backward(), &model);
    let norm = clip_global_norm(&model, &mut grads, 1.0)
        .map_or(f64::NAN, |n| f64::from(n.into_scalar::<f32>()));
    let params_before = parameter_values(&model);
    let train = TrainConfig::default();
    let model = optimizer(&train).step(train.lr, model, grads);
    let moved = parameter_values(&model)
        .iter()
        .zip(&params_before)
        .fold(0.0f64, |m, (a, b)| m.max(f64::from((a - b).abs())));
    let after = f64::from(loss_of(&model).into_scalar::<f32>());

    let mut tally = context.tally();
    let ln_vocab = (vocab as f64).ln();
    // At initialisation the logits have a standard deviation of about 0.6, so the loss sits
    // about 0.2 above ln(vocab); a wrong forward pass lands far from it (or at NaN).
    tally.bound(
        "initial loss - ln(vocab)",
        (before - ln_vocab).abs(),
        Limit::AtMost(1.0),
        format!("loss {}, ln({vocab}) {}", number(before), number(ln_vocab)),
    );
    tally.bound(
        "gradient norm",
        norm,
        Limit::Above(0.0),
        "global L2 norm before clipping at 1".into(),
    );
    tally.bound(
        "largest parameter change",
        moved,
        Limit::Above(0.0),
        format!("AdamW at lr {}", train.lr),
    );
    tally.bound(
        "loss after - before",
        after - before,
        Limit::Below(0.0),
        format!("same batch: {} -> {}", number(before), number(after)),
    );
    Ok(Ran::Compared(tally))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::data::Dataset;
    use crate::selftest::end_to_end::TINY_RUN;

    /// The model checks' GPT is the end-to-end run's, so the kernels they compile serve it.
    #[test]
    fn the_small_model_is_the_end_to_end_runs() {
        let config = Config::from_yaml(TINY_RUN, "TINY_RUN", &[]).unwrap();
        let (model, vocab) = small_model();
        assert_eq!(config.model, model);
        assert_eq!(Dataset::prepare(&config, None).unwrap().vocab_size, vocab);
    }
}
