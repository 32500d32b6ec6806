"""Model shapes, the 64..1024 configuration, and input checks."""

import pytest
import torch

from mixseg_lite import InputError
from mixseg_lite.models import DualBranchUNet, UNet, count_parameters


@pytest.mark.parametrize("norm", ["batch", "instance", "group", "none"])
def test_unet_output_shape(norm):
    model = UNet(in_channels=2, num_classes=4, base_width=4, depth=3, norm=norm)
    assert model(torch.randn(3, 2, 32, 16)).shape == (3, 4, 32, 16)


def test_dual_branch_shapes_and_shared_encoder():
    model = DualBranchUNet(in_channels=1, num_classes=3, base_width=4, depth=3)
    teacher, student = model(torch.randn(2, 1, 16, 16))
    assert teacher.shape == student.shape == (2, 3, 16, 16)
    # One encoder, two decoders: parameters = encoder + 2 * decoder.
    enc = count_parameters(model.encoder)
    dec = count_parameters(model.teacher)
    assert count_parameters(model) == enc + 2 * dec
    assert count_parameters(model.student) == dec


def test_paper_configuration_widths():
    model = UNet(base_width=64, depth=5)
    widths = [block[0].out_channels for block in model.encoder.blocks]
    assert widths == [64, 128, 256, 512, 1024]


def test_bias_free_head_option():
    assert UNet(head_bias=False).decoder.head.bias is None


@pytest.mark.parametrize("shape, message", [
    ((2, 3, 16, 16), "expected a batch"),
    ((0, 1, 16, 16), "empty batch"),
    ((2, 1, 18, 16), "divisible by 4"),
    ((1, 16, 16), "expected a batch"),
])
def test_bad_input_shapes(shape, message):
    model = DualBranchUNet(in_channels=1, num_classes=2, base_width=4, depth=3)
    with pytest.raises(InputError, match=message):
        model(torch.randn(*shape))


def test_unknown_norm():
    with pytest.raises(InputError, match="unknown normalisation"):
        UNet(norm="layer")
