"""Scaling-law fits with bootstrap confidence intervals (numpy + scipy; no plotting, no files).

Every fit takes arrays of finished runs and returns a JSON-ready dict: the point estimate, 95% bootstrap
intervals (runs resampled with replacement, each refit started from the point estimate) and the data
it used; or {"skipped": reason} when the data cannot support it.

- chinchilla:  L(N, D) = E + A / N^alpha + B / D^beta (Hoffmann et al. 2022, approach 3), fitted as
  Besiroglu et al. 2024 describe: minimise the SUM over runs of
  Huber_{1e-3}(LSE(a - alpha log N, b - beta log D, e) - log L), A = e^a, B = e^b, E = e^e,
  by L-BFGS from Hoffmann's grid of 4500 starts, keeping the best.
- power_law:   L(x) = E + (x_c / x)^alpha (Kaplan et al. 2020), optionally with E = 0; least squares
  in log L. Used for L(N) at a fixed token budget and for the compute frontier L(C).
- isoflop:     per FLOP budget a parabola of L in log N, its vertex N_opt(C), and the power law
  N_opt = k C^a through the vertices (Hoffmann et al. approach 2).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
from scipy import optimize

HUBER_DELTA = 1e-3
CI_LEVEL = 0.95


# ---------------------------------------------------------------------------------------------
# Chinchilla: L(N, D) = E + A/N^alpha + B/D^beta
def chinchilla_grid() -> np.ndarray:
    """Hoffmann et al.'s starts as rows of (a, b, e, alpha, beta): 6 x 6 x 5 x 5 x 5 = 4500."""
    alpha = beta = np.arange(0.0, 2.01, 0.5)
    e = np.arange(-1.0, 1.01, 0.5)
    a = b = np.arange(0.0, 25.01, 5.0)
    g = np.meshgrid(a, b, e, alpha, beta, indexing="ij")
    return np.stack([x.ravel() for x in g], axis=1)


def chinchilla_objective(theta, log_n, log_d, log_l, delta: float = HUBER_DELTA, weights=None):
    """Sum over runs of Huber(LSE(a - alpha log N, b - beta log D, e) - log L) and its gradient.

    theta is (5,) or (K, 5) rows of (a, b, e, alpha, beta); returns values (K,) and gradients (K, 5)
    (or a scalar and (5,) for a single theta). weights, (n,) or (K, n), counts each run (bootstrap
    multiplicity)."""
    th = np.atleast_2d(np.asarray(theta, np.float64))
    a, b, e, al, be = (th[:, i : i + 1] for i in range(5))
    u1 = a - al * log_n[None, :]
    u2 = b - be * log_d[None, :]
    u3 = np.broadcast_to(e, u1.shape)
    m = np.maximum(np.maximum(u1, u2), u3)
    x1, x2, x3 = np.exp(u1 - m), np.exp(u2 - m), np.exp(u3 - m)
    s = x1 + x2 + x3
    r = m + np.log(s) - log_l[None, :]
    ar = np.abs(r)
    h = np.where(ar <= delta, 0.5 * r * r, delta * (ar - 0.5 * delta))
    g = np.clip(r, -delta, delta) / s  # dHuber/dr times the softmax normaliser
    if weights is not None:
        w = np.atleast_2d(weights)
        h = h * w
        g = g * w
    w1, w2, w3 = g * x1, g * x2, g * x3
    grad = np.stack(
        [w1.sum(1), w2.sum(1), w3.sum(1), -(w1 * log_n).sum(1), -(w2 * log_d).sum(1)], axis=1
    )
    val = h.sum(1)
    if np.ndim(theta) == 1:
        return float(val[0]), grad[0]
    return val, grad


def _lbfgs(fun_grad: Callable, x0: np.ndarray, maxiter: int = 500):
    # The summed Huber objective is small (~1e-3 x runs x residual), so the tolerances are set far
    # below scipy's defaults, which would stop long before the minimum.
    res = optimize.minimize(
        fun_grad, x0, jac=True, method="L-BFGS-B",
        options=dict(maxiter=maxiter, gtol=1e-12, ftol=1e-15, maxcor=20),
    )
    return res.x, float(res.fun)


def batched_lbfgs(fun_grad: Callable, x0: np.ndarray, maxiter: int = 200, m: int = 10,
                  gtol: float = 1e-10, ftol: float = 1e-12, progress=None):
    """L-BFGS run from many starts at once: x0 is (K, P); fun_grad maps (k, P) -> (k,), (k, P).

    The two-loop recursion and a backtracking (Armijo) line search are vectorised over the starts,
    so the Python overhead is paid once per iteration for all K of them instead of K times.
    Curvature pairs with s.y <= 0 are skipped; a start whose direction is not a descent one falls
    back to steepest descent. progress wraps the iteration range (e.g. tqdm). Returns (x, f) of
    every start."""
    x = np.array(x0, np.float64)
    k, _ = x.shape
    f, g = fun_grad(x, np.arange(k))
    s_hist = np.zeros((m, k, x.shape[1]))
    y_hist = np.zeros_like(s_hist)
    rho = np.zeros((m, k))
    active = np.isfinite(f) & np.all(np.isfinite(g), axis=1)
    step0 = 1.0 / np.maximum(np.linalg.norm(g, axis=1), 1e-300)  # first step: unit length
    for it in (range(maxiter) if progress is None else progress(range(maxiter))):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        q = g[idx].copy()
        coef = np.zeros((m, idx.size))
        for j in range(min(it, m)):  # newest to oldest
            jj = (it - 1 - j) % m
            coef[jj] = rho[jj, idx] * np.einsum("kp,kp->k", s_hist[jj, idx], q)
            q -= coef[jj][:, None] * y_hist[jj, idx]
        if it > 0:
            jn = (it - 1) % m
            yy = np.einsum("kp,kp->k", y_hist[jn, idx], y_hist[jn, idx])
            sy = np.einsum("kp,kp->k", s_hist[jn, idx], y_hist[jn, idx])
            gamma = np.where((yy > 0) & (sy > 0), sy / np.where(yy > 0, yy, 1.0), step0[idx])
        else:
            gamma = step0[idx]
        q *= gamma[:, None]
        for j in reversed(range(min(it, m))):  # oldest to newest
            jj = (it - 1 - j) % m
            b = rho[jj, idx] * np.einsum("kp,kp->k", y_hist[jj, idx], q)
            q += s_hist[jj, idx] * (coef[jj] - b)[:, None]
        d = -q
        gd = np.einsum("kp,kp->k", g[idx], d)
        bad = ~(gd < 0) | ~np.all(np.isfinite(d), axis=1)
        if bad.any():
            d[bad] = -g[idx][bad] * step0[idx][bad, None]
            gd[bad] = np.einsum("kp,kp->k", g[idx][bad], d[bad])
        # Backtracking (Armijo): halve the step of the starts whose step is not yet acceptable.
        t = np.ones(idx.size)
        new_x, new_f, new_g = x[idx].copy(), f[idx].copy(), g[idx].copy()
        todo = np.arange(idx.size)
        for _ in range(25):
            cand = x[idx[todo]] + t[todo, None] * d[todo]
            fc, gc = fun_grad(cand, idx[todo])
            ok = np.isfinite(fc) & (fc <= f[idx[todo]] + 1e-4 * t[todo] * gd[todo])
            acc = todo[ok]
            new_x[acc], new_f[acc], new_g[acc] = cand[ok], fc[ok], gc[ok]
            todo = todo[~ok]
            if todo.size == 0:
                break
            t[todo] *= 0.5
        moved = np.ones(idx.size, bool)
        moved[todo] = False  # no acceptable step: this start has converged as far as it can
        sv, yv = new_x - x[idx], new_g - g[idx]
        sy = np.einsum("kp,kp->k", sv, yv)
        jn = it % m
        s_hist[jn, idx], y_hist[jn, idx] = sv, yv
        rho[jn, idx] = np.where(sy > 1e-300, 1.0 / np.where(sy > 1e-300, sy, 1.0), 0.0)
        df = f[idx] - new_f
        x[idx], f[idx], g[idx] = new_x, new_f, new_g
        done = (~moved) | (np.max(np.abs(new_g), axis=1) < gtol) | (df <= ftol * np.maximum(np.abs(new_f), 1e-300))
        active[idx[done]] = False
    return x, f


def fit_chinchilla_theta(log_n, log_d, log_l, starts=None, weights=None, polish: int = 5,
                         progress=None):
    """Best (a, b, e, alpha, beta) over L-BFGS runs from the starts (default: Hoffmann's grid).

    L-BFGS runs from every start, vectorised over the starts (batched_lbfgs); the best `polish`
    distinct results are then run to convergence with scipy's L-BFGS and the best kept. Returns
    (theta, objective value, number of starts)."""
    starts = chinchilla_grid() if starts is None else np.atleast_2d(starts)

    def fg_batch(t, rows=None):
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return chinchilla_objective(t, log_n, log_d, log_l, weights=weights)

    # Loose tolerances here (on the test laws the same best minimum was found from 50 iterations
    # up): the best results are run to convergence below.
    xs, fs = batched_lbfgs(fg_batch, starts, maxiter=100, ftol=1e-8, progress=progress)
    fs = np.where(np.isfinite(fs), fs, np.inf)
    order = np.argsort(fs, kind="stable")
    picked = []
    for i in order:
        if not np.isfinite(fs[i]) or len(picked) >= polish:
            break
        if all(np.max(np.abs(xs[i] - xs[j])) > 1e-6 for j in picked):
            picked.append(i)

    def fg(t):
        return chinchilla_objective(t, log_n, log_d, log_l, weights=weights)

    best_x, best_f = None, math.inf
    for i in picked:
        x, f = _lbfgs(fg, xs[i])
        if np.all(np.isfinite(x)) and f < best_f:
            best_x, best_f = x, f
    return best_x, best_f, len(starts)


def chinchilla_params(theta) -> dict:
    a, b, e, alpha, beta = (float(v) for v in theta)
    ex = lambda v: math.exp(min(v, 700.0))  # noqa: E731  (a degenerate fit's huge log-coefficient stays finite)
    return {"E": ex(e), "A": ex(a), "B": ex(b), "alpha": alpha, "beta": beta}


def chinchilla_predict(p: dict, n, d):
    return p["E"] + p["A"] / np.power(n, p["alpha"]) + p["B"] / np.power(d, p["beta"])


def compute_optimal(p: dict) -> dict | None:
    """Minimiser of L(N, D) subject to C = 6 N D (Hoffmann et al. eq. 4):
    N_opt = G (C/6)^a, D_opt = (C/6)^b / G, a = beta/(alpha+beta), b = alpha/(alpha+beta),
    G = (alpha A / (beta B))^(1/(alpha+beta)). None where an exponent is not positive."""
    al, be = p["alpha"], p["beta"]
    if not (al > 0 and be > 0):
        return None
    s = al + be
    log_g = (math.log(al * p["A"]) - math.log(be * p["B"])) / s
    return {"a": be / s, "b": al / s, "G": math.exp(log_g)}


def optimal_allocation(p: dict, c: float) -> dict | None:
    co = compute_optimal(p)
    if co is None:
        return None
    n = co["G"] * (c / 6.0) ** co["a"]
    d = (c / 6.0) ** co["b"] / co["G"]
    return {"flops": c, "N_opt": n, "D_opt": d, "tokens_per_param": d / n,
            "loss": float(chinchilla_predict(p, n, d))}


def fit_chinchilla(n, d, loss, n_boot: int = 200, seed: int = 0,
                   budgets=None, progress=None) -> dict:
    """The Chinchilla fit of finished runs (N = all parameters, D = tokens, L = final val loss)."""
    n, d, loss = (np.asarray(x, np.float64) for x in (n, d, loss))
    if len(n) < 6:
        return {"skipped": f"needs at least 6 runs for 5 parameters, got {len(n)}"}
    if distinct(d) < 2:
        return {"skipped": "all runs have the same token budget: B and beta are not identified "
                           "(vary tokens, e.g. an IsoFLOP sweep or a tokens = k x params ladder)"}
    if distinct(n) < 2:
        return {"skipped": "all runs have the same parameter count: A and alpha are not identified"}
    ln, ld, ll = np.log(n), np.log(d), np.log(loss)
    theta, fval, nstarts = fit_chinchilla_theta(ln, ld, ll, progress=progress)
    point = chinchilla_params(theta)
    co = compute_optimal(point)
    keys = ["E", "A", "B", "alpha", "beta"]

    # All bootstrap refits at once: one batched L-BFGS, every resample starting from the point estimate.
    rng = np.random.default_rng(seed)
    w = np.stack([np.bincount(rng.integers(0, len(n), len(n)), minlength=len(n)) for _ in range(n_boot)]
                 ).astype(np.float64) if n_boot else np.zeros((0, len(n)))
    samples = np.zeros((0, 7))
    if n_boot:
        def fg_boot(t, rows):
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                return chinchilla_objective(t, ln, ld, ll, weights=w[rows])

        xs, _ = batched_lbfgs(fg_boot, np.repeat(theta[None, :], n_boot, axis=0), progress=progress)
        rows = []
        for x in xs:
            p = chinchilla_params(x)
            c = compute_optimal(p) or {"a": math.nan, "b": math.nan}
            rows.append([p[k] for k in keys] + [c["a"], c["b"]])
        samples = np.asarray(rows, np.float64)
    ci = _intervals(samples, keys + ["a", "b"])
    pred = chinchilla_predict(point, n, d)
    out = {
        "law": "L(N, D) = E + A / N^alpha + B / D^beta",
        "N": "params (all parameters, vocabulary padding excluded)",
        "D": "tokens",
        "method": "L-BFGS on the sum of Huber(delta=1e-3) of log residuals, "
                  f"best of {nstarts} starts from Hoffmann et al.'s grid",
        **point,
        "objective": fval,
        "ci95": {k: ci[k] for k in keys},
        "n_runs": int(len(n)),
        "n_boot": int(n_boot),
        "n_boot_used": _used(samples),
        "rmse_log": float(np.sqrt(np.mean((np.log(pred) - ll) ** 2))),
    }
    if co is not None:
        grid_c = sorted(set([float(x) for x in (budgets or [])]
                            + [float(10.0 ** k) for k in range(18, 25, 2)]))
        out["compute_optimal"] = {
            "rule": "C = 6 N D; N_opt = G (C/6)^a, D_opt = (C/6)^b / G",
            "a": co["a"], "b": co["b"], "G": co["G"],
            "ci95": {"a": ci["a"], "b": ci["b"]},
            "at": [optimal_allocation(point, c) for c in grid_c],
        }
    return out


# ---------------------------------------------------------------------------------------------
# Power law: L(x) = E + (x_c / x)^alpha  (E = 0 optionally)
def _power_law_residuals(theta, log_x, log_l, fixed_e0):
    if fixed_e0:
        log_c, alpha = theta
        return alpha * (log_c - log_x) - log_l
    log_c, alpha, e = theta
    return np.logaddexp(e, alpha * (log_c - log_x)) - log_l


def _power_law_theta(log_x, log_l, fixed_e0, x0=None, weights=None):
    sw = None if weights is None else np.sqrt(weights)

    def res(t):
        r = _power_law_residuals(t, log_x, log_l, fixed_e0)
        return r if sw is None else r * sw

    if fixed_e0:
        # log L = alpha log x_c - alpha log x: a straight line, solved exactly.
        w = np.ones_like(log_x) if weights is None else weights
        slope, icpt = np.polyfit(log_x, log_l, 1, w=np.sqrt(w))
        alpha = -slope
        return np.array([icpt / alpha if alpha != 0 else math.nan, alpha])
    if x0 is not None:
        starts = [np.asarray(x0, np.float64)]
    else:
        e0 = np.min(log_l)
        starts = [
            np.array([lc, al, e0 + de])
            for al in (0.05, 0.2, 0.5, 1.0)
            for de in (-3.0, -1.0, -0.2)
            for lc in (np.max(log_x) + 0.5 * (np.max(log_l) - (e0 + de)) / al, np.median(log_x))
        ]
    best, best_cost = None, math.inf
    for s in starts:
        try:
            r = optimize.least_squares(res, s, method="lm", xtol=1e-12, ftol=1e-12, max_nfev=2000)
        except (ValueError, FloatingPointError):
            continue
        if np.all(np.isfinite(r.x)) and r.cost < best_cost:
            best, best_cost = r.x, r.cost
    return best


def power_law_params(theta, fixed_e0: bool) -> dict:
    log_c, alpha = float(theta[0]), float(theta[1])
    e = 0.0 if fixed_e0 else math.exp(float(theta[2]))
    return {"E": e, "x_c": math.exp(log_c) if log_c < 700 else math.inf, "log_x_c": log_c, "alpha": alpha}


def power_law_predict(p: dict, x):
    return p["E"] + np.exp(p["alpha"] * (p["log_x_c"] - np.log(x)))


def _power_law_bootstrap(n: int, resample, fixed_e0: bool, x0, n_boot: int, seed: int, progress):
    """95% intervals of a power law refit on `n_boot` resamples of n items: `resample(idx)` gives
    (log x, log L, weights or None) to refit, or None for a resample that cannot determine the law
    (not counted). Returns (intervals incl. x_c, number of resamples used)."""
    keys = ["alpha", "log_x_c"] + ([] if fixed_e0 else ["E"])

    def refit(idx):
        data = resample(idx)
        t = None if data is None else _power_law_theta(data[0], data[1], fixed_e0, x0=x0, weights=data[2])
        if t is None:
            return [math.nan] * len(keys)
        p = power_law_params(t, fixed_e0)
        return [p[k] for k in keys]

    samples = _bootstrap(n, refit, n_boot, seed, progress=progress)
    ci = _intervals(samples, keys)
    ci["x_c"] = [math.exp(v) if v < 700 else math.inf for v in ci["log_x_c"]]
    return ci, _used(samples)


def fit_power_law(x, loss, fixed_e0: bool = False, n_boot: int = 200, seed: int = 0, progress=None):
    """L(x) = E + (x_c/x)^alpha by least squares in log L; 95% bootstrap intervals over points."""
    x, loss = np.asarray(x, np.float64), np.asarray(loss, np.float64)
    need = 3 if fixed_e0 else 4
    if distinct(x) < need:
        return {"skipped": f"needs at least {need} distinct x values"
                           f"{' (E = 0)' if fixed_e0 else ' (E free; or fix E = 0)'}, got {distinct(x)}"}
    lx, ll = np.log(x), np.log(loss)
    theta = _power_law_theta(lx, ll, fixed_e0)
    if theta is None or not np.all(np.isfinite(theta)):
        return {"skipped": "the least-squares fit did not converge"}
    point = power_law_params(theta, fixed_e0)

    def resample(idx):
        w = np.bincount(idx, minlength=len(x)).astype(np.float64)
        # a resample that cannot determine the law is not counted
        return (lx, ll, w) if distinct(x[w > 0]) >= need else None

    ci, used = _power_law_bootstrap(len(x), resample, fixed_e0, theta, n_boot, seed, progress)
    pred = power_law_predict(point, x)
    return {
        "law": "L = (x_c / x)^alpha" if fixed_e0 else "L = E + (x_c / x)^alpha",
        "E_fixed_zero": bool(fixed_e0),
        **point,
        "ci95": ci,
        "n_points": int(len(x)),
        "n_boot": int(n_boot),
        "n_boot_used": used,
        "rmse_log": float(np.sqrt(np.mean((np.log(pred) - ll) ** 2))),
    }


# ---------------------------------------------------------------------------------------------
# Compute frontier: the lower envelope of every run's loss curve against compute
def envelope(curves, num: int = 40):
    """Lower envelope of curves [(compute, loss) arrays] on a log-spaced compute grid.

    Each curve is interpolated linearly in (log C, log L) over its own compute range; at each grid
    point the envelope is the lowest curve that covers it. Where every curve is a single point, the
    envelope is the Pareto set of the points. Returns (grid, envelope, index of the
    curve that attains it)."""
    curves = [(np.asarray(c, np.float64), np.asarray(l, np.float64)) for c, l in curves]
    curves = [(c[np.argsort(c)], l[np.argsort(c)]) for c, l in curves if len(c)]
    if all(len(c) == 1 for c, _ in curves):
        # Final points only (a table): the Pareto set, each point lower than all cheaper ones.
        order = np.argsort([c[0] for c, _ in curves], kind="stable")
        keep, best = [], np.inf
        for i in order:
            if curves[i][1][0] < best:
                keep.append(i)
                best = curves[i][1][0]
        keep = np.array(keep, int)
        return (np.array([curves[i][0][0] for i in keep]), np.array([curves[i][1][0] for i in keep]), keep)
    lo = min(c[0] for c, _ in curves)
    hi = max(c[-1] for c, _ in curves)
    grid = np.geomspace(lo, hi, num) if hi > lo else np.array([lo])
    vals = np.full((len(curves), len(grid)), np.inf)
    for i, (c, l) in enumerate(curves):
        inside = (grid >= c[0] * (1 - 1e-9)) & (grid <= c[-1] * (1 + 1e-9))
        if len(c) == 1:
            vals[i, inside] = l[0]
        else:
            vals[i, inside] = np.exp(np.interp(np.log(grid[inside]), np.log(c), np.log(l)))
    who = np.argmin(vals, axis=0)
    env = vals[who, np.arange(len(grid))]
    ok = np.isfinite(env)
    return grid[ok], env[ok], who[ok]


def fit_frontier(curves, fixed_e0: bool = True, n_boot: int = 200, seed: int = 0, num: int = 40,
                 progress=None) -> dict:
    """Power law through the lower envelope of loss against compute (Kaplan's L(C_min)).
    Bootstrap: resample the runs, rebuild the envelope, refit."""
    curves = [c for c in curves if len(c[0])]
    if len(curves) < 2:
        return {"skipped": f"needs loss curves of at least 2 runs, got {len(curves)}"}
    grid, env, who = envelope(curves, num)
    base = fit_power_law(grid, env, fixed_e0=fixed_e0, n_boot=0)
    if "skipped" in base:
        return {"skipped": "envelope: " + base["skipped"]}
    theta0 = [base["log_x_c"], base["alpha"]] + ([] if fixed_e0 else [math.log(max(base["E"], 1e-300))])

    def resample(idx):
        if len(set(idx.tolist())) < 2:
            return None
        g, e, _ = envelope([curves[i] for i in idx], num)
        return (np.log(g), np.log(e), None) if distinct(g) >= (3 if fixed_e0 else 4) else None

    ci, used = _power_law_bootstrap(len(curves), resample, fixed_e0, theta0, n_boot, seed, progress)
    base.update(ci95=ci, n_boot=int(n_boot), n_boot_used=used, n_runs=len(curves),
                envelope={"flops": grid.tolist(), "loss": env.tolist(), "run": who.tolist()})
    base["law"] = base["law"].replace("x", "C")
    base["C_c"] = base.pop("x_c")
    base["log_C_c"] = base.pop("log_x_c")
    base["ci95"]["C_c"] = base["ci95"].pop("x_c")
    base["ci95"]["log_C_c"] = base["ci95"].pop("log_x_c")
    return base


# ---------------------------------------------------------------------------------------------
# IsoFLOP profiles
def _parabola_min(log_n, loss, weights=None):
    """Vertex of L = p0 (log N)^2 + p1 log N + p2; None unless it curves upwards."""
    w = None if weights is None else np.sqrt(weights)
    p = np.polyfit(log_n, loss, 2, w=w)
    if not p[0] > 0:
        return None, p
    x = -p[1] / (2 * p[0])
    return (x, float(np.polyval(p, x))), p


def _isoflop_core(groups, weights=None):
    """groups: [(C, log_n, loss)]; returns per-budget vertices and the power-law fit through them."""
    mins = []
    for gi, (c, ln, l) in enumerate(groups):
        w = None if weights is None else weights[gi]
        if w is not None and np.count_nonzero(w) < 3:
            continue
        v, _ = _parabola_min(ln, l, w)
        if v is not None:
            mins.append((c, v[0], v[1]))
    if len(mins) < 2:
        return None, mins
    lc = np.log([m[0] for m in mins])
    slope, icpt = np.polyfit(lc, [m[1] for m in mins], 1)
    return (slope, icpt), mins


def fit_isoflop(budget, n, loss, n_boot: int = 200, seed: int = 0, progress=None) -> dict:
    """Per budget_flops a parabola of loss in log N and its vertex; N_opt = k C^a through the
    vertices (so D_opt = C / (6 N_opt) grows as C^(1-a)). Only bracketed minima (the vertex inside the
    sizes tried) enter the power law. Bootstrap resamples runs within each budget."""
    budget, n, loss = (np.asarray(x, np.float64) for x in (budget, n, loss))
    ok = np.isfinite(budget) & (budget > 0)
    if not ok.any():
        return {"skipped": "no run has budget_flops (not an IsoFLOP sweep)"}
    budget, n, loss = budget[ok], n[ok], loss[ok]
    keys = group_keys(budget)
    groups, per_budget, dropped = [], [], []
    for k in sorted(set(keys)):
        sel = keys == k
        c = float(np.median(budget[sel]))
        if distinct(n[sel]) < 3:
            dropped.append({"budget_flops": c, "reason": f"{distinct(n[sel])} model size(s); a parabola needs 3"})
            continue
        ln, l = np.log(n[sel]), loss[sel]
        v, p = _parabola_min(ln, l)
        entry = {"budget_flops": c, "n_runs": int(sel.sum()), "params": n[sel].tolist(),
                 "loss": l.tolist(), "parabola_log_n": [float(x) for x in p]}
        if v is None:
            entry["skipped"] = "the parabola curves downwards: no minimum"
        else:
            inside = bool(ln.min() <= v[0] <= ln.max())
            entry.update(N_opt=math.exp(v[0]), D_opt=c / (6 * math.exp(v[0])), loss_opt=v[1], inside_range=inside)
            if inside:
                groups.append((c, ln, l))
            else:  # an extrapolated vertex says only that the optimum lies beyond the sizes tried
                entry["left_out"] = ("the vertex lies " + ("below" if v[0] < ln.min() else "above")
                                     + " the sizes tried (not bracketed): left out of the power law")
        per_budget.append(entry)
    out = {"per_budget": per_budget, "N": "params (all parameters)"}
    if dropped:
        out["dropped_budgets"] = dropped
    fit, mins = _isoflop_core(groups)
    if fit is None:
        out["skipped"] = (f"needs bracketed minima at 2 or more budgets for the power law, got {len(mins)}"
                          + (f" ({sum('left_out' in e for e in per_budget)} budget(s) not bracketed)"
                             if any("left_out" in e for e in per_budget) else ""))
        return out
    a, icpt = fit

    rng = np.random.default_rng(seed)
    samples = []
    it = range(n_boot)
    if progress is not None:
        it = progress(it)
    for _ in it:
        ws = [np.bincount(rng.integers(0, len(g[1]), len(g[1])), minlength=len(g[1])).astype(float)
              for g in groups]
        f, _ = _isoflop_core(groups, ws)
        samples.append([f[0], f[1]] if f else [math.nan, math.nan])
    ci = _intervals(np.array(samples).reshape(-1, 2), ["a", "log_k"])
    out.update(
        law="N_opt = k C^a, D_opt = C / (6 N_opt)",
        a=float(a), k=math.exp(icpt), log_k=float(icpt), b=float(1 - a),
        ci95={"a": ci["a"], "b": [1 - ci["a"][1], 1 - ci["a"][0]], "log_k": ci["log_k"]},
        n_budgets=len(mins), n_boot=int(n_boot), n_boot_used=_used(np.array(samples).reshape(-1, 2)),
    )
    return out


def isoflop_n_opt(fit: dict, c):
    return np.exp(fit["log_k"]) * np.power(c, fit["a"])


# ---------------------------------------------------------------------------------------------
def distinct(x, rtol: float = 1e-3) -> int:
    return len(set(group_keys(np.asarray(x, np.float64), rtol)))


def group_keys(x, rtol: float = 0.02) -> np.ndarray:
    """Labels grouping values within a relative tolerance (sorted single-linkage in log space)."""
    x = np.asarray(x, np.float64)
    if x.size == 0:
        return np.zeros(0, int)
    order = np.argsort(x)
    lx = np.log(np.maximum(x[order], 1e-300))
    labels = np.zeros(len(x), int)
    cur = 0
    for j in range(1, len(order)):
        if lx[j] - lx[j - 1] > math.log1p(rtol):
            cur += 1
        labels[order[j]] = cur
    return labels


def _bootstrap(n: int, refit: Callable, n_boot: int, seed: int, progress=None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    it = range(n_boot)
    if progress is not None:
        it = progress(it)
    rows = [refit(rng.integers(0, n, n)) for _ in it]
    return np.asarray(rows, np.float64)


def _used(samples: np.ndarray) -> int:
    """Bootstrap resamples that gave a fit (the others could not determine it and are left out)."""
    return int(np.all(np.isfinite(samples), axis=1).sum()) if samples.size else 0


def _intervals(samples: np.ndarray, keys) -> dict:
    lo, hi = (1 - CI_LEVEL) / 2 * 100, (1 + CI_LEVEL) / 2 * 100
    out = {}
    for j, k in enumerate(keys):
        col = samples[:, j] if samples.size else np.array([])
        col = col[np.isfinite(col)]
        out[k] = [float(np.percentile(col, lo)), float(np.percentile(col, hi))] if col.size else [math.nan, math.nan]
    return out


# ---------------------------------------------------------------------------------------------
# Learning-rate fits: the optimal learning rate per model size and its power law
def lr_optimum(lr, loss, seed=None) -> dict:
    """One size's optimal learning rate: the losses averaged over seeds at each learning rate, then a
    parabola in log2(lr) through the best grid point and its two neighbours (its vertex; the best grid
    point itself when the best is at an edge of the grid, flagged `edge`)."""
    lr, loss = np.asarray(lr, np.float64), np.asarray(loss, np.float64)
    grid = np.unique(lr)
    mean = np.array([loss[lr == g].mean() for g in grid])
    i = int(np.argmin(mean))
    out = {"grid": grid.tolist(), "mean_loss": mean.tolist(), "best_grid_lr": float(grid[i]),
           "n_seeds": int(max((lr == g).sum() for g in grid))}
    if i == 0 or i == len(grid) - 1:
        out.update(lr_opt=float(grid[i]), edge=True, loss_opt=float(mean[i]))
        return out
    x = np.log2(grid[i - 1:i + 2])
    p = np.polyfit(x, mean[i - 1:i + 2], 2)
    v = -p[1] / (2 * p[0]) if p[0] > 0 else x[1]
    v = float(np.clip(v, x[0], x[2]))
    out.update(lr_opt=float(2.0 ** v), edge=False, loss_opt=float(np.polyval(p, v)))
    return out


def fit_lr(size, lr, loss, n_boot: int = 200, seed: int = 0, progress=None) -> dict:
    """The optimal learning rate per size (`lr_optimum`, seeds averaged) and the power law
    lr_opt = k size^-x through them (least squares in log-log), with a 95% bootstrap interval (runs
    resampled within each size). `size` is N (or C, for a law in compute). Sizes whose optimum lies at an
    edge of their grid are reported and left out of the law."""
    size, lr, loss = (np.asarray(v, np.float64) for v in (size, lr, loss))
    keys = group_keys(size)
    per_size, pts = [], []
    for k in sorted(set(keys)):
        sel = keys == k
        s = float(np.median(size[sel]))
        if len(np.unique(lr[sel])) < 3:
            per_size.append({"size": s, "skipped": "fewer than 3 learning rates"})
            continue
        o = {"size": s, **lr_optimum(lr[sel], loss[sel])}
        per_size.append(o)
        if not o["edge"]:
            pts.append((s, sel))
    out = {"per_size": per_size, "law": "lr_opt = k size^-x"}
    if len(pts) < 2:
        out["skipped"] = f"needs interior optima at 2 or more sizes, got {len(pts)}"
        return out

    def law(weights=None):
        xs, ys = [], []
        for s, sel in pts:
            l, y = lr[sel], loss[sel]
            if weights is not None:
                idx = weights[s]
                l, y = l[idx], y[idx]
            if len(np.unique(l)) < 3:
                return None
            o = lr_optimum(l, y)
            if o["edge"]:
                return None
            xs.append(math.log(s))
            ys.append(math.log(o["lr_opt"]))
        slope, icpt = np.polyfit(xs, ys, 1)
        return -slope, icpt

    x, icpt = law()
    rng = np.random.default_rng(seed)
    samples = []
    it = range(n_boot)
    if progress is not None:
        it = progress(it)
    for _ in it:
        w = {s: rng.integers(0, int(sel.sum()), int(sel.sum())) for s, sel in pts}
        f = law(w)
        samples.append([f[0], f[1]] if f else [math.nan, math.nan])
    arr = np.array(samples).reshape(-1, 2)
    ci = _intervals(arr, ["x", "log_k"])
    out.update(x=float(x), k=math.exp(icpt), log_k=float(icpt), ci95=ci, n_sizes=len(pts),
               n_boot=int(n_boot), n_boot_used=_used(arr))
    return out


def lr_at(fit: dict, size) -> float:
    return float(math.exp(fit["log_k"]) * np.power(size, -fit["x"]))
