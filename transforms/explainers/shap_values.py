"""SHAP attributions for torch models against a background sample (Lundberg & Lee 2017)."""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from whylake.transforms.explainers.chain import Chain, compile_chain
from whylake.transforms.explainers.device import resolve_device
from whylake.transforms.explainers.integrated_gradients import integrated_gradients
from whylake.transforms.explainers.model_calls import (
    as_rows,
    check_eval_mode,
    fixed_block,
    predict_numpy,
)
from whylake.transforms.explainers.result import AttributionResult

KINDS = ("auto", "linear", "deep", "gradient", "kernel")

# shap's DeepExplainer falls back to the plain gradient where a nonlinearity's input moved less
# than this between the row and the reference (its `nonlinear_1d` handler); kept identical so the
# numbers match the library's.
_DEEPLIFT_EPS = 1e-6

# (row, background row) pairs per pass: the pair tensors are pairs x hidden width floats, so
# this keeps them near the CPU caches while the matmuls stay large enough to run at full speed
# (measured best of 1k-16k on the reference MLP; a GPU takes 64x more per launch).
_PAIRS_PER_PASS = 2048
_CUDA_SCALE = 64


def shap_attributions(
    model: object,
    inputs: np.ndarray,
    background: np.ndarray,
    *,
    kind: str = "auto",
    seed: int = 0,
    device: torch.device | None = None,
    steps: int = 32,
) -> AttributionResult:
    """SHAP values of a scalar torch model, with the additivity error per row.

    ``kind="auto"`` chooses by what the model is, read from its TorchScript graph:

    - ``"linear"``: one affine map (e.g. standardisation + ``nn.Linear``). Exact interventional
      SHAP ``w * (x - mean(background))``, which is what ``shap.LinearExplainer`` computes.
    - ``"deep"``: affine layers and elementwise activations (an MLP, a logistic model).
      DeepLIFT's rescale rule averaged over the background, which is what
      ``shap.DeepExplainer`` computes, done as batched matmuls over (row, background) pairs.
      shap's own DeepExplainer cannot run on a ScriptModule (it registers module hooks, which
      TorchScript refuses); ``kind="deep"`` on an eager ``nn.Module`` of another shape calls
      it directly (check ``error``: it misses nonlinearities that are not modules).
    - ``"gradient"``: any other torch module, including ScriptModules. Expected gradients
      (Erion et al. 2021; the quantity ``shap.GradientExplainer`` samples) computed without
      sampling: Integrated Gradients from every background row with ``steps`` Gauss-Legendre
      nodes, so it is deterministic and additive up to quadrature error.
    - ``"kernel"``: model-agnostic ``shap.KernelExplainer`` (slow; for non-torch callables), with
      ``l1_reg=False`` so that no feature is silently zeroed.

    Args:
        model: torch callable mapping float32 ``(n, d)`` to ``(n,)`` or ``(n, 1)``.
        inputs: ``(n, d)`` rows to explain, raw units.
        background: ``(m, d)`` reference rows; ``base_value`` is E[f(background)].
        kind: one of ``"auto"``, ``"linear"``, ``"deep"``, ``"gradient"``, ``"kernel"``.
        seed: seeds every random choice (only the kernel explainer samples).
        device: where to compute; default the model's own device, else :func:`pick_device`.
        steps: quadrature nodes per path for ``"gradient"``.

    Raises:
        ValueError: unknown kind, or a kind that cannot explain this model.
    """
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r} is not one of {KINDS}")
    x = as_rows(inputs, "inputs")
    bg = as_rows(background, "background", x.shape[1])
    check_eval_mode(model)
    dev = resolve_device(model, device)
    x32 = x.astype(np.float32)
    bg32 = bg.astype(np.float32)
    chain = None
    if kind in ("auto", "linear", "deep"):
        chain = compile_chain(model, np.vstack([x32[:128], bg32[:128]]), dev)
    if kind == "auto":
        kind = _auto_kind(model, chain)
    config: dict[str, object] = {
        "kind": kind,
        "background_rows": int(bg.shape[0]),
        # The values depend on every background row, so the record names them by content.
        "background_sha256": hashlib.sha256(np.ascontiguousarray(bg32).tobytes()).hexdigest(),
    }
    if kind == "linear":
        values = _linear(model, chain, x32, bg32, dev)
        config["engine"] = "chain" if chain is not None else "probe"
    elif kind == "deep":
        if chain is not None:
            values = _deeplift_chain(chain, x32, bg32, dev)
            config.update(engine="chain", rule="rescale", rescale_eps=_DEEPLIFT_EPS)
        else:
            values = _deep_library(model, x32, bg32, dev)
            config["engine"] = "shap.DeepExplainer"
    elif kind == "gradient":
        values, engine = _expected_gradients(model, x32, bg32, dev, steps)
        config.update(engine=engine, steps=steps, rule="gauss_legendre")
    else:
        values = _kernel_library(model, x32, bg32, dev, seed)
        config.update(engine="shap.KernelExplainer", seed=seed, nsamples="auto", l1_reg=False)
    config["device"] = dev.type
    prediction = predict_numpy(model, x32, dev)
    base_value = np.full(x.shape[0], predict_numpy(model, bg32, dev).mean())
    return AttributionResult.build(f"shap_{kind}", values, prediction, base_value, config)


def _auto_kind(model: object, chain: Chain | None) -> str:
    if chain is not None:
        return "linear" if chain.is_affine else "deep"
    if isinstance(model, torch.nn.Module):
        # Not shap.DeepExplainer, even for an eager module: it only sees nonlinearities that
        # are modules, so torch.tanh(...) in a forward() silently breaks additivity.
        return "gradient"
    return "kernel"


def _linear(
    model: object, chain: Chain | None, x: np.ndarray, bg: np.ndarray, dev: torch.device
) -> np.ndarray:
    """Exact interventional SHAP of an affine model: ``w * (x - mean(background))``."""
    if chain is not None:
        if not chain.is_affine:
            raise ValueError(
                "kind='linear' was asked for but the model has nonlinear activations "
                f"({[a.name for layer in chain.layers for a in layer.acts]}): use kind='auto'"
            )
        return _linear_chain(chain, x, bg, dev)
    w = _probe_linear_weights(model, x, bg, dev)
    diff = x.astype(np.float64) - bg.astype(np.float64).mean(axis=0)
    return np.asarray(w[None, :] * diff, dtype=np.float64)


def _linear_chain(chain: Chain, x: np.ndarray, bg: np.ndarray, dev: torch.device) -> np.ndarray:
    """``w * (s(x) - mean s(background))`` on the first layer's side of the prelude s.

    s is elementwise affine, so this is ``w_raw * (x - mean(background))``; taking it on the
    side the model computes keeps the sum equal to the model's own output difference.
    """
    with torch.no_grad():
        sx = chain.first_input(torch.from_numpy(x).to(dev))
        sb = chain.first_input(torch.from_numpy(bg).to(dev))
    w = chain.layers[0].weight.to("cpu", torch.float64).numpy()[0]
    mean = sb.to("cpu", torch.float64).numpy().mean(axis=0)
    return np.asarray(w[None, :] * (sx.to("cpu", torch.float64).numpy() - mean), dtype=np.float64)


def _probe_linear_weights(
    model: object, x: np.ndarray, bg: np.ndarray, dev: torch.device
) -> np.ndarray:
    """Read w off a model that is not a readable graph by finite differences, then check it.

    Differences are taken around the background mean with steps of each feature's spread, so
    they are well conditioned in raw units; the check on the inputs refuses a nonlinear model.
    """
    center = bg.astype(np.float64).mean(axis=0)
    spread = np.maximum(bg.astype(np.float64).std(axis=0), 1e-3 * (1.0 + np.abs(center)))
    d = center.shape[0]
    probe = np.vstack([center, center + np.diag(spread)])
    out = predict_numpy(model, probe, dev)
    w = (out[1:] - out[0]) / spread
    want = predict_numpy(model, x, dev)
    got = out[0] + (x.astype(np.float64) - center) @ w
    scale = max(1.0, float(np.abs(want).max()))
    if np.abs(got - want).max() > 1e-4 * scale:
        raise ValueError(
            "kind='linear' was asked for but the model is not affine on these inputs "
            f"(largest gap {np.abs(got - want).max():.3g} over {d} features): use kind='auto'"
        )
    return np.asarray(w, dtype=np.float64)


def _deeplift_chain(chain: Chain, x: np.ndarray, bg: np.ndarray, dev: torch.device) -> np.ndarray:
    """DeepLIFT rescale multipliers averaged over the background (Shrikumar et al. 2017).

    For each (row, background row) pair the multiplier of an activation is
    ``(act(z_x) - act(z_r)) / (z_x - z_r)``; multipliers chain through the affine maps like
    gradients, so each pair's contributions sum exactly to f(x) - f(r) and their mean to
    f(x) - E[f(background)]. All pairs of a block of rows go through one set of matmuls.
    """
    first = chain.layers[0]
    if chain.is_affine:
        return _linear_chain(chain, x, bg, dev)
    bg_s = chain.first_input(fixed_block(bg, 0, bg.shape[0], dev))
    reference = _record(chain, bg_s)
    m = bg.shape[0]
    pairs = _PAIRS_PER_PASS * (_CUDA_SCALE if dev.type == "cuda" else 1)
    rows_per_pass = max(1, pairs // m)
    out = np.empty(x.shape, dtype=np.float64)
    for start in range(0, x.shape[0], rows_per_pass):
        # Fixed-shape blocks: the same kernels whatever the batch size (see fixed_block).
        xs = chain.first_input(fixed_block(x, start, rows_per_pass, dev))
        grad = _pair_multipliers(chain, _record(chain, xs), reference)  # (r, m, h0)
        r = xs.shape[0]
        contribution = (grad.reshape(r * m, -1) @ first.weight).reshape(r, m, -1)
        # Taken on the prelude's side (see _linear_chain): s(x) - s(r), not x - r.
        delta = xs[:, None, :] - bg_s[None, :, :]
        block = (delta * contribution).mean(dim=1)
        stop = min(x.shape[0], start + r)
        out[start:stop] = block[: stop - start].to("cpu", torch.float64).numpy()
    return out


_Record = list[list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]


def _record(chain: Chain, x: torch.Tensor) -> _Record:
    """Each activation's input, output and derivative, per layer, for first-layer inputs."""
    record: _Record = []
    z = x
    for layer in chain.layers:
        z = torch.addmm(layer.bias, z, layer.weight.T)
        local = []
        for act in layer.acts:
            a = act(z)
            local.append((z, a, act.derivative(z, a)))
            z = a
        record.append(local)
    return record


def _pair_multipliers(chain: Chain, rows: _Record, reference: _Record) -> torch.Tensor:
    """d f / d z0 under the rescale rule for every (row, reference) pair: ``(r, m, h0)``."""
    grad: torch.Tensor | None = None
    for i in range(len(chain.layers) - 1, -1, -1):
        for (zx, ax, dx), (zr, ar, _) in zip(
            reversed(rows[i]), reversed(reference[i]), strict=True
        ):
            dz = zx[:, None, :] - zr[None, :, :]
            slope = (ax[:, None, :] - ar[None, :, :]).div_(dz)
            # In place where possible: these (rows, references, width) tensors are the bulk of
            # the memory traffic.
            torch.where(dz.abs_() < _DEEPLIFT_EPS, dx[:, None, :], slope, out=slope)
            grad = slope if grad is None else slope.mul_(grad)
        if i > 0:
            weight = chain.layers[i].weight
            if grad is None:
                grad = weight  # (1, h): broadcasts over the pairs in the next multiply
            elif weight.shape[0] == 1:
                grad = grad * weight
            else:
                grad = grad @ weight
    assert grad is not None  # an affine chain returned earlier
    return grad


def _deep_library(model: object, x: np.ndarray, bg: np.ndarray, dev: torch.device) -> np.ndarray:
    """shap.DeepExplainer itself, for an eager nn.Module whose graph is not a chain."""
    if isinstance(model, torch.jit.ScriptModule) or not isinstance(model, torch.nn.Module):
        raise ValueError(
            "kind='deep' needs an eager nn.Module (shap.DeepExplainer registers forward hooks, "
            "which TorchScript refuses) or a model made of affine layers and elementwise "
            "activations: use kind='gradient' for this model"
        )
    import shap  # deferred: importing shap costs ~2 s and is only needed here

    explainer = shap.DeepExplainer(_Column(model), torch.from_numpy(bg).to(dev))
    values = explainer.shap_values(torch.from_numpy(x).to(dev), check_additivity=False)
    return np.asarray(values, dtype=np.float64).reshape(x.shape)


class _Column(torch.nn.Module):
    """The model with ``(n, 1)`` outputs, the only shape shap.DeepExplainer accepts."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x).reshape(-1, 1)  # type: ignore[no-any-return]


def _expected_gradients(
    model: object, x: np.ndarray, bg: np.ndarray, dev: torch.device, steps: int
) -> tuple[np.ndarray, str]:
    """Mean over background rows of IG from that row: expected gradients without sampling."""
    n, d = x.shape
    m = bg.shape[0]
    out = np.empty((n, d), dtype=np.float64)
    engine = "autograd"
    rows_per_call = max(1, 65536 // (m * steps))
    for start in range(0, n, rows_per_call):
        block = x[start : start + rows_per_call]
        r = block.shape[0]
        result = integrated_gradients(
            model, np.repeat(block, m, axis=0), np.tile(bg, (r, 1)), steps=steps, device=dev
        )
        engine = str(result.config["engine"])
        out[start : start + r] = result.values.reshape(r, m, d).mean(axis=1)
    return out, engine


def _kernel_library(
    model: object, x: np.ndarray, bg: np.ndarray, dev: torch.device, seed: int
) -> np.ndarray:
    """shap.KernelExplainer, the model-agnostic fallback; exact when 2^d fits its budget."""
    import shap  # deferred: importing shap costs ~2 s and is only needed here

    def f(rows: np.ndarray) -> np.ndarray:
        return predict_numpy(model, rows, dev)

    # KernelExplainer samples coalitions from numpy's global generator: seed it for this call
    # and put the caller's state back (not thread-safe; the kernel path is a slow fallback).
    state = np.random.get_state()
    try:
        np.random.seed(seed)
        explainer = shap.KernelExplainer(f, bg.astype(np.float64))
        values = explainer.shap_values(x.astype(np.float64), l1_reg=False, silent=True)
    finally:
        np.random.set_state(state)
    return np.asarray(values, dtype=np.float64).reshape(x.shape)
