#!/usr/bin/env python3
"""Plot density trajectories from a densitrace run: one line per probe set and shift level.

    pip install pyarrow pandas matplotlib
    python3 scripts/plot_density.py runs/quickstart/<run_id> --metric topk_energy@0.05 \
        --site final.norm --position last -o density.png

It reads only the run's Parquet (the density table), the way any analysis tool would.
"""

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--metric", default="topk_energy@0.05")
    parser.add_argument("--site", default="final.norm")
    parser.add_argument("--position", default="last", choices=["last", "all"])
    parser.add_argument("-o", "--output", type=Path, default=Path("density.png"))
    args = parser.parse_args()

    table = args.run_dir / "density"
    if not table.is_dir():
        print(f"{args.run_dir}: no density/ table (not a densitrace run?)", file=sys.stderr)
        return 2
    df = pd.read_parquet(table)
    rows = df[(df.metric == args.metric) & (df.site == args.site) & (df.position == args.position)]
    if rows.empty:
        print(
            f"no rows for metric {args.metric!r} at site {args.site!r}, position {args.position!r}; "
            f"metrics: {sorted(df.metric.unique())}; sites: {sorted(df.site.unique())}",
            file=sys.stderr,
        )
        return 2

    fig, ax = plt.subplots(figsize=(8, 5))
    for (probe, level), curve in rows.groupby(["probe", "shift_level"]):
        curve = curve.sort_values("step")
        ax.plot(curve.step, curve.value, marker=".", label=f"{probe} ({level:g})")
    ax.set_xlabel("training step")
    ax.set_ylabel(f"{args.metric} (mean over vectors)")
    ax.set_title(f"{args.site}, position {args.position}")
    ax.legend(fontsize="small", ncol=2)
    fig.tight_layout()
    fig.savefig(args.output, dpi=120)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
