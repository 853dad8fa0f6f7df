#!/usr/bin/env python3
"""Prints the numbers of FINDINGS.md from the Parquet tables `densitrace report` wrote.

Every interval here is the report's own (over seeds, paired within a seed for gaps, made by the
report's `--interval`: FINDINGS.md's were made with `--interval percentile`); this script only
selects rows and lays them out as Markdown. Needs Python 3
with pandas and pyarrow (`pip install pandas pyarrow`); it runs no model.

    python3 scripts/findings.py CLAIM REPORT_DIR [REPORT_DIR ...]

CLAIM is one of: graded, emergence, id-curve, activation, activation-ratio, detector, size,
sites, hops, deduction (FINDINGS v2's H1-H3), warmup (H4: the warm-up sweep's report, then
the constant-rate one's; these two also read the sweep's cells, each report folder's parent),
width (H5), h6 (the v1 rule-graph sweep's folder or its report; reads each cell's
`probes/h6-matched-hops/`, which `densitrace probe` wrote) and text-distance (H7).
REPORT_DIR is what `densitrace report` wrote (a sweep's `report/` folder). `size` takes the
findings-rulegraph report and then the findings-size report; the others take one report.
"""

import argparse
import itertools
import json
import math
import sys
from pathlib import Path

import pandas as pd

METRIC = "topk_energy@0.05"  # the paper's measure: the share of energy in the top 5% of entries
SITE = "final.norm"          # the paper's "last hidden state"
POSITION = "last"            # the token that predicts the answer


def read(report, table):
    path = Path(report) / f"{table}.parquet"
    if not path.exists():
        sys.exit(f"{path}: no such table; run `densitrace report` on the sweep first")
    df = pd.read_parquet(path)
    if "shift_level" in df:
        for probe, levels in df.groupby("probe").shift_level.nunique().items():
            LEVELS[probe] = max(LEVELS.get(probe, 0), levels)
    return df


def interval(value, lo, hi, signed=True):
    f = "{:+.4f}" if signed else "{:.4f}"
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return f"{f.format(value)} [no interval]"
    return f"{f.format(value)} [{f.format(lo)}, {f.format(hi)}]"


LEVELS = {}  # probe name -> its number of levels, filled by `read` (the report's `set_label` rule)


def set_name(row):
    """The probe name, and its level where the probe has more than one (as the report labels it)."""
    if LEVELS.get(row["probe"], 1) > 1:
        return f"{row['probe']} {row['shift_level']:g}"
    return row["probe"]


def at(df, site=SITE, metric=METRIC, position=POSITION):
    return df[(df.site == site) & (df.metric == metric) & (df.position == position)]


def trajectory(summary_rows):
    """`first -> last` step's value with its interval, of one key's summary rows over steps."""
    if summary_rows.empty:
        return "not measured"
    steps = summary_rows.sort_values("step")
    start, end = steps.iloc[0], steps.iloc[-1]
    return (f"{interval(start.value, start.lo, start.hi, False)} -> "
            f"{interval(end.value, end.lo, end.hi, False)}")


def table(header, rows):
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print("| " + " | ".join(str(x) for x in r) + " |")
    print()


def graded(report):
    """Claim 1: Spearman's rho of sparsity over shift levels at the last step, every site."""
    trend = read(report, "trend")
    trend = trend[(trend.metric == METRIC) & (trend.over == "level_means") & trend.seed.isna()]
    last = trend.step.max()
    rows = []
    for _, r in trend[trend.step == last].sort_values(["cell", "probe", "layer", "site"]).iterrows():
        rows.append([r.cell, r.probe, r.site, r.levels, interval(r.rho, r.lo, r.hi), r.seeds])
    print(f"Spearman's rho between shift level and {METRIC} (level means), step {last}:\n")
    table(["cell", "probe", "site", "levels", "rho [95%]", "seeds"], rows)


def first_excluding_zero(steps):
    """The first step from which every later step's interval excludes 0 on the gap's final side."""
    steps = steps.sort_values("step")
    final_sign = math.copysign(1, steps.gap.iloc[-1])
    holds = [(s.excludes_zero and math.copysign(1, s.gap) == final_sign) for s in steps.itertuples()]
    first = None
    for step, ok in zip(steps.step, holds):
        if ok and first is None:
            first = step
        elif not ok:
            first = None
    return first


def emergence(report):
    """Claim 2: the gap at step 0, at the last step, and from which step its interval excludes 0."""
    gap = at(read(report, "gap"))
    last = gap.step.max()
    rows = []
    for (cell, probe, level), g in gap.groupby(["cell", "probe", "shift_level"], dropna=False):
        g = g.sort_values("step")
        s0, sl = g.iloc[0], g.iloc[-1]
        if s0.step != 0:
            sys.exit(f"{cell} {set_name(sl)}: no step 0 in gap.parquet")
        first = first_excluding_zero(g)
        rows.append([cell, set_name(sl), interval(s0.gap, s0.lo, s0.hi),
                     interval(sl.gap, sl.lo, sl.hi), "never" if first is None else first,
                     int(sl.seeds)])
    print(f"Gap (shifted minus id) in {METRIC} at {SITE}/{POSITION}, step 0 and step {last}:\n")
    table(["cell", "set", "step 0 [95%]", f"step {last} [95%]",
           "interval excludes 0 from step (to the end)", "seeds"], rows)


def id_curve(report):
    """Claim 3: the in-distribution trajectory: start, peak (and its step), end."""
    summary = at(read(report, "summary"))
    summary = summary[summary.shift_family == "none"]
    rows = []
    for cell, s in summary.groupby("cell"):
        s = s.sort_values("step")
        start, end = s.iloc[0], s.iloc[-1]
        peak = s.loc[s.value.idxmax()]
        rows.append([cell, interval(start.value, start.lo, start.hi, False),
                     f"{interval(peak.value, peak.lo, peak.hi, False)} at step {peak.step}",
                     interval(end.value, end.lo, end.hi, False), int(end.seeds)])
    print(f"In-distribution {METRIC} at {SITE}/{POSITION} (mean over seeds [95%]):\n")
    table(["cell", "step 0", "peak", f"step {summary.step.max()}", "seeds"], rows)


def activation(report):
    """Claim 4: per activation, the id trajectory (top-5% energy and Hoyer) at mlp.post and
    final.norm, and the final gap of each shifted probe's strongest level."""
    summary = read(report, "summary")
    gap = read(report, "gap")
    last = gap.step.max()
    sites = sorted(s for s in summary.site.unique() if s.endswith("mlp.post") or s == SITE)
    rows = []
    for cell in sorted(summary.cell.unique()):
        for site in sites:
            row = [cell, site]
            for metric in (METRIC, "hoyer"):
                s = at(summary, site, metric)
                row.append(trajectory(s[(s.cell == cell) & (s.shift_family == "none")]))
            g = at(gap, site)
            g = g[(g.cell == cell) & (g.step == last)]
            # The strongest level of each shifted probe set.
            strongest = g.sort_values("shift_level").groupby("probe").tail(1).sort_values("probe")
            row.append("; ".join(f"{set_name(r)} {interval(r.gap, r.lo, r.hi)}"
                                 for _, r in strongest.iterrows()))
            rows.append(row)
    print(f"Id from step 0 to step {last} (mean over seeds [95%]), and the final gap to id in "
          f"{METRIC}:\n")
    table(["cell", "site", f"id {METRIC}", "id hoyer", f"gap (shifted - id) [95%]"], rows)


def activation_ratio(report):
    """Claim 4, the Sparsing Law's measure: each MLP's activation ratio on id, every token."""
    summary = read(report, "summary")
    summary = summary[(summary.shift_family == "none") & summary.site.str.endswith("mlp.post")
                      & (summary.position == "all")]
    rows = []
    for (cell, site), g in summary.groupby(["cell", "site"]):
        row = [cell, site]
        for metric in ("active_fraction@0.01", "dead_fraction@0.01"):
            row.append(trajectory(g[g.metric == metric]))
        rows.append(row)
    print(f"Id at every token, step 0 -> step {summary.step.max()} (mean over seeds [95%]):\n")
    table(["cell", "site", "active_fraction@0.01", "dead_fraction@0.01"], rows)


def detector(report):
    """Claim 5: AUROC at the last step at every sampled site, against the loss baseline."""
    ood = read(report, "ood")
    ood = ood[(ood.statistic == "auroc") & ood.seed.isna()]
    last = ood.step.max()
    final = ood[ood.step == last]
    sites = sorted(final[final.metric == METRIC].site.unique())
    rows = []
    for (cell, probe, level), g in final.groupby(["cell", "probe", "shift_level"], dropna=False):
        row = [cell, set_name(g.iloc[0])]
        for site in sites:
            d = g[(g.metric == METRIC) & (g.site == site)]
            row.append(interval(*d.iloc[0][["value", "lo", "hi"]], signed=False) if len(d) else "-")
        for loss in ("prompt_loss", "next_token_loss"):
            d = g[(g.site == "logits") & (g.metric == loss)]
            row.append(interval(*d.iloc[0][["value", "lo", "hi"]], signed=False) if len(d) else "-")
        rows.append(row)
    print(f"AUROC at step {last}, mean over seeds [95%]. Id is the positive class; for {METRIC}, "
          "> 0.5 means the shifted set is sparser, < 0.5 denser; for the losses, > 0.5 means "
          "higher loss on the shifted set (prompt_loss: the prompt's own tokens; next_token_loss: "
          "every target, a rule-graph answer included):\n")
    table(["cell", "set"] + sites + ["prompt loss", "next-token loss"], rows)


def size(small_report, large_report):
    """Claim 6: the final gaps of the gelu cells of two sizes side by side."""
    rows = []
    for name, report in (("small", small_report), ("large", large_report)):
        gap = at(read(report, "gap"))
        gap = gap[gap.cell.isin(["model.activation=gelu", "base"])]
        last = gap.step.max()
        for _, r in gap[gap.step == last].sort_values(["probe", "shift_level"]).iterrows():
            rows.append([name, r.cell, set_name(r), last, interval(r.gap, r.lo, r.hi),
                         "yes" if r.excludes_zero else "no", int(r.seeds)])
    print(f"Final gap (shifted minus id) in {METRIC} at {SITE}/{POSITION}:\n")
    table(["size", "cell", "set", "step", "gap [95%]", "excludes 0", "seeds"], rows)


def sites(report):
    """Claim 7: where the final gap lives: every layer and site, ranked by the gap's size."""
    gap = read(report, "gap")
    gap = gap[(gap.metric == METRIC) & (gap.position == POSITION) & (gap.site != "logits")]
    last = gap.step.max()
    gap = gap[gap.step == last]
    rows = []
    for (cell, site), g in gap.groupby(["cell", "site"]):
        excl = g[g.excludes_zero]
        top = g.loc[g.gap.abs().idxmax()]
        rows.append([cell, site, f"{len(excl)} of {len(g)}",
                     f"{set_name(top)} {interval(top.gap, top.lo, top.hi)}",
                     f"{g.gap.mean():+.4f}"])
    print(f"Final gap (step {last}) in {METRIC} at {POSITION}, per site: how many shifted sets' "
          "intervals exclude 0, the largest gap, and the mean gap over sets:\n")
    table(["cell", "site", "sets excluding 0", "largest gap [95%]", "mean gap"], rows)


def hops(report):
    """Whether the model deduces: answer accuracy on id facts and on held-out deducible ones."""
    summary = read(report, "summary")
    summary = summary[(summary.site == "logits") & (summary.metric == "answer_acc")]
    last = summary.step.max()
    rows = []
    for _, r in summary[(summary.step == last) & summary.probe.isin(["id", "hops"])] \
            .sort_values(["cell", "probe", "shift_level"]).iterrows():
        rows.append([r.cell, set_name(r), interval(r.value, r.lo, r.hi, False), int(r.seeds)])
    print(f"Answer accuracy at step {last} (mean over seeds [95%]):\n")
    table(["cell", "set", "answer accuracy", "seeds"], rows)


def cell_density(report):
    """Every cell's own density table with its seed (the report's parent folder is the sweep)."""
    sweep = Path(report).resolve().parent
    frames = []
    for cell in sorted((sweep / "cells").iterdir()):
        df = pd.concat([pd.read_parquet(f) for f in sorted(cell.glob("density/step-*/*.parquet"))])
        df["seed"] = json.loads((cell / "manifest.json").read_text())["seed"]
        frames.append(df)
    return pd.concat(frames)


def sign_flip_p(values):
    """The exact two-sided sign-flip p-value of the mean of `values` (all 2^n flips), as the
    report computes it."""
    observed = abs(sum(values))
    tolerance = 1e-9 * sum(abs(v) for v in values)
    flips = list(itertools.product([1, -1], repeat=len(values)))
    extreme = sum(abs(sum(s * v for s, v in zip(signs, values))) >= observed - tolerance
                  for signs in flips)
    return extreme / len(flips)


def per_seed(values):
    """`mean (min, max), sign-flip p` of per-seed values."""
    values = list(values)
    return (f"{sum(values) / len(values):+.4f} ({min(values):+.4f}, {max(values):+.4f}), "
            f"p = {sign_flip_p(values):.4f}, {len(values)} seeds")


def deduction(report):
    """FINDINGS v2, H1-H3 on the deduction sweep: accuracy against the prior per seed, the
    gaps to matched references, and their per-seed contrasts, as the plan fixed them."""
    d = cell_density(report)
    last = d.step.max()
    logits = d[(d.site == "logits") & (d.step == last)]
    rows = []
    for probe in ["deducible", "non_deducible"]:
        for metric in ["answer_acc", "prior_acc"]:
            v = logits[(logits.probe == probe) & (logits.metric == metric)].sort_values("seed")
            rows.append([probe, metric, f"{v.value.mean():.3f}", f"{v.value.min():.3f}",
                         f"{v.value.max():.3f}", " ".join(f"{x:.3f}" for x in v.value)])
    print(f"H1: accuracy at step {last}, per seed (seeds in order):\n")
    table(["set", "metric", "mean", "min", "max", "per seed"], rows)
    acc = logits[logits.metric.isin(["answer_acc", "prior_acc"])].pivot_table(
        index=["probe", "seed"], columns="metric", values="value")
    margin = (acc.loc["deducible"].answer_acc - acc.loc["deducible"].prior_acc).min()
    off = (acc.loc["non_deducible"].answer_acc - acc.loc["non_deducible"].prior_acc).mean()
    print(f"\ndeducible minus its prior, smallest over seeds: {margin:+.3f}; "
          f"non_deducible minus its prior, mean: {off:+.3f}\n")

    x = at(d)

    def gaps(probe, reference, level, step=last):
        """Per seed: `probe` at `level` minus `reference` (at the same level if it has it)."""
        rows = x[x.step == step]
        a = rows[(rows.probe == probe) & (rows.shift_level == level)].set_index("seed").value
        r = rows[rows.probe == reference]
        r = r[r.shift_level == level] if (r.shift_level == level).any() else r
        return (a - r.set_index("seed").value).sort_index()

    ded, non = gaps("deducible", "id_deducible", 1), gaps("non_deducible", "id_non_deducible", 1)
    print(f"H2 at step {last}, {METRIC} at {SITE}, {POSITION} token, per seed:\n")
    table(["quantity", "mean (min, max), sign-flip p"], [
        ["deducible - id_deducible", per_seed(ded)],
        ["non_deducible - id_non_deducible", per_seed(non)],
        ["(non_deducible gap) - (deducible gap)", per_seed(non - ded)],
    ])
    # Within each seed: deducible accuracy against its gap over the evaluated steps.
    acc_steps = d[(d.site == "logits") & (d.metric == "answer_acc") & (d.probe == "deducible")]
    rhos = []
    for seed, a in acc_steps.groupby("seed"):
        g = pd.Series({step: gaps("deducible", "id_deducible", 1, step).get(seed, float("nan"))
                       for step in sorted(a.step)})
        rhos.append(a.set_index("step").value.sort_index().corr(g, method="spearman"))
    print(f"\nWithin seeds, Spearman's rho of deducible accuracy and its gap over steps: "
          f"{per_seed(rhos)}\n")

    k1, k2 = gaps("replace", "id", 1), gaps("replace", "id", 2)
    print(f"H3 at step {last}, token_replace against id, per seed:\n")
    table(["quantity", "mean (min, max), sign-flip p"], [
        ["k = 1", per_seed(k1)], ["k = 2", per_seed(k2)], ["k = 2 minus k = 1", per_seed(k2 - k1)],
    ])

    # Exploratory (not in the plan): claims 5 and 7 on the model that deduces. Every site's gap
    # to the matched reference, and the AUROC of top-5% energy against the prompt's own loss.
    gap, ood = read(report, "gap"), read(report, "ood")
    g = gap[(gap.step == last) & (gap.metric == METRIC) & (gap.position == POSITION)
            & gap.probe.isin(["deducible", "non_deducible"])]
    rows = [[r.site, r.probe, r.reference, interval(r.gap, r.lo, r.hi), f"{r.p:.4f}"]
            for _, r in g.sort_values(["site", "probe"]).iterrows()]
    print(f"\nExploratory, claim 7: every site's gap at step {last} ({METRIC}, {POSITION} token):\n")
    table(["site", "set", "reference", "gap [95%]", "p"], rows)
    o = ood[(ood.step == last) & ood.seed.isna() & (ood.statistic == "auroc")
            & (ood.position == POSITION) & ood.probe.isin(["deducible", "non_deducible"])
            & (((ood.site == SITE) & (ood.metric == METRIC))
               | ((ood.site == "logits") & (ood.metric == "prompt_loss")))]
    rows = [[r.probe, f"{r.site} {r.metric}", interval(r.value, r.lo, r.hi, False), f"{r.p:.4f}"]
            for _, r in o.sort_values(["probe", "site"]).iterrows()]
    print(f"\nExploratory, claim 5: AUROC against the matched reference at step {last}:\n")
    table(["set", "score", "AUROC [95%]", "p"], rows)


def id_peaks(report):
    """Per run of the sweep behind `report`: (seed, warm-up steps, the step where the id set's
    top-5% energy at final.norm peaks, its value there minus at the last step)."""
    sweep = Path(report).resolve().parent
    out = []
    for cell in sorted((sweep / "cells").iterdir()):
        df = pd.concat([pd.read_parquet(f) for f in sorted(cell.glob("density/step-*/*.parquet"))])
        curve = at(df[df.probe == "id"]).set_index("step").value.sort_index()
        config = (cell / "config.yaml").read_text()
        warmup = int(next(line.split(":")[1] for line in config.splitlines()
                          if line.strip().startswith("warmup_steps:")))
        seed = json.loads((cell / "manifest.json").read_text())["seed"]
        out.append((seed, warmup, int(curve.idxmax()), curve.max() - curve.iloc[-1],
                    int(curve.index[-1])))
    return out


def warmup(warmup_report, constant_report):
    """FINDINGS v2, H4: does the id curve's peak move with the end of the warm-up? The warm-up
    sweep's peak steps, Spearman's rho between warm-up and peak step over its runs with a
    permutation p (20,000 seeded shuffles of the warm-ups), and the constant-rate runs' peaks."""
    runs = id_peaks(warmup_report)
    rows = [[w, seed, step, f"{drop:+.4f}"] for seed, w, step, drop, _ in sorted(runs,
                                                                              key=lambda r: (r[1], r[0]))]
    print(f"H4: the step of the id curve's maximum ({METRIC}, {SITE}, {POSITION} token):\n")
    table(["warm-up", "seed", "peak step", "peak minus last"], rows)
    w = pd.Series([r[1] for r in runs], dtype=float)
    peak = pd.Series([r[2] for r in runs], dtype=float)
    rho = w.corr(peak, method="spearman")
    rng = __import__("random").Random(20261201)
    draws, extreme = 20_000, 0
    shuffled = list(w)
    for _ in range(draws):
        rng.shuffle(shuffled)
        extreme += abs(pd.Series(shuffled).corr(peak, method="spearman")) >= abs(rho) - 1e-9
    print(f"\nSpearman's rho (warm-up, peak step) over {len(runs)} runs: {rho:+.3f}, "
          f"permutation p = {(1 + extreme) / (1 + draws):.4f}\n")
    rows = [[seed, step, last, f"{drop:+.4f}"] for seed, _, step, drop, last in
            sorted(id_peaks(constant_report))]
    print("Constant learning rate (no warm-up, no decay):\n")
    table(["seed", "peak step", "last step", "peak minus last"], rows)


def width(report):
    """FINDINGS v2, H5: the width ladder. Per width, the random prompts' gap to id and the id
    set's excess over the iid reference at the last step, and each width's paired contrast of
    that gap against the first width (the report's `contrast.parquet`, `--contrast
    model.d_model`)."""
    gap, summary, contrast = read(report, "gap"), read(report, "summary"), read(report, "contrast")
    last = gap.step.max()
    g = at(gap)
    g = g[(g.step == last) & (g.probe == "random")]
    e = at(summary)
    e = e[(e.step == last) & (e.probe == "id")]
    rows = []
    for cell in sorted(g.cell, key=lambda c: float(c.split("=")[1])):
        r, x = g[g.cell == cell].iloc[0], e[e.cell == cell].iloc[0]
        rows.append([cell, interval(r.gap, r.lo, r.hi), f"{r.p:.4f}", f"{x.excess:+.4f}",
                     int(r.seeds)])
    print(f"H5 at step {last}, {METRIC} at {SITE}, {POSITION} token:\n")
    table(["cell", "random - id [95%]", "p", "id excess over iid", "seeds"], rows)
    c = at(contrast)
    c = c[(c.step == last) & (c.probe == "random") & (c.quantity == "gap")]
    rows = [[f"{r.to_value} - {r.from_value}", interval(r.difference, r.lo, r.hi), f"{r.p:.4f}",
             f"{r.p_holm:.4f}", int(r.seeds)]
            for _, r in c.sort_values("to_value", key=lambda v: v.astype(float)).iterrows()]
    print("\nPaired contrasts of the random - id gap against the first width:\n")
    table(["d_model", "difference [95%]", "p", "p_holm", "seeds"], rows)


def holm(ps):
    """Holm's step-down adjusted p-values, in the order given."""
    order = sorted(range(len(ps)), key=lambda i: ps[i])
    adjusted, running = [0.0] * len(ps), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(ps) - rank) * ps[i]))
        adjusted[i] = running
    return adjusted


def t_interval(values):
    """Mean and Student-t 95% interval of per-seed values (as the report's default)."""
    from scipy import stats
    v = pd.Series(list(values))
    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return v.mean(), v.mean() - half, v.mean() + half


def h6(report):
    """FINDINGS v2, H6: v1's hops sets against a matched reference. Per activation and hops level,
    over seeds: the hops - id gap, the hops - id_hops gap, and |hops - id| - |hops - id_hops|
    (positive: the matched reference moves the gap toward 0), sign flips, Holm over all tests."""
    sweep = Path(report).resolve()
    if not (sweep / "cells").is_dir():  # a report folder: its parent is the sweep
        sweep = sweep.parent
    frames = []
    for cell in sorted((sweep / "cells").iterdir()):
        tables = sorted(cell.glob("probes/h6-matched-hops/density/step-*/*.parquet"))
        if not tables:
            sys.exit(f"{cell}: no probes/h6-matched-hops; run `densitrace probe {cell} "
                     "--config experiments/probes/h6-matched-hops.yaml` first")
        df = pd.concat([pd.read_parquet(f) for f in tables])
        df = df[df.step == df.step.max()]  # the final weights (a `--steps all` probe has more)
        manifest = json.loads((cell / "manifest.json").read_text())
        df["seed"] = manifest["seed"]
        df["cell"] = cell.name
        df["activation"] = cell.name.split("activation=")[1].split(",")[0]
        frames.append(df)
    x = at(pd.concat(frames))
    rows, ps = [], []
    for activation in sorted(x.activation.unique()):
        a = x[x.activation == activation]
        id_ = a[a.probe == "id"].set_index("seed").value
        for level in sorted(a[a.probe == "hops"].shift_level.unique()):
            hops_ = a[(a.probe == "hops") & (a.shift_level == level)].set_index("seed").value
            ref = a[(a.probe == "id_hops") & (a.shift_level == level)].set_index("seed").value
            vs_id, vs_ref = (hops_ - id_).sort_index(), (hops_ - ref).sort_index()
            closer = vs_id.abs() - vs_ref.abs()
            p = sign_flip_p(list(closer))
            ps.append(p)
            rows.append([activation, f"{level:g}", interval(*t_interval(vs_id)),
                         interval(*t_interval(vs_ref)), interval(*t_interval(closer)),
                         f"{p:.4f}", len(closer)])
    for row, p in zip(rows, holm(ps)):
        row.insert(6, f"{p:.4f}")
    print(f"H6 at the final weights, {METRIC} at {SITE}, {POSITION} token, over seeds "
          "(mean [t 95%]; p exact sign flips; Holm over all rows):\n")
    table(["activation", "hops", "hops - id", "hops - id_hops", "|vs id| - |vs id_hops|", "p",
           "p_holm", "seeds"], rows)


def text_distance(report):
    """FINDINGS v2, H7: the text model's gaps at each unigram_replace level (k familiar bytes
    replaced per window) and char_noise level, and the report's across-seed trend of the
    unigram_replace gap over k."""
    gap, trend = read(report, "gap"), read(report, "trend")
    last = gap.step.max()
    # The plan's primary site, then its secondary one (the last block's residual stream).
    for site in [SITE, "blocks.1.resid_post"]:
        g = at(gap, site=site)
        g = g[g.step == last].sort_values(["probe", "shift_level"])
        rows = [[set_name(r), interval(r.gap, r.lo, r.hi), f"{r.p:.4f}", f"{r.p_holm:.4f}",
                 int(r.seeds)] for _, r in g.iterrows()]
        print(f"H7 at step {last}, {METRIC} at {site}, {POSITION} token, each set minus id:\n")
        table(["set", "gap [95%]", "p", "p_holm", "seeds"], rows)
    t = at(trend)
    t = t[(t.step == last) & t.probe.isin(["familiar_edits", "char_noise"])]
    if "seed" in t:
        t = t[t.seed.isna()]
    rows = [[r.probe, r.over, interval(r.rho, r.lo, r.hi), r.test, f"{r.p:.4f}",
             f"{r.p_holm:.4f}", int(r.seeds)]
            for _, r in t.sort_values(["probe", "over"]).iterrows()]
    print("Across-seed trend over the levels (Spearman's rho; the plan's test is `level_means`):\n")
    table(["set", "over", "rho [95%]", "test", "p", "p_holm", "seeds"], rows)


CLAIMS = {
    "graded": graded,
    "emergence": emergence,
    "id-curve": id_curve,
    "activation": activation,
    "activation-ratio": activation_ratio,
    "detector": detector,
    "size": size,
    "sites": sites,
    "hops": hops,
    "deduction": deduction,
    "warmup": warmup,
    "width": width,
    "h6": h6,
    "text-distance": text_distance,
}

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("claim", choices=sorted(CLAIMS))
    parser.add_argument("reports", nargs="+", help="report folders (size: two)")
    args = parser.parse_args()
    want = 2 if args.claim in ("size", "warmup") else 1
    if len(args.reports) != want:
        parser.error(f"{args.claim} takes {want} report folder(s)")
    CLAIMS[args.claim](*args.reports)
