#!/usr/bin/env python3
"""Reference values for the report's statistics, computed independently with scipy and
scikit-learn, stored as tests/fixtures/report_stats.json for `src/report/stats.rs`'s tests.

Run:  python3 scripts/report_fixtures.py > tests/fixtures/report_stats.json
Needs: pip install numpy scipy scikit-learn (not needed to run the tests: the JSON is committed).

Detection convention (the report's, OpenOOD's): in-distribution (id) is the positive class and the
score is id-ness, so a higher score means "more like id".
- auroc:    sklearn.metrics.roc_auc_score(y, score)
- aupr_in:  sklearn.metrics.average_precision_score(y, score)          (id positive)
- aupr_out: sklearn.metrics.average_precision_score(1 - y, -score)     (shifted positive)
- fpr95:    OpenOOD's fpr_recall: from sklearn.metrics.roc_curve(y, score), the false-positive
            rate at the first threshold whose true-positive rate reaches 0.95
Spearman: scipy.stats.spearmanr (average ranks for ties).
"""
import json
import sys

import numpy as np
import scipy
import sklearn
from scipy import stats
from sklearn import metrics


def detection(name, id_scores, shifted_scores):
    s = np.concatenate([id_scores, shifted_scores]).astype(np.float64)
    y = np.concatenate([np.ones(len(id_scores)), np.zeros(len(shifted_scores))])
    fpr, tpr, _ = metrics.roc_curve(y, s)
    return {
        "name": name,
        "id": [float(v) for v in id_scores],
        "shifted": [float(v) for v in shifted_scores],
        "auroc": float(metrics.roc_auc_score(y, s)),
        "aupr_in": float(metrics.average_precision_score(y, s)),
        "aupr_out": float(metrics.average_precision_score(1 - y, -s)),
        "fpr95": float(fpr[np.argmax(tpr >= 0.95)]),
    }


def spearman(name, x, y):
    return {
        "name": name,
        "x": [float(v) for v in x],
        "y": [float(v) for v in y],
        "rho": float(stats.spearmanr(x, y).statistic),
    }


rng = np.random.default_rng(20261125)
cases = [
    detection("separated", [5.0, 6.0, 7.0, 8.0], [1.0, 2.0, 3.0]),
    detection("reversed", [1.0, 2.0, 3.0], [5.0, 6.0, 7.0, 8.0]),
    detection("all_tied", [1.0] * 5, [1.0] * 7),
    detection("ties_across", [0.1, 0.4, 0.4, 0.8, 0.8, 0.9], [0.2, 0.4, 0.4, 0.5, 0.8]),
    detection("rounded_normals", np.round(rng.normal(0.3, 1, 200), 1), np.round(rng.normal(0, 1, 150), 1)),
    detection("normals", rng.normal(0.5, 1, 300), rng.normal(0, 1.3, 250)),
    detection("one_each", [2.0], [1.0]),
]
ranks = [
    spearman("monotone", [1, 2, 3, 4, 5], [2.0, 4.0, 8.0, 16.0, 32.0]),
    spearman("ties_in_x", [0.1, 0.1, 0.25, 0.25, 0.5, 0.5, 1.0, 1.0], [3.0, 1.0, 2.0, 5.0, 4.0, 7.0, 6.0, 6.0]),
    spearman("ties_both", [2, 2, 3, 3, 4, 4, 5, 5], [0.27, 0.28, 0.28, 0.27, 0.30, 0.28, 0.28, 0.29]),
    spearman("four_levels", [0.1, 0.25, 0.5, 1.0], [0.2758, 0.2759, 0.2773, 0.2790]),
    spearman("noisy", np.repeat([1.0, 2.0, 3.0, 4.0], 50), np.repeat([1.0, 2.0, 3.0, 4.0], 50) * 0.1 + rng.normal(0, 1, 200)),
]
json.dump(
    {
        "made_by": "python3 scripts/report_fixtures.py > tests/fixtures/report_stats.json",
        "versions": {"numpy": np.__version__, "scipy": scipy.__version__, "scikit-learn": sklearn.__version__},
        "detection": cases,
        "spearman": ranks,
    },
    sys.stdout,
    indent=1,
)
print()
