"""Explainer benchmark: whylake vs captum, shap and dice-ml on one model, one row set, one run.

Run: ``python -m bench.explainers [--device cpu|cuda] [--rows N] [--quick] [--threads T]``.
Writes ``bench/results/explainers.json`` and prints a table. Figures are reported, never
asserted; every method gets the same model, rows, background and baseline, one after another.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.metadata
import io
import json
import os
import platform
import random
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# dice-ml wraps its per-query loop in tqdm; progress bars would interleave with the table.
os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.reference_workload import ReferenceWorkload, build_reference_workload  # noqa: E402
from whylake.transforms.explainers.counterfactuals import (  # noqa: E402
    Counterfactual,
    CounterfactualConfig,
    CounterfactualSpec,
    evaluate_counterfactuals,
    generate_counterfactuals,
    spec_from_training,
)

RESULTS = Path(__file__).resolve().parent / "results" / "explainers.json"
IG_STEPS = 50
K_COUNTERFACTUALS = 3
# dice-ml reads a float column's precision from its data (~16 decimals for standardised
# values); 4 decimals of a standard deviation is finer than any feature here is measured.
DICE_PRECISION = 4
KMEANS_CLUSTERS = 10


# -- timing ----------------------------------------------------------------------------------


class Clock:
    """Wall-clock timing with CUDA synchronised on both sides, best of several repeats."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def best(self, fn: Callable[[], Any], repeats: int, warmup: bool = True) -> tuple[float, Any]:
        """Seconds of the fastest of ``repeats`` calls (after one untimed warm-up call)."""
        out = fn() if warmup else None
        times = []
        for _ in range(repeats):
            self._sync()
            start = time.perf_counter()
            out = fn()
            self._sync()
            times.append(time.perf_counter() - start)
        return min(times), out


# -- machine ---------------------------------------------------------------------------------


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist in ("torch", "captum", "shap", "dice-ml", "numpy", "pandas", "scikit-learn"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


def matmul_peak(device: torch.device, clock: Clock, size: int, repeats: int) -> dict[str, Any]:
    """Measured float32 matmul FLOP/s (best of repeats) on square matrices."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=gen).to(device)
    b = torch.randn(size, size, generator=gen).to(device)
    seconds, _ = clock.best(lambda: torch.mm(a, b), repeats)
    return {"size": size, "seconds": seconds, "flops_per_s": 2.0 * size**3 / seconds}


def linear_macs(model: torch.nn.Module) -> int:
    """Multiply-accumulates of one forward row, counted from the Linear layers."""
    return sum(
        m.in_features * m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear)
    )


# -- helpers ---------------------------------------------------------------------------------


def predict(model: torch.nn.Module, rows: np.ndarray, device: torch.device) -> np.ndarray:
    with torch.no_grad():
        x = torch.as_tensor(np.asarray(rows, dtype=np.float32), device=device)
        return model(x).reshape(-1).double().cpu().numpy()


def error_stats(err: np.ndarray) -> dict[str, float]:
    err = np.abs(np.asarray(err, dtype=np.float64))
    return {
        "mean": float(err.mean()),
        "max": float(err.max()),
        "p99": float(np.quantile(err, 0.99)),
    }


def as_2d(values: Any, n: int, d: int) -> np.ndarray:
    """shap returns (n, d), (n, d, 1) or a one-element list; normalise to (n, d) float64."""
    if isinstance(values, list):
        values = values[0]
    return np.asarray(values, dtype=np.float64).reshape(n, d)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence library prints and warnings (shap, dice-ml) while a method runs."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


# -- integrated gradients --------------------------------------------------------------------


def bench_ig(ctx: Context) -> dict[str, Any]:
    from captum.attr import IntegratedGradients

    from whylake.transforms.explainers.config import ExplainConfig
    from whylake.transforms.explainers.integrated_gradients import (
        converged_integrated_gradients,
        integrated_gradients,
    )

    x, base, model, dev, clock = ctx.x, ctx.w.baseline, ctx.model, ctx.device, ctx.clock
    n = x.shape[0]
    fx = predict(model, x, dev)
    fb = predict(model, base[None], dev)[0]

    def completeness(values: np.ndarray) -> dict[str, float]:
        return error_stats(values.sum(1) - (fx - fb))

    out: dict[str, Any] = {"steps": IG_STEPS, "rows": n, "rule": "gauss_legendre (both)"}
    seconds, ours = clock.best(
        lambda: integrated_gradients(model, x, base, steps=IG_STEPS, device=dev), ctx.repeats
    )
    out["whylake"] = {
        "rows_per_s": n / seconds,
        "seconds": seconds,
        "completeness_error": completeness(ours.values),
        "config": ours.config,
    }
    # What the explain stage runs: steps doubled per row from IG_STEPS until converged
    # (ExplainConfig.ig_tolerance); each doubling is one more call of the fast path above.
    cfg = ExplainConfig(ig_steps=IG_STEPS)
    conv_seconds, conv = clock.best(
        lambda: converged_integrated_gradients(
            model,
            x,
            base,
            steps=IG_STEPS,
            tolerance=cfg.ig_tolerance,
            max_steps=cfg.ig_max_steps,
            device=dev,
        ),
        ctx.repeats,
    )
    counts = np.unique(conv.steps, return_counts=True)
    out["whylake_converged"] = {
        "rows_per_s": n / conv_seconds,
        "seconds": conv_seconds,
        "tolerance": cfg.ig_tolerance,
        "max_steps": cfg.ig_max_steps,
        "rows_per_final_steps": {str(k): int(v) for k, v in zip(*counts, strict=True)},
        # A row that stopped at s steps evaluated IG_STEPS + 2 IG_STEPS + ... + s = 2s - IG_STEPS.
        "gradient_evaluations_per_row_mean": float((2 * conv.steps - IG_STEPS).mean()),
        "convergence": error_stats(conv.convergence),
        "completeness_error": completeness(conv.result.values),
        "time_vs_fixed_steps": conv_seconds / seconds,
    }

    ig = IntegratedGradients(model)
    xt = torch.as_tensor(x, device=dev)
    bt = torch.as_tensor(base[None], device=dev)

    def captum(rows: torch.Tensor, internal: int | None) -> np.ndarray:
        attr = ig.attribute(
            rows,
            baselines=bt,
            target=0,
            n_steps=IG_STEPS,
            method="gausslegendre",
            internal_batch_size=internal,
        )
        return attr.detach().double().cpu().numpy()

    # captum's internal_batch_size counts path points (rows x steps) per pass and is raised to
    # the row count when smaller, so the sweep starts at n and ends at "all at once" (None).
    sizes: list[int | None] = sorted({n, *(s for s in ctx.captum_batches if s > n)})
    sizes.append(None)
    sweep: dict[str, dict[str, float]] = {}
    attributions: dict[str, np.ndarray] = {}
    for size in sizes:

        def run(size: int | None = size) -> np.ndarray:
            return captum(xt, size)

        secs, attributions[str(size)] = clock.best(run, ctx.repeats)
        sweep[str(size)] = {"rows_per_s": n / secs, "seconds": secs}
    best = max(sweep, key=lambda k: sweep[k]["rows_per_s"])
    best_values = attributions[best]
    out["captum_best_batch"] = {
        "internal_batch_size": best,
        "rows_per_s": sweep[best]["rows_per_s"],
        "completeness_error": completeness(best_values),
        "sweep": sweep,
    }
    m = min(n, ctx.row_by_row)
    secs, _ = clock.best(
        lambda: np.vstack([captum(xt[i : i + 1], None) for i in range(m)]), 1, warmup=False
    )
    out["captum_row_by_row"] = {"rows": m, "rows_per_s": m / secs}
    out["speedup_vs_captum_best"] = (
        out["whylake"]["rows_per_s"] / out["captum_best_batch"]["rows_per_s"]
    )
    return out


def roofline(ctx: Context, ig: dict[str, Any]) -> dict[str, Any]:
    macs = linear_macs(ctx.model)
    # Per path point: forward (2 FLOPs per MAC) + the input-gradient backward (the same matmuls
    # transposed, 2 FLOPs per MAC; no weight gradients are needed). Elementwise ops are ~1%.
    flops_row = IG_STEPS * 4 * macs
    peak = ctx.peak["flops_per_s"]
    out = {
        "matmul_peak": ctx.peak,
        "linear_macs_per_forward_row": macs,
        "ig_flops_per_row": flops_row,
        "ig_roofline_rows_per_s": peak / flops_row,
    }
    for name in ("whylake", "captum_best_batch"):
        rate = ig[name]["rows_per_s"]
        out[f"{name}_fraction_of_roofline"] = rate * flops_row / peak
    return out


# -- SHAP ------------------------------------------------------------------------------------


def bench_shap(ctx: Context) -> dict[str, Any]:
    import shap

    from whylake.transforms.explainers.shap_values import shap_attributions

    x, bg, model, dev, clock = ctx.x, ctx.w.background, ctx.model, ctx.device, ctx.clock
    n, d = x.shape
    fx = predict(model, x, dev)
    f_bg = float(predict(model, bg, dev).mean())
    out: dict[str, Any] = {"rows": n, "background_rows": int(bg.shape[0])}
    values: dict[str, np.ndarray] = {}

    def additivity(vals: np.ndarray, base: float | np.ndarray, rows: int) -> dict[str, float]:
        return error_stats(np.asarray(vals).sum(1) + base - fx[:rows])

    secs, ours = clock.best(lambda: shap_attributions(model, x, bg, device=dev), ctx.repeats)
    values["whylake"] = ours.values
    out["whylake"] = {
        "rows_per_s": n / secs,
        "kind": ours.config.get("kind"),
        "config": ours.config,
        "additivity_error": additivity(ours.values, ours.base_value, n),
    }

    xt = torch.as_tensor(x, device=dev)
    bgt = torch.as_tensor(bg, device=dev)
    with quiet():
        deep = shap.DeepExplainer(model, bgt)
        secs, raw = clock.best(lambda: deep.shap_values(xt, check_additivity=False), ctx.repeats)
    values["deep"] = as_2d(raw, n, d)
    base = float(np.asarray(deep.expected_value).reshape(-1)[0])
    out["shap.DeepExplainer"] = {
        "rows_per_s": n / secs,
        "additivity_error": additivity(values["deep"], base, n),
    }

    m = min(n, ctx.gradient_rows)
    with quiet():
        grad = shap.GradientExplainer(model, bgt)
        secs, raw = clock.best(
            lambda: grad.shap_values(xt[:m], nsamples=200, rseed=ctx.seed), 1, warmup=False
        )
    values["gradient"] = as_2d(raw, m, d)
    out["shap.GradientExplainer"] = {
        "rows": m,
        "nsamples": 200,
        "rows_per_s": m / secs,
        "additivity_error": additivity(values["gradient"], f_bg, m),
        "note": "Monte Carlo expected gradients: its additivity gap is sampling error",
    }

    k = min(n, ctx.kernel_rows)

    def f_numpy(rows: np.ndarray) -> np.ndarray:
        return predict(model, rows, dev)

    with quiet():
        summary = shap.kmeans(bg.astype(np.float64), KMEANS_CLUSTERS)
        kernel = shap.KernelExplainer(f_numpy, summary)
        kernel.shap_values(x[:1].astype(np.float64), nsamples="auto", l1_reg=False, silent=True)
        secs, raw = clock.best(
            lambda: kernel.shap_values(
                x[:k].astype(np.float64), nsamples="auto", l1_reg=False, silent=True
            ),
            1,
            warmup=False,
        )
    values["kernel"] = as_2d(raw, k, d)
    out["shap.KernelExplainer"] = {
        "rows": k,
        "rows_per_s": k / secs,
        "background": f"shap.kmeans({KMEANS_CLUSTERS}) of the {bg.shape[0]} background rows",
        "nsamples": "auto (2 * 30 + 2048)",
        "l1_reg": "False: shap 0.51's default 'num_features(10)' zeroes 20 of the 30 features",
        "additivity_error": additivity(
            values["kernel"], float(np.asarray(kernel.expected_value).reshape(-1)[0]), k
        ),
        "note": "explains a different game: 10 weighted kmeans centres, not the 100 rows",
    }
    out["agreement_on_common_rows"] = agreement(values, k)
    out["speedup_vs_deep"] = out["whylake"]["rows_per_s"] / out["shap.DeepExplainer"]["rows_per_s"]
    return out


def agreement(values: dict[str, np.ndarray], rows: int) -> dict[str, Any]:
    """Mean per-row cosine similarity and relative L1 gap between every pair of methods."""
    names = sorted(values)
    out: dict[str, Any] = {"rows": rows, "pairs": {}}
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            va, vb = values[a][:rows], values[b][:rows]
            cos = (va * vb).sum(1) / (
                np.linalg.norm(va, axis=1) * np.linalg.norm(vb, axis=1) + 1e-30
            )
            rel = np.abs(va - vb).sum(1) / (np.abs(vb).sum(1) + 1e-30)
            top_a = np.argsort(-np.abs(va), axis=1)[:, :5]
            top_b = np.argsort(-np.abs(vb), axis=1)[:, :5]
            overlap = np.mean([len(set(p) & set(q)) / 5 for p, q in zip(top_a, top_b, strict=True)])
            out["pairs"][f"{a} vs {b}"] = {
                "mean_cosine": float(cos.mean()),
                "mean_relative_l1": float(rel.mean()),
                "top5_overlap": float(overlap),
            }
    return out


# -- counterfactuals -------------------------------------------------------------------------


def cf_metrics(measured: list[list[Counterfactual]], queries: int, returned: int) -> dict[str, Any]:
    """One definition for everybody: validity as DiCE defines it (unique valid / (queries * k))."""
    valid = [[c for c in per if c.valid] for per in measured]
    unique = 0
    for per in valid:
        seen = {tuple(np.round(c.values, 6)) for c in per}
        unique += len(seen)
    flat = [c for per in valid for c in per]
    first = [min(per, key=lambda c: c.proximity) for per in valid if per]

    def mean(vals: list[float]) -> float | None:
        finite = [v for v in vals if np.isfinite(v)]
        return float(np.mean(finite)) if finite else None

    return {
        "queries": queries,
        "counterfactuals_returned": returned,
        "validity": unique / (queries * K_COUNTERFACTUALS),
        "valid_share_of_returned": (len(flat) / returned) if returned else None,
        "queries_with_a_valid_counterfactual": sum(1 for per in valid if per) / queries,
        "proximity_mean": mean([c.proximity for c in flat]),
        "sparsity_mean": mean([float(c.sparsity) for c in flat]),
        "plausibility_mean": mean([c.plausibility for c in flat]),
        "closest_proximity_mean": mean([c.proximity for c in first]),
        "closest_sparsity_mean": mean([float(c.sparsity) for c in first]),
    }


def measure_all(
    ctx: Context,
    queries: np.ndarray,
    per_query: list[list[np.ndarray]],
    model: torch.nn.Module,
    device: torch.device,
) -> tuple[list[list[Counterfactual]], int]:
    """Re-score everybody's counterfactuals with our code (validity, proximity, ...)."""
    owners = [i for i, cfs in enumerate(per_query) for _ in cfs]
    if not owners:
        return [[] for _ in per_query], 0
    cands = np.vstack([c for cfs in per_query for c in cfs])
    measured = evaluate_counterfactuals(
        model,
        queries[owners],
        cands,
        ctx.spec,
        ctx.cf_config,
        reference_rows=ctx.reference,
        reference_scores=ctx.reference_scores,
        device=device,
    )
    out: list[list[Counterfactual]] = [[] for _ in per_query]
    for o, c in zip(owners, measured, strict=True):
        out[o].append(c)
    return out, len(owners)


def bounds_violations(
    ctx: Context, queries: np.ndarray, per_query: list[list[np.ndarray]], tol: float = 1e-6
) -> int:
    """Counterfactuals with a changed feature outside the training range (beyond ``tol``)."""
    spec = ctx.spec
    bad = 0
    for q, cfs in zip(queries, per_query, strict=True):
        for c in cfs:
            inside = (c >= spec.lower - tol) & (c <= spec.upper + tol)
            bad += int(np.any(~inside & (c != q)))
    return bad


def bench_counterfactuals(ctx: Context) -> dict[str, Any]:
    model, dev, clock = ctx.model, ctx.device, ctx.clock
    x = ctx.x
    n = x.shape[0]
    out: dict[str, Any] = {
        "queries": n,
        "k": K_COUNTERFACTUALS,
        "target": "flip the class at threshold 0.5",
        "metric_definitions": {
            "validity": "unique valid counterfactuals / (queries * k), as in Mothilal et al. 2020",
            "proximity": "L1 of the change, each feature divided by its training MAD",
            "sparsity": "features changed (changes below dice's 4-decimal precision ignored)",
            "plausibility": "MAD-scaled L1 to the nearest training row of the target class",
        },
        "spec": "bounds = training min / max, nothing immutable, MAD scale (spec_from_training)",
    }
    for method in ("gradient", "search"):
        cfg = CounterfactualConfig(
            n_counterfactuals=K_COUNTERFACTUALS, method=method, seed=ctx.seed
        )

        def run(cfg: CounterfactualConfig = cfg, rows: np.ndarray = x) -> list[Any]:
            return generate_counterfactuals(
                model,
                rows,
                ctx.spec,
                cfg,
                reference_rows=ctx.reference,
                reference_scores=ctx.reference_scores,
                device=dev,
            )

        secs, results = clock.best(run, ctx.repeats if method == "gradient" else 1)
        per_query = [[c.values for c in r.counterfactuals] for r in results]
        measured, returned = measure_all(ctx, x, per_query, model, dev)
        entry = {
            "queries_per_s": n / secs,
            "seconds": secs,
            "config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
            "statuses": {s: sum(r.status == s for r in results) for s in ("found", "not_found")},
            "bounds_violations": bounds_violations(ctx, x, per_query),
            **cf_metrics(measured, n, returned),
        }
        # The same metrics on the first queries only, the ones dice-ml is run on.
        entry["on_dice_queries"] = cf_metrics(
            measured[: ctx.dice_rows],
            min(n, ctx.dice_rows),
            sum(len(p) for p in per_query[: ctx.dice_rows]),
        )
        out[f"whylake_{method}"] = entry
    out["whylake_gradient"]["cost"] = cf_cost(ctx)
    out["dice-ml"] = bench_dice(ctx)
    return out


def cf_cost(ctx: Context) -> dict[str, Any]:
    """Model passes and rows our gradient path evaluates, and the FLOP/s that makes (untimed)."""

    class Counting(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner
            self.passes = self.rows = self.grad_rows = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.passes += 1
            self.rows += x.shape[0]
            self.grad_rows += x.shape[0] if x.requires_grad else 0
            return self.inner(x)

    counting = Counting(ctx.model).eval()
    cfg = CounterfactualConfig(n_counterfactuals=K_COUNTERFACTUALS, seed=ctx.seed)
    generate_counterfactuals(
        counting,
        ctx.x,
        ctx.spec,
        cfg,
        reference_rows=ctx.reference,
        reference_scores=ctx.reference_scores,
        device=ctx.device,
    )
    macs = linear_macs(ctx.model)
    flops = 2 * macs * counting.rows + 2 * macs * counting.grad_rows
    return {
        "model_passes": counting.passes,
        "rows_scored": counting.rows,
        "rows_with_input_gradient": counting.grad_rows,
        "rows_scored_per_query": counting.rows / ctx.x.shape[0],
        "matmul_flops": flops,
        "mean_rows_per_pass": counting.rows / max(1, counting.passes),
    }


def bench_dice(ctx: Context) -> dict[str, Any]:
    try:
        import dice_ml
        import pandas as pd
        from raiutils.exceptions import UserConfigValidationException
    except ImportError as err:
        return {"skipped": f"dice-ml not installed ({err}); pip install 'dice-ml==0.12'"}

    # dice-ml's PyTorch backend calls .numpy() on the model output: it runs on the CPU only.
    cpu = torch.device("cpu")
    model = ctx.w.model.to(cpu)
    names = list(ctx.w.feature_names)
    reference = ctx.reference
    frame = pd.DataFrame(reference.astype(np.float64), columns=names)
    frame["label"] = (ctx.reference_scores >= 0.5).astype(int)
    data = dice_ml.Data(
        dataframe=frame,
        continuous_features=names,
        outcome_name="label",
        continuous_features_precision=dict.fromkeys(names, DICE_PRECISION),
    )
    lower = torch.as_tensor(reference.min(0), dtype=torch.float32)
    span = torch.as_tensor(reference.max(0) - reference.min(0), dtype=torch.float32)

    class TwoColumn(torch.nn.Module):
        """[1 - p, p], which every dice-ml method reads as a binary classifier's output.

        With ``denormalise``, inputs arrive min-max scaled (dice's gradient method optimises
        there and feeds the model directly) and are mapped back to the model's units.
        """

        def __init__(self, denormalise: bool) -> None:
            super().__init__()
            self.denormalise = denormalise

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.denormalise:
                x = x * span + lower
            p = model(x.float()).squeeze(-1)
            return torch.stack([1 - p, p], dim=-1)

    out: dict[str, Any] = {
        "version": importlib.metadata.version("dice-ml"),
        "backend": "PYT",
        "device": "cpu (dice-ml's PyTorch backend calls .numpy() on outputs)",
        "continuous_features_precision": DICE_PRECISION,
        "desired_class": "opposite",
    }
    queries_all = ctx.x
    for method, rows in (
        ("random", ctx.dice_rows),
        ("genetic", ctx.dice_rows),
        ("gradient", ctx.dice_gradient_rows),
    ):
        m = min(rows, queries_all.shape[0])
        if m == 0:
            out[method] = {"skipped": "0 queries asked for"}
            continue
        queries = queries_all[:m]
        explainer = dice_ml.Dice(
            data,
            dice_ml.Model(model=TwoColumn(method == "gradient").eval(), backend="PYT"),
            method=method,
        )
        per_query: list[list[np.ndarray]] = []
        failures = 0
        np.random.seed(ctx.seed)
        random.seed(ctx.seed)
        torch.manual_seed(ctx.seed)
        start = time.perf_counter()
        for i in range(m):
            frame_q = pd.DataFrame(queries[i : i + 1].astype(np.float64), columns=names)
            kwargs: dict[str, Any] = {"random_seed": ctx.seed} if method == "random" else {}
            try:
                with quiet():
                    res = explainer.generate_counterfactuals(
                        frame_q, total_CFs=K_COUNTERFACTUALS, desired_class="opposite", **kwargs
                    )
                cf = res.cf_examples_list[0].final_cfs_df
                rows_out = [] if cf is None else list(cf[names].to_numpy(np.float64))
            except UserConfigValidationException:
                failures += 1  # dice raises when it found nothing for the query
                rows_out = []
            per_query.append(rows_out)
        secs = time.perf_counter() - start
        # dice rounds every value to its precision: a feature it did not mean to change can
        # differ from the query in the 5th decimal. Those are set back (in dice's favour).
        half_step = 0.5 * 10.0**-DICE_PRECISION + 1e-12
        per_query = [
            [np.where(np.abs(c - queries[i]) <= half_step, queries[i], c) for c in cfs]
            for i, cfs in enumerate(per_query)
        ]
        measured, returned = measure_all(ctx, queries, per_query, model, cpu)
        out[method] = {
            "queries_per_s": m / secs,
            "seconds": secs,
            "queries_without_output": failures,
            "bounds_violations": bounds_violations(ctx, queries, per_query, half_step),
            **cf_metrics(measured, m, returned),
        }
    ctx.w.model.to(ctx.device)
    return out


# -- goals and report ------------------------------------------------------------------------


def goals(res: dict[str, Any]) -> list[dict[str, Any]]:
    roof, shp, cf = (
        res["roofline"],
        res["shap"],
        res["counterfactuals"],
    )
    out = [
        {
            "goal": "IG >= 30% of the float32 matmul roofline",
            "measured": roof["whylake_fraction_of_roofline"],
            "met": roof["whylake_fraction_of_roofline"] >= 0.30,
        },
        {
            "goal": "SHAP >= 20x shap.DeepExplainer rows/s, additivity error no larger",
            "measured": {
                "speedup": shp["speedup_vs_deep"],
                "additivity_mean": shp["whylake"]["additivity_error"]["mean"],
                "deep_additivity_mean": shp["shap.DeepExplainer"]["additivity_error"]["mean"],
            },
            "met": shp["speedup_vs_deep"] >= 20
            and shp["whylake"]["additivity_error"]["max"]
            <= max(shp["shap.DeepExplainer"]["additivity_error"]["max"], 1e-6),
        },
    ]
    dice = cf["dice-ml"]
    ours = cf["whylake_gradient"]
    if "skipped" in dice:
        out.append(
            {
                "goal": "counterfactuals vs dice-ml",
                "measured": None,
                "met": None,
                "note": dice["skipped"],
            }
        )
        return out
    fastest = max(("random", "genetic", "gradient"), key=lambda m: dice[m]["queries_per_s"])
    speedup = ours["queries_per_s"] / dice[fastest]["queries_per_s"]
    mine, rnd = ours["on_dice_queries"], dice["random"]

    def no_worse(a: float | None, b: float | None) -> bool:
        return a is not None and (b is None or a <= b)

    out.append(
        {
            "goal": "CF >= 100x dice-ml's fastest queries/s, validity >= 0.95, "
            "proximity and sparsity no worse than dice-ml random (same queries)",
            "measured": {
                "dice_fastest": fastest,
                "speedup": speedup,
                "validity": ours["validity"],
                "proximity": mine["proximity_mean"],
                "dice_random_proximity": rnd["proximity_mean"],
                "sparsity": mine["sparsity_mean"],
                "dice_random_sparsity": rnd["sparsity_mean"],
            },
            "met": speedup >= 100
            and ours["validity"] >= 0.95
            and no_worse(mine["proximity_mean"], rnd["proximity_mean"])
            and no_worse(mine["sparsity_mean"], rnd["sparsity_mean"]),
        }
    )
    return out


def fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
            return f"{v:.2e}"
        return f"{v:,.{digits}g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def print_report(res: dict[str, Any]) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # rich is a dependency, but the figures matter more than the frame
        Console = Table = None  # type: ignore[assignment,misc]  # noqa: N806

    tables: list[tuple[str, list[str], list[list[str]]]] = []
    ig, roof = res["integrated_gradients"], res["roofline"]
    rows = [
        [
            "whylake",
            fmt(ig["whylake"]["rows_per_s"]),
            fmt(ig["whylake"]["completeness_error"]["mean"]),
            fmt(ig["whylake"]["completeness_error"]["max"]),
            fmt(roof["whylake_fraction_of_roofline"]),
        ],
        [
            f"captum (internal_batch_size={ig['captum_best_batch']['internal_batch_size']})",
            fmt(ig["captum_best_batch"]["rows_per_s"]),
            fmt(ig["captum_best_batch"]["completeness_error"]["mean"]),
            fmt(ig["captum_best_batch"]["completeness_error"]["max"]),
            fmt(roof["captum_best_batch_fraction_of_roofline"]),
        ],
        ["captum row by row", fmt(ig["captum_row_by_row"]["rows_per_s"]), "", "", ""],
    ]
    if "whylake_converged" in ig:  # results written before adaptive steps have none
        conv = ig["whylake_converged"]
        rows.insert(
            1,
            [
                f"whylake, adaptive steps to {conv['tolerance']:g}",
                fmt(conv["rows_per_s"]),
                fmt(conv["completeness_error"]["mean"]),
                fmt(conv["completeness_error"]["max"]),
                "",
            ],
        )
    tables.append(
        (
            f"Integrated Gradients, {ig['steps']} steps, {ig['rows']} rows  (roofline "
            f"{fmt(roof['ig_roofline_rows_per_s'])} rows/s = "
            f"{fmt(roof['matmul_peak']['flops_per_s'] / 1e9)} GFLOP/s / "
            f"{fmt(roof['ig_flops_per_row'] / 1e6)} MFLOP per row)",
            ["method", "rows/s", "completeness err mean", "max", "of roofline"],
            rows,
        )
    )
    shp = res["shap"]
    rows = []
    for name in ("whylake", "shap.DeepExplainer", "shap.GradientExplainer", "shap.KernelExplainer"):
        e = shp[name]
        rows.append(
            [
                name,
                fmt(e["rows_per_s"]),
                str(e.get("rows", shp["rows"])),
                fmt(e["additivity_error"]["mean"]),
                fmt(e["additivity_error"]["max"]),
            ]
        )
    tables.append(
        (
            "SHAP (torch MLP, 100-row background)",
            ["method", "rows/s", "rows", "additivity err mean", "max"],
            rows,
        )
    )
    rows = [
        [pair, fmt(v["mean_cosine"]), fmt(v["mean_relative_l1"]), fmt(v["top5_overlap"])]
        for pair, v in shp["agreement_on_common_rows"]["pairs"].items()
    ]
    tables.append(
        (
            f"SHAP agreement on the first {shp['agreement_on_common_rows']['rows']} rows",
            ["pair", "cosine", "relative L1", "top-5 overlap"],
            rows,
        )
    )
    cf = res["counterfactuals"]
    rows = []
    entries = [(f"whylake {m}", cf[f"whylake_{m}"]) for m in ("gradient", "search")]
    entries += [
        (
            f"whylake {m} (dice's queries)",
            {**cf[f"whylake_{m}"]["on_dice_queries"], "queries_per_s": None},
        )
        for m in ("gradient",)
    ]
    if "skipped" not in cf["dice-ml"]:
        entries += [(f"dice-ml {m}", cf["dice-ml"][m]) for m in ("random", "genetic", "gradient")]
    for name, e in entries:
        rows.append(
            [
                name,
                fmt(e.get("queries_per_s")),
                str(e["queries"]),
                fmt(e["validity"]),
                fmt(e["proximity_mean"]),
                fmt(e["sparsity_mean"]),
                fmt(e["plausibility_mean"]),
            ]
        )
    title = f"Counterfactuals, k={cf['k']}, {cf['target']}"
    if "skipped" in cf["dice-ml"]:
        title += f"  [{cf['dice-ml']['skipped']}]"
    tables.append(
        (
            title,
            [
                "method",
                "queries/s",
                "queries",
                "validity",
                "proximity (MAD L1)",
                "sparsity",
                "plausibility",
            ],
            rows,
        )
    )
    rows = [
        [
            g["goal"],
            json.dumps(g["measured"], default=fmt)
            if isinstance(g["measured"], dict)
            else fmt(g["measured"]),
            {True: "met", False: "NOT met", None: "n/a"}[g["met"]],
        ]
        for g in res["goals"]
    ]
    tables.append(("Goals (reported, never asserted)", ["goal", "measured", ""], rows))

    meta = res["meta"]
    header = (
        f"{meta['cpu_model']} | {meta['cpu_cores_usable']} cores | torch threads "
        f"{meta['torch_threads']} | device {meta['device']} | model accuracy (test) "
        f"{fmt(res['workload']['metrics']['accuracy_test'])}, saturated share "
        f"{fmt(res['workload']['metrics']['saturated_share'])} | load avg {meta['load_average']}"
    )
    if Console is None:
        print(header)
        for title, cols, body in tables:
            print(f"\n{title}\n" + " | ".join(cols))
            for r in body:
                print(" | ".join(r))
        return
    console = Console(width=140)
    console.print(header)
    for title, cols, body in tables:
        table = Table(title=title, title_justify="left")
        for c in cols:
            table.add_column(c, overflow="fold")
        for r in body:
            table.add_row(*r)
        console.print(table)


# -- main ------------------------------------------------------------------------------------


class Context:
    """Everything the sections share: the workload, the device, the sizes of each run."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.device = torch.device(args.device)
        self.clock = Clock(self.device)
        self.seed = 0
        self.w: ReferenceWorkload = build_reference_workload()
        self.model = self.w.model.to(self.device)
        rows = min(args.rows, self.w.inputs.shape[0])
        self.x = self.w.inputs[:rows]
        quick = args.quick
        self.repeats = 2 if quick else 3
        self.captum_batches = [4096] if quick else [1024, 2048, 4096, 8192, 16384]
        self.row_by_row = 20 if quick else 100
        self.gradient_rows = 60 if quick else 200
        self.kernel_rows = 8 if quick else 40
        self.dice_rows = 10 if quick else 40
        self.dice_gradient_rows = 1 if quick else 2
        train = self.w.train_index
        self.reference = self.w.inputs[train]
        self.reference_scores = self.w.scores[train]
        self.spec: CounterfactualSpec = spec_from_training(self.w.feature_names, self.reference)
        self.cf_config = CounterfactualConfig(n_counterfactuals=K_COUNTERFACTUALS, seed=self.seed)
        self.peak = matmul_peak(
            self.device, self.clock, 2048 if self.device.type == "cpu" else 8192, 3 if quick else 5
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.explainers", description=__doc__)
    parser.add_argument(
        "--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu"
    )
    parser.add_argument("--rows", type=int, default=569, help="rows explained (max 569)")
    parser.add_argument("--quick", action="store_true", help="fewer repeats, smaller baselines")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda asked for, but torch.cuda.is_available() is False")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    started = time.perf_counter()
    ctx = Context(args)
    load = os.getloadavg()
    res: dict[str, Any] = {
        "meta": {
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "cpu_model": cpu_model(),
            "cpu_cores_logical": os.cpu_count(),
            "cpu_cores_usable": len(os.sched_getaffinity(0)),
            "torch_threads": torch.get_num_threads(),
            "torch_interop_threads": torch.get_num_interop_threads(),
            "device": ctx.device.type,
            "gpu": torch.cuda.get_device_name(0) if ctx.device.type == "cuda" else None,
            "versions": versions(),
            "load_average": [round(v, 2) for v in load],
            "noise": "shared machine: timings are best-of-N wall clock and still noisy; "
            "slow baselines run once on a row subset",
            "settings": {
                "rows": int(ctx.x.shape[0]),
                "quick": args.quick,
                "repeats_fast_methods": ctx.repeats,
                "captum_internal_batch_sizes": ctx.captum_batches,
                "captum_row_by_row_rows": ctx.row_by_row,
                "gradient_explainer_rows": ctx.gradient_rows,
                "kernel_explainer_rows": ctx.kernel_rows,
                "dice_rows": ctx.dice_rows,
                "dice_gradient_rows": ctx.dice_gradient_rows,
                "seed": ctx.seed,
            },
        },
        "workload": {"metrics": ctx.w.metrics, "settings": ctx.w.settings},
    }
    sections: dict[str, float] = {}
    for name, run in (
        ("integrated_gradients", lambda: bench_ig(ctx)),
        ("roofline", lambda: roofline(ctx, res["integrated_gradients"])),
        ("shap", lambda: bench_shap(ctx)),
        ("counterfactuals", lambda: bench_counterfactuals(ctx)),
    ):
        start = time.perf_counter()
        res[name] = run()
        sections[name] = time.perf_counter() - start
    res["meta"]["section_seconds"] = sections
    res["goals"] = goals(res)
    res["meta"]["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    res["meta"]["total_seconds"] = time.perf_counter() - started
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(res, indent=2, default=_json_default))
    tmp.replace(args.output)
    print_report(res)
    print(f"\nwritten: {args.output}  ({res['meta']['total_seconds']:.0f} s)")
    return 0


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, torch.device):
        return str(value)
    return str(value)


if __name__ == "__main__":
    raise SystemExit(main())
