"""Losses of both methods. Each is a small function with its formula and tensor shapes documented."""

from mixseg_lite.losses.divergence import kl_divergence  # noqa: F401
from mixseg_lite.losses.mixed import (  # noqa: F401
    dice_loss,
    entropy_loss,
    kl_distillation,
    partial_cross_entropy,
    pixel_entropy,
    pseudo_mask_loss,
    supervised_loss,
)
from mixseg_lite.losses.cam import class_kl, classification_loss, cross_modal_equivariance_loss, equivariance_loss  # noqa: F401,E501
from mixseg_lite.losses.semi import (  # noqa: F401
    consistency_loss,
    cross_pseudo_supervision_loss,
    ema_decay,
    ema_update,
    sigmoid_rampup,
)
