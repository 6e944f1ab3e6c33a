"""Pick the device an explainer runs on: CUDA when present, the CPU otherwise."""

from __future__ import annotations

import time

import torch

_KNOWN = ("cpu", "cuda")


def pick_device(prefer: str | None = None) -> torch.device:
    """Return ``cuda`` when it is available, else ``cpu``; ``prefer`` forces one of them.

    Args:
        prefer: ``None`` to choose automatically, or ``"cpu"`` / ``"cuda"`` (``"cuda:1"`` also
            accepted) to force a device.

    Raises:
        ValueError: ``prefer`` names an unknown device, or asks for CUDA on a machine without it.
    """
    if prefer is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(prefer)
    except RuntimeError as err:
        raise ValueError(f"unknown device {prefer!r}: use one of {_KNOWN} or None") from err
    if device.type not in _KNOWN:
        raise ValueError(f"unknown device {prefer!r}: use one of {_KNOWN} or None")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {prefer!r} was asked for but CUDA is not available on this machine "
                "(torch.cuda.is_available() is False): pass prefer=None or 'cpu'"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {prefer!r} was asked for but only {torch.cuda.device_count()} CUDA "
                "device(s) exist"
            )
    return device


def model_device(model: object) -> torch.device | None:
    """The device a model computes on: its own ``device`` attribute (the adapters), else its
    first parameter's or buffer's; ``None`` for a parameter-free module."""
    declared = getattr(model, "device", None)
    if isinstance(declared, torch.device):
        return declared
    if isinstance(model, torch.nn.Module):
        for tensor in model.parameters():
            return tensor.device
        for buffer in model.buffers():
            return buffer.device
    return None


def resolve_device(model: object, device: torch.device | None) -> torch.device:
    """The device to explain on: the one asked for, else the model's own, else :func:`pick_device`.

    Raises:
        ValueError: the model's weights live on another device than the one asked for (moving a
            caller's model behind its back would change it for every other user of the object).
    """
    own = model_device(model)
    if device is None:
        return own if own is not None else pick_device()
    device = torch.device(device)
    if own is not None and not _same_device(own, device):
        raise ValueError(
            f"the model's weights are on {own} but device={device} was asked for: load the model "
            f"there (torch.jit.load(path, map_location={str(device)!r})) or pass device={own}"
        )
    return device


def _same_device(a: torch.device, b: torch.device) -> bool:
    if a.type != b.type:
        return False
    if a.type == "cuda":
        index_a = a.index if a.index is not None else torch.cuda.current_device()
        index_b = b.index if b.index is not None else torch.cuda.current_device()
        return index_a == index_b
    return True


class ExplainClock:
    """What an explain call cost: CPU seconds of the calling thread, or GPU seconds on CUDA.

    On the CPU, `time.thread_time` counts only this thread: the explain stage runs torch with
    one intra-op thread on the worker's own thread (ExplainStageConfig.torch_threads), while
    process time would also count the other Beam workers of a multi-threaded process. On CUDA
    the device is synchronised at both ends, so the wall time is the time the GPU was held.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = torch.device(device)
        self.seconds = 0.0
        self._start = 0.0

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return time.perf_counter()
        return time.thread_time()

    def __enter__(self) -> ExplainClock:
        self._start = self._now()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = self._now() - self._start
