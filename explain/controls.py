"""Every control of a view, declared once: its range and step, label, default (the model's, where its config has
one), and which panels it redraws. ``ViewParams`` validates against these; the command line's flags, the Gradio
widgets and the Streamlit widgets are built from them.

Which panels a control redraws comes from the method registry (``explain.methods``): a method's parameter (GMSM's
t) redraws that method's panel; θ redraws the panels that carry the attention crop; τ those with the lesion mask
or the outlines; the colours every panel.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from explain.methods import get_method, panel_methods, registered
from explain.overlay import colormap_names

COLORMAPS = ("jet", "turbo", "inferno", "viridis", "hot", "bone")  # offered; any OpenCV colormap name is valid
CROP = "crop"  # the θ crop: a region tool (on its panel) and the enlarged crop, a picture beside the panels


@dataclass(frozen=True)
class Control:
    """One control of the view.

    Args:
        name: the ``ViewParams`` field, the command-line flag (``--name``) and the widget's key.
        label: what it does first, the paper second.
        kind: "slider", "dropdown", "radio", "checkbox" or "checkboxes" (several of ``choices``).
        default: without a model (and for a model whose config has no such field).
        type: int, float, str, bool or tuple.
        minimum, maximum, step: a slider's range; values above ``maximum`` are valid unless ``bounded``.
        choices: (label, value) pairs a widget offers.
        allowed: the values accepted (default: the choices' values).
        config: the ``ModelConfig`` field of the model's default ("" for none).
        regions: the region tools it changes ("crop", "outlines", "lesions"): it redraws their panels.
        colours: it redraws every panel and the crop.
        group: "regions" or "display": where a page puts it.
        elem_id: the widget's element id.
        command_line: offered as a flag of ``python -m explain``.
    """

    name: str
    label: str
    kind: str
    default: Any
    type: type = float
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    bounded: bool = True
    choices: tuple = ()
    allowed: tuple = ()
    config: str = ""
    regions: frozenset = frozenset()
    colours: bool = False
    group: str = "display"
    elem_id: str = ""
    command_line: bool = True

    @property
    def values(self) -> tuple:
        """The values accepted."""
        return self.allowed or tuple(value for _label, value in self.choices)

    def check(self, value: Any) -> Any:
        """The value in the control's type (a whole float for an int control is fine: sliders send floats).

        Raises:
            ValueError: out of range, not one of the accepted values, or a fraction for an int control.
        """
        if self.kind == "checkboxes":
            chosen = tuple(value or ())
            unknown = [v for v in chosen if v not in self.values]
            if unknown:
                raise ValueError(f"{self.name} takes {', '.join(self.values) or 'nothing'}; got {unknown}")
            return tuple(v for v in self.values if v in chosen)  # in the offered order
        if self.type is bool:
            return bool(value)
        if self.type is str:
            if value not in self.values:
                raise ValueError(f"unknown {self.name} {value!r}; choose from {', '.join(map(str, self.values))}")
            return value
        number = float(value)
        if self.type is int:
            if not number.is_integer():
                raise ValueError(f"{self.name} must be a whole number ({self.label}), got {value}")
            number = int(number)
        if number < self.minimum or (self.bounded and number > self.maximum):
            upper = f", {self.maximum:g}]" if self.bounded else ", ∞)"
            raise ValueError(f"{self.name} must be in [{self.minimum:g}{upper} ({self.label}), got {value}")
        return number

    def default_for(self, config: Any = None) -> Any:
        """The model's default when its config has one, else the control's."""
        value = getattr(config, self.config, None) if self.config and config is not None else None
        return self.check(self.default if value is None else value)

    def redraws(self) -> frozenset[str]:
        """The panels (method names) and pictures ("crop") a change of this control redraws."""
        panels = panel_methods("main") + panel_methods("optional")
        if self.colours:
            return frozenset(panels) | {CROP}
        found = {m for m in panels if self.name in {p.name for p in get_method(m).params}
                 or self.regions & get_method(m).regions}
        if self.kind == "checkboxes":  # a choice of panels redraws those panels
            found |= set(self.values)
        return frozenset(found | ({CROP} if CROP in self.regions else set()))


def _method_param_controls() -> list[Control]:
    """A slider for every registered method's parameter (GMSM's t), once per name."""
    found: dict[str, Control] = {}
    for method in registered():
        for p in method.params:
            found.setdefault(p.name, Control(p.name, p.label, "slider", p.default, float, p.minimum, p.maximum,
                                             p.step, p.bounded, config=p.config, group="regions", elem_id=p.name))
    return list(found.values())


def _panel_choices(kind: str) -> tuple:
    return tuple((get_method(m).title, m) for m in panel_methods(kind))


CONTROLS: tuple[Control, ...] = (
    Control("theta", "θ attention crop: higher keeps only the strongest details, a tighter crop (paper 000, eq. 5)",
            "slider", 128, int, 0, 255, 1, config="theta", regions=frozenset({CROP}), group="regions",
            elem_id="theta"),
    Control("tau", "τ lesion mask: higher marks fewer, stronger spots as lesion (paper 004, eq. 4)",
            "slider", 0.6, float, 0.0, 1.0, 0.01, config="tau", regions=frozenset({"lesions", "outlines"}),
            group="regions", elem_id="tau"),
    *_method_param_controls(),
    Control("alpha", "Heat-map opacity (α)", "slider", 0.5, float, 0.0, 1.0, 0.05, colours=True, elem_id="alpha"),
    Control("colormap", "Heat-map colours", "dropdown", "jet", str, choices=tuple((c, c) for c in COLORMAPS),
            allowed=tuple(colormap_names()), colours=True, elem_id="colormap"),
    Control("outlines", "Lesion outlines (paper 001's colours)", "checkbox", True, bool,
            regions=frozenset({"outlines"}), elem_id="outlines"),
    Control("compare", "Panel in the before/after view", "radio", "guided_gradcam", str,
            choices=_panel_choices("main"), elem_id="compare-panel", command_line=False),
    Control("extras", "More maps, as extra panels", "checkboxes", (), tuple, choices=_panel_choices("optional"),
            elem_id="extras", command_line=False),
)
BY_NAME = {control.name: control for control in CONTROLS}
