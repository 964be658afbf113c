"""Connectors: small learned maps from a student feature map to the teacher's channel count.

A feature-distillation loss compares student and teacher features element by element (or channel by channel), so
the two must have the same number of channels. When they do not, the student's features go through a connector
that is trained together with the student and thrown away after training.

``Conv1x1Connector`` is the usual choice: a 1x1 convolution (a per-position linear map over channels, the
"regressor" of FitNets, Romero et al., ICLR 2015) followed by BatchNorm, as in the convolutional connectors of
MMRazor. The convolution has no bias because the BatchNorm that follows supplies the shift. BatchNorm puts the
projected student features on a scale the optimiser can adjust per channel, instead of asking the 1x1 weights to
match the teacher's (often large) activation scale on their own.
"""

from __future__ import annotations

from torch import Tensor, nn

CONNECTOR_KINDS = ("conv1x1", "identity")


class Conv1x1Connector(nn.Module):
    """``BN(Conv1x1(x))``: maps B x in_channels x H x W student features to B x out_channels x H x W."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        if in_channels <= 0 or out_channels <= 0:
            raise ValueError(f"channel counts must be positive, got in={in_channels}, out={out_channels}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, features: Tensor) -> Tensor:
        return self.bn(self.conv(features))

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, out_channels={self.out_channels}"


def build_connector(in_channels: int, out_channels: int, kind: str) -> nn.Module:
    """A connector by name: ``"conv1x1"`` (learned, see ``Conv1x1Connector``) or ``"identity"``.

    ``"identity"`` adds no parameters and is only valid when the channel counts already match.
    """
    if kind == "conv1x1":
        return Conv1x1Connector(in_channels, out_channels)
    if kind == "identity":
        if in_channels != out_channels:
            raise ValueError(
                f"an identity connector needs matching channel counts, got student {in_channels} and "
                f"teacher {out_channels}; use kind='conv1x1'"
            )
        return nn.Identity()
    raise ValueError(f"unknown connector kind {kind!r}; allowed values: {', '.join(CONNECTOR_KINDS)}")
