"""The GPU path (issue 18, part 3), as far as a CPU shows it: where models are kept, the ``@spaces.GPU`` decorator on
ZeroGPU only (a fake ``spaces`` that pickles what crosses its boundary, as ZeroGPU's forked worker does), and no
CUDA tensor reaching the page. ``scripts/gpu_check.py`` is the check for a machine with a GPU."""
from __future__ import annotations

import importlib
import pickle
import sys
import types

import numpy as np
import pytest
import torch

from support import make_tiny_models


class FakeCuda(torch.Tensor):
    """A CPU tensor that says it is on CUDA: what a pass on a GPU leaves in its results."""

    @property
    def device(self):
        return torch.device("cuda", 0)

    def cpu(self, *args, **kwargs):
        return self.as_subclass(torch.Tensor).clone()


def tensors(value, seen=None):
    """Every tensor reachable from ``value`` (dicts, lists, tuples, dataclasses, object attributes)."""
    import dataclasses

    seen = set() if seen is None else seen
    if id(value) in seen:
        return
    seen.add(id(value))
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from tensors(item, seen)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from tensors(item, seen)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from tensors(getattr(value, f.name), seen)


@pytest.fixture
def zero_gpu(monkeypatch):
    """appcore.gpu as on a ZeroGPU Space: SPACES_ZERO_GPU set and a `spaces` whose GPU(duration) records the
    duration and pickles arguments and result across the call (ZeroGPU runs the function in a forked worker)."""
    calls = []

    def gpu(duration=60):
        def decorate(function):
            def wrapper(*args, **kwargs):
                args, kwargs = pickle.loads(pickle.dumps((args, kwargs)))
                calls.append(duration)
                return pickle.loads(pickle.dumps(function(*args, **kwargs)))

            wrapper.zero_gpu_duration = duration
            return wrapper
        return decorate

    monkeypatch.setitem(sys.modules, "spaces", types.SimpleNamespace(GPU=gpu))
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    import appcore.gpu

    importlib.reload(appcore.gpu)
    yield calls
    monkeypatch.undo()  # the environment and sys.modules as they were, then the module as it imports there
    importlib.reload(appcore.gpu)


def test_the_decorator_is_applied_on_zero_gpu_only(zero_gpu, monkeypatch):
    import appcore.gpu as gpu

    assert gpu._decorated_pass.zero_gpu_duration == gpu.GPU_SECONDS and 0 < gpu.GPU_SECONDS <= 120
    assert gpu.gpu_decorator(7, environ={})(len) is len  # elsewhere: the function itself
    assert gpu.gpu_decorator(7, environ={"SPACES_ZERO_GPU": "true"})(len).zero_gpu_duration == 7
    monkeypatch.delitem(sys.modules, "spaces")
    monkeypatch.setattr("builtins.__import__", _refuse("spaces"))
    assert gpu.gpu_decorator(7, environ={"SPACES_ZERO_GPU": "1"})(len) is len  # no `spaces`: the CPU, a warning


def _refuse(name):
    real = __import__

    def fake(module, *args, **kwargs):
        if module == name:
            raise ImportError(name)
        return real(module, *args, **kwargs)
    return fake


def test_without_zero_gpu_the_pass_is_the_plain_function():
    import appcore.gpu as gpu

    assert gpu._decorated_pass is gpu._network_pass


def test_where_models_are_kept(monkeypatch):
    from appcore.gpu import model_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert model_device({}) == "cuda"  # a GPU Space (t4-small) or a workstation
    assert model_device({"SPACES_ZERO_GPU": "true"}) == "cpu"  # ZeroGPU: the main process has no GPU
    assert model_device({"FUNDUS_APP_DEVICE": "cuda:1"}) == "cuda:1"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert model_device({}) == "cpu"


def test_the_server_analyser_keeps_models_where_model_device_says(monkeypatch):
    import appcore.analysis

    monkeypatch.setattr(appcore.analysis, "model_device", lambda: "cuda")
    assert appcore.analysis.server_analyser().models.device == "cuda"


def test_on_zero_gpu_a_pass_crosses_the_boundary_and_the_page_gets_cpu_tensors(zero_gpu, tmp_path, monkeypatch):
    from appcore.analysis import Analyser
    from appcore.catalogue import Catalogue, ModelCache
    from explain.pipeline import Analysis
    from explain.views import ViewParams, render
    from fundus import make_fundus

    folder = make_tiny_models(tmp_path)["grade"]
    monkeypatch.setenv("FUNDUS_APP_HUB", "off")
    analyser = Analyser(ModelCache(catalogue=Catalogue([str(folder)])), fundus_check=False)
    rgb, _ = make_fundus(256, seed=3)
    analysis = analyser.analyse(rgb, folder.name)
    import appcore.gpu

    assert zero_gpu == [appcore.gpu.GPU_SECONDS]  # one pass, inside the GPU function
    assert analyser.models.device == "cpu"  # ZeroGPU: the models wait on the CPU; the worker moves its copy
    assert isinstance(analysis, Analysis) and analysis.model_key == folder.name
    found = list(tensors(analysis))
    assert found and all(t.device.type == "cpu" for t in found)
    view = render(analysis, ViewParams())
    assert view is not None
    again = analyser.analyse(rgb, folder.name)  # cached: no second pass
    assert again is analysis and len(zero_gpu) == 1
    maps = analysis.maps(0.5)  # a slider move recombines on the CPU, from the returned tensors
    assert all(isinstance(m, np.ndarray) for m in maps.values())


def test_portable_moves_every_gpu_tensor_to_the_cpu(tmp_path):
    import zoo
    from appcore.gpu import portable, restore
    from explain.pipeline import analyse
    from explain.targets import Predicted
    from fundus import make_fundus

    model = zoo.load(make_tiny_models(tmp_path)["multilabel"], device="cpu")
    rgb, _ = make_fundus(256, seed=1)
    analysis = analyse(rgb, model, Predicted())
    expl = analysis.explanation
    expl.activations = {k: v.as_subclass(FakeCuda) for k, v in expl.activations.items()}
    expl.outputs = expl.outputs.as_subclass(FakeCuda)
    expl.shared_results["x"] = [torch.ones(2).as_subclass(FakeCuda)]
    assert sum(t.device.type == "cuda" for t in tensors(analysis)) == len(expl.activations) + 2
    fields = portable(analysis)
    pickle.dumps(fields)  # crosses a process boundary: no lock, nothing unpicklable
    back = restore(fields)
    assert all(t.device.type == "cpu" and type(t) is torch.Tensor for t in tensors(back))
    assert model.config.labels == back.config.labels and back.config is analysis.config  # the config is not rebuilt
