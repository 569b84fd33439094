"""Where the app's network pass runs: on CUDA where there is a GPU, inside ``@spaces.GPU`` on ZeroGPU.

- ``model_device()``: where the model cache keeps its models. CUDA when torch sees a GPU (a Space on t4-small,
  a workstation), else the CPU. On ZeroGPU (the Space sets ``SPACES_ZERO_GPU``) the models wait on the CPU of the
  main process, which has no GPU of its own; ``FUNDUS_APP_DEVICE`` (cpu, cuda, cuda:1) overrides the choice.
- ``network_pass``: ``explain.pipeline.analyse`` plus the default gate's maps, wrapped in
  ``spaces.GPU(duration=GPU_SECONDS)`` on ZeroGPU (the ``spaces`` package, importable there; a no-op decorator
  everywhere else, ``spaces`` is not needed locally). ZeroGPU runs a decorated function in a forked worker that
  holds a GPU for its duration and pickles what goes in and what comes back, so the pass moves its own copy of
  the model to the GPU, and hands back plain picklable values with every tensor on the CPU (``portable``): no
  CUDA tensor outlives the function or reaches Gradio, and slider moves later recombine the maps on the CPU.
- Concurrency: the caller (``appcore.analysis.Analyser.analyse``) holds the model's run lock and a pass slot
  around the call; the function itself shares nothing between calls.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import os
from collections.abc import Callable

import torch

log = logging.getLogger(__name__)

GPU_SECONDS = int(os.environ.get("FUNDUS_APP_GPU_SECONDS", 30))  # a pass takes < 2 s on a GPU, ~2-6 s on 2 CPU cores
_TRUE = ("1", "true", "yes", "on")


def on_zero_gpu(environ=None) -> bool:
    """Whether this process runs on a ZeroGPU Space (``SPACES_ZERO_GPU`` set by the Space, as ``spaces`` reads it)."""
    environ = os.environ if environ is None else environ
    return str(environ.get("SPACES_ZERO_GPU", "")).strip().lower() in _TRUE


def gpu_decorator(duration: int = GPU_SECONDS, environ=None) -> Callable[[Callable], Callable]:
    """``spaces.GPU(duration=…)`` on ZeroGPU, else a decorator that returns the function unchanged."""
    if on_zero_gpu(environ):
        try:
            import spaces
        except ImportError:  # a ZeroGPU Space without the package cannot run its pass on the GPU
            log.warning("SPACES_ZERO_GPU is set but the `spaces` package is missing: the pass runs on the CPU")
        else:
            return spaces.GPU(duration=duration)
    return lambda function: function


def model_device(environ=None) -> str:
    """Where loaded models are kept (see the module's docstring)."""
    environ = os.environ if environ is None else environ
    if environ.get("FUNDUS_APP_DEVICE"):
        return environ["FUNDUS_APP_DEVICE"]
    if on_zero_gpu(environ):
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def pass_device(model: torch.nn.Module) -> torch.device:
    """Where a pass runs: the model's own device, or CUDA on ZeroGPU (inside the GPU function, where it exists)."""
    here = next(model.parameters()).device
    if on_zero_gpu() and here.type == "cpu" and torch.cuda.is_available():
        return torch.device("cuda")
    return here


def to_cpu(value, _seen: set | None = None):
    """``value`` with every torch tensor in it moved to the CPU (dicts, lists, tuples and dataclass instances walked;
    dataclasses and dicts are changed in place: only for values a pass has just made)."""
    seen = set() if _seen is None else _seen
    if isinstance(value, torch.Tensor):
        return value.detach().cpu() if value.device.type != "cpu" else value.detach()
    if id(value) in seen:
        return value
    if isinstance(value, dict):
        seen.add(id(value))
        for key in list(value):
            value[key] = to_cpu(value[key], seen)
        return value
    if isinstance(value, (list, tuple)):
        moved = [to_cpu(item, seen) for item in value]
        if all(m is item for m, item in zip(moved, value)):
            return value  # nothing moved: the same object (a model's config is never rebuilt)
        if isinstance(value, list):
            return moved
        return type(value)(*moved) if hasattr(value, "_fields") else type(value)(moved)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        seen.add(id(value))
        for f in dataclasses.fields(value):
            current = getattr(value, f.name)
            moved = to_cpu(current, seen)
            if moved is not current:
                object.__setattr__(value, f.name, moved)  # frozen dataclasses too
        return value
    return value


_UNPICKLABLE = ("_lock",)  # Analysis' lock: made anew on the caller's side


def portable(analysis) -> dict:
    """An ``explain.pipeline.Analysis`` as plain fields with CPU tensors, fit to cross a process boundary."""
    return {f.name: to_cpu(getattr(analysis, f.name)) for f in dataclasses.fields(analysis)
            if f.name not in _UNPICKLABLE}


def restore(fields: dict):
    """The ``Analysis`` from ``portable``'s fields."""
    from explain.pipeline import Analysis

    return Analysis(**fields)


def _network_pass(rgb, model, target, *, model_key: str = "", request: str = "", key: tuple = ()) -> dict:
    from explain.pipeline import analyse

    device = pass_device(model)
    if next(model.parameters()).device != device:  # ZeroGPU: this worker's own copy goes to its GPU
        model = copy.deepcopy(model).to(device)
    analysis = analyse(rgb, model, target, model_key=model_key, request=request, key=key)
    analysis.maps(model.config.t)  # the default gate's maps, computed here rather than on a slider move
    return portable(analysis)


# Decorated once, at import, as ZeroGPU requires (the Space's environment is set before the app starts).
_decorated_pass = gpu_decorator()(_network_pass)


def network_pass(rgb, model, target, *, model_key: str = "", request: str = "", key: tuple = ()):
    """One network pass of ``model`` over a photo (``explain.pipeline.analyse``), on the GPU where there is one;
    the returned ``Analysis`` holds CPU tensors only and its default gate's maps are computed.

    The caller holds the model's run lock (one pass per model at a time)."""
    return restore(_decorated_pass(rgb, model, target, model_key=model_key, request=request, key=key))
