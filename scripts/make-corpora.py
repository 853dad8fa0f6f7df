#!/usr/bin/env python3
"""Writes corpora/en.jsonl and corpora/en.parquet: the paragraphs of corpora/en/*.txt, one per
record, for the jsonl and parquet example experiments. Needs pyarrow."""
import json
import pathlib

import pyarrow as pa
import pyarrow.parquet as pq

root = pathlib.Path(__file__).resolve().parent.parent / "corpora"
paragraphs = []
for path in sorted((root / "en").glob("*.txt")):
    for block in path.read_text(encoding="utf-8").split("\n\n"):
        block = block.strip()
        if block:
            paragraphs.append({"source": path.name, "text": block})

with open(root / "en.jsonl", "w", encoding="utf-8") as f:
    for record in paragraphs:
        f.write(json.dumps(record) + "\n")
pq.write_table(pa.Table.from_pylist(paragraphs), root / "en.parquet")
print(f"{len(paragraphs)} paragraphs")
