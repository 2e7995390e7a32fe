"""The DDPM's two networks and their noise prediction.

``model.network`` picks the network (:data:`~ImageGeneration.DDPM.config.NETWORKS`):

* ``conditional_model`` (the default, so the research code's YAML files build it): the research
  code's ``Conditional_Model`` (:class:`ImageGeneration.DDPM.network.ConditionalModel`), whose
  checkpoints load here;
* ``unet2d``: a ``diffusers.UNet2DModel`` with ``n_classes + 1`` class embeddings (the digits
  configs; the benchmarks' numbers were measured on it).

Both take label ``n_classes`` as the *null* class of classifier-free guidance (a label is
replaced by it with probability ``cond_drop_prob`` during training, as in the research code).
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Optional, Union

import torch
from diffusers import UNet2DModel

from common.distributed import SampleSharding
from ImageGeneration.DDPM.network import ConditionalModel

#: Either network; both map ``(x_t, t, c)`` to predicted noise (see :func:`predict_noise`).
DDPMNetwork = Union[ConditionalModel, UNet2DModel]


def build_unet(model_config: SimpleNamespace, data_config: SimpleNamespace) -> DDPMNetwork:
    """The UNet of ``model:`` (``ch * ch_mult`` channels, attention at ``attn_resolutions``).

    ``model.network`` picks the research code's network or diffusers' ``UNet2DModel``.
    """
    if model_config.network == "conditional_model":
        return ConditionalModel(
            ch=model_config.ch, out_ch=data_config.channels, ch_mult=model_config.ch_mult,
            num_res_blocks=model_config.num_res_blocks, attn_resolutions=model_config.attn_resolutions,
            dropout=model_config.dropout, in_channels=data_config.channels, resolution=data_config.image_size,
            n_classes=data_config.n_classes, resamp_with_conv=model_config.resamp_with_conv,
            norm_num_groups=model_config.norm_num_groups)
    down, up, resolution = [], [], data_config.image_size
    for level in range(len(model_config.ch_mult)):
        down.append("AttnDownBlock2D" if resolution in model_config.attn_resolutions else "DownBlock2D")
        if level != len(model_config.ch_mult) - 1:
            resolution //= 2
    for block in reversed(down):
        up.append("AttnUpBlock2D" if block == "AttnDownBlock2D" else "UpBlock2D")
    return UNet2DModel(
        sample_size=data_config.image_size, in_channels=data_config.channels, out_channels=data_config.channels,
        down_block_types=tuple(down), up_block_types=tuple(up),
        block_out_channels=tuple(model_config.ch * m for m in model_config.ch_mult),
        layers_per_block=model_config.num_res_blocks, dropout=model_config.dropout,
        norm_num_groups=model_config.norm_num_groups, num_class_embeds=data_config.n_classes + 1)


def null_label(unet: DDPMNetwork) -> int:
    """Index of the unconditional ("null") class embedding: ``n_classes``."""
    if isinstance(unet, ConditionalModel):
        return unet.n_classes
    return unet.config.num_class_embeds - 1


def predict_noise(unet: DDPMNetwork, x_t: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """The network's noise prediction for labels ``c`` (``null_label(unet)``: unconditional)."""
    if isinstance(unet, ConditionalModel):
        return unet(x_t, t, c)
    return unet(x_t, t, class_labels=c).sample


def noise_predictor(unet: DDPMNetwork, cond_drop_prob: float = 0.0, generator: Optional[torch.Generator] = None,
                    sharding: Optional[SampleSharding] = None):
    """``eps_fn(x_t, t, c)`` for the core losses, dropping labels to null with ``cond_drop_prob``.

    With a multi-process ``sharding`` the labels are dropped on the whole batch and only the
    network runs on this process's slice (see :mod:`common.distributed`).
    """
    null = null_label(unet)

    def network(x_t: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return predict_noise(unet, x_t, t, c)

    def eps_fn(x_t: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        c = c.to(x_t.device)
        if cond_drop_prob > 0:
            drop = torch.rand(c.shape, generator=generator).to(c.device) < cond_drop_prob
            c = torch.where(drop, torch.full_like(c, null), c)
        return network(x_t, t, c) if sharding is None else sharding.forward(network, x_t, t, c)

    return eps_fn


def data_transform(images: torch.Tensor) -> torch.Tensor:
    """Images in ``[0, 1]`` -> model space ``[-1, 1]`` (the configs' ``rescaled: true``)."""
    return images * 2.0 - 1.0
