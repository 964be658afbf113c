"""Distillation losses: mixup CE, soft-target KD, activated channel maps, structural (SSIM) and l_p features,
FitNets hints, attention transfer, robust representation matching and the adversarial distillation losses
(ARD, RSLAD, IAD, AdaAD) with their shared soft-label KL."""

from kdlab.losses.acm import acm_distance, acm_loss, activated_channel_map
from kdlab.losses.adaad import adaad_loss
from kdlab.losses.ard import ard_loss
from kdlab.losses.attention import attention_loss, attention_map
from kdlab.losses.divergence import soft_kl
from kdlab.losses.feature import feature_distance, minmax_normalize
from kdlab.losses.fitnet import hint_loss
from kdlab.losses.iad import iad_loss, teacher_confidence
from kdlab.losses.kd import kd_loss
from kdlab.losses.mixup import MixedBatch, mix_batch, mixup_cross_entropy, sample_beta
from kdlab.losses.multilevel import multilevel_feature_loss
from kdlab.losses.representation import representation_loss
from kdlab.losses.rslad import rslad_loss
from kdlab.losses.ssim import effective_window, ssim_loss, ssim_map

__all__ = [
    "teacher_confidence",
    "soft_kl",
    "rslad_loss",
    "iad_loss",
    "ard_loss",
    "adaad_loss",
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
