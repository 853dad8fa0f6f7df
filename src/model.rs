//! A decoder-only GPT, read top to bottom like nanoGPT's model.py: token + learned position
//! embeddings, pre-norm blocks of causal self-attention and an MLP, a final LayerNorm, an LM head.
//!
//! `forward_with_sites` also returns the activations the probes measure, by name:
//! `blocks.{i}.attn.out` (attention output before the residual add), `blocks.{i}.mlp.post` (the
//! MLP's hidden state after the nonlinearity), `blocks.{i}.resid_post` (the residual stream
//! after the block), and `final.norm` (the last hidden state after the final LayerNorm).

use burn::nn::{
    Dropout, DropoutConfig, Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear,
    LinearConfig,
};
use burn::prelude::*;
use burn::tensor::activation::{relu, silu, softmax};

use crate::config::{Activation, ModelConfig};

mod gelu;
use gelu::gelu;

#[derive(Module, Debug)]
pub struct Gpt {
    token_embedding: Embedding,
    position_embedding: Embedding,
    dropout: Dropout,
    blocks: Vec<Block>,
    final_norm: LayerNorm,
    lm_head: Linear,
}

#[derive(Module, Debug)]
struct Block {
    attn_norm: LayerNorm,
    attn: CausalSelfAttention,
    mlp_norm: LayerNorm,
    mlp: Mlp,
}

#[derive(Module, Debug)]
struct CausalSelfAttention {
    qkv: Linear,
    proj: Linear,
    dropout: Dropout,
    heads: usize,
}

#[derive(Module, Debug)]
struct Mlp {
    fc: Linear,
    proj: Linear,
    dropout: Dropout,
    #[module(skip)]
    activation: Activation,
}

/// The activations of one forward pass, each `[batch, tokens, width]`, one entry per block.
#[derive(Debug, Default)]
pub struct Sites {
    pub attn_out: Vec<Tensor<3>>,
    pub mlp_post: Vec<Tensor<3>>,
    pub resid_post: Vec<Tensor<3>>,
    pub final_norm: Option<Tensor<3>>,
}

impl ModelConfig {
    pub fn init(&self, vocab_size: usize, device: &Device) -> Gpt {
        let linear = |i, o| LinearConfig::new(i, o).init(device);
        let norm = || LayerNormConfig::new(self.d_model).init(device);
        let dropout = || DropoutConfig::new(self.dropout).init();
        Gpt {
            token_embedding: EmbeddingConfig::new(vocab_size, self.d_model).init(device),
            position_embedding: EmbeddingConfig::new(self.seq_len, self.d_model).init(device),
            dropout: dropout(),
            blocks: (0..self.layers)
                .map(|_| Block {
                    attn_norm: norm(),
                    attn: CausalSelfAttention {
                        qkv: linear(self.d_model, 3 * self.d_model),
                        proj: linear(self.d_model, self.d_model),
                        dropout: dropout(),
                        heads: self.heads,
                    },
                    mlp_norm: norm(),
                    mlp: Mlp {
                        fc: linear(self.d_model, self.d_ff),
                        proj: linear(self.d_ff, self.d_model),
                        dropout: dropout(),
                        activation: self.activation,
                    },
                })
                .collect(),
            final_norm: norm(),
            lm_head: linear(self.d_model, vocab_size),
        }
    }
}

impl Gpt {
    /// `[batch, tokens]` token ids -> `[batch, tokens, vocab]` next-token logits.
    pub fn forward(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
        self.run(tokens, None)
    }

    /// As `forward`, also returning every measured activation.
    pub fn forward_with_sites(&self, tokens: Tensor<2, Int>) -> (Tensor<3>, Sites) {
        let mut sites = Sites::default();
        let logits = self.run(tokens, Some(&mut sites));
        (logits, sites)
    }

    fn run(&self, tokens: Tensor<2, Int>, mut sites: Option<&mut Sites>) -> Tensor<3> {
        let [batch, len] = tokens.dims();
        let positions = Tensor::<1, Int>::arange(0..len as i64, &tokens.device())
            .reshape([1, len])
            .expand([batch, len]);
        let mut x =
            self.token_embedding.forward(tokens) + self.position_embedding.forward(positions);
        x = self.dropout.forward(x);
        for block in &self.blocks {
            x = block.forward(x, sites.as_deref_mut());
        }
        let h = self.final_norm.forward(x);
        if let Some(s) = sites {
            s.final_norm = Some(h.clone());
        }
        self.lm_head.forward(h)
    }
}

impl Block {
    fn forward(&self, x: Tensor<3>, sites: Option<&mut Sites>) -> Tensor<3> {
        let attn_out = self.attn.forward(self.attn_norm.forward(x.clone()));
        let x = x + attn_out.clone();
        let (mlp_out, mlp_post) = self.mlp.forward(self.mlp_norm.forward(x.clone()));
        let x = x + mlp_out;
        if let Some(s) = sites {
            s.attn_out.push(attn_out);
            s.mlp_post.push(mlp_post);
            s.resid_post.push(x.clone());
        }
        x
    }
}

impl CausalSelfAttention {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [batch, len, width] = x.dims();
        let head_dim = width / self.heads;
        let split = |t: Tensor<3>| {
            t.reshape([batch, len, self.heads, head_dim])
                .swap_dims(1, 2)
        };
        let mut qkv = self.qkv.forward(x).chunk(3, 2).into_iter();
        let (q, k, v) = (
            split(qkv.next().unwrap()),
            split(qkv.next().unwrap()),
            split(qkv.next().unwrap()),
        );
        let scores = q.matmul(k.transpose()) / (head_dim as f64).sqrt();
        let future = Tensor::<2, Bool>::tril_mask([len, len], 0, &scores.device())
            .reshape([1, 1, len, len])
            .expand([batch, self.heads, len, len]);
        let weights = self
            .dropout
            .forward(softmax(scores.mask_fill(future, f32::NEG_INFINITY), 3));
        let y = weights
            .matmul(v)
            .swap_dims(1, 2)
            .reshape([batch, len, width]);
        self.dropout.forward(self.proj.forward(y))
    }
}

impl Mlp {
    /// Returns the output and the post-activation hidden state.
    fn forward(&self, x: Tensor<3>) -> (Tensor<3>, Tensor<3>) {
        let hidden = self.fc.forward(x);
        let post = match self.activation {
            Activation::Relu => relu(hidden),
            Activation::Gelu => gelu(hidden),
            Activation::Silu => silu(hidden),
        };
        let out = self.dropout.forward(self.proj.forward(post.clone()));
        (out, post)
    }
}
