"""Reference values for the trust tests (tests/integration/trust.rs), computed by the libraries people
trust for them, from the cases the test writes:

    python3 scripts/trust_reference.py CASES.json OUT.json

- temperature: scipy.optimize.minimize_scalar (bounded, xatol 1e-12) of the NLL of
  softmax(z / T) over log T;
- ECE / adaptive ECE: netcal.metrics.ECE (bins=15, equal_intervals True / False);
- Brier and log loss: scikit-learn's brier_score_loss and log_loss;
- slope and intercept: statsmodels' Logit of the outcome on logit(p);
- Wilson and Clopper-Pearson: statsmodels' proportion_confint (wilson, beta);
- DeLong: an independent O(mn) implementation written here with numpy (the kernel matrix of
  DeLong et al. 1988, not the midrank shortcut the tool uses);
- the cluster bootstrap: scipy.stats.bootstrap (percentile and BCa) on the groups, with its
  resampling replaced by the tool's resampled group indices;
- kappa, MCC, balanced accuracy: scikit-learn's;
- conformal sets: MAPIE's SplitConformalClassifier (LAC, prefit) and crepes' Mondrian
  conformal classifier (the classes as categories).
"""

import json
import sys

import numpy as np
import scipy.optimize
import scipy.stats
import scipy.stats._resampling as resampling
import statsmodels.api as sm
from netcal.metrics import ECE
from sklearn.metrics import (balanced_accuracy_score, brier_score_loss, cohen_kappa_score,
                             log_loss, matthews_corrcoef)
from statsmodels.stats.proportion import proportion_confint


def softmax(z, t):
    z = np.asarray(z, dtype=np.float64) / t
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def nll(z, y, t):
    p = softmax(z, t)
    return -np.mean(np.log(p[np.arange(len(y)), y]))


def temperature(z, y):
    res = scipy.optimize.minimize_scalar(lambda lt: nll(z, y, np.exp(lt)), bounds=(-9, 9),
                                         method="bounded", options={"xatol": 1e-12})
    return float(np.exp(res.x))


def scored(p, y):
    """The probability the measures look at: the positive (first) class with two, else
    the top label."""
    if p.shape[1] == 2:
        return p[:, 0], (y == 0).astype(int)
    top = p.argmax(axis=1)
    return p.max(axis=1), (top == y).astype(int)


def calibration(case):
    z = np.array(case["logits"])
    y = np.array(case["labels"])
    t = temperature(z, y)
    out = {"temperature": t, "at": []}
    for tt in case["temperatures"]:
        p = softmax(z, tt)
        conf, hit = scored(p, y)
        # netcal: two classes take the positive class's confidence when given one column
        # and 0/1 labels; the top label with more.
        if p.shape[1] == 2:
            ece = ECE(bins=15).measure(conf, hit)
            aece = ECE(bins=15, equal_intervals=False).measure(conf, hit)
            brier = brier_score_loss(hit, conf)
        else:
            ece = ECE(bins=15).measure(p, y)
            aece = ECE(bins=15, equal_intervals=False).measure(p, y)
            onehot = np.eye(p.shape[1])[y]
            brier = float(np.mean(np.sum((p - onehot) ** 2, axis=1)))
        x = np.log(np.clip(conf, 2.2e-16, 1 - 2.2e-16) / (1 - np.clip(conf, 2.2e-16, 1 - 2.2e-16)))
        fit = sm.Logit(hit, sm.add_constant(x)).fit(disp=0, method="newton", tol=1e-14,
                                                    maxiter=200)
        out["at"].append({
            "t": tt,
            "ece": float(ece),
            "adaptive_ece": float(aece),
            "brier": float(brier),
            "nll": float(log_loss(y, p, labels=list(range(p.shape[1])))),
            "intercept": float(fit.params[0]),
            "slope": float(fit.params[1]),
        })
    return out


def ece_on_edges(case):
    p = np.array(case["p"])
    hit = np.array(case["hit"])
    return float(ECE(bins=15).measure(p, hit))


def proportions(case):
    out = []
    for k, n in case["counts"]:
        w = proportion_confint(k, n, alpha=0.05, method="wilson")
        b = proportion_confint(k, n, alpha=0.05, method="beta")
        out.append({"wilson": [float(w[0]), float(w[1])], "beta": [float(b[0]), float(b[1])]})
    return out


def delong_kernel(scores, positive):
    s = np.asarray(scores)
    pos = s[np.asarray(positive)]
    neg = s[~np.asarray(positive)]
    psi = (pos[:, None] > neg[None, :]).astype(float) + 0.5 * (pos[:, None] == neg[None, :])
    auc = psi.mean()
    v10 = psi.mean(axis=1)
    v01 = psi.mean(axis=0)
    var = v10.var(ddof=1) / len(pos) + v01.var(ddof=1) / len(neg)
    return auc, var, v10, v01


def delong(case):
    positive = np.array(case["positive"], dtype=bool)
    auc, var, a10, a01 = delong_kernel(case["a"], positive)
    auc_b, _, b10, b01 = delong_kernel(case["b"], positive)
    m, n = positive.sum(), (~positive).sum()
    pvar = (np.var(a10, ddof=1) + np.var(b10, ddof=1) - 2 * np.cov(a10, b10)[0, 1]) / m + \
        (np.var(a01, ddof=1) + np.var(b01, ddof=1) - 2 * np.cov(a01, b01)[0, 1]) / n
    z = (auc_b - auc) / np.sqrt(pvar)
    return {"auc": auc, "variance": var, "auc_b": auc_b, "z": float(z),
            "p": float(2 * scipy.stats.norm.sf(abs(z)))}


def bootstrap(case):
    members = [np.array(m) for m in case["members"]]
    right = np.array(case["right"], dtype=float)
    resamples = np.array(case["resamples"])
    original = resampling._bootstrap_resample

    def tools_resamples(sample, n_resamples=None, rng=None, *, xp):
        assert n_resamples == len(resamples)
        return sample[..., resamples]

    def accuracy(groups, axis=-1):
        groups = np.atleast_2d(groups)
        out = [right[np.concatenate([members[int(g)] for g in row])].mean() for row in groups]
        return np.array(out) if len(out) > 1 else out[0]

    resampling._bootstrap_resample = tools_resamples
    try:
        out = {}
        for method in ["percentile", "BCa"]:
            res = scipy.stats.bootstrap((np.arange(len(members)),), accuracy, vectorized=True,
                                        n_resamples=len(resamples), batch=len(resamples),
                                        method=method, confidence_level=0.95)
            ci = res.confidence_interval
            out[method.lower()] = [float(ci.low), float(ci.high)]
    finally:
        resampling._bootstrap_resample = original
    return out


def agreement(case):
    y, p = case["truth"], case["pred"]
    return {"kappa": float(cohen_kappa_score(y, p)), "mcc": float(matthews_corrcoef(y, p)),
            "balanced_accuracy": float(balanced_accuracy_score(y, p))}


def conformal(case):
    from mapie.classification import SplitConformalClassifier
    from crepes import ConformalClassifier

    cal_p = np.array(case["cal_probs"])
    cal_y = np.array(case["cal_labels"])
    test_p = np.array(case["test_probs"])
    alpha = case["alpha"]
    k = cal_p.shape[1]

    from sklearn.base import BaseEstimator, ClassifierMixin

    class Fixed(ClassifierMixin, BaseEstimator):
        """A prefit 'model' whose inputs are the case's probabilities."""

        def __init__(self):
            self.classes_ = np.arange(k)
            self.n_features_in_ = k

        def fit(self, X, y):
            return self

        def predict_proba(self, X):
            return np.asarray(X, dtype=np.float64)

        def predict(self, X):
            return np.asarray(X).argmax(axis=1)

    model = Fixed()
    mapie = SplitConformalClassifier(estimator=model, confidence_level=1 - alpha,
                                     conformity_score="lac", prefit=True)
    mapie.conformalize(cal_p, cal_y)
    _, sets = mapie.predict_set(test_p)
    pooled = [list(np.flatnonzero(s[:, 0]).astype(int).tolist()) for s in sets]

    # crepes, Mondrian with the classes as categories: a class's p-value uses that class's
    # calibration scores.
    cal_scores = 1 - cal_p[np.arange(len(cal_y)), cal_y]
    cc = ConformalClassifier()
    cc.fit(cal_scores, bins=cal_y)
    # crepes' predict_set keeps a class whose p-value equals alpha (p >= 1 - confidence), a
    # larger set than the k-th order statistic when alpha (n + 1) is a whole number; the
    # standard split-conformal set keeps p > alpha. Its p-values, with that rule:
    p_values = np.zeros(test_p.shape)
    for c in range(k):
        p_values[:, c] = cc.predict_p((1 - test_p[:, c]).reshape(-1, 1),
                                      bins=np.full(len(test_p), c), smoothing=False)[:, 0]
    mondrian = [list(np.flatnonzero(row > alpha).astype(int).tolist()) for row in p_values]
    crepes_sets = np.zeros(test_p.shape, dtype=int)
    for c in range(k):
        crepes_sets[:, c] = cc.predict_set((1 - test_p[:, c]).reshape(-1, 1),
                                           bins=np.full(len(test_p), c),
                                           confidence=1 - alpha, smoothing=False)[:, 0]
    crepes_own = [list(np.flatnonzero(row).astype(int).tolist()) for row in crepes_sets]
    return {"pooled": pooled, "mondrian": mondrian, "crepes_predict_set": crepes_own,
            "calibration_per_class": [int((cal_y == c).sum()) for c in range(k)]}


def main():
    cases = json.load(open(sys.argv[1]))
    out = {}
    for name, fn in [("calibration", calibration), ("calibration3", calibration),
                     ("edges", ece_on_edges), ("proportions", proportions),
                     ("delong", delong), ("bootstrap", bootstrap), ("agreement", agreement),
                     ("agreement3", agreement), ("conformal", conformal),
                     ("conformal3", conformal)]:
        if name in cases:
            out[name] = fn(cases[name])
    json.dump(out, open(sys.argv[2], "w"))


if __name__ == "__main__":
    main()
