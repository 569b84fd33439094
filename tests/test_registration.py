"""Adding a data set format, an architecture, a recipe, a method or an app panel is one new file: each test writes a
toy one as a module of its package (a temporary folder on the package's ``__path__``, as a new file in the package's
folder would be) and finds it registered with its facts and offered by the commands, with no other change. A module
that fails to import is an error, never skipped."""
from __future__ import annotations

import importlib
import importlib.util
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from explain.methods import _REGISTRY as METHODS
from fundus import make_fundus
from fundus.datasets.registry import FORMATS
from train.recipes import RECIPES
from zoo.architectures import ARCHITECTURES

REGISTRIES = (FORMATS, ARCHITECTURES, RECIPES, METHODS)


@pytest.fixture
def new_module(tmp_path, monkeypatch):
    """``new_module(package, name, source)`` writes a module of ``package``; afterwards the registries and
    ``sys.modules`` are as they were."""
    for registry in REGISTRIES:
        registry.discover()  # what is registered before the test, recipes included (they load on first lookup)
    saved = [dict(registry) for registry in REGISTRIES]

    def write(package_name: str, name: str, source: str) -> None:
        package = importlib.import_module(package_name)
        folder = tmp_path / package_name
        folder.mkdir(exist_ok=True)
        (folder / f"{name}.py").write_text(textwrap.dedent(source))
        if str(folder) not in package.__path__:
            monkeypatch.setattr(package, "__path__", [*package.__path__, str(folder)])
        importlib.invalidate_caches()

    yield write
    for registry, entries in zip(REGISTRIES, saved):
        registry.clear()
        registry.update(entries)
    for name in [name for name in sys.modules if name.rpartition(".")[2].startswith("toy_")]:
        del sys.modules[name]


def test_a_format_is_one_file_with_its_facts(new_module, tmp_path, capsys):
    from fundus.datasets.__main__ import main
    from fundus.datasets.labelled import load_layout
    from fundus.datasets.labels import sample_target
    from train.report import licences

    new_module("fundus.datasets", "toy_format", '''
        from fundus.tasks import MULTICLASS
        from fundus.datasets.base import FundusDataset, Sample, list_images
        from fundus.datasets.registry import CLASS, register

        NAMES = ["healthy", "glaucoma"]


        @register("toy-format", layout="<patient>_<healthy|glaucoma>.png", annotation=CLASS, licence="CC0 (toy)")
        def load_toy(root, split="all"):
            samples = [Sample(p, NAMES.index(p.stem.split("_")[1]), patient_id=p.stem.split("_")[0])
                       for p in list_images(root)]
            return FundusDataset("toy-format", root, split, samples, NAMES, MULTICLASS.name)
    ''')
    FORMATS.discover()
    assert main([]) == 0
    listed = capsys.readouterr().out
    assert "toy-format: class, no official split: the whole folder" in listed and "CC0 (toy)" in listed
    root = tmp_path / "photos"
    for i, name in enumerate(("p1_healthy", "p2_glaucoma")):
        root.mkdir(exist_ok=True)
        Image.fromarray(make_fundus(64, seed=i)[0]).save(root / f"{name}.png")
    dataset = load_layout(root, "toy-format")  # the format's default split: the whole folder
    assert dataset.split == "all" and dataset.format == "toy-format"
    # Its annotation kind picks the converter: classes by name, in the model's order.
    assert [sample_target(s, dataset, ["glaucoma", "healthy"], "multiclass") for s in dataset] == [1, 0]
    assert licences(SimpleNamespace(data=[root], formats=["toy-format"], preset=None)) == "photos: CC0 (toy)"


def test_an_architecture_is_one_file(new_module, tmp_path):
    import zoo
    from zoo.model_names import catalog

    new_module("zoo.architectures", "toy_arch", '''
        from torch import nn

        from zoo.architectures.registry import Built, check_output_stride, register
        from zoo.model import FundusNet


        class ToyNet(FundusNet):
            def __init__(self, config):
                super().__init__(config)
                self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
                self.classifier = nn.Linear(4, config.num_outputs)

            def forward(self, x):
                return self.classifier(self.features(x).mean(dim=(2, 3)))


        @register("toy_net", papers=("003",), description="a toy: one convolution, GAP, linear", input_size=32)
        def build(config, pretrained):
            check_output_stride(config)
            explain = dict(target_layer="features.1", low_layer="features.0", cam=None, cam_classifier="",
                           cam_reason="a toy")
            return Built(ToyNet(config), explain, "random")
    ''')
    ARCHITECTURES.discover()
    assert "toy_net" in {row["name"] for row in catalog()["architectures"]}  # python -m zoo list
    model = zoo.create_model("toy_net", paper="003", pretrained=False)
    x = torch.zeros(1, 3, 32, 32)
    model.save_pretrained(tmp_path / "toy")
    loaded = zoo.load(str(tmp_path / "toy"))
    assert loaded.config.arch == "toy_net" and torch.equal(loaded(x), model.eval()(x))


def test_a_recipe_is_one_file_and_a_broken_one_is_an_error(new_module, capsys):
    from train.__main__ import main as train_main
    from train.recipes import available_recipes, get_recipe

    new_module("train.recipes", "toy_recipe", '''
        from fundus.tasks import MULTICLASS
        from train.recipes import Recipe, register


        @register
        class ToyRecipe(Recipe):
            name, paper, task = "toy-recipe", "003", MULTICLASS.name
            description = "a toy: healthy or glaucoma"
            labels = ("healthy", "glaucoma")
            archs = {"efficientnet_lite0": 64}
            defaults = dict(arch="efficientnet_lite0", epochs=1)
    ''')
    assert "toy-recipe" in available_recipes()
    assert train_main(["--help"]) == 0
    assert "toy-recipe       paper 003: a toy: healthy or glaucoma" in capsys.readouterr().out
    args = get_recipe("toy-recipe").parse_args(["--data", "somewhere", "--format", "hrf"])
    assert args.arch == "efficientnet_lite0" and args.input_size == 64 and args.epochs == 1
    new_module("train.recipes", "toy_broken", "import toy_no_such_module\n")
    with pytest.raises(ModuleNotFoundError, match="toy_no_such_module"):
        available_recipes()


TOY_METHOD = '''
    from explain.methods import Method, register
    from explain.methods.formulas import layer_map


    @register
    class MeanActivation(Method):
        name, title, panel, order = "toy_mean_activation", "Mean activation", "optional", 90
        help = "The high layer's mean activation (a toy: needs nothing beyond the forward pass)."

        def compute(self, selection, **params):
            return layer_map(selection.activations("high").mean(dim=1), selection.size)
'''


def test_a_method_is_one_file(new_module):
    from explain.methods import needs_of, panel_methods
    from test_explain import explainer_for, images, tiny

    new_module("explain.methods", "toy_method", TOY_METHOD)
    METHODS.discover()
    assert "toy_mean_activation" in panel_methods("optional") and needs_of(["toy_mean_activation"]) == frozenset()
    maps = explainer_for(tiny()).explain(images(), target=1, methods=["toy_mean_activation"]).maps()
    assert maps["toy_mean_activation"].shape == (64, 64) and maps["toy_mean_activation"].max() == pytest.approx(1.0)


def _fresh(module_name: str):
    """A new copy of one of our modules, executed now (its import-time tables read the registries as they are)."""
    path = Path(importlib.import_module(module_name).__file__)
    spec = importlib.util.spec_from_file_location(f"toy_{module_name.replace('.', '_')}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # removed by the fixture (its name starts with toy_)
    spec.loader.exec_module(module)
    return module


def test_an_app_panel_is_a_method_with_a_panel(new_module):
    # The real modules first: imported while the toy is registered, their tables would keep it after the test.
    for real in ("explain.controls", "appcore.page"):
        importlib.import_module(real)
    new_module("explain.methods", "toy_method", TOY_METHOD)
    METHODS.discover()
    controls, page = _fresh("explain.controls"), _fresh("appcore.page")
    # The page shows it (an output of its own, after the colour bar) and "More maps" offers it.
    assert "toy_mean_activation" in page.PANELS and page.VIEW_OUTPUTS[-1] == "toy_mean_activation"
    assert ("Mean activation", "toy_mean_activation") in controls.BY_NAME["extras"].choices
