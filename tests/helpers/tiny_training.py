"""A tiny classifier and real kdlab batches to train it on with ``fit``, shared by the engine and precision tests."""

import torch
from torch import nn

from kdlab.data.classification import ImageSet, iterate_batches
from kdlab.models.registry import build_classifier
from kdlab.train.engine import DataSource

STEPS = 10  # batches of 8 an epoch
generator = torch.Generator().manual_seed(0)
TRAIN = ImageSet((torch.rand(STEPS * 8, 3, 8, 8, generator=generator) * 255).to(torch.uint8),
                 torch.randint(0, 3, (STEPS * 8,), generator=generator))


def source(batch_size: int = 8) -> DataSource:
    """Real kdlab batches: shuffled, randomly cropped and flipped uint8 images."""
    return DataSource(batches=lambda g: iterate_batches(TRAIN, batch_size, g, shuffle=True, augment=True,
                                                        drop_last=True),
                      batches_per_epoch=len(TRAIN) // batch_size, batch_size=lambda batch: len(batch[1]))


def tiny_net(width: int = 4) -> nn.Module:
    return build_classifier("resnet_small", 3, width=width, stages=2)
