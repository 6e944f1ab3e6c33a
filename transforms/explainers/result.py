"""The value every explainer returns: attributions plus what an auditor needs to trust them."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class AttributionResult:
    """Per-row feature attributions with the prediction, base value and completeness error.

    Invariant (checked in ``__post_init__``): ``values`` is ``(n, d)`` float64 and
    ``prediction``, ``base_value`` and ``error`` are ``(n,)`` float64, with
    ``error == |values.sum(1) - (prediction - base_value)|`` as computed by the explainer.
    The arrays are made read-only so a result recorded in the audit log cannot be edited.
    """

    method: str
    values: np.ndarray
    prediction: np.ndarray
    base_value: np.ndarray
    error: np.ndarray
    config: dict[str, object] = field(default_factory=dict)
    # Sampling estimators: each row's largest standard error of an attribution (None: exact).
    std_error: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.std_error is not None:
            se = np.array(self.std_error, dtype=np.float64, copy=True).reshape(-1)
            if se.shape != (self.values.shape[0],):
                raise ValueError(f"std_error must have shape ({self.values.shape[0]},)")
            se.flags.writeable = False
            object.__setattr__(self, "std_error", se)
        if self.values.ndim != 2:
            raise ValueError(f"values must be (n, d), got shape {self.values.shape}")
        n = self.values.shape[0]
        for name in ("prediction", "base_value", "error"):
            arr = getattr(self, name)
            if arr.shape != (n,):
                raise ValueError(f"{name} must have shape ({n},), got {arr.shape}")
        for name in ("values", "prediction", "base_value", "error"):
            arr = getattr(self, name)
            if arr.dtype != np.float64:
                raise ValueError(f"{name} must be float64, got {arr.dtype}")
            # A private read-only copy: the caller's arrays stay theirs, the record stays fixed.
            frozen = np.array(arr, dtype=np.float64, copy=True)
            frozen.flags.writeable = False
            object.__setattr__(self, name, frozen)

    @classmethod
    def build(
        cls,
        method: str,
        values: np.ndarray,
        prediction: np.ndarray,
        base_value: np.ndarray,
        config: dict[str, object],
        std_error: np.ndarray | None = None,
    ) -> AttributionResult:
        """Make a result from float arrays, computing the completeness / additivity error."""
        values = np.asarray(values, dtype=np.float64)
        prediction = np.asarray(prediction, dtype=np.float64).reshape(-1)
        base_value = np.asarray(base_value, dtype=np.float64).reshape(-1)
        if base_value.shape == (1,) and prediction.shape[0] != 1:
            base_value = np.full_like(prediction, base_value[0])
        error = np.abs(values.sum(axis=1) - (prediction - base_value))
        return cls(method, values, prediction, base_value, error, dict(config), std_error)

    @property
    def n_rows(self) -> int:
        """Number of explained rows."""
        return int(self.values.shape[0])
