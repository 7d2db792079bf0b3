"""The benchmark references of Part VI: attention inside transformer blocks (``attncourse.blocks``).

Each class is the module's computation as its official code writes it; each ``@_reference``
builder takes the package's module, refuses settings the reference does not implement and copies
the weights. See ``tools/refs/__init__.py``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import _copy, _reference, _require

# --- vit ---
class ViTAttentionRef(nn.Module):
    """timm's ``Attention`` (huggingface/pytorch-image-models, ``timm/layers/attention.py``, the fused
    path): one qkv Linear, ``reshape(B, N, 3, heads, d).permute(2, 0, 3, 1, 4)``,
    ``F.scaled_dot_product_attention``, ``transpose(1, 2).reshape(B, N, C)``, proj. No dropout."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)
        x = x.transpose(1, 2).reshape(B, N, C)
        return self.proj(x)


class ViTMlpRef(nn.Module):
    """timm's ``Mlp`` (``timm/layers/mlp.py``): fc1, GELU, fc2 (no dropout, no norm)."""

    def __init__(self, in_features: int, hidden_features: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, in_features)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class ViTBlockRef(nn.Module):
    """timm's ViT ``Block`` (``timm/models/vision_transformer.py``: pre-norm, LayerNorm ε = 1e-6,
    ``x = x + attn(norm1(x))``, ``x = x + mlp(norm2(x))``; no layer scale, no drop path) on the
    feature map: the tokens as timm's ``PatchEmbed`` flattens its output, ``x.flatten(2).transpose(1, 2)``,
    and back with ``transpose(1, 2).reshape(B, C, H, W)``."""

    def __init__(self, dim: int, num_heads: int, hidden: int, qkv_bias: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = ViTAttentionRef(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = ViTMlpRef(dim, hidden)

    def forward(self, x):
        B, C, H, W = x.shape
        x = x.flatten(2).transpose(1, 2)
        x = x + self.attn(self.norm1(x))
        x = x + self.mlp(self.norm2(x))
        return x.transpose(1, 2).reshape(B, C, H, W)


@_reference("vit")
def _vit(m):
    blk = m.block  # ViTBlock2d has no plug-in, exact GELU and eps 1e-6: the reference's only settings
    return _copy(ViTBlockRef(m.channels, blk.attn.heads, blk.mlp.hidden, blk.attn.qkv.bias is not None), m)
# --- end vit ---

# --- mobilevit ---
class _MobileViTConvRef(nn.Module):
    """cvnets' ``ConvLayer2d`` (``cvnets/layers/conv_layer.py``): conv (no bias) → BN → Swish."""

    def __init__(self, c_in, c_out, k, use_norm=True, use_act=True):
        super().__init__()
        self.block = nn.Sequential()
        self.block.add_module("conv", nn.Conv2d(c_in, c_out, k, padding=(k - 1) // 2, bias=False))
        if use_norm:
            self.block.add_module("norm", nn.BatchNorm2d(c_out))
        if use_act:
            self.block.add_module("act", nn.SiLU())

    def forward(self, x):
        return self.block(x)


class _MobileViTMHARef(nn.Module):
    """cvnets' ``MultiHeadAttention.forward_default`` (``cvnets/layers/multi_head_attention.py``)."""

    def __init__(self, embed_dim, num_heads):
        super().__init__()
        self.qkv_proj = nn.Linear(embed_dim, 3 * embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        self.num_heads = num_heads
        self.scaling = (embed_dim // num_heads) ** -0.5
        self.softmax = nn.Softmax(dim=-1)

    def forward(self, x_q):
        b_sz, S_len, in_channels = x_q.shape
        qkv = self.qkv_proj(x_q).reshape(b_sz, S_len, 3, self.num_heads, -1)
        qkv = qkv.transpose(1, 3).contiguous()
        query, key, value = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        query = query * self.scaling
        key = key.transpose(-1, -2)
        attn = torch.matmul(query, key)
        attn_dtype = attn.dtype
        # the official softmax runs in float32 (an upcast for half precision); kept in float64 here,
        # where .float() would round to float32 (the tests compare in float64)
        attn = self.softmax(attn if attn_dtype == torch.float64 else attn.float()).to(attn_dtype)
        out = torch.matmul(attn, value)
        out = out.transpose(1, 2).reshape(b_sz, S_len, -1)
        return self.out_proj(out)


class _MobileViTEncoderRef(nn.Module):
    """cvnets' ``TransformerEncoder`` (``cvnets/modules/transformer.py``), dropout 0."""

    def __init__(self, embed_dim, ffn_latent_dim, num_heads):
        super().__init__()
        self.pre_norm_mha = nn.Sequential(nn.LayerNorm(embed_dim), _MobileViTMHARef(embed_dim, num_heads))
        self.pre_norm_ffn = nn.Sequential(
            nn.LayerNorm(embed_dim), nn.Linear(embed_dim, ffn_latent_dim), nn.SiLU(), nn.Linear(ffn_latent_dim, embed_dim)
        )

    def forward(self, x):
        res = x
        x = self.pre_norm_mha[0](x)
        x = self.pre_norm_mha[1](x)
        x = x + res
        x = x + self.pre_norm_ffn(x)
        return x


class MobileViTRef(nn.Module):
    """The MobileViT block as the official code writes it (apple/ml-cvnets,
    ``cvnets/modules/mobilevit_block.py``: ``MobileViTBlock.__init__``, ``unfolding``, ``folding``,
    ``forward_spatial``; the layers as ``TransformerEncoder`` and ``MultiHeadAttention``), with the
    ImageNet configuration's Swish, no dropout, and a square patch."""

    def __init__(self, in_channels, transformer_dim, ffn_dim, n_transformer_blocks, num_heads, patch, conv_ksize):
        super().__init__()
        self.local_rep = nn.Sequential()
        self.local_rep.add_module("conv_3x3", _MobileViTConvRef(in_channels, in_channels, conv_ksize))
        self.local_rep.add_module(
            "conv_1x1", _MobileViTConvRef(in_channels, transformer_dim, 1, use_norm=False, use_act=False)
        )
        global_rep = [_MobileViTEncoderRef(transformer_dim, ffn_dim, num_heads) for _ in range(n_transformer_blocks)]
        global_rep.append(nn.LayerNorm(transformer_dim))
        self.global_rep = nn.Sequential(*global_rep)
        self.conv_proj = _MobileViTConvRef(transformer_dim, in_channels, 1)
        self.fusion = _MobileViTConvRef(2 * in_channels, in_channels, conv_ksize)
        self.patch_h = self.patch_w = patch
        self.patch_area = patch * patch

    def unfolding(self, feature_map):
        patch_w, patch_h = self.patch_w, self.patch_h
        patch_area = int(patch_w * patch_h)
        batch_size, in_channels, orig_h, orig_w = feature_map.shape
        new_h = int(math.ceil(orig_h / self.patch_h) * self.patch_h)
        new_w = int(math.ceil(orig_w / self.patch_w) * self.patch_w)
        interpolate = False
        if new_w != orig_w or new_h != orig_h:
            feature_map = F.interpolate(feature_map, size=(new_h, new_w), mode="bilinear", align_corners=False)
            interpolate = True
        num_patch_w = new_w // patch_w
        num_patch_h = new_h // patch_h
        num_patches = num_patch_h * num_patch_w
        reshaped_fm = feature_map.reshape(batch_size * in_channels * num_patch_h, patch_h, num_patch_w, patch_w)
        transposed_fm = reshaped_fm.transpose(1, 2)
        reshaped_fm = transposed_fm.reshape(batch_size, in_channels, num_patches, patch_area)
        transposed_fm = reshaped_fm.transpose(1, 3)
        patches = transposed_fm.reshape(batch_size * patch_area, num_patches, -1)
        info_dict = {
            "orig_size": (orig_h, orig_w),
            "batch_size": batch_size,
            "interpolate": interpolate,
            "total_patches": num_patches,
            "num_patches_w": num_patch_w,
            "num_patches_h": num_patch_h,
        }
        return patches, info_dict

    def folding(self, patches, info_dict):
        patches = patches.contiguous().view(info_dict["batch_size"], self.patch_area, info_dict["total_patches"], -1)
        batch_size, pixels, num_patches, channels = patches.size()
        num_patch_h = info_dict["num_patches_h"]
        num_patch_w = info_dict["num_patches_w"]
        patches = patches.transpose(1, 3)
        feature_map = patches.reshape(batch_size * channels * num_patch_h, num_patch_w, self.patch_h, self.patch_w)
        feature_map = feature_map.transpose(1, 2)
        feature_map = feature_map.reshape(
            batch_size, channels, num_patch_h * self.patch_h, num_patch_w * self.patch_w
        )
        if info_dict["interpolate"]:
            feature_map = F.interpolate(feature_map, size=info_dict["orig_size"], mode="bilinear", align_corners=False)
        return feature_map

    def forward(self, x):
        res = x
        fm = self.local_rep(x)
        patches, info_dict = self.unfolding(fm)
        for transformer_layer in self.global_rep:
            patches = transformer_layer(patches)
        fm = self.folding(patches=patches, info_dict=info_dict)
        fm = self.conv_proj(fm)
        fm = self.fusion(torch.cat((res, fm), dim=1))
        return fm


@_reference("mobilevit")
def _mobilevit(m):
    _require(m, activation="silu")
    if m.fusion is None:
        raise NotImplementedError("the reference for MobileViTBlock needs fusion=True")
    ffn = m.layers[0].mlp.hidden
    return _copy(MobileViTRef(m.channels, m.dim, ffn, m.depth, m.heads, m.patch, m.kernel_size), m)
# --- end mobilevit ---

# --- fan ---
class _FANDWConvRef(nn.Module):
    def __init__(self, in_features):
        super().__init__()
        self.conv1 = nn.Conv2d(in_features, in_features, kernel_size=3, padding=1, groups=in_features)
        self.act = nn.GELU()
        self.bn = nn.BatchNorm2d(in_features)
        self.conv2 = nn.Conv2d(in_features, in_features, kernel_size=3, padding=1, groups=in_features)

    def forward(self, x, H: int, W: int):
        B, N, C = x.shape
        x = x.permute(0, 2, 1).reshape(B, C, H, W)
        x = self.conv2(self.bn(self.act(self.conv1(x))))
        return x.reshape(B, C, N).permute(0, 2, 1)


class _FANMlpRef(nn.Module):
    def __init__(self, in_features, hidden_features):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.dwconv = _FANDWConvRef(hidden_features)
        self.gamma = nn.Parameter(torch.ones(hidden_features))
        self.fc2 = nn.Linear(hidden_features, in_features)

    def forward(self, x, H: int, W: int):
        x = self.fc1(x)
        x = self.gamma * self.dwconv(x, H, W) + x
        return self.fc2(x)


class _FANTokenMixingRef(nn.Module):
    def __init__(self, dim, num_heads, qkv_bias):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        q = self.q(x).reshape(B, N, self.num_heads, C // self.num_heads).permute(0, 2, 1, 3)
        kv = self.kv(x).reshape(B, -1, 2, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        k, v = kv[0], kv[1]
        attn = (q * self.scale @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, N, C))


class _FANChannelProcessingRef(nn.Module):
    def __init__(self, dim, num_heads, qkv_bias, mlp_hidden_dim):
        super().__init__()
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.mlp_v = _FANMlpRef(dim, mlp_hidden_dim)
        self.norm_v = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim, bias=qkv_bias)

    def _gen_attn(self, q, k):
        q = q.softmax(-2).transpose(-1, -2)
        _, _, N, _ = k.shape
        k = F.adaptive_avg_pool2d(k.softmax(-2), (N, 1))
        return torch.sigmoid(q @ k) * self.temperature

    def forward(self, x, H: int, W: int):
        B, N, C = x.shape
        v = x.reshape(B, N, self.num_heads, C // self.num_heads).permute(0, 2, 1, 3)
        q = self.q(x).reshape(B, N, self.num_heads, C // self.num_heads).permute(0, 2, 1, 3)
        k = x.reshape(B, N, self.num_heads, C // self.num_heads).permute(0, 2, 1, 3)
        attn = self._gen_attn(q, k)
        Bv, Hd, Nv, Cv = v.shape
        v = self.norm_v(self.mlp_v(v.transpose(1, 2).reshape(Bv, Nv, Hd * Cv), H, W)).reshape(Bv, Nv, Hd, Cv).transpose(1, 2)
        return (attn * v.transpose(-1, -2)).permute(0, 3, 1, 2).reshape(B, N, C)


class FANBlockRef(nn.Module):
    """FAN's block as the official code writes it (NVlabs/FAN, ``models/fan.py``: ``FANBlock`` with
    ``TokenMixing``, ``ChannelProcessing``, ``Mlp`` and ``DWConv``; LayerNorms with the network's
    ε = 1e-6, ``norm_v`` with PyTorch's default), without dropout and drop path, on (B, C, H, W):
    ``flatten(2).transpose(1, 2)`` into tokens as FAN's patch embedding does, and back."""

    def __init__(self, dim, num_heads, mlp_ratio, qkv_bias, c_head_num):
        super().__init__()
        self.gamma1 = nn.Parameter(torch.ones(dim))
        self.gamma2 = nn.Parameter(torch.ones(dim))
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = _FANTokenMixingRef(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = _FANChannelProcessingRef(dim, c_head_num or num_heads, qkv_bias, int(dim * mlp_ratio))

    def forward(self, x):
        B, C, H, W = x.shape
        x = x.flatten(2).transpose(1, 2)
        x = x + self.gamma1 * self.attn(self.norm1(x))
        x = x + self.gamma2 * self.mlp(self.norm2(x), H, W)
        return x.transpose(1, 2).reshape(B, C, H, W)


@_reference("fan")
def _fan(m):
    b = m.block
    ref = FANBlockRef(b.dim, b.heads, b.mlp.mlp_ratio, b.attn.qkv.bias is not None, b.channel_heads)
    sd = {}
    for key, t in m.state_dict().items():  # the module's names, mapped to the official ones
        key = key.removeprefix("block.").replace("mlp.gate.activation.", "mlp.")
        for part in ("conv1.", "bn.", "conv2."):
            key = key.replace("mlp_v." + part, "mlp_v.dwconv." + part)
        if key.startswith("attn.qkv."):  # TokenMixing's q and kv are the rows of qkv
            sd[key.replace("qkv", "q")], sd[key.replace("qkv", "kv")] = t[: b.dim], t[b.dim :]
        else:
            sd[key] = t
    ref.load_state_dict(sd)
    return ref
# --- end fan ---

# --- revit ---
class _ReViTAttentionRef(nn.Module):
    """``MultiScaleAttention`` of ADiko1997/ReViT ``model/attention.py`` in the ReViT-B setting (no
    pooling, no relative positions, no class token, no residual pooling): its ``qkv`` reshape and
    permute, ``(q * scale) @ k.transpose``, the "Residual Attention" blend, softmax, ``attn @ v``."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, attn_res=None, alpha=0.5):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q * self.scale) @ k.transpose(-2, -1)
        if attn_res is not None:
            attn = (alpha * attn) + ((1 - alpha) * attn_res)
        attn_res = attn
        attn = attn.softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(B, -1, C)
        return self.proj(x), attn_res


class _ReViTBlockRef(nn.Module):
    """``MultiScaleBlock`` (same file) with dim = dim_out and no pooling: norm1, attention, residual,
    norm2, MLP (``fc1``, GELU, ``fc2``), residual; LayerNorm ε = 1e-6 as ``revit_model.py`` builds it."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = _ReViTAttentionRef(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        hidden = max(1, round(dim * mlp_ratio))
        self.mlp = nn.Sequential()
        self.mlp.fc1 = nn.Linear(dim, hidden)
        self.mlp.act = nn.GELU()
        self.mlp.fc2 = nn.Linear(hidden, dim)

    def forward(self, x, attn_res=None, alpha=0.5):
        x_block, attn_res = self.attn(self.norm1(x), attn_res, alpha)
        x = x + x_block
        x = x + self.mlp(self.norm2(x))
        return x, attn_res


class ReViTRef(nn.Module):
    """ReViT's blocks as the official code runs them (ADiko1997/ReViT, ``model/revit_model.py``,
    ``ReViT.forward``: ``attn_res = None``, then ``x, thw, attn_res = blk(x, thw, attn_res,
    self.alpha)`` for each block, α one ``nn.Parameter(torch.Tensor([0.5]))`` or the float 0.5), on
    ``(B, C, H, W)`` with ``flatten(2).transpose(1, 2)`` as ``PatchEmbed`` does, and back. Without
    the patch embedding, position code, final norm and head (the network's)."""

    def __init__(self, dim: int, depth: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, learn_alpha: bool) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.Tensor([0.5])) if learn_alpha else 0.5
        self.blocks = nn.ModuleList(_ReViTBlockRef(dim, num_heads, mlp_ratio, qkv_bias) for _ in range(depth))

    def forward(self, x):
        B, C, H, W = x.shape
        x = x.flatten(2).transpose(1, 2)
        attn_res = None
        for blk in self.blocks:
            x, attn_res = blk(x, attn_res, self.alpha)
        return x.transpose(1, 2).reshape(B, C, H, W)


@_reference("revit")
def _revit(m):
    ref = ReViTRef(m.channels, m.depth, m.heads, m.mlp_ratio, m.qkv_bias, m.learn_alpha)
    _copy(ref.blocks, m.stack.blocks)
    with torch.no_grad():
        if m.learn_alpha:
            ref.alpha.copy_(m.alpha)
        else:
            ref.alpha = float(m.alpha)
    return ref
# --- end revit ---

# --- muse ---
class _DynamicConv1dTBCRef(nn.Module):
    """``DynamicConv1dTBC`` (lancopku/MUSE, ``fairseq/modules/dynamic_convolution.py``) as the
    encoder builds it (``weight_softmax=True``, no bias, no conv bias, no ``in_proj``, padding
    k // 2), without its DropConnect: the banded-matrix path for T <= 512, the unfold path above."""

    def __init__(self, input_size: int, kernel_size: int, padding_l: int, num_heads: int) -> None:
        super().__init__()
        self.input_size, self.kernel_size, self.padding_l, self.num_heads = input_size, kernel_size, padding_l, num_heads
        self.weight_linear = nn.Linear(input_size, num_heads * kernel_size, bias=False)

    def forward(self, x):
        if x.size(0) > 512:
            return self._forward_unfolded(x)
        return self._forward_expanded(x)

    def _forward_unfolded(self, x):
        T, B, C = x.size()
        K, H = self.kernel_size, self.num_heads
        R = C // H
        weight = self.weight_linear(x).view(T * B * H, -1)
        padding_l = self.padding_l
        if K > 1:  # fairseq/modules/unfold.py: unfold1d
            xp = F.pad(x, (0, 0, 0, 0, padding_l, K - 1 - padding_l), value=0)
            x_unfold = xp.as_strided((T, B, C, K), (B * C, C, 1, B * C))
        else:
            x_unfold = x.unsqueeze(3)
        x_unfold = x_unfold.reshape(T * B * H, R, K)
        weight = F.softmax(weight, dim=1)
        weight = weight.narrow(1, 0, K)
        output = torch.bmm(x_unfold, weight.unsqueeze(2))
        return output.view(T, B, C)

    def _forward_expanded(self, x):
        T, B, C = x.size()
        K, H = self.kernel_size, self.num_heads
        R = C // H
        weight = self.weight_linear(x).view(T * B * H, -1)
        weight = F.softmax(weight, dim=1)
        weight = weight.narrow(1, 0, K).contiguous()
        weight = weight.view(T, B * H, K).transpose(0, 1)
        x = x.contiguous().view(T, B * H, R).transpose(0, 1)
        P = self.padding_l
        weight_expanded = weight.new_zeros(B * H, T, T + K - 1, requires_grad=False)
        weight_expanded.as_strided((B * H, T, K), (T * (T + K - 1), T + K, 1)).copy_(weight)
        weight_expanded = weight_expanded.narrow(2, P, T)
        output = torch.bmm(weight_expanded, x)
        return output.transpose(0, 1).contiguous().view(T, B, C)


class MUSERef(nn.Module):
    """MUSE's encoder layer as the official code writes it (lancopku/MUSE, fairseq 0.6.2:
    ``fairseq/models/combine_transformer.py`` ``TransformerCombineEncoderLayer.forward`` and
    ``fairseq/modules/multihead_attention.py`` ``ParallelMultiheadAttention.forward``, encoder
    self-attention ``'es'`` with ``attn_dynamic_cat=1``), in its (T, B, C) layout, without dropout and
    without a padding mask, on a (B, C, H, W) map flattened row-major (T = H·W). The softmax runs in
    the input's dtype (the official code casts to float32 first, for fp16 training, which would
    round a float64 check)."""

    def __init__(self, embed_dim, num_heads, ffn_dim, kernels, dynamic_gate, normalize_before, eps):
        super().__init__()
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.head_dim = embed_dim // num_heads
        self.scaling = self.head_dim**-0.5
        self.normalize_before = normalize_before
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * embed_dim))
        self.k_list = list(kernels)
        self.dynamics = nn.ModuleList(
            [_DynamicConv1dTBCRef(embed_dim, k, k // 2, num_heads) for k in self.k_list])
        in_ratio = 1
        self.dynamic_gate_para = None
        if self.k_list:
            if dynamic_gate:
                self.dynamic_gate_para = nn.Parameter(torch.Tensor([1.0 / len(self.k_list) for _ in self.k_list]))
                in_ratio = 2
            else:
                in_ratio = len(self.k_list) + 1
        self.out_proj = nn.Linear(in_ratio * embed_dim, embed_dim)
        self.fc1 = nn.Linear(embed_dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, embed_dim)
        self.self_attn_layer_norm = nn.LayerNorm(embed_dim, eps=eps)

    def self_attn(self, query):
        tgt_len, bsz, embed_dim = query.size()
        q, k, v = F.linear(query, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        q = q * self.scaling
        q = q.contiguous().view(tgt_len, bsz * self.num_heads, self.head_dim).transpose(0, 1)
        k = k.contiguous().view(-1, bsz * self.num_heads, self.head_dim).transpose(0, 1)
        v = v.contiguous().view(-1, bsz * self.num_heads, self.head_dim).transpose(0, 1)
        dynamic_x = v if len(self.dynamics) > 0 else None
        attn_weights = torch.bmm(q, k.transpose(1, 2))
        attn_weights = F.softmax(attn_weights, dim=-1)  # official: .float() first, for fp16 (float64 here)
        attn = torch.bmm(attn_weights, v)
        attn = attn.transpose(0, 1).contiguous().view(tgt_len, bsz, embed_dim)
        if len(self.dynamics) > 0:
            dynamic_results = []
            dynamic_x = dynamic_x.transpose(0, 1).contiguous().view(tgt_len, bsz, embed_dim)
            for i in range(len(self.k_list)):
                dynamic_results.append(self.dynamics[i](dynamic_x))
            all_res = [attn]
            if self.dynamic_gate_para is not None:
                dynamic_res = torch.sum(
                    torch.stack(dynamic_results, dim=-1) * F.softmax(self.dynamic_gate_para, dim=0), dim=-1)
                all_res.append(dynamic_res)
            else:
                all_res.extend(dynamic_results)
            attn = torch.cat(all_res, -1)
        return self.out_proj(attn)

    def layer(self, x):
        residual = x
        if self.normalize_before:
            x = self.self_attn_layer_norm(x)
        x1 = self.self_attn(x)
        x2 = self.fc2(F.relu(self.fc1(x)))
        x = x1 + x2
        x += residual
        if not self.normalize_before:
            x = self.self_attn_layer_norm(x)
        return x

    def forward(self, x):
        B, C, H, W = x.shape
        t = x.flatten(2).permute(2, 0, 1)  # (T, B, C), T = H*W row-major
        t = self.layer(t)
        return t.permute(1, 2, 0).reshape(B, C, H, W)


@_reference("muse")
def _muse(m):
    layer = m.layer
    _require(layer, shared_projection=True)
    ref = MUSERef(layer.dim, layer.heads, layer.hidden, layer.kernels, layer.dynamic_gate,
                  layer.norm_place == "pre", layer.norm.eps)
    with torch.no_grad():
        ref.in_proj_weight.copy_(layer.in_proj.weight)
        ref.in_proj_bias.copy_(layer.in_proj.bias)
        for dst, src in zip(ref.dynamics, layer.kernel_proj):
            dst.weight_linear.weight.copy_(src.weight)
        if ref.dynamic_gate_para is not None:
            ref.dynamic_gate_para.copy_(layer.alpha)
        for dst, src in [(ref.out_proj, layer.out_proj), (ref.fc1, layer.fc1), (ref.fc2, layer.fc2),
                         (ref.self_attn_layer_norm, layer.norm)]:
            dst.load_state_dict(src.state_dict())
    return ref
# --- end muse ---
