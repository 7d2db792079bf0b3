"""The benchmark references of Part II, first half: the channel modules (``attncourse.channel``).

Each class is the module's computation as its official code (or the library named in its
docstring) writes it; each ``@_reference`` builder takes the package's module, refuses settings
the reference does not implement and copies the weights. See ``tools/refs/__init__.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import _copy, _reference


class SERef(nn.Module):
    """SE as PyTorch ports of the SE release write it (e.g. moskomule/senet.pytorch): mean, Linear,
    ReLU, Linear, sigmoid, multiply. (timm's SEModule uses 1x1 convolutions instead, which measured
    slower here on the CPU, so the faster form is the reference.)"""

    def __init__(self, channels: int, hidden: int, bias: bool) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, hidden, bias=bias)
        self.fc2 = nn.Linear(hidden, channels, bias=bias)

    def forward(self, x):
        b, c = x.shape[:2]
        s = self.fc2(F.relu(self.fc1(x.mean((2, 3))), inplace=True))
        return x * s.sigmoid().view(b, c, 1, 1)


@_reference("se")
def _se(m):
    return _copy(SERef(m.channels, m.hidden, m.bias), m)


class ECARef(nn.Module):
    """The official ECA module (BangguWu/ECANet) and timm's EcaModule."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False)

    def forward(self, x):
        y = x.mean((2, 3)).view(x.shape[0], 1, -1)
        y = self.conv(y).view(x.shape[0], -1, 1, 1).sigmoid()
        return x * y


@_reference("eca")
def _eca(m):
    return _copy(ECARef(m.kernel_size), m)


class SKRef(nn.Module):
    """timm's SelectiveKernel (attn part) with the SKNet layout: M dilated 3x3 grouped conv-BN-ReLU
    paths, stacked, summed, pooled, FC-BN-ReLU, FC to M*C, softmax over the paths, weighted sum."""

    def __init__(self, channels: int, branches: int, groups: int, hidden: int) -> None:
        super().__init__()
        self.paths = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(channels, channels, 3, padding=m, dilation=m, groups=groups, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
            )
            for m in range(1, branches + 1)
        )
        self.fc = nn.Linear(channels, hidden, bias=False)
        self.bn = nn.BatchNorm1d(hidden)
        self.select = nn.Linear(hidden, branches * channels, bias=False)
        self.branches = branches

    def forward(self, x):
        b, c = x.shape[:2]
        u = torch.stack([p(x) for p in self.paths], 1)
        s = u.sum(1).mean((2, 3))
        z = F.relu(self.bn(self.fc(s)), inplace=True)
        a = self.select(z).view(b, self.branches, c, 1, 1).softmax(1)
        return (u * a).sum(1)


@_reference("sk")
def _sk(m):
    return _copy(SKRef(m.channels, m.branches, m.groups, m.hidden), m)


class SimAMRef(nn.Module):
    """The official simam_module (ZjjConan/SimAM), with n = max(HW - 1, 1) as the package."""

    def __init__(self, e_lambda: float) -> None:
        super().__init__()
        self.e_lambda = e_lambda

    def forward(self, x):
        n = max(x.shape[2] * x.shape[3] - 1, 1)
        d = (x - x.mean(dim=[2, 3], keepdim=True)).pow(2)
        y = d / (4 * (d.sum(dim=[2, 3], keepdim=True) / n + self.e_lambda)) + 0.5
        return x * torch.sigmoid(y)


@_reference("simam")
def _simam(m):
    return SimAMRef(m.e_lambda)
