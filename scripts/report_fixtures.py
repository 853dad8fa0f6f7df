#!/usr/bin/env python3
"""Reference values for the report's statistics, computed independently with scipy, scikit-learn
and statsmodels, stored as tests/fixtures/report_stats.json for `src/report/`'s tests.

Run:  python3 scripts/report_fixtures.py > tests/fixtures/report_stats.json
Needs: pip install numpy scipy scikit-learn statsmodels (not needed to run the tests: the JSON is
committed). Takes about 20 s (the exact permutation tests enumerate).

Every top-level key except "made_by" and "versions" is a list of cases. "detection" and "spearman"
are drawn first from default_rng(20261125), as they always were; every later section draws from its
own default_rng(seed), so adding a case to one section never changes another's.

Detection convention (the report's, OpenOOD's): in-distribution (id) is the positive class and the
score is id-ness, so a higher score means "more like id".
- auroc:    sklearn.metrics.roc_auc_score(y, score)
- aupr_in:  sklearn.metrics.average_precision_score(y, score)          (id positive)
- aupr_out: sklearn.metrics.average_precision_score(1 - y, -score)     (shifted positive)
- fpr95:    OpenOOD's fpr_recall: from sklearn.metrics.roc_curve(y, score), the false-positive
            rate at the first threshold whose true-positive rate reaches 0.95
Spearman: scipy.stats.spearmanr (average ranks for ties).

Distributions:
- t_interval: {name, x, mean, lo, hi, p}, n >= 2:
      lo, hi = scipy.stats.t.interval(0.95, n - 1, loc=mean(x), scale=scipy.stats.sem(x))
      p      = scipy.stats.ttest_1samp(x, 0).pvalue                      (two-sided)
- t_ppf:      {name, df, q, value}  scipy.stats.t.ppf(q, df)
- t_sf:       {name, df, t, value}  scipy.stats.t.sf(t, df)
- ndtr:       {name, x, value}      scipy.special.ndtr(x)
- ndtri:      {name, p, value}      scipy.special.ndtri(p)

Bootstrap (95% BCa interval of the mean):
- bca: {name, x, mean, replicates, lo, hi, z0, a_hat, alpha_lo, alpha_hi}. `replicates` are 2000
      bootstrap means drawn with numpy here; `mean` is np.mean(x), the exact float scipy compares
      them with for z0 (several replicates tie with it, so z0 hangs on its last bit); the interval
      is scipy's from exactly those replicates:
      z0/a_hat/alpha_lo/alpha_hi from scipy.stats._resampling._bca_interval (scipy's private
      function, called directly) and lo, hi = scipy.stats.quantile(replicates, [alpha_lo,
      alpha_hi]) (method='linear'), which is what scipy.stats.bootstrap does with them; checked
      equal to the public scipy.stats.bootstrap((x,), np.mean, method='BCa', n_resamples=0,
      bootstrap_result=<those replicates>).
- bca_mc: {name, x, lo, hi}  scipy.stats.bootstrap((x,), np.mean, method='BCa',
      n_resamples=200000, confidence_level=0.95, rng=<seeded>): the same data, for a loose
      Monte-Carlo comparison with an interval the Rust code draws itself.

Exact permutation tests (scipy.stats.permutation_test, n_resamples=np.inf, two-sided):
- sign_flip: {name, d, p}  permutation_test((d,), np.mean, permutation_type='samples',
      n_resamples=np.inf, alternative='two-sided').pvalue; for one sample 'samples' flips signs
      (all 2^n flips, the identity included). scipy's rule: gamma = 100 * eps * |observed|;
      p_less = #(null <= observed + gamma) / 2^n, p_greater = #(null >= observed - gamma) / 2^n,
      p = min(1, 2 * min(p_less, p_greater)). permutation_test needs n >= 2: for n = 1 the p is
      that same rule applied to an explicit numpy enumeration of the flips (as checked equal to
      permutation_test's for every n >= 2).
- spearman_perm: {name, x, y, p}  permutation_test((x, y), lambda x, y:
      scipy.stats.spearmanr(x, y).statistic, permutation_type='pairings', n_resamples=np.inf,
      alternative='two-sided').pvalue (same tie rule). For n = 6 (720^2 pairings) the statistic is
      the same Spearman rho written vectorized (Pearson's r of scipy.stats.rankdata ranks), to keep
      the run short; every case is also checked against a y-only enumeration with spearmanr.
- stratified_trend: {name, x, ys, mean_rho, p}  brute force with itertools: the statistic is the
      mean over seeds of spearmanr(x, ys[s]); the null permutes each seed's y over all k! orders
      independently (all k!^n_seeds combinations); p = #(|mean rho| >= |observed| - 1e-12) / k!^n.

Two-sample and trend tests:
- welch:        {name, a, b, p, diff}  scipy.stats.ttest_ind(b, a, equal_var=False).pvalue,
                diff = mean(b) - mean(a)
- mann_whitney: {name, id, shifted, p}  scipy.stats.mannwhitneyu(id, shifted,
                alternative='two-sided', method='asymptotic', use_continuity=True).pvalue
- spearman_t:   {name, x, y, rho, p}  scipy.stats.spearmanr(x, y) (p from Student's t, n - 2 df)

Multiple comparisons:
- multipletests: {name, p, holm, bh}  statsmodels.stats.multitest.multipletests(p,
                 method='holm')[1] and method='fdr_bh' [1]
"""
import itertools
import json
import sys

import numpy as np
import scipy
import sklearn
import statsmodels
from scipy import special, stats
from scipy._lib._array_api import array_namespace
from scipy.stats._resampling import _bca_interval, _percentile_of_score
from sklearn import metrics
from statsmodels.stats.multitest import multipletests


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


def floats(values):
    return [float(v) for v in values]


def t_interval(name, x):
    x = np.asarray(x, dtype=np.float64)
    mean = float(np.mean(x))
    lo, hi = stats.t.interval(0.95, len(x) - 1, loc=mean, scale=stats.sem(x))
    return {
        "name": name,
        "x": floats(x),
        "mean": mean,
        "lo": float(lo),
        "hi": float(hi),
        "p": float(stats.ttest_1samp(x, 0).pvalue),
    }


def t_ppf(df, q):
    return {"name": f"df={df} q={q}", "df": df, "q": q, "value": float(stats.t.ppf(q, df))}


def t_sf(df, t):
    return {"name": f"df={df} t={t}", "df": df, "t": t, "value": float(stats.t.sf(t, df))}


def ndtr(x):
    return {"name": f"x={x}", "x": x, "value": float(special.ndtr(x))}


def ndtri(p):
    return {"name": f"p={p}", "p": p, "value": float(special.ndtri(p))}


def mean_statistic(x, axis=-1):
    return np.mean(x, axis=axis)


def bca(name, x, rng, n_replicates=2000, confidence_level=0.95):
    """scipy's BCa interval from replicates drawn here, through scipy's own private functions."""
    x = np.asarray(x, dtype=np.float64)
    replicates = x[rng.integers(0, len(x), (n_replicates, len(x)))].mean(axis=-1)
    xp = array_namespace(x)
    alpha = (1 - confidence_level) / 2  # as scipy.stats.bootstrap forms it
    alpha_lo, alpha_hi, a_hat = _bca_interval(
        (x,), mean_statistic, axis=-1, alpha=alpha, theta_hat_b=replicates, batch=None, xp=xp
    )
    theta_hat = np.expand_dims(mean_statistic(x), -1)
    z0 = special.ndtri(_percentile_of_score(replicates, theta_hat, axis=-1, xp=xp))
    lo, hi = stats.quantile(replicates, np.stack([alpha_lo, alpha_hi]), axis=-1)
    # The public function, handed these replicates and asked for no new ones, agrees.
    public = stats.bootstrap(
        (x,), np.mean, method="BCa", n_resamples=0, confidence_level=confidence_level,
        bootstrap_result=stats._resampling.BootstrapResult(None, replicates, None),
    ).confidence_interval
    assert (public.low, public.high) == (lo, hi), (name, public, lo, hi)
    return {
        "name": name,
        "x": floats(x),
        "mean": float(theta_hat[0]),
        "replicates": floats(replicates),
        "lo": float(lo),
        "hi": float(hi),
        "z0": float(z0),
        "a_hat": float(a_hat),
        "alpha_lo": float(alpha_lo),
        "alpha_hi": float(alpha_hi),
    }


def bca_mc(name, x, seed):
    ci = stats.bootstrap(
        (np.asarray(x, dtype=np.float64),), np.mean, method="BCa", n_resamples=200_000,
        confidence_level=0.95, rng=np.random.default_rng(seed),
    ).confidence_interval
    return {"name": name, "x": floats(x), "lo": float(ci.low), "hi": float(ci.high)}


def scipy_two_sided(null, observed):
    """permutation_test's exact two-sided p: relative tie tolerance, twice the smaller tail."""
    gamma = abs(np.finfo(np.float64).eps * 100 * observed)
    less = np.count_nonzero(null <= observed + gamma) / len(null)
    greater = np.count_nonzero(null >= observed - gamma) / len(null)
    return min(1.0, 2 * min(less, greater))


def sign_flip(name, d):
    d = np.asarray(d, dtype=np.float64)
    # 'samples' with one sample is every one of the 2^n sign flips (the identity included).
    signs = np.array(list(itertools.product([1.0, -1.0], repeat=len(d))))
    p = scipy_two_sided((signs * d).mean(axis=-1), np.mean(d))
    if len(d) >= 2:  # permutation_test refuses a single observation; then `p` is the only value
        res = stats.permutation_test(
            (d,), np.mean, permutation_type="samples", n_resamples=np.inf, alternative="two-sided"
        )
        assert len(res.null_distribution) == 2 ** len(d) and res.pvalue == p, (name, res.pvalue, p)
    return {"name": name, "d": floats(d), "p": float(p)}


def ranked_pearson(x, y, axis):
    """Spearman's rho, vectorized: Pearson's r of average ranks (what spearmanr computes)."""
    return stats.pearsonr(stats.rankdata(x, axis=axis), stats.rankdata(y, axis=axis), axis=axis).statistic


def spearman_perm(name, x, y):
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) <= 5:
        res = stats.permutation_test(
            (x, y), lambda x, y: stats.spearmanr(x, y).statistic, permutation_type="pairings",
            n_resamples=np.inf, alternative="two-sided",
        )
    else:  # 720^2 pairings: the same statistic, vectorized
        res = stats.permutation_test(
            (x, y), ranked_pearson, vectorized=True, permutation_type="pairings",
            n_resamples=np.inf, alternative="two-sided",
        )
    # Cross-check: permuting y alone gives the same p (each order of y appears n! times).
    null = np.array([stats.spearmanr(x, y[list(o)]).statistic for o in itertools.permutations(range(len(y)))])
    assert abs(scipy_two_sided(null, stats.spearmanr(x, y).statistic) - res.pvalue) < 1e-12, name
    return {"name": name, "x": floats(x), "y": floats(y), "p": float(res.pvalue)}


def stratified_trend(name, x, ys):
    """Brute force: every seed's y in every order, independently; statistic = mean rho."""
    orders = list(itertools.permutations(range(len(x))))  # orders[0] is the observed order
    rhos = [[stats.spearmanr(x, np.asarray(y)[list(o)]).statistic for o in orders] for y in ys]
    observed = sum(r[0] for r in rhos) / len(ys)
    extreme = sum(abs(sum(c) / len(ys)) >= abs(observed) - 1e-12 for c in itertools.product(*rhos))
    return {
        "name": name,
        "x": floats(x),
        "ys": [floats(y) for y in ys],
        "mean_rho": float(observed),
        "p": extreme / len(orders) ** len(ys),
    }


def welch(name, a, b):
    return {
        "name": name,
        "a": floats(a),
        "b": floats(b),
        "p": float(stats.ttest_ind(b, a, equal_var=False).pvalue),
        "diff": float(np.mean(b) - np.mean(a)),
    }


def mann_whitney(name, id_scores, shifted_scores):
    p = stats.mannwhitneyu(
        id_scores, shifted_scores, alternative="two-sided", method="asymptotic", use_continuity=True
    ).pvalue
    return {"name": name, "id": floats(id_scores), "shifted": floats(shifted_scores), "p": float(p)}


def spearman_t(name, x, y):
    res = stats.spearmanr(x, y)
    return {"name": name, "x": floats(x), "y": floats(y), "rho": float(res.statistic), "p": float(res.pvalue)}


def multiple(name, p):
    return {
        "name": name,
        "p": floats(p),
        "holm": floats(multipletests(p, method="holm")[1]),
        "bh": floats(multipletests(p, method="fdr_bh")[1]),
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

# Everything below draws from its own generator, after (and independent of) the draws above.
rng = np.random.default_rng(20261201)
intervals = [
    t_interval("n2", [1.0, 3.0]),
    t_interval("n2_negative", [-2.5, -0.5]),
    t_interval("n3", [0.2, 0.5, 0.3]),
    t_interval("n3_zeros", [0.0, 0.0, 1.0]),
    t_interval("n5_ties", [0.27, 0.28, 0.28, 0.27, 0.30]),
    t_interval("n5_negative_mean", [-1.2, -0.4, 0.3, -2.0, -0.9]),
    t_interval("n10", np.round(rng.normal(0.1, 1, 10), 4)),
    t_interval("n10_near_constant", [0.5] * 9 + [0.51]),
    t_interval("n16", np.round(rng.normal(-0.3, 0.5, 16), 4)),
    t_interval("n20_lognormal", np.round(rng.lognormal(0, 1.5, 20), 4)),
    t_interval("n20_tiny_scale", np.round(rng.normal(1e-3, 1e-4, 20), 7)),
]
t_ppfs = [t_ppf(df, q) for df in (1, 2, 3, 4, 5, 9, 19, 100) for q in (0.975, 0.995, 0.9)]
t_sfs = [t_sf(df, t) for df in (1, 2, 4, 9, 30) for t in (0.0, 0.5, 2.1, 7.3, 40.0, -2.1)]
ndtrs = [ndtr(x) for x in (-8.0, -3.0, -1.96, -0.5, 0.0, 0.3, 1.0, 2.5, 6.0)]
ndtris = [ndtri(p) for p in (1e-10, 1e-4, 0.025, 0.1, 0.5, 0.7, 0.975, 0.9999)]

rng = np.random.default_rng(20261202)
bca_data = [
    ("n5_normal", np.round(rng.normal(0.3, 1, 5), 3)),
    ("n10_lognormal", np.round(rng.lognormal(0, 1, 10), 3)),
    ("n20_negative", np.round(rng.normal(-0.5, 2, 20), 3)),
    ("n10_ties", np.array([0.1, 0.1, 0.1, 0.2, 0.2, 0.2, 0.3, 0.3, 0.5, 0.8])),
]
bcas = [bca(name, x, rng) for name, x in bca_data]
bca_mcs = [bca_mc(name, x, 20261203 + i) for i, (name, x) in enumerate(bca_data)]

rng = np.random.default_rng(20261204)
sign_flips = [
    sign_flip("n1_positive", [0.7]),
    sign_flip("n1_zero", [0.0]),
    sign_flip("n2", [0.3, -0.1]),
    sign_flip("n3_cancels_to_rounding", [0.1, 0.2, -0.3]),  # mean is 1.85e-17, not 0
    sign_flip("n3_zeros", [0.0, 0.0, 0.0]),
    sign_flip("n4_tied_abs", [0.5, -0.5, 0.5, 0.5]),
    sign_flip("n5_all_equal", [0.2] * 5),
    sign_flip("n5_with_zeros", [0.0, 0.3, 0.0, -0.1, 0.4]),
    sign_flip("n6_clear_positive", [0.31, 0.12, 0.45, 0.27, 0.08, 0.5]),
    sign_flip("n8_ties_zero", [0.01, -0.01, 0.02, 0.02, -0.02, 0.03, 0.01, 0.0]),
    sign_flip("n10_negative", np.round(rng.normal(-0.5, 0.3, 10), 3)),
    sign_flip("n12_all_equal_negative", [-0.004] * 12),
    sign_flip("n16_noisy", np.round(rng.normal(0.1, 1, 16), 3)),
    sign_flip("n16_clear", np.round(rng.normal(1, 0.2, 16), 3)),
    sign_flip("n16_integer_ties_zeros", np.round(rng.normal(0.3, 1, 16), 0)),
]

levels = {3: [0.1, 0.25, 0.5], 4: [0.1, 0.25, 0.5, 1.0], 5: [0.1, 0.25, 0.5, 1.0, 2.0],
          6: [0.05, 0.1, 0.25, 0.5, 1.0, 2.0]}
spearman_perms = [
    spearman_perm("k3_monotone", levels[3], [1.0, 2.0, 3.0]),
    spearman_perm("k3_reversed", levels[3], [3.0, 2.0, 1.0]),
    spearman_perm("k3_tie_in_y", levels[3], [1.0, 1.0, 2.0]),
    spearman_perm("k4_monotone", levels[4], [0.2758, 0.2759, 0.2773, 0.2790]),
    spearman_perm("k4_reversed", levels[4], [0.4, 0.3, 0.2, 0.1]),
    spearman_perm("k4_noisy", levels[4], [0.3, 0.1, 0.4, 0.2]),
    spearman_perm("k4_tie_in_y", levels[4], [0.5, 0.5, 0.7, 0.6]),
    spearman_perm("k5_monotone", levels[5], [0.11, 0.12, 0.15, 0.2, 0.31]),
    spearman_perm("k5_noisy", levels[5], [0.2, 0.1, 0.4, 0.3, 0.5]),
    spearman_perm("k5_tie_in_y", levels[5], [0.3, 0.1, 0.3, 0.4, 0.5]),
    spearman_perm("k6_monotone", levels[6], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
    spearman_perm("k6_noisy_tie", levels[6], [0.2, 0.1, 0.3, 0.3, 0.6, 0.5]),
]

stratified = [
    stratified_trend("s1_k4", levels[4], [[0.2758, 0.2759, 0.2773, 0.2790]]),
    stratified_trend("s2_k3", levels[3], [[1.0, 2.0, 3.0], [2.0, 1.0, 3.0]]),
    stratified_trend("s3_k3", levels[3], [[1.0, 2.0, 3.0], [1.0, 3.0, 2.0], [0.1, 0.2, 0.3]]),
    stratified_trend("s2_k4_monotone", levels[4], [[1.0, 2.0, 3.0, 4.0], [0.1, 0.3, 0.5, 0.9]]),
    stratified_trend("s2_k4_opposite", levels[4], [[1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0]]),
    stratified_trend("s3_k4_monotone", levels[4], [[1.0, 2.0, 3.0, 4.0], [0.1, 0.3, 0.5, 0.9], [5.0, 6.0, 7.0, 8.0]]),
    stratified_trend("s3_k4_mixed_tie", levels[4], [[0.3, 0.1, 0.4, 0.5], [0.2, 0.2, 0.3, 0.4], [0.4, 0.3, 0.5, 0.6]]),
]

rng = np.random.default_rng(20261205)
welchs = [
    welch("n5_5", np.round(rng.normal(0, 1, 5), 4), np.round(rng.normal(1, 1, 5), 4)),
    welch("n5_8_unequal_var", np.round(rng.normal(0, 0.1, 5), 4), np.round(rng.normal(0.2, 2, 8), 4)),
    welch("n20_20_ties", np.round(rng.normal(0, 1, 20), 1), np.round(rng.normal(0.3, 1, 20), 1)),
    welch("n30_40_same_mean", np.round(rng.normal(0.5, 1, 30), 4), np.round(rng.normal(0.5, 0.5, 40), 4)),
    welch("n50_60_lognormal", np.round(rng.lognormal(0, 1.2, 50), 4), np.round(rng.lognormal(0.3, 1.2, 60), 4)),
    welch("n100_120_negative", np.round(rng.normal(0.28, 0.02, 100), 5), np.round(rng.normal(0.27, 0.03, 120), 5)),
    welch("n300_250", np.round(rng.normal(0, 1, 300), 4), np.round(rng.normal(0.1, 1.3, 250), 4)),
]

rng = np.random.default_rng(20261206)
mann_whitneys = [
    mann_whitney("n3_3_separated", [4.0, 5.0, 6.0], [1.0, 2.0, 3.0]),
    mann_whitney("n3_5_interleaved", [0.1, 0.5, 0.9], [0.2, 0.3, 0.6, 0.7, 1.1]),
    mann_whitney("n5_5_ties", [1.0, 2.0, 2.0, 3.0, 3.0], [2.0, 3.0, 3.0, 4.0, 5.0]),
    mann_whitney("n20_25_rounded", np.round(rng.normal(0.5, 1, 20), 1), np.round(rng.normal(0, 1, 25), 1)),
    mann_whitney("n50_60", np.round(rng.normal(0.3, 1, 50), 4), np.round(rng.normal(0, 1.5, 60), 4)),
    mann_whitney("n300_200_heavy_ties", np.round(rng.normal(0.2, 1, 300), 0), np.round(rng.normal(0, 1, 200), 0)),
    mann_whitney("n300_300", np.round(rng.normal(0, 1, 300), 4), np.round(rng.normal(0, 1, 300), 4)),
]

rng = np.random.default_rng(20261207)
x10, x40 = np.repeat([1.0, 2.0, 3.0, 4.0, 5.0], 2), np.repeat(levels[4], 10)
x100, x200, x400 = np.repeat(levels[4], 25), np.repeat(levels[5], 40), np.repeat([1.0, 2.0, 3.0, 4.0], 100)
spearman_ts = [
    spearman_t("n10", x10, np.round(x10 * 0.1 + rng.normal(0, 0.2, 10), 4)),
    spearman_t("n40", x40, np.round(0.02 * x40 + rng.normal(0, 0.02, 40), 4)),
    spearman_t("n100_ties_both", x100, np.round(0.1 * x100 + rng.normal(0, 0.1, 100), 1)),
    spearman_t("n200_negative", x200, np.round(-0.05 * x200 + rng.normal(0, 0.1, 200), 4)),
    spearman_t("n400_weak", x400, np.round(0.02 * x400 + rng.normal(0, 0.5, 400), 4)),
    spearman_t("n400_none", x400, np.round(rng.normal(0, 1, 400), 4)),
]

rng = np.random.default_rng(20261208)
multiples = [
    multiple("single", [0.03]),
    multiple("five_ties", [0.01, 0.04, 0.04, 0.03, 0.01]),
    multiple("twenty_random", np.round(rng.uniform(0, 1, 20) ** 2, 6)),
    multiple("ones_and_tiny", [1.0, 1e-12, 0.5, 1.0, 1e-300, 0.049, 0.0]),
    multiple("all_ones", [1.0, 1.0, 1.0]),
    multiple("sorted_descending", [0.9, 0.2, 0.04, 0.011, 0.01, 0.001]),
]

json.dump(
    {
        "made_by": "python3 scripts/report_fixtures.py > tests/fixtures/report_stats.json",
        "versions": {
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "scikit-learn": sklearn.__version__,
            "statsmodels": statsmodels.__version__,
        },
        "detection": cases,
        "spearman": ranks,
        "t_interval": intervals,
        "t_ppf": t_ppfs,
        "t_sf": t_sfs,
        "ndtr": ndtrs,
        "ndtri": ndtris,
        "bca": bcas,
        "bca_mc": bca_mcs,
        "sign_flip": sign_flips,
        "spearman_perm": spearman_perms,
        "stratified_trend": stratified,
        "welch": welchs,
        "mann_whitney": mann_whitneys,
        "spearman_t": spearman_ts,
        "multipletests": multiples,
    },
    sys.stdout,
    indent=1,
    allow_nan=False,
)
print()
