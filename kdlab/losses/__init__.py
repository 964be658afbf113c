"""Distillation losses: mixup CE, soft-target KD, activated channel maps, structural (SSIM) and l_p features,
FitNets hints, attention transfer and robust representation matching."""

from kdlab.losses.acm import acm_distance, acm_loss, activated_channel_map
from kdlab.losses.attention import attention_loss, attention_map
from kdlab.losses.feature import feature_distance, minmax_normalize
from kdlab.losses.fitnet import hint_loss
from kdlab.losses.kd import kd_loss
from kdlab.losses.mixup import MixedBatch, mix_batch, mixup_cross_entropy, sample_beta
from kdlab.losses.multilevel import multilevel_feature_loss
from kdlab.losses.representation import representation_loss
from kdlab.losses.ssim import effective_window, ssim_loss, ssim_map

__all__ = [
    "MixedBatch",
    "acm_distance",
    "acm_loss",
    "activated_channel_map",
    "attention_loss",
    "attention_map",
    "effective_window",
    "feature_distance",
    "hint_loss",
    "kd_loss",
    "minmax_normalize",
    "mix_batch",
    "mixup_cross_entropy",
    "multilevel_feature_loss",
    "representation_loss",
    "sample_beta",
    "ssim_loss",
    "ssim_map",
]
