"""Across the runs of a task: the predicted and observed best learning rates [C2]/[C3], and the rank correlation
(Spearman ρ with a bootstrap interval) of the runs' predicted and observed final values.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict

import numpy as np

from sfbench.theory import closed_form_integrals, schedule_integrals
from sfbench.theory.predict import predict

from .runs import Run, group_by, to_float

#: bootstrap resamples for the rank-correlation intervals
BOOTSTRAP = 2000
#: fewer runs than this: the rank correlation's interval is [−1, 1] (see `spearman`)
MIN_CI_RUNS = 5


def finals_by_lr(runs: list[Run]) -> dict[float, list[float]]:
    """The final values of the finished runs (`Run.finished`), by lr."""
    by_lr: dict[float, list[float]] = defaultdict(list)
    for r in runs:
        if r.finished:
            by_lr[r.lr].append(r.final)
    return by_lr


def best_lr(runs: list[Run], default: float | None = None) -> float | None:
    """The observed best lr: the one with the lowest mean final value over seeds among the finished runs; `default`
    when none has finished."""
    by_lr = finals_by_lr(runs)
    return min(by_lr, key=lambda lr: float(np.mean(by_lr[lr]))) if by_lr else default


def _resampled_ranks(values: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean rank, as scipy's rankdata) of `values[idx]` within each row of `idx`,
    by counting per row how many values are below each one — O(rows·(n + distinct values)), no per-row sort."""
    uniq, code = np.unique(values, return_inverse=True)
    k, b = len(uniq), idx.shape[0]
    codes = code[idx]
    counts = np.bincount((codes + k * np.arange(b)[:, None]).ravel(), minlength=b * k).reshape(b, k)
    below = np.cumsum(counts, axis=1) - counts
    rows = np.arange(b)[:, None]
    return below[rows, codes] + (counts[rows, codes] + 1) / 2.0


def spearman(pred, obs, *, n_boot: int = BOOTSTRAP, level: float = 0.95, seed: int = 0) -> dict:
    """Spearman ρ of paired values with n, scipy's p-value and a percentile bootstrap interval (pairs resampled
    with replacement, `n_boot` times; resamples whose ranks are constant are skipped). Fewer than 3 finite pairs, or
    constant values: NaNs. 3–4 pairs: the interval is [−1, 1] (MIN_CI_RUNS)."""
    from scipy.stats import spearmanr

    pred, obs = np.asarray(pred, dtype=np.float64), np.asarray(obs, dtype=np.float64)
    ok = np.isfinite(pred) & np.isfinite(obs)
    pred, obs = pred[ok], obs[ok]
    n = int(ok.sum())
    nan = float("nan")
    out = {"rho": nan, "pvalue": nan, "n": n, "ci": [nan, nan], "ci_level": level}
    if n < 3 or np.ptp(pred) == 0 or np.ptp(obs) == 0:
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = spearmanr(pred, obs)
    out.update(rho=float(res.statistic), pvalue=float(res.pvalue))
    if n < MIN_CI_RUNS:
        # resamples of ≤ 4 distinct pairs keep a perfect ranking perfect, so the percentile interval would read
        # [1, 1]; and no ranking of 4 runs is significant (exact permutation p ≥ 2/4! ≈ 0.083 for ρ = ±1):
        # the honest interval is the whole range
        out["ci"] = [-1.0, 1.0]
        return out
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    rp, ro = _resampled_ranks(pred, idx), _resampled_ranks(obs, idx)
    rp -= rp.mean(axis=1, keepdims=True)
    ro -= ro.mean(axis=1, keepdims=True)
    den = np.sqrt((rp * rp).sum(axis=1) * (ro * ro).sum(axis=1))
    good = den > 0
    if good.sum() >= 10:
        rhos = np.clip((rp * ro).sum(axis=1)[good] / den[good], -1.0, 1.0)
        alpha = (1 - level) / 2
        out["ci"] = [float(np.quantile(rhos, alpha)), float(np.quantile(rhos, 1 - alpha))]
    return out


def independent(run: Run) -> bool:
    """Whether the run's bound is a prediction made without its outcome: D is the task's own (the testbeds), not the
    distance x travelled in the run itself, which grows with the lr and makes any prediction follow the grid."""
    return run.D[1] == "task"


NO_INDEPENDENT_D = ("no independent prediction: D is the distance x travelled in these runs, which grows with the lr "
                    "(give a known D to python -m sfbench.theory predict --D … --G …)")


def _scope_correlation(members: list[Run]) -> dict:
    """ρ over the runs with an independent prediction, given only from MIN_CI_RUNS of them on."""
    usable = [r for r in members if independent(r)]
    out = spearman([r.predicted for r in usable], [r.final for r in usable])
    note = None
    if len(usable) < len(members):
        note = f"{len(members) - len(usable)} run(s) left out: {NO_INDEPENDENT_D}"
    if len(usable) < MIN_CI_RUNS:
        out.update(rho=float("nan"), pvalue=float("nan"), ci=[float("nan"), float("nan")])
        note = "; ".join(filter(None, [note, f"{len(usable)} run(s) with an independent prediction: ρ needs "
                                             f"≥ {MIN_CI_RUNS}"]))
    return {**out, "note": note}


def correlations(runs: list[Run]) -> list[dict]:
    """Spearman ρ of (predicted final bound, observed final metric), with n and a bootstrap interval: per task over
    its completed runs, and per (task, method) — over the runs whose prediction is independent (`independent`), and
    only from MIN_CI_RUNS such runs on."""
    out = []
    for task, members in sorted(group_by([r for r in runs if r.finished], lambda r: r.task).items()):
        out.append({"task": task, "scope": "overall", "method": None, "optimizer": None, "schedule": None,
                    **_scope_correlation(members)})
        for method, group in sorted(group_by(members, lambda r: r.method).items()):
            out.append({"task": task, "scope": "method", "method": method, "optimizer": group[0].optimizer,
                        "schedule": group[0].schedule, **_scope_correlation(group)})
    return out


def _schedule_B(group: list[Run]) -> tuple[float, np.ndarray | None, str]:
    """B = mean h², h = logged lr / base lr (median over the runs), else [C2]'s closed form; and one h array."""
    Bs, h_one = [], None
    for r in group:
        lrs = r.per_step("lr")
        if lrs is not None and r.lr > 0 and r.horizon and len(lrs) >= r.horizon:
            h = lrs[: r.horizon] / r.lr
            Bs.append(schedule_integrals(h)[1])
            h_one = h if h_one is None else h_one
    if Bs:
        return float(np.median(Bs)), h_one, "logged lr"
    r = group[0]
    try:
        T = r.horizon or 1
        w = to_float(r.config.get("sched.warmup_steps"), 0.0) / T
        d = to_float(r.config.get("sched.decay_frac"), 0.0)
        return closed_form_integrals(r.schedule, w, d if r.schedule == "wsd" else 0.0)[1], None, "closed form"
    except ValueError:
        return float("nan"), None, "unknown"


def best_lrs(runs: list[Run]) -> list[dict]:
    """Per (task, method): the predicted best base lr and the observed one (lowest mean final metric over seeds
    among the completed runs). Methods whose opt.lr caps an adaptive step (SF-Polyak) get the observed best cap and
    no prediction: [C2]/[C3] predict a base step size for a schedule, not a cap."""
    out = []
    for (task, method), group in sorted(group_by(runs, lambda r: (r.task, r.method)).items()):
        healthy = [r for r in group if r.status != "diverged"]
        role = group[0].lr_role
        g2 = [r.column("theory/grad_sq").dropna().to_numpy(dtype=np.float64) for r in healthy]
        g2 = np.concatenate(g2) if g2 else np.zeros(0)
        g2 = g2[np.isfinite(g2)]
        G2 = float(g2.mean()) if g2.size else float("nan")
        Ds = [r.D[0] for r in group if math.isfinite(r.D[0])]
        D = float(np.median(Ds)) if Ds else float("nan")
        Ts = [r.horizon for r in group if r.horizon]
        T = int(np.median(Ts)) if Ts else None
        kinds = {r.kind for r in group if r.kind}
        kind = kinds.pop() if len(kinds) == 1 else None
        observed = best_lr(group, default=float("nan"))
        row = {"task": task, "method": method, "optimizer": group[0].optimizer, "schedule": group[0].schedule,
               "lr_role": role, "bound": kind, "observed": observed, "D": D, "G2": G2, "T": T,
               "n_lrs": len(finals_by_lr(group)), "observed_by": observed_by(group)}
        none = {"rule": None, "predicted": float("nan"), "predicted_C2": float("nan"), "ratio": float("nan"),
                "B": float("nan"), "B_source": None}
        if role == "cap":
            out.append({**row, **none, "note": "opt.lr is the cap of an adaptive step: no best-lr prediction"})
            continue
        if not all(independent(r) for r in group):
            out.append({**row, **none, "D": float("nan"), "note": NO_INDEPENDENT_D})
            continue
        B, h, B_source = _schedule_B(healthy or group)
        pred = pred_c2 = float("nan")
        rule = "C2"
        if h is not None and G2 > 0 and math.isfinite(D) and D > 0 and h.sum() > 0:
            # the function python -m sfbench.theory predict uses: [C1] (= [C2] for the logged h), or [C3]
            pred = pred_c2 = predict(h, D, math.sqrt(G2), "C1").best_lr
            if kind == "C3":
                pred, rule = predict(h, D, math.sqrt(G2), "C3").best_lr, "C3"
        elif T and G2 > 0 and B > 0 and math.isfinite(D):           # no logged lr: [C2]'s closed form of the shape
            pred = pred_c2 = D / (math.sqrt(G2) * math.sqrt(T * B))
        out.append({**row, "rule": rule, "predicted": pred, "predicted_C2": pred_c2,
                    "ratio": pred / observed if observed and math.isfinite(observed) else float("nan"),
                    "B": B, "B_source": B_source, "note": None})
    return out


def observed_by(group: list[Run]) -> str:
    """How the observed best lr was found: `grid` (the sweep's values), or the tuning sweeper and its trial count
    (e.g. `tune_lr: 20 trials`, hydra/sweeper=tune_lr: Optuna's TPE) — the tuned lr the prediction is set beside."""
    sweepers = {str(r.config.get("choices.hydra/sweeper")) for r in group if r.config.get("choices.hydra/sweeper")}
    if not sweepers:
        return "grid"
    return f"{', '.join(sorted(sweepers))}: {len(group)} trials"

