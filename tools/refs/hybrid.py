"""The benchmark references of Part II, second half: the channel + spatial modules (``attncourse.hybrid``).

Each class is the module's computation as its official code (or the library named in its
docstring) writes it; each ``@_reference`` builder takes the package's module, refuses settings
the reference does not implement and copies the weights. See ``tools/refs/__init__.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import _copy, _reference, _require


class CBAMRef(nn.Module):
    """CBAM as the official code (Jongchan/attention-module) writes it, in the paper's settings
    (conv with bias and no BN, [avg; max]): pools as avg_pool2d / max_pool2d over the whole map,
    one MLP on both, channel max with torch.max."""

    def __init__(self, channels: int, hidden: int, k: int, bias: bool) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(channels, hidden, bias=bias), nn.ReLU(), nn.Linear(hidden, channels, bias=bias))
        self.spatial = nn.Conv2d(2, 1, k, padding=k // 2)

    def forward(self, x):
        b, c, h, w = x.shape
        avg = F.avg_pool2d(x, (h, w)).view(b, c)
        mx = F.max_pool2d(x, (h, w)).view(b, c)
        x = x * (self.mlp(avg) + self.mlp(mx)).sigmoid().view(b, c, 1, 1)
        pooled = torch.cat([x.mean(1, keepdim=True), torch.max(x, 1, keepdim=True)[0]], 1)
        return x * self.spatial(pooled).sigmoid()


@_reference("cbam")
def _cbam(m):
    _require(m, order="channel-spatial", spatial_norm=False, pool_order="avg-max")
    return _copy(CBAMRef(m.channels, m.hidden, m.kernel_size, m.bias), m)


class BAMRef(nn.Module):
    """BAM as the official code writes it (expand_as, att = 1 + sigmoid(.), att * x), in the paper's
    settings: sum of the branches, BN at each branch's output."""

    def __init__(self, channels: int, hidden: int, d: int) -> None:
        super().__init__()
        self.fc0 = nn.Linear(channels, hidden)
        self.fc1 = nn.Linear(hidden, channels)
        self.bn_c = nn.BatchNorm1d(channels)
        self.f0 = nn.Conv2d(channels, hidden, 1)
        self.f1 = nn.Conv2d(hidden, hidden, 3, padding=d, dilation=d)
        self.f2 = nn.Conv2d(hidden, hidden, 3, padding=d, dilation=d)
        self.f3 = nn.Conv2d(hidden, 1, 1)
        self.bn_s = nn.BatchNorm2d(1)

    def forward(self, x):
        b, c, h, w = x.shape
        mc = self.bn_c(self.fc1(F.relu(self.fc0(F.avg_pool2d(x, (h, w)).view(b, c))))).view(b, c, 1, 1)
        ms = self.bn_s(self.f3(F.relu(self.f2(F.relu(self.f1(F.relu(self.f0(x))))))))
        att = 1 + torch.sigmoid(mc.expand_as(x) + ms.expand_as(x))
        return att * x


@_reference("bam")
def _bam(m):
    _require(m, combine="sum", bn="output")
    return _copy(BAMRef(m.channels, m.hidden, m.dilation), m)


class SCSERef(nn.Module):
    """The official ChannelSpatialSELayer (ai-med/squeeze_and_excitation), with the MICCAI sum."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)
        self.conv = nn.Conv2d(channels, 1, 1)

    def forward(self, x):
        b, c = x.shape[:2]
        s = x.view(b, c, -1).mean(dim=2)
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(s))))
        cse = x * s.view(b, c, 1, 1)
        sse = x * torch.sigmoid(self.conv(x))
        return cse + sse


@_reference("scse")
def _scse(m):
    _require(m, aggregation="sum")
    return _copy(SCSERef(m.channels, m.cse.hidden), m)


class CoordRef(nn.Module):
    """Coordinate attention as timm's CoordAttn writes it (means along each axis, cat, conv-BN-
    h_swish, split, two 1x1 convs with sigmoids, x * a_h * a_w), with the official code's biases
    and hidden width. The official CoordAtt's adaptive pools and permutes measured slower here."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, hidden, 1)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.conv_h = nn.Conv2d(hidden, channels, 1)
        self.conv_w = nn.Conv2d(hidden, channels, 1)

    def forward(self, x):
        h, w = x.shape[2:]
        x_h = x.mean(3, keepdim=True)
        x_w = x.mean(2, keepdim=True).transpose(-1, -2)
        y = F.hardswish(self.bn1(self.conv1(torch.cat([x_h, x_w], dim=2))))
        y_h, y_w = torch.split(y, [h, w], dim=2)
        a_h = self.conv_h(y_h).sigmoid()
        a_w = self.conv_w(y_w.transpose(-1, -2)).sigmoid()
        return x * a_h * a_w


@_reference("coord")
def _coord(m):
    return _copy(CoordRef(m.channels, m.hidden), m)


class GAMRef(nn.Module):
    """GAM as the widely copied GAM_Attention writes it (no official code exists): permute + view,
    Linear-ReLU-Linear, permute back, sigmoid (absent in the (in_channels, out_channels) copies),
    multiply; conv-BN-ReLU-conv-BN, sigmoid, multiply."""

    def __init__(self, channels: int, hidden: int, k: int, channel_sigmoid: bool) -> None:
        super().__init__()
        self.channel_attention = nn.Sequential(
            nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels)
        )
        self.spatial_attention = nn.Sequential(
            nn.Conv2d(channels, hidden, k, padding=k // 2),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, k, padding=k // 2),
            nn.BatchNorm2d(channels),
        )
        self.channel_sigmoid = channel_sigmoid

    def forward(self, x):
        b, c, h, w = x.shape
        att = self.channel_attention(x.permute(0, 2, 3, 1).view(b, -1, c)).view(b, h, w, c).permute(0, 3, 1, 2)
        x = x * (att.sigmoid() if self.channel_sigmoid else att)
        return x * self.spatial_attention(x).sigmoid()


@_reference("gam")
def _gam(m):
    return _copy(GAMRef(m.channels, m.hidden, m.kernel_size, m.channel_sigmoid), m)


class ShuffleRef(nn.Module):
    """SA-Net's sa_layer as the official code writes it (wofmanaf/SA-Net models/sa_resnet.py): reshape to
    (B*G, C/G, H, W), chunk, pool-affine-sigmoid and GN-affine-sigmoid, cat, reshape, channel shuffle."""

    def __init__(self, channels: int, groups: int, affine: bool) -> None:
        super().__init__()
        self.groups = groups
        k = channels // (2 * groups)
        self.cweight = nn.Parameter(torch.zeros(1, k, 1, 1))
        self.cbias = nn.Parameter(torch.ones(1, k, 1, 1))
        self.sweight = nn.Parameter(torch.zeros(1, k, 1, 1))
        self.sbias = nn.Parameter(torch.ones(1, k, 1, 1))
        self.gn = nn.GroupNorm(k, k, affine=affine)

    def forward(self, x):
        b, c, h, w = x.shape
        x = x.reshape(b * self.groups, -1, h, w)
        x_0, x_1 = x.chunk(2, dim=1)
        xn = x_0 * torch.sigmoid(self.cweight * F.adaptive_avg_pool2d(x_0, 1) + self.cbias)
        xs = x_1 * torch.sigmoid(self.sweight * self.gn(x_1) + self.sbias)
        out = torch.cat([xn, xs], dim=1).reshape(b, -1, h, w)
        return out.reshape(b, 2, -1, h, w).permute(0, 2, 1, 3, 4).reshape(b, -1, h, w)


@_reference("sa")
def _sa(m):
    return _copy(ShuffleRef(m.channels, m.groups, m.norm_affine), m)


class EMARef(nn.Module):
    """EMA as the official code writes it (YOLOonMe/EMA-attention-module, EMA_attention_module):
    reshape to (B*G, C/G, H, W), adaptive pools along H and W, permute, cat, shared 1x1 conv, split,
    sigmoids, GroupNorm(C/G, C/G); 3x3 conv; softmax of the pooled branches, two matmuls, sigmoid."""

    def __init__(self, channels: int, factor: int) -> None:
        super().__init__()
        self.groups = factor
        c = channels // factor
        self.softmax = nn.Softmax(-1)
        self.agp = nn.AdaptiveAvgPool2d((1, 1))
        self.pool_h = nn.AdaptiveAvgPool2d((None, 1))
        self.pool_w = nn.AdaptiveAvgPool2d((1, None))
        self.gn = nn.GroupNorm(c, c)
        self.conv1x1 = nn.Conv2d(c, c, kernel_size=1)
        self.conv3x3 = nn.Conv2d(c, c, kernel_size=3, padding=1)

    def forward(self, x):
        b, c, h, w = x.size()
        group_x = x.reshape(b * self.groups, -1, h, w)
        x_h = self.pool_h(group_x)
        x_w = self.pool_w(group_x).permute(0, 1, 3, 2)
        hw = self.conv1x1(torch.cat([x_h, x_w], dim=2))
        x_h, x_w = torch.split(hw, [h, w], dim=2)
        x1 = self.gn(group_x * x_h.sigmoid() * x_w.permute(0, 1, 3, 2).sigmoid())
        x2 = self.conv3x3(group_x)
        x11 = self.softmax(self.agp(x1).reshape(b * self.groups, -1, 1).permute(0, 2, 1))
        x12 = x2.reshape(b * self.groups, c // self.groups, -1)
        x21 = self.softmax(self.agp(x2).reshape(b * self.groups, -1, 1).permute(0, 2, 1))
        x22 = x1.reshape(b * self.groups, c // self.groups, -1)
        weights = (torch.matmul(x11, x12) + torch.matmul(x21, x22)).reshape(b * self.groups, 1, h, w)
        return (group_x * weights.sigmoid()).reshape(b, c, h, w)


@_reference("ema")
def _ema(m):
    ref = EMARef(m.channels, m.factor)
    ref.load_state_dict(m.state_dict())  # same names (gn, conv1x1, conv3x3), another order
    return ref


class TripletGateRef(nn.Module):
    """The official AttentionGate (landskape-ai/triplet-attention, triplet_attention.py): ZPool
    [max; mean] over dim 1, conv k x k without bias, BN (eps 1e-5, momentum 0.01), sigmoid, x * scale."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, k, padding=(k - 1) // 2, bias=False)
        self.bn = nn.BatchNorm2d(1, eps=1e-5, momentum=0.01)

    def forward(self, x):
        z = torch.cat((torch.max(x, 1)[0].unsqueeze(1), torch.mean(x, 1).unsqueeze(1)), dim=1)
        return x * torch.sigmoid(self.bn(self.conv(z)))


class TripletRef(nn.Module):
    """TripletAttention as the official code writes it: permute, contiguous, gate, permute back,
    average of the three (or two, no_spatial) outputs."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.hc = TripletGateRef(k)
        self.cw = TripletGateRef(k)
        self.hw = TripletGateRef(k)

    def forward(self, x):
        x_out1 = self.cw(x.permute(0, 2, 1, 3).contiguous()).permute(0, 2, 1, 3).contiguous()
        x_out2 = self.hc(x.permute(0, 3, 2, 1).contiguous()).permute(0, 3, 2, 1).contiguous()
        return 1 / 3 * (self.hw(x) + x_out1 + x_out2)


@_reference("triplet")
def _triplet(m):
    _require(m, no_spatial=False)
    ref = TripletRef(m.kernel_size)
    ref.load_state_dict(m.state_dict())  # same names (hc, cw, hw; conv, bn): the official code's
    return ref
