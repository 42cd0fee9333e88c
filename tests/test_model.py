"""build_model: the widths a TrainingConfig names are the widths built."""

import keras
import pytest

from trainer.config import TrainingConfig
from trainer.models.builtin import MLP_UNITS, RESNET_WIDTHS, build_model


def _stage_channels(model):
    """The convolutions' channels, one entry per run of equal widths (a stage)."""
    widths = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D) and (not widths or widths[-1] != layer.filters):
            widths.append(layer.filters)
    return tuple(widths)


@pytest.mark.parametrize("widths, expected", [(None, RESNET_WIDTHS), ((8, 16, 32), (8, 16, 32))])
def test_resnet_stages_have_the_configured_channels(widths, expected):
    model = build_model(TrainingConfig(model_widths=widths), 10, (28, 28, 1))
    assert _stage_channels(model) == expected
    assert model.output_shape == (None, 10)


@pytest.mark.parametrize("widths, expected", [(None, MLP_UNITS), ((32, 16, 8), (32, 16, 8))])
def test_mlp_hidden_layers_have_the_configured_units(widths, expected):
    model = build_model(TrainingConfig(model="mlp", model_widths=widths), 3, (5,))
    units = tuple(layer.units for layer in model.layers if isinstance(layer, keras.layers.Dense))
    assert units == (*expected, 3)
