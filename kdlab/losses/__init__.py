"""Distillation losses: mixup CE, soft-target KD, activated channel maps, structural (SSIM) and l_p features,
FitNets hints, attention transfer, robust representation matching, the adversarial distillation losses
(ARD, RSLAD, IAD, AdaAD) with their shared soft-label KL, and the detection feature peers (PKD, CWD, MGD, FGD)."""

from kdlab.losses.acm import acm_distance, acm_loss, activated_channel_map
from kdlab.losses.adaad import adaad_loss
from kdlab.losses.ard import ard_loss
from kdlab.losses.attention import attention_loss, attention_map
from kdlab.losses.cwd import cwd_loss
from kdlab.losses.divergence import soft_kl
from kdlab.losses.feature import feature_distance, minmax_normalize
from kdlab.losses.fgd import FGDContexts, fgd_attention, fgd_loss, fgd_masks
from kdlab.losses.fitnet import hint_loss
from kdlab.losses.iad import iad_loss, teacher_confidence
from kdlab.losses.kd import kd_loss
from kdlab.losses.mgd import mgd_generator, mgd_loss, mgd_mask
from kdlab.losses.mixup import MixedBatch, mix_batch, mixup_cross_entropy, sample_beta
from kdlab.losses.multilevel import multilevel_feature_loss
from kdlab.losses.pkd import pkd_loss, pkd_standardize
from kdlab.losses.representation import representation_loss
from kdlab.losses.rslad import rslad_loss
from kdlab.losses.ssim import effective_window, ssim_loss, ssim_map

__all__ = [
    "FGDContexts",
    "MixedBatch",
    "acm_distance",
    "acm_loss",
    "activated_channel_map",
    "adaad_loss",
    "ard_loss",
    "attention_loss",
    "attention_map",
    "cwd_loss",
    "effective_window",
    "feature_distance",
    "fgd_attention",
    "fgd_loss",
    "fgd_masks",
    "hint_loss",
    "iad_loss",
    "kd_loss",
    "mgd_generator",
    "mgd_loss",
    "mgd_mask",
    "minmax_normalize",
    "mix_batch",
    "mixup_cross_entropy",
    "multilevel_feature_loss",
    "pkd_loss",
    "pkd_standardize",
    "representation_loss",
    "rslad_loss",
    "sample_beta",
    "soft_kl",
    "ssim_loss",
    "ssim_map",
    "teacher_confidence",
]
