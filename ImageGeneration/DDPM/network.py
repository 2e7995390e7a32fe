"""The research code's class-conditional DDPM network (``models/diffusion.py``, ``Conditional_Model``).

A DDIM-style UNet (Song et al.'s port of Ho et al.'s network) whose every residual block adds
a projection of ``concat(time embedding, class embedding)``:

* time: ``temb = W2 swish(W1 sinusoid(t))`` with ``4 ch`` channels;
* class: ``cemb = V2 swish(V1 e_c)`` with ``4 ch`` channels, where ``e_c`` is row ``c`` of a
  learned ``n_classes x ch`` table, or the learned *null* vector for the unconditional class
  (label ``n_classes`` here; the research code swaps it in with probability ``cond_drop_prob``);
* block: ``h = conv1(swish(norm1(x))) + P swish([temb, cemb])``,
  ``out = shortcut(x) + conv2(dropout(swish(norm2(h))))``.

Parameter names are the research code's, so its state dicts load 1:1 (after the
``module.`` prefix of ``nn.DataParallel`` is taken off) and masks, Fisher diagonals and EMA
weights are keyed alike.  Modules are created in the research code's order, so a seed gives
the same initial weights.
"""
from __future__ import annotations

import math
from typing import List

import torch
import torch.nn.functional as F
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """``[sin(t w), cos(t w)]`` with ``w_i = 10000^(-i / (dim/2 - 1))`` (zero-padded to an odd ``dim``)."""
    half = dim // 2
    scale = math.log(10000) / (half - 1)
    freqs = torch.exp(torch.arange(half, dtype=torch.float32) * -scale).to(t.device)
    args = t.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


def swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=groups, num_channels=channels, eps=1e-6, affine=True)


def conv3x3(c_in: int, c_out: int, stride: int = 1, padding: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=padding)


def conv1x1(c_in: int, c_out: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=1)


class Upsample(nn.Module):
    """Nearest-neighbour x2, then a 3x3 conv when ``with_conv``."""

    def __init__(self, channels: int, with_conv: bool) -> None:
        super().__init__()
        if with_conv:
            self.conv = conv3x3(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.conv(x) if hasattr(self, "conv") else x


class Downsample(nn.Module):
    """A stride-2 3x3 conv on the input padded by one on the right and bottom, or 2x2 average pooling."""

    def __init__(self, channels: int, with_conv: bool) -> None:
        super().__init__()
        if with_conv:
            self.conv = conv3x3(channels, channels, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "conv"):
            return self.conv(F.pad(x, (0, 1, 0, 1)))
        return F.avg_pool2d(x, kernel_size=2, stride=2)


class ResnetBlock(nn.Module):
    """The residual block with the joint time/class projection ``temb_cemb_proj``."""

    def __init__(self, c_in: int, c_out: int, emb_channels: int, dropout: float, groups: int) -> None:
        super().__init__()
        self.norm1 = group_norm(c_in, groups)
        self.conv1 = conv3x3(c_in, c_out)
        self.temb_cemb_proj = nn.Linear(emb_channels, c_out)
        self.norm2 = group_norm(c_out, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = conv3x3(c_out, c_out)
        if c_in != c_out:
            self.nin_shortcut = conv1x1(c_in, c_out)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(swish(self.norm1(x)))
        h = h + self.temb_cemb_proj(swish(emb))[:, :, None, None]
        h = self.conv2(self.dropout(swish(self.norm2(h))))
        return (self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the pixels, with a residual connection."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.norm = group_norm(channels, groups)
        self.q, self.k, self.v, self.proj_out = (conv1x1(channels, channels) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        b, c, height, width = x.shape
        q = self.q(h).reshape(b, c, height * width).permute(0, 2, 1)  # b, hw, c
        k = self.k(h).reshape(b, c, height * width)                   # b, c, hw
        v = self.v(h).reshape(b, c, height * width)                   # b, c, hw
        weights = torch.softmax(torch.bmm(q, k) * (int(c) ** -0.5), dim=2)  # b, hw(query), hw(key)
        out = torch.bmm(v, weights.permute(0, 2, 1)).reshape(b, c, height, width)
        return x + self.proj_out(out)


def _stage(blocks: List[nn.Module], attn: List[nn.Module]) -> nn.Module:
    stage = nn.Module()
    stage.block, stage.attn = nn.ModuleList(blocks), nn.ModuleList(attn)
    return stage


def _dense(c_in: int, c_out: int) -> nn.Module:
    holder = nn.Module()
    holder.dense = nn.ModuleList([nn.Linear(c_in, c_out), nn.Linear(c_out, c_out)])
    return holder


class ConditionalModel(nn.Module):
    """The research code's ``Conditional_Model``: ``forward(x, t, c) -> predicted noise``.

    ``c`` holds class labels in ``0 .. n_classes``; label ``n_classes`` is the null class (the
    learned ``null_classes_emb``).  Dropping labels for classifier-free guidance is the
    caller's (:func:`ImageGeneration.DDPM.networks.noise_predictor`), so training and guided
    sampling share one network call.
    """

    def __init__(self, *, ch: int, out_ch: int, ch_mult, num_res_blocks: int, attn_resolutions, dropout: float,
                 in_channels: int, resolution: int, n_classes: int, resamp_with_conv: bool = True,
                 norm_num_groups: int = 32) -> None:
        super().__init__()
        ch_mult = tuple(ch_mult)
        groups = norm_num_groups
        self.ch, self.n_classes, self.num_res_blocks = ch, n_classes, num_res_blocks
        emb_ch = 4 * ch
        self.temb = _dense(ch, emb_ch)
        self.classes_emb = nn.Embedding(n_classes, ch)
        self.null_classes_emb = nn.Parameter(torch.randn(ch))
        self.cemb = _dense(ch, emb_ch)
        self.conv_in = conv3x3(in_channels, ch)

        def block(c_in: int, c_out: int) -> ResnetBlock:
            return ResnetBlock(c_in, c_out, 2 * emb_ch, dropout, groups)

        res, in_mult = resolution, (1,) + ch_mult
        self.down = nn.ModuleList()
        block_in = ch
        for level, mult in enumerate(ch_mult):
            blocks, attn = [], []
            block_in = ch * in_mult[level]
            for _ in range(num_res_blocks):
                blocks.append(block(block_in, ch * mult))
                block_in = ch * mult
                if res in attn_resolutions:
                    attn.append(AttnBlock(block_in, groups))
            stage = _stage(blocks, attn)
            if level != len(ch_mult) - 1:
                stage.downsample = Downsample(block_in, resamp_with_conv)
                res //= 2
            self.down.append(stage)

        self.mid = nn.Module()
        self.mid.block_1 = block(block_in, block_in)
        self.mid.attn_1 = AttnBlock(block_in, groups)
        self.mid.block_2 = block(block_in, block_in)

        up = []
        for level in reversed(range(len(ch_mult))):
            blocks, attn = [], []
            block_out = ch * ch_mult[level]
            for i in range(num_res_blocks + 1):
                skip = ch * (in_mult[level] if i == num_res_blocks else ch_mult[level])
                blocks.append(block(block_in + skip, block_out))
                block_in = block_out
                if res in attn_resolutions:
                    attn.append(AttnBlock(block_in, groups))
            stage = _stage(blocks, attn)
            if level != 0:
                stage.upsample = Upsample(block_in, resamp_with_conv)
                res *= 2
            up.insert(0, stage)
        self.up = nn.ModuleList(up)

        self.norm_out = group_norm(block_in, groups)
        self.conv_out = conv3x3(block_in, out_ch)

    def embedding(self, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """``concat(temb, cemb)`` for every sample (label ``n_classes``: the null vector)."""
        temb = self.temb.dense[1](swish(self.temb.dense[0](timestep_embedding(t, self.ch))))
        table = torch.cat([self.classes_emb.weight, self.null_classes_emb[None]])
        cemb = self.cemb.dense[1](swish(self.cemb.dense[0](F.embedding(c, table))))
        return torch.cat([temb, cemb], dim=-1)

    @staticmethod
    def _run_stage(stage: nn.Module, i: int, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = stage.block[i](h, emb)
        return stage.attn[i](h) if len(stage.attn) else h

    def forward(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        emb = self.embedding(t, c)
        hs = [self.conv_in(x)]
        for stage in self.down:
            for i in range(self.num_res_blocks):
                hs.append(self._run_stage(stage, i, hs[-1], emb))
            if hasattr(stage, "downsample"):
                hs.append(stage.downsample(hs[-1]))
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(hs[-1], emb)), emb)
        for stage in reversed(self.up):
            for i in range(self.num_res_blocks + 1):
                h = self._run_stage(stage, i, torch.cat([h, hs.pop()], dim=1), emb)
            if hasattr(stage, "upsample"):
                h = stage.upsample(h)
        return self.conv_out(swish(self.norm_out(h)))
