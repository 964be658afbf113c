"""Connectors: small learned maps from a student feature map to the teacher's channel count.

A feature-distillation loss compares student and teacher features element by element (or channel by channel), so
the two must have the same number of channels. When they do not, the student's features go through a connector
that is trained together with the student and thrown away after training.

``Conv1x1Connector`` is the usual choice: a 1x1 convolution (a per-position linear map over channels, the
"regressor" of FitNets, Romero et al., ICLR 2015), optionally followed by BatchNorm as in the convolutional
connectors of MMRazor (kind ``"conv1x1-bn"``). BatchNorm puts the projected student features on a scale the
optimiser can adjust per channel, which matters for losses that compare raw feature values (l1/l2). For a loss
that normalises each sample's statistics anyway (ACM's per-sample l2 normalisation) it buys nothing and costs
about as much as the convolution, so kind ``"conv1x1"`` is the plain convolution.
"""

from __future__ import annotations

from torch import Tensor, nn

CONNECTOR_KINDS = ("conv1x1", "conv1x1-bn", "identity")


class Conv1x1Connector(nn.Module):
    """``Conv1x1(x)`` or ``BN(Conv1x1(x))``: B x in_channels x H x W student features -> B x out_channels x H x W."""

    def __init__(self, in_channels: int, out_channels: int, batchnorm: bool = True) -> None:
        super().__init__()
        if in_channels <= 0 or out_channels <= 0:
            raise ValueError(f"channel counts must be positive, got in={in_channels}, out={out_channels}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        # Without BatchNorm the convolution carries its own bias (BN would supply the shift otherwise).
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=not batchnorm)
        self.bn = nn.BatchNorm2d(out_channels) if batchnorm else nn.Identity()

    def forward(self, features: Tensor) -> Tensor:
        return self.bn(self.conv(features))

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, out_channels={self.out_channels}"


def build_connector(in_channels: int, out_channels: int, kind: str) -> nn.Module:
    """A connector by name: ``"conv1x1"``, ``"conv1x1-bn"`` (learned, see ``Conv1x1Connector``) or ``"identity"``.

    ``"identity"`` adds no parameters and is only valid when the channel counts already match.
    """
    if kind in ("conv1x1", "conv1x1-bn"):
        return Conv1x1Connector(in_channels, out_channels, batchnorm=kind == "conv1x1-bn")
    if kind == "identity":
        if in_channels != out_channels:
            raise ValueError(
                f"an identity connector needs matching channel counts, got student {in_channels} and "
                f"teacher {out_channels}; use kind='conv1x1'"
            )
        return nn.Identity()
    raise ValueError(f"unknown connector kind {kind!r}; allowed values: {', '.join(CONNECTOR_KINDS)}")
