#!/usr/bin/env python3
"""densitrace's peer benchmark: the quickstart's GPT, optimizer, schedule and batch shapes in
PyTorch eager, and its probe shapes measured the way users instrument today (forward hooks, then
torch metrics on the captured activations). Benchmark only: not part of CI.

Needs torch (pip install torch; the CPU is enough). It installs nothing itself.

    python3 scripts/peer_pytorch.py [--size quickstart|findings] [--steps 200] [--evaluations 3] [--threads N]

--size findings is the 3.2M-parameter model of experiments/sweeps/findings-size.yaml (4 layers,
d_model 256, d_ff 1024), on the same data shapes.

It prints train ms/step (median after 10 warm-up steps), tokens/s, evaluation seconds (median of
--evaluations after one warm-up), the instrumentation share at the quickstart's schedule (31
evaluations over 3,000 steps) and the peak resident memory. Compare with
`densitrace bench --device cpu` in the same session (BENCHMARKS.md).

The model is model.rs's: learned token and position embeddings, pre-norm blocks (LayerNorm, causal
self-attention with one qkv projection, residual; LayerNorm, MLP d -> 4d -> d with GELU, residual),
a final LayerNorm and an untied linear head, all with biases. AdamW (betas 0.9/0.95, decay 0.1 on
parameters with 2+ dimensions), global-norm clipping at 1.0, linear warm-up then cosine decay.
The data are random token ids of the quickstart's shapes: speed does not depend on their values.
"""

import argparse
import math
import resource
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

# The quickstart (experiments/quickstart.yaml) and its rule graph's shapes; --size findings
# replaces LAYERS, D and D_FF with SIZES["findings"].
VOCAB, LAYERS, D, HEADS, D_FF, SEQ_LEN = 226, 2, 128, 4, 512, 16
SIZES = {"quickstart": (2, 128, 512), "findings": (4, 256, 1024)}
BATCH, CONTEXT = 64, 3
LR, MIN_LR, WARMUP, STEPS, WEIGHT_DECAY, CLIP = 2e-3, 2e-4, 50, 3000, 0.1, 1.0
# Ten probe sets of 512 prompts of 3 tokens; evaluated at step 0, every 100 steps and the last.
PROBE_SETS, SAMPLES, EVALUATIONS_IN_SCHEDULE = 10, 512, 31
QUANTILES = torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95])


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn_norm = nn.LayerNorm(D)
        self.qkv = nn.Linear(D, 3 * D)
        self.proj = nn.Linear(D, D)
        self.mlp_norm = nn.LayerNorm(D)
        self.fc = nn.Linear(D, D_FF)
        self.act = nn.GELU()
        self.mlp_proj = nn.Linear(D_FF, D)

    def forward(self, x):
        b, t, _ = x.shape
        q, k, v = self.qkv(self.attn_norm(x)).split(D, dim=2)
        q, k, v = (z.view(b, t, HEADS, D // HEADS).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        attn_out = self.proj(y.transpose(1, 2).reshape(b, t, D))
        x = x + attn_out
        x = x + self.mlp_proj(self.act(self.fc(self.mlp_norm(x))))
        return x


class Gpt(nn.Module):
    def __init__(self):
        super().__init__()
        self.token_embedding = nn.Embedding(VOCAB, D)
        self.position_embedding = nn.Embedding(SEQ_LEN, D)
        self.blocks = nn.ModuleList(Block() for _ in range(LAYERS))
        self.final_norm = nn.LayerNorm(D)
        self.lm_head = nn.Linear(D, VOCAB)

    def forward(self, tokens):
        positions = torch.arange(tokens.shape[1])
        x = self.token_embedding(tokens) + self.position_embedding(positions)
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.final_norm(x))


def learning_rate(step):
    if step <= WARMUP:
        return LR * step / WARMUP
    progress = min(1.0, (step - WARMUP) / (STEPS - WARMUP))
    return MIN_LR + 0.5 * (LR - MIN_LR) * (1 + math.cos(math.pi * progress))


def metrics(h):
    """The quickstart's per-vector metrics of h [n, d], then mean, std, n and quantiles of each,
    and the across-vector active and dead fractions: what densitrace's density table holds."""
    n, d = h.shape
    a = h.abs()
    sq = h * h
    total = sq.sum(1)
    sorted_sq, _ = sq.sort(1, descending=True)
    per_vector = {}
    for f in (0.01, 0.05, 0.1):
        k = max(1, int(f * d))
        per_vector[f"topk_energy@{f}"] = sorted_sq[:, :k].sum(1) / total
    l1, l2 = a.sum(1), total.sqrt()
    per_vector["hoyer"] = (math.sqrt(d) - l1 / l2) / (math.sqrt(d) - 1)
    asc, _ = a.sort(1)
    i = torch.arange(1, d + 1, dtype=h.dtype)
    per_vector["gini"] = ((2 * i - d - 1) * asc).sum(1) / (d * l1)
    p = sq / total[:, None]
    per_vector["eff_rank"] = torch.exp(-(p * torch.log(p + 1e-10)).sum(1)) / d
    q = a / l1[:, None] + 1e-10
    per_vector["eff_rank_l1"] = torch.exp(-(q * torch.log(q)).sum(1)) / d
    per_vector["participation_ratio"] = total**2 / (sq * sq).sum(1) / d
    per_vector["l0_mean_std"] = (a > (a.mean(1) + a.std(1, unbiased=False))[:, None]).float().mean(1)
    c = h - h.mean(1, keepdim=True)
    m2 = (c * c).mean(1)
    per_vector["kurtosis"] = (c**4).mean(1) / m2**2 - 3
    per_vector["max_over_median"] = asc[:, -1] / asc.median(1).values
    per_vector["l1"], per_vector["l2"] = l1, l2
    per_vector["near_zero@0.001"] = (a <= 1e-3).float().mean(1)
    per_vector["near_zero_rel@0.01"] = (a <= 0.01 * asc[:, -1:]).float().mean(1)
    per_vector["nonfinite"] = (~torch.isfinite(h)).float().sum(1)
    out = {}
    for name, v in per_vector.items():
        out[name] = (v.mean().item(), v.std().item(), n, torch.quantile(v, QUANTILES).tolist())
    active = (a > 0.01).float().mean(0)
    out["active_fraction@0.01"] = (active.mean().item(), active.std().item(), n, None)
    out["dead_fraction@0.01"] = ((active == 0).float().mean().item(), float("nan"), n, None)
    return out


def evaluate(model, probe_sets):
    """Every probe set through the model with forward hooks on every site; the metrics of each
    site at the last token and at all tokens, as Python numbers."""
    captured = {}
    hooks = []
    for i, block in enumerate(model.blocks):
        hooks.append(block.register_forward_hook(lambda m, inp, out, i=i: captured.__setitem__(f"blocks.{i}.resid_post", out)))
        hooks.append(block.act.register_forward_hook(lambda m, inp, out, i=i: captured.__setitem__(f"blocks.{i}.mlp.post", out)))
        hooks.append(block.proj.register_forward_hook(lambda m, inp, out, i=i: captured.__setitem__(f"blocks.{i}.attn.out", out)))
    hooks.append(model.final_norm.register_forward_hook(lambda m, inp, out: captured.__setitem__("final.norm", out)))
    rows = []
    with torch.no_grad():
        for tokens in probe_sets:
            captured.clear()
            logits = model(tokens)
            # next-token loss of the set, as densitrace's logits rows
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), tokens[:, 1:].reshape(-1))
            rows.append(("logits", "next_token_loss", loss.item()))
            for site, acts in captured.items():
                for position, vectors in (("last", acts[:, -1]), ("all", acts.reshape(-1, acts.shape[-1]))):
                    rows.append((site, position, metrics(vectors.float())))
    for h in hooks:
        h.remove()
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="quickstart", help="the model's size")
    parser.add_argument("--steps", type=int, default=200, help="training steps to time")
    parser.add_argument("--evaluations", type=int, default=3, help="evaluations to time")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    global LAYERS, D, D_FF
    LAYERS, D, D_FF = SIZES[args.size]
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    model = Gpt()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}],
        lr=LR,
        betas=(0.9, 0.95),
    )
    tokens = torch.randint(0, VOCAB, (args.steps, BATCH, CONTEXT + 1))

    times = []
    for step in range(1, args.steps + 1):
        start = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step)
        batch = tokens[step - 1]
        logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), batch[:, 1:].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        optimizer.step()
        loss.item()  # densitrace reads the loss every step too
        times.append(time.perf_counter() - start)
    step_s = statistics.median(times[10:])

    parameters = sum(p.numel() for p in model.parameters())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.size} model ({parameters / 1e6:.2f}M parameters)")
    print(f"train: {step_s * 1e3:.2f} ms/step, {BATCH * CONTEXT / step_s:.0f} tokens/s (median of {len(times) - 10} steps)")
    # --evaluations 0 times training alone (what a profile of the train step wants).
    if args.evaluations > 0:
        probe_sets = [torch.randint(0, VOCAB, (SAMPLES, CONTEXT)) for _ in range(PROBE_SETS)]
        evaluate(model, probe_sets)  # warm-up
        eval_times = []
        for _ in range(args.evaluations):
            start = time.perf_counter()
            evaluate(model, probe_sets)
            eval_times.append(time.perf_counter() - start)
        eval_s = statistics.median(eval_times)
        share = EVALUATIONS_IN_SCHEDULE * eval_s / (STEPS * step_s)
        print(f"evaluation: {eval_s:.3f} s ({PROBE_SETS} sets x {SAMPLES} prompts, 7 sites x 2 positions, 18 metrics + quantiles)")
        print(f"instrumentation share at the quickstart's schedule: {share * 100:.1f}%")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory: {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
