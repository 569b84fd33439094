"""Guided backpropagation (Springenberg et al. 2015): the input gradient with the guided ReLU rule."""
from __future__ import annotations

from explain.methods import register
from explain.methods.base import INPUT_GRADIENTS, Method
from explain.methods.formulas import guided_saliency


@register
class GuidedBackprop(Method):
    name = "guided_backprop"
    title = "Guided backpropagation"
    needs = frozenset({INPUT_GRADIENTS})
    order = 40
    help = "Input pixels whose increase raises the output, through positive gradients only: fine detail."
    aliases = ("guided_backpropagation",)

    def compute(self, selection, **params):
        return guided_saliency(selection.input_gradients())
