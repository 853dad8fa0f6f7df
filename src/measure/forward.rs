//! The forward passes of an evaluation: each probe set through the model in batches, its
//! losses, last-position logits and the configured sites' activations, cut to the vectors each
//! position measures, all still on the device.

use burn::prelude::*;
use burn::tensor::activation::log_softmax;

use super::Probing;
use super::answers::{answer_stats, option_scores};
use crate::data::probes::ProbeSet;
use crate::metrics::{Position, SiteKind};
use crate::model::{Gpt, Sites};

/// One measured tensor, before it is reduced: which probe set, site and position it belongs to.
pub(super) struct Measured {
    pub(super) probe: usize,
    pub(super) layer: i32,
    pub(super) site: String,
    pub(super) position: Position,
    /// Whether its per-vector table goes to `samples/`.
    pub(super) per_sample: bool,
    /// `[vectors, width]`.
    pub(super) vectors: Tensor<2>,
}

/// One probe set's logits-site tensors, still on the device.
pub(super) struct Answers {
    /// `answer_stats`: the mean and std of each of `answer_metrics(probe)`.
    pub(super) stats: Tensor<1>,
    /// When any site writes samples, each sample's losses `[2 * samples]`: all its
    /// `next_token_loss`, then all its `prompt_loss`.
    pub(super) losses: Option<Tensor<1>>,
}

impl Probing<'_> {
    /// The forward passes: every probe set's site tensors at every configured position, its
    /// answer statistics (`answer_stats`) and, when any site writes samples, each sample's
    /// losses `[2 * samples]` (`next_token_loss`, then `prompt_loss`: the baseline detectors a
    /// density score is compared with), all still on the device.
    pub(super) fn forward_all(&self, model: &Gpt) -> (Vec<Measured>, Vec<Answers>) {
        let mut measured = Vec::new();
        let mut answers = Vec::new();
        for (p, probe) in self.sets.iter().enumerate() {
            let (logits, losses, sites) = forward(model, probe, self.batch_tokens, self.device);
            let scores = option_scores(model, probe, &logits, self.batch_tokens, self.device);
            let sample_losses = self
                .plan
                .writes_samples()
                .then(|| Tensor::cat(vec![losses.sequence.clone(), losses.prompt.clone()], 0));
            let stats = answer_stats(logits, losses, scores, probe, self.device);
            answers.push(Answers {
                stats,
                losses: sample_losses,
            });
            for site in named_sites(sites, &self.plan.sites, self.layers) {
                for &position in &self.plan.positions {
                    let vectors = vectors_at(&site.acts, position, probe.last_index());
                    measured.push(Measured {
                        probe: p,
                        layer: site.layer,
                        site: site.name.clone(),
                        position,
                        per_sample: self.plan.per_sample.covers(site.kind, position),
                        vectors,
                    });
                }
            }
        }
        (measured, answers)
    }
}

/// `[samples, tokens, width]` site activations -> `[vectors, width]` at `position`: the last
/// prompt token of each sample, or every token (vector = sample * tokens + token).
pub fn vectors_at(acts: &Tensor<3>, position: Position, last: usize) -> Tensor<2> {
    let [n, t, d] = acts.dims();
    match position {
        Position::Last => acts
            .clone()
            .slice([0..n, last..last + 1, 0..d])
            .reshape([n, d]),
        Position::All => acts.clone().reshape([n * t, d]),
    }
}

/// Each sample's mean next-token losses `[samples]`.
pub struct Losses {
    /// Over every target of the sample (`LogitsMetric::NextTokenLoss`).
    pub sequence: Tensor<1>,
    /// Over the targets inside the prompt (`LogitsMetric::PromptLoss`).
    pub prompt: Tensor<1>,
}

/// Runs a probe set through the model in batches of about `batch_tokens` tokens; returns the
/// last-position logits `[samples, vocab]`, each sample's losses, and each site's activations
/// `[samples, tokens, width]`.
pub fn forward(
    model: &Gpt,
    probe: &ProbeSet,
    batch_tokens: usize,
    device: &Device,
) -> (Tensor<2>, Losses, Sites) {
    let (len, last) = (probe.len, probe.last_index());
    let per_batch = (batch_tokens / len).max(1);
    let mut logits = Vec::new();
    let mut losses = Vec::new();
    let mut prompt_losses = Vec::new();
    let mut parts: Vec<Sites> = Vec::new();
    for chunk in probe.tokens.chunks(per_batch * (len + 1)) {
        let n = chunk.len() / (len + 1);
        let mut inputs = Vec::with_capacity(n * len);
        let mut targets = Vec::with_capacity(n * len);
        for sample in chunk.chunks(len + 1) {
            inputs.extend(sample[..len].iter().map(|&t| t as i64));
            targets.extend(sample[1..].iter().map(|&t| t as i64));
        }
        let inputs = int_tensor(inputs, [n, len], device);
        let targets = int_tensor(targets, [n, len, 1], device);
        let (l, sites) = model.forward_with_sites(inputs);
        let v = l.dims()[2];
        let nll = -log_softmax(l.clone(), 2).gather(2, targets);
        // Positions 0..last predict the prompt's own tokens 1..=last.
        prompt_losses.push(if last > 0 {
            nll.clone()
                .slice([0..n, 0..last, 0..1])
                .mean_dim(1)
                .reshape([n])
        } else {
            Tensor::<1>::full([n], f32::NAN, device)
        });
        losses.push(nll.mean_dim(1).reshape([n]));
        logits.push(l.slice([0..n, last..last + 1, 0..v]).reshape([n, v]));
        parts.push(sites);
    }
    let cat = |pick: &dyn Fn(&Sites) -> Vec<Tensor<3>>| -> Vec<Tensor<3>> {
        let per_part: Vec<Vec<Tensor<3>>> = parts.iter().map(pick).collect();
        (0..per_part[0].len())
            .map(|i| Tensor::cat(per_part.iter().map(|p| p[i].clone()).collect(), 0))
            .collect()
    };
    let sites = Sites {
        attn_out: cat(&|s| s.attn_out.clone()),
        mlp_post: cat(&|s| s.mlp_post.clone()),
        resid_post: cat(&|s| s.resid_post.clone()),
        final_norm: cat(&|s| s.final_norm.clone().into_iter().collect())
            .into_iter()
            .next(),
    };
    let losses = Losses {
        sequence: Tensor::cat(losses, 0),
        prompt: Tensor::cat(prompt_losses, 0),
    };
    (Tensor::cat(logits, 0), losses, sites)
}

/// One measured site of a forward pass.
pub struct NamedSite {
    /// The block index, or the number of blocks for `final.norm`.
    pub layer: i32,
    pub kind: SiteKind,
    /// `blocks.{i}.{kind}` or `final.norm`.
    pub name: String,
    /// `[samples, tokens, width]`.
    pub acts: Tensor<3>,
}

/// The configured sites with their layer index and full name, in a stable order.
pub fn named_sites(sites: Sites, kinds: &[SiteKind], layers: usize) -> Vec<NamedSite> {
    let mut out = Vec::new();
    for layer in 0..layers {
        for &kind in kinds {
            let acts = match kind {
                SiteKind::ResidPost => &sites.resid_post[layer],
                SiteKind::MlpPost => &sites.mlp_post[layer],
                SiteKind::AttnOut => &sites.attn_out[layer],
                SiteKind::FinalNorm => continue,
            };
            out.push(NamedSite {
                layer: layer as i32,
                kind,
                name: format!("blocks.{layer}.{}", kind.suffix()),
                acts: acts.clone(),
            });
        }
    }
    if kinds.contains(&SiteKind::FinalNorm) {
        out.push(NamedSite {
            layer: layers as i32,
            kind: SiteKind::FinalNorm,
            name: SiteKind::FinalNorm.suffix().to_string(),
            acts: sites
                .final_norm
                .expect("the forward pass records final.norm"),
        });
    }
    out
}

/// Token ids (or indices) as an Int tensor of `shape` on `device`.
pub(super) fn int_tensor<const D: usize>(
    values: Vec<i64>,
    shape: [usize; D],
    device: &Device,
) -> Tensor<D, Int> {
    Tensor::from_data(TensorData::new(values, shape), device)
}
