#!/usr/bin/env python3
"""Writes corpora/: the example experiments' text, all of it written by this project.

English (corpora/en/*.txt): the project's own documentation, and code (corpora/code/*.rs): some
of its own Rust sources, both read from git at one fixed commit (SNAPSHOT) so the corpora, and
with them every text probe, stay the same as the repository changes. The English keeps the
documents' prose: fenced code blocks and table rows are dropped (they are code and numbers, not
sentences). corpora/en.jsonl and corpora/en.parquet hold the same English split at blank lines,
one paragraph per record, for the jsonl and parquet examples.

Run it from anywhere inside a clone with its history:  python3 scripts/make-corpora.py
It needs git and pyarrow, and rewrites the same bytes each time.
"""
import json
import pathlib
import subprocess

import pyarrow as pa
import pyarrow.parquet as pq

# The commit the corpora are frozen at. Changing it changes every text experiment's probes.
SNAPSHOT = "6bd3e13"
ENGLISH = ["README.md", "FINDINGS.md", "BENCHMARKS.md", "docs/science.md", "docs/reports.md"]
CODE = [
    "src/model.rs",
    "src/train.rs",
    "src/report/inference.rs",
    "src/kernels/reference.rs",
    "src/report/dist.rs",
]

repo = pathlib.Path(__file__).resolve().parent.parent
root = repo / "corpora"


def at_snapshot(path: str) -> str:
    return subprocess.run(
        ["git", "show", f"{SNAPSHOT}:{path}"], cwd=repo, check=True, capture_output=True, text=True
    ).stdout


def prose(markdown: str) -> str:
    """The document without fenced code blocks and table rows, runs of blank lines made one."""
    kept, fenced = [], False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced or line.lstrip().startswith("|"):
            continue
        kept.append(line.rstrip())
    text = "\n".join(kept)
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text.strip() + "\n"


def flat(path: str, suffix: str) -> str:
    """docs/science.md -> docs-science.txt: one folder per corpus, names that say the source."""
    return path.replace("/", "-").rsplit(".", 1)[0] + suffix


for folder in ("en", "code"):
    (root / folder).mkdir(parents=True, exist_ok=True)
    for old in (root / folder).iterdir():
        old.unlink()

paragraphs = []
for path in ENGLISH:
    name = flat(path, ".txt")
    text = prose(at_snapshot(path))
    (root / "en" / name).write_text(text, encoding="utf-8")
    for block in text.split("\n\n"):
        block = block.strip()
        if block:
            paragraphs.append({"source": name, "text": block})
for path in CODE:
    (root / "code" / flat(path, ".rs")).write_text(at_snapshot(path), encoding="utf-8")

with open(root / "en.jsonl", "w", encoding="utf-8") as f:
    for record in paragraphs:
        f.write(json.dumps(record) + "\n")
pq.write_table(pa.Table.from_pylist(paragraphs), root / "en.parquet")
print(f"{len(ENGLISH)} English documents, {len(paragraphs)} paragraphs; {len(CODE)} code files")
