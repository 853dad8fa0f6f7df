//! Scoring a probe set's answers on the `logits` site: which logits metrics it has, the
//! multiple-choice options' scores, the metrics' mean and std over samples, and the rule graph's
//! frequency prior as a baseline.

use burn::prelude::*;
use burn::tensor::activation::log_softmax;

use super::forward::{Losses, int_tensor};
use crate::data::probes::ProbeSet;
use crate::data::rulegraph::Prior;
use crate::metrics::LogitsMetric;
use crate::model::Gpt;

/// The logits-site metrics of a probe set, in the order `answer_stats` computes them:
/// `next_token_loss` and `prompt_loss` always; `answer_loss` and `answer_acc` for rule-graph
/// answers; `choice_acc` for multiple choice.
pub fn answer_metrics(probe: &ProbeSet) -> Vec<LogitsMetric> {
    let mut metrics = vec![LogitsMetric::NextTokenLoss, LogitsMetric::PromptLoss];
    if probe.has_answer {
        metrics.extend([LogitsMetric::AnswerLoss, LogitsMetric::AnswerAcc]);
    }
    if probe.options.is_some() {
        metrics.push(LogitsMetric::ChoiceAcc);
    }
    metrics
}

/// For multiple choice, `[samples, k]`: each option's mean log-probability per token (minus its
/// length-normalised cross-entropy) as the continuation of the sample's input. Single-token
/// options read it off the last position's `logits`; longer ones take a forward pass per option.
pub(super) fn option_scores(
    model: &Gpt,
    probe: &ProbeSet,
    logits: &Tensor<2>,
    batch_tokens: usize,
    device: &Device,
) -> Option<Tensor<2>> {
    let options = probe.options.as_ref()?;
    let (n, k, m, len) = (
        probe.samples(),
        probe.option_count(),
        probe.option_len,
        probe.len,
    );
    if m == 1 {
        let ids = int_tensor(options.iter().map(|&t| t as i64).collect(), [n, k], device);
        return Some(log_softmax(logits.clone(), 1).gather(1, ids));
    }
    // Row (i, j): sample i's input, then option j but its last token; the last m positions
    // predict option j's tokens.
    let read = len + m - 1;
    let per_batch = (batch_tokens / read).max(1);
    let rows: Vec<(usize, usize)> = (0..n).flat_map(|i| (0..k).map(move |j| (i, j))).collect();
    let mut scores = Vec::new();
    for chunk in rows.chunks(per_batch) {
        let (mut inputs, mut targets) = (Vec::new(), Vec::new());
        for &(i, j) in chunk {
            let option = &options[(i * k + j) * m..(i * k + j + 1) * m];
            inputs.extend(probe.sample(i)[..len].iter().map(|&t| t as i64));
            inputs.extend(option[..m - 1].iter().map(|&t| t as i64));
            targets.extend(option.iter().map(|&t| t as i64));
        }
        let b = chunk.len();
        let l = model.forward(int_tensor(inputs, [b, read], device));
        let v = l.dims()[2];
        let tail = l.slice([0..b, len - 1..read, 0..v]);
        let targets = int_tensor(targets, [b, m, 1], device);
        let logp = log_softmax(tail, 2).gather(2, targets);
        scores.push(logp.mean_dim(1).reshape([b]));
    }
    Some(Tensor::cat(scores, 0).reshape([n, k]))
}

/// `[2 * answer_metrics(probe).len()]`: the mean and sample std over samples of each metric.
/// Multiple choice picks the option with the highest score (`option_scores`: the lowest
/// length-normalised cross-entropy).
pub(super) fn answer_stats(
    logits: Tensor<2>,
    losses: Losses,
    scores: Option<Tensor<2>>,
    probe: &ProbeSet,
    device: &Device,
) -> Tensor<1> {
    let n = probe.samples();
    let stats = |x: Tensor<2>| {
        let x = x.reshape([n]);
        let std = if n > 1 {
            x.clone().var(0).sqrt()
        } else {
            Tensor::<1>::from_floats([f32::NAN], device)
        };
        Tensor::cat(vec![x.mean().reshape([1]), std], 0)
    };
    let mut parts = vec![
        stats(losses.sequence.reshape([n, 1])),
        stats(losses.prompt.reshape([n, 1])),
    ];
    if probe.has_answer {
        let answers = int_tensor(
            (0..n).map(|i| probe.sample(i)[probe.len] as i64).collect(),
            [n, 1],
            device,
        );
        let loss = -log_softmax(logits.clone(), 1).gather(1, answers.clone());
        let correct = logits.clone().argmax(1).equal(answers).float();
        parts.extend([stats(loss), stats(correct)]);
    }
    if let (Some(scores), Some(correct)) = (scores, &probe.correct) {
        let correct = int_tensor(correct.iter().map(|&c| c as i64).collect(), [n, 1], device);
        parts.push(stats(scores.argmax(1).equal(correct).float()));
    }
    Tensor::cat(parts, 0)
}

/// `prior_acc` of an answered probe set: the mean and sample std over samples of whether the
/// prior's answer after the sample's last read token is the sample's answer (a token with no
/// prior answer counts as wrong).
pub fn prior_stats(prior: &Prior, probe: &ProbeSet) -> (f64, f64) {
    let n = probe.samples();
    let hits: Vec<f64> = (0..n)
        .map(|i| {
            let s = probe.sample(i);
            (prior.answer(s[probe.last_index()]) == Some(s[probe.len])) as u8 as f64
        })
        .collect();
    let mean = hits.iter().sum::<f64>() / n.max(1) as f64;
    let std = if n > 1 {
        (hits.iter().map(|h| (h - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
    } else {
        f64::NAN
    };
    (mean, std)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ModelConfig, ShiftFamily};
    use crate::measure::forward::forward;

    /// Log-softmax in f64 of one row of logits.
    fn log_probs(row: &[f32]) -> Vec<f64> {
        let max = row.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
        let sum: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
        row.iter().map(|&x| x as f64 - max - sum.ln()).collect()
    }

    /// `prior_acc` of a set of held-out facts against a brute-force count over the training
    /// facts: the share of samples whose answer is the most common training tail of the
    /// sample's relation (ties: the smallest entity id).
    #[test]
    fn prior_acc_matches_a_brute_force_count_over_the_training_facts() {
        use crate::config::{DeductionConfig, RuleGraphConfig};
        use crate::data::rulegraph::KnowledgeBase;
        let kb = KnowledgeBase::generate(
            &RuleGraphConfig {
                entities: 30,
                relations: 3,
                deduction: Some(DeductionConfig::default()),
                ..RuleGraphConfig::default()
            },
            6,
        );
        let prior = Prior::new(&kb);
        let mut facts = kb.held_out.clone();
        facts.extend(kb.train.iter().step_by(7));
        let tokens: Vec<u32> = facts.iter().flat_map(|f| kb.sequence(f)).collect();
        let probe = ProbeSet {
            name: "p".into(),
            family: ShiftFamily::Hops,
            level: 2.0,
            len: 3,
            tokens,
            has_answer: true,
            options: None,
            option_len: 1,
            correct: None,
            distance: 0.0,
            novelty: 0.0,
        };
        let hits: Vec<f64> = facts
            .iter()
            .map(|fact| {
                let count = |tail: u32| {
                    kb.train
                        .iter()
                        .filter(|f| f.relation == fact.relation && f.tail == tail)
                        .count()
                };
                let most = (0..kb.entities as u32).map(count).max().unwrap();
                let first = (0..kb.entities as u32).find(|&t| count(t) == most).unwrap();
                (first == fact.tail) as u8 as f64
            })
            .collect();
        let n = hits.len() as f64;
        let mean = hits.iter().sum::<f64>() / n;
        let std = (hits.iter().map(|h| (h - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
        let (got_mean, got_std) = prior_stats(&prior, &probe);
        assert!(mean > 0.0 && mean < 1.0, "{mean}: a test that can tell");
        assert!((got_mean - mean).abs() < 1e-12, "{got_mean} vs {mean}");
        assert!((got_std - std).abs() < 1e-12, "{got_std} vs {std}");
    }

    /// next_token_loss, answer_loss, answer_acc and choice_acc against a direct computation from
    /// the model's logits, with samples split over several forward passes; options of one token
    /// (read off the last position) and of three (scored by their own forward passes).
    #[test]
    fn logits_metrics_match_a_direct_computation() {
        for option_len in [1, 3] {
            check_logits_metrics(option_len);
        }
    }

    fn check_logits_metrics(m: usize) {
        let device = Device::flex();
        let vocab = 11;
        let model = ModelConfig {
            layers: 1,
            d_model: 8,
            heads: 2,
            d_ff: 16,
            seq_len: 8,
            ..ModelConfig::default()
        }
        .init(vocab, &device);
        let (samples, len, k) = (5, 4, 3);
        let tokens: Vec<u32> = (0..samples * (len + 1))
            .map(|i| (i * 7 % vocab) as u32)
            .collect();
        let options: Vec<u32> = (0..samples * k * m)
            .map(|i| (i * 5 % vocab) as u32)
            .collect();
        let correct: Vec<u32> = (0..samples).map(|i| (i % k) as u32).collect();
        let probe = ProbeSet {
            name: "t".into(),
            family: ShiftFamily::Options,
            level: k as f64,
            len,
            tokens: tokens.clone(),
            has_answer: true,
            options: Some(options.clone()),
            option_len: m,
            correct: Some(correct.clone()),
            distance: 0.0,
            novelty: 0.0,
        };
        // Two samples (or two options) per forward pass: several passes.
        let (logits, losses, _) = forward(&model, &probe, 2 * len, &device);
        let scores = option_scores(&model, &probe, &logits, 2 * (len + m - 1), &device);
        let got: Vec<f32> = answer_stats(logits, losses, scores, &probe, &device)
            .into_data()
            .try_to_vec()
            .unwrap();

        // The logits of `sequence`, row by position.
        let logits_of = |sequence: &[u32]| -> Vec<Vec<f32>> {
            let t = sequence.len();
            let ids: Vec<i64> = sequence.iter().map(|&x| x as i64).collect();
            let all = model
                .forward(Tensor::<2, Int>::from_data(
                    TensorData::new(ids, [1, t]),
                    &device,
                ))
                .into_data()
                .try_to_vec::<f32>()
                .unwrap();
            all.chunks(vocab).map(<[f32]>::to_vec).collect()
        };
        let (mut next, mut prompt, mut answer) = (vec![], vec![], vec![]);
        let (mut acc, mut choice) = (vec![], vec![]);
        for i in 0..samples {
            let sample = &tokens[i * (len + 1)..(i + 1) * (len + 1)];
            let rows = logits_of(&sample[..len]);
            let per_position: Vec<f64> = (0..len)
                .map(|p| -log_probs(&rows[p])[sample[p + 1] as usize])
                .collect();
            next.push(per_position.iter().sum::<f64>() / len as f64);
            // The prompt is the first `len` tokens: positions 0..len-1 predict its own tokens.
            let last = probe.last_index();
            prompt.push(per_position[..last].iter().sum::<f64>() / last as f64);
            answer.push(per_position[len - 1]);
            let last = &rows[len - 1];
            let argmax = (0..vocab)
                .max_by(|&a, &b| last[a].total_cmp(&last[b]))
                .unwrap();
            acc.push((argmax == sample[len] as usize) as u8 as f64);
            // Each option: its tokens' mean log-probability after the sample's input.
            let score = |j: usize| -> f64 {
                let option = &options[(i * k + j) * m..(i * k + j + 1) * m];
                let mut sequence = sample[..len].to_vec();
                sequence.extend(&option[..m - 1]);
                let rows = logits_of(&sequence);
                (0..m)
                    .map(|t| log_probs(&rows[len - 1 + t])[option[t] as usize])
                    .sum::<f64>()
                    / m as f64
            };
            let best = (0..k)
                .max_by(|&a, &b| score(a).total_cmp(&score(b)))
                .unwrap();
            choice.push((best == correct[i] as usize) as u8 as f64);
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let expected = [
            mean(&next),
            mean(&prompt),
            mean(&answer),
            mean(&acc),
            mean(&choice),
        ];
        for (j, e) in expected.iter().enumerate() {
            let g = got[2 * j] as f64;
            assert!(
                (g - e).abs() < 1e-5 * (1.0 + e.abs()),
                "option_len {m}, metric {j}: {g} vs {e}"
            );
        }
        assert_eq!(got.len(), 10);
        assert!(
            expected[0] != expected[1] && expected[0] != expected[2] && expected[1] != expected[2],
            "the test cannot tell all positions, the prompt's and the last apart"
        );
    }
}
