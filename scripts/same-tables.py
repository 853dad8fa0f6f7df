#!/usr/bin/env python3
"""Whether two trees of densitrace output hold bit-identical tables.

    scripts/same-tables.py A B

A and B are folders holding one run (or sweep) directory each of the same config, e.g.
OUT/quickstart of two --out folders. Every Parquet file under A must have a twin under B at the
same path, ignoring the first path component below A and B (the run id or sweep id). Each
column's values are compared bit for bit (floats as their 64-bit patterns, so NaN equals NaN),
except run_id, wall_time and tokens_per_s, which differ between runs by design. Prints the number of files and rows compared; exits 1 on the
first difference. Needs pyarrow and numpy (pip install pyarrow numpy).

Used to check that a refactor changes no number, e.g. the same commands before and after:
    densitrace run experiments/quickstart.yaml --out /tmp/before --set device=cpu --set train.steps=300
    ... (again with the new binary into /tmp/after) ...
    scripts/same-tables.py /tmp/before/quickstart /tmp/after/quickstart
"""
import glob
import sys

import numpy as np
import pyarrow.parquet as pq

IGNORED = ("run_id", "wall_time", "tokens_per_s")


def files(root):
    out = {}
    for f in sorted(glob.glob(root + "/**/*.parquet", recursive=True)):
        parts = f[len(root):].split("/")
        out["/".join(parts[:1] + parts[2:])] = f  # without the run or sweep id
    return out


def main(a, b):
    fa, fb = files(a), files(b)
    if not fa:
        sys.exit(f"no Parquet file under {a}: nothing to compare")
    if fa.keys() != fb.keys():
        sys.exit(f"different files: {sorted(set(fa) ^ set(fb))}")
    rows = 0
    for key in fa:
        ta, tb = pq.read_table(fa[key]), pq.read_table(fb[key])
        if ta.column_names != tb.column_names or ta.num_rows != tb.num_rows:
            sys.exit(f"{key}: different columns or row counts")
        for c in ta.column_names:
            if c in IGNORED:
                continue
            x, y = ta.column(c).to_numpy(), tb.column(c).to_numpy()
            if x.dtype.kind == "f":
                bits = np.dtype(f"u{x.dtype.itemsize}")
                same = np.array_equal(x.view(bits), y.view(bits))
            else:
                same = np.array_equal(x, y)
            if not same:
                sys.exit(f"{key}: column {c} differs")
        rows += ta.num_rows
    print(f"bit-identical: {len(fa)} files, {rows} rows")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
