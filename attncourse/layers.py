"""Small building blocks shared by the mechanisms."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Gate"]


class Gate(nn.Module):
    """The place where attention weights are made: wraps the gating non-linearity.

    Every mechanism passes its attention weights through a ``Gate`` submodule, so that hooks
    (``attncourse.plot.capture_gates``) can record exactly the weights that multiply the
    features, without the module storing state. ``kind`` says what the weights range over
    (``"channel"``, ``"spatial"``, ``"branch"``, ...), for pictures.

    Args:
        activation: the non-linearity, ``nn.Sigmoid()`` by default.
        kind: what the weights are over; used only for display.
    """

    def __init__(self, activation: nn.Module | None = None, *, kind: str = "channel") -> None:
        super().__init__()
        self.activation = activation if activation is not None else nn.Sigmoid()
        self.kind = kind

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        # Any shape is valid ((B, C), (B, 1, H, W), (B, M, C), ...); what is not is a non-tensor
        # or integer logits, which the activations would reject with a less helpful message.
        if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
            got = f"a {logits.dtype} tensor" if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ValueError(f"Gate expected a floating-point tensor of logits, got {got}")
        return self.activation(logits)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}"
