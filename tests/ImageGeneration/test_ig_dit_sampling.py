"""DiT sampling as the research code's (``DiT/diffusion``, ``models.py`` ``forward_with_cfg``,
``sample_ddp.py``): respaced steps, the learned-range reverse step, guidance on 3 channels, and
the split of many samples over processes.

The "research code" numbers were printed by its own ``diffusion`` package (``create_diffusion``,
``p_mean_variance``, ``p_sample_loop`` with its ``DiT.forward_with_cfg``) run on the same inputs
and on the ``tiny_dit`` transformer, outside the repository.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from common.seed import make_generator
from ImageGeneration.core.diffusion import guided_noise
from ImageGeneration.core.sampling import (
    ProcessShare, RespacedDiffusion, draw_labels, make_scheduler, pack_npz, sample_images, space_timesteps)
from ImageGeneration.DiT import sample_ddp
from ImageGeneration.DiT.dit import DiTSampling, dit_betas, load_latent_dit

CPU = ["--device", "cpu"]


def test_respaced_timesteps_are_the_research_codes():
    steps = space_timesteps(1000, 250)  # the research code's space_timesteps(1000, "250"), sorted
    assert len(steps) == 250 and sum(steps) == 124875
    assert steps[:12] == list(range(0, 48, 4))
    assert steps[120:130] == [481, 485, 489, 493, 497, 502, 506, 510, 514, 518]
    assert steps[-6:] == [979, 983, 987, 991, 995, 999]
    assert space_timesteps(1000, 1000) == list(range(1000))
    assert space_timesteps(10, 3) == [0, 4, 9] and space_timesteps(10, 1) == [0]
    diffusion = RespacedDiffusion(dit_betas(), 250)
    assert diffusion.timesteps.tolist() == steps[::-1]
    # the research code's SpacedDiffusion betas: 1 - abar_{t_i} / abar_{t_{i-1}}
    betas = diffusion.posterior.betas
    assert betas[:3].tolist() == pytest.approx([9.999999999998899e-05, 5.990655644756426e-04, 9.176029928172902e-04],
                                               rel=1e-12)
    assert betas[-3:].tolist() == pytest.approx([0.07691919273416525, 0.07721930545605926, 0.07751934499235003],
                                                rel=1e-12)


def test_one_learned_range_step_by_hand():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 4, 2, 2, generator=g)
    output = torch.randn(2, 8, 2, 2, generator=g)
    output[:, 4:] = output[:, 4:].tanh()
    diffusion = RespacedDiffusion(dit_betas(), 250)

    # by hand, float64: the respaced process keeps abar at the kept steps
    kept = space_timesteps(1000, 250)
    abar_all = np.cumprod(1.0 - np.linspace(1e-4, 0.02, 1000))
    abar = abar_all[kept]
    abar_prev = np.concatenate([[1.0], abar[:-1]])
    beta = 1.0 - abar / abar_prev
    posterior_var = beta * (1.0 - abar_prev) / (1.0 - abar)
    for row, i in ((0, 100), (1, 0)):
        xs, eps, v = x[row].double().numpy(), output[row, :4].double().numpy(), output[row, 4:].double().numpy()
        x0 = xs / np.sqrt(abar[i]) - np.sqrt(1.0 / abar[i] - 1.0) * eps
        mean = (beta[i] * np.sqrt(abar_prev[i]) / (1.0 - abar[i]) * x0
                + (1.0 - abar_prev[i]) * np.sqrt(1.0 - beta[i]) / (1.0 - abar[i]) * xs)
        min_log = np.log(posterior_var[max(i, 1)])  # clipped: the variance at step 0 is 0
        frac = (v + 1.0) / 2.0
        log_var = frac * np.log(beta[i]) + (1.0 - frac) * min_log
        ours_mean, ours_log_var = diffusion.mean_log_variance(output[row:row + 1], kept[i], x[row:row + 1])
        np.testing.assert_allclose(ours_mean[0].numpy(), mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ours_log_var[0].numpy(), log_var, rtol=1e-5)

    # the research code's p_mean_variance on the same inputs (t = [100, 0], original steps 401 and 0)
    mean_100, log_var_100 = diffusion.mean_log_variance(output[:1], 401, x[:1])
    mean_0, log_var_0 = diffusion.mean_log_variance(output[1:], 0, x[1:])
    assert mean_100.flatten()[:4].tolist() == pytest.approx(
        [1.8818049430847168, 0.5537211298942566, -1.800985336303711, -1.722683072090149], rel=1e-5)
    assert mean_0.flatten()[:4].tolist() == pytest.approx(
        [2.7851831912994385, 1.20645272731781, -0.3488243520259857, -0.9800713062286377], rel=1e-5)
    assert log_var_100.flatten()[:4].tolist() == pytest.approx(
        [-3.448171377182007, -3.4492902755737305, -3.4499776363372803, -3.4476869106292725], rel=1e-6)
    assert log_var_0.flatten()[:4].tolist() == pytest.approx(
        [-9.339378356933594, -9.315723419189453, -9.258037567138672, -9.356330871582031], rel=1e-6)


def test_guidance_on_the_first_three_channels_by_hand():
    """``forward_with_cfg``: ``eps_null + w (eps_c - eps_null)`` on channels 0-2; channel 3 and the variance
    channels are the conditional pass's."""
    cond, uncond = torch.arange(16.0).view(2, 8, 1, 1), -torch.arange(16.0).view(2, 8, 1, 1) ** 2
    null = torch.full((2,), 9)

    def eps_fn(x, t, c):
        return torch.where((c == 9).view(-1, 1, 1, 1), uncond.repeat(2, 1, 1, 1)[: len(c)],
                           cond.repeat(2, 1, 1, 1)[: len(c)])

    x, t, c, w = torch.zeros(2, 4, 1, 1), torch.zeros(2, dtype=torch.long), torch.tensor([0, 1]), 4.0
    guided = guided_noise(eps_fn, x, t, c, null, w - 1.0, channels=3)
    expected = cond.clone()
    expected[:, :3] = uncond[:, :3] + w * (cond[:, :3] - uncond[:, :3])
    assert torch.equal(guided, expected)
    every = guided_noise(eps_fn, x, t, c, null, w - 1.0)
    assert torch.equal(every, uncond + w * (cond - uncond))
    assert torch.equal(guided_noise(eps_fn, x, t, c, null, 0.0, channels=3), cond)  # w = 1: the conditional pass


# (steps, labels, w, seed) -> the research code's p_sample_loop with forward_with_cfg (forward for w = 1),
# torch.manual_seed(seed) then z = randn(n, 4, 8, 8): sum, absolute sum and first four latent values
RESEARCH_SAMPLES = [
    ((250, [0, 1, 2], 4.0, 0), -6403.246094, 204009.421875, [-170.56955, -58.334759, -174.617249, -301.936188]),
    ((250, [2, 0], 1.0, 1), -14684.289062, 106894.835938, [-80.353043, 23.700645, -359.132477, -465.887512]),
    ((25, [1, 1], 1.5, 3), -12083.776367, 102506.789062, [39.294361, 341.207245, 11.213044, 185.994247]),
]


@pytest.mark.parametrize("setting,total,abs_total,first", RESEARCH_SAMPLES, ids=lambda v: str(v))
def test_learned_range_samples_are_the_research_codes(tiny_dit, one_thread, setting, total, abs_total, first):
    """Same seed, same latents: the noise stream is the research code's (a guided batch draws noise for its
    null half too).  The random tiny DiT's latents grow to ~1e3, so agreement is relative."""
    steps, labels, w, seed = setting
    model = load_latent_dit(str(tiny_dit / "ckpt"), torch.device("cpu"), vae=str(tiny_dit / "ckpt"))
    model.transformer.eval()
    fn, scheduler = model.sampler(DiTSampling(num_steps=steps, cfg_scale=w))
    with torch.no_grad():
        latents = sample_images(fn, torch.tensor(labels), model.null_label, model.latent_shape, scheduler, w - 1.0,
                                generator=make_generator(seed), guided_channels=3)
    assert float(latents.sum()) == pytest.approx(total, rel=1e-4)
    assert float(latents.abs().sum()) == pytest.approx(abs_total, rel=1e-5)
    assert latents.flatten()[:4].tolist() == pytest.approx(first, rel=1e-4)


def test_learned_range_needs_a_dit_that_predicts_variances(tiny_dit):
    model = load_latent_dit(str(tiny_dit / "ckpt"), torch.device("cpu"), vae=str(tiny_dit / "ckpt"))
    model.transformer.config.out_channels = 4  # as a DiT trained without learned variances
    with pytest.raises(Exception, match="learned_range: this DiT predicts no variances"):
        model.sampler(DiTSampling())
    fn, scheduler = model.sampler(DiTSampling(sample_type="ddpm_noisy"))
    assert fn == model.eps_fn and not isinstance(scheduler, RespacedDiffusion)
    assert isinstance(make_scheduler("learned_range", dit_betas(), 5), RespacedDiffusion)


def test_process_share_splits_indices_and_seeds_as_sample_ddp():
    shares = [ProcessShare(num_samples=10, per_proc_batch=3, world=2, rank=r) for r in (0, 1)]
    assert [(s.total, s.rounds, s.global_batch) for s in shares] == [(12, 2, 6)] * 2
    assert [shares[0].indices(r) for r in (0, 1)] == [[0, 2, 4], [6, 8, 10]]
    assert [shares[1].indices(r) for r in (0, 1)] == [[1, 3, 5], [7, 9, 11]]
    assert [s.seed(5) for s in shares] == [10, 11]  # global_seed * world + rank
    one = ProcessShare(num_samples=5, per_proc_batch=2)
    assert (one.total, one.rounds, one.seed(5), one.indices(2)) == (6, 3, 5, [4, 5])
    every = sorted(i for s in [ProcessShare(50_000, 32, 8, r) for r in range(8)] for k in range(s.rounds)
                   for i in s.indices(k))
    assert every == list(range(50_176))  # each index written once


def test_draw_labels_excludes_or_fixes_a_class():
    g = make_generator(0)
    labels = draw_labels(500, 3, g, exclude_class=1)
    assert set(labels.tolist()) == {0, 2}
    assert draw_labels(4, 3, g, only_class=2).tolist() == [2, 2, 2, 2]
    plain = draw_labels(6, 10, make_generator(7))
    assert plain.tolist() == torch.randint(0, 10, (6,), generator=make_generator(7)).tolist()


def test_pack_npz_holds_the_first_n_indexed_pngs(tmp_path):
    folder = tmp_path / "samples"
    folder.mkdir()
    images = np.random.default_rng(0).integers(0, 256, size=(3, 4, 5, 3), dtype=np.uint8)
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i:06d}.png")
    path = pack_npz(folder, 2)
    assert path == tmp_path / "samples.npz"
    with np.load(path) as packed:
        assert list(packed.keys()) == ["arr_0"] and np.array_equal(packed["arr_0"], images[:2])


def sample_ddp_argv(tiny_dit, root, *extra) -> list:
    return ["--ckpt", str(tiny_dit / "ckpt"), "--vae", str(tiny_dit / "ckpt" / "vae"), "--num-fid-samples", "3",
            "--per-proc-batch-size", "2", "--num-sampling-steps", "3", "--sample-dir", str(root), *extra, *CPU]


def test_sample_ddp_in_one_process(tiny_dit, tmp_path):
    npz = Path(sample_ddp.main(sample_ddp_argv(tiny_dit, tmp_path, "--only_class", "2")))
    folder = tmp_path / "DiT-XL-2-pretrained-size-16-vae-vae-cfg-1.5-seed-0" / "only2"
    assert npz == folder.parent / "only2.npz"
    assert sorted(p.name for p in folder.glob("*.png")) == [f"{i:06d}.png" for i in range(4)]
    with np.load(npz) as packed:
        arrays = packed["arr_0"]
    assert arrays.shape == (3, 16, 16, 3) and arrays.dtype == np.uint8
    for i in range(3):
        with Image.open(folder / f"{i:06d}.png") as image:
            assert np.array_equal(np.asarray(image), arrays[i])
    record = json.loads((folder / "run_sample_ddp.json").read_text())
    assert record["metrics"]["n_images"] == 4 and record["metrics"]["num_processes"] == 1
    assert record["config"]["sample_type"] == "learned_range" and record["config"]["cfg_channels"] == 3
    assert record["metrics"]["seeds"] == [0]


@pytest.mark.slow
def test_sample_ddp_over_two_processes(tiny_dit, tmp_path, launch_two_processes, one_thread):
    """Process ``r`` of 2 draws from seed ``2 g + r`` and writes indices ``r, r + 2, ...``: its images are those of
    one process seeded ``2 g + r`` (``--global-seed 2 g + r``); the main one packs the first N."""
    launch_two_processes("ImageGeneration/DiT/sample_ddp.py",
                         sample_ddp_argv(tiny_dit, tmp_path / "two", "--global-seed", "1", "--num-fid-samples", "5"))
    two = tmp_path / "two" / "DiT-XL-2-pretrained-size-16-vae-vae-cfg-1.5-seed-1"
    assert sorted(p.name for p in two.glob("*.png")) == [f"{i:06d}.png" for i in range(8)]
    with np.load(two.parent / f"{two.name}.npz") as packed:
        arrays = packed["arr_0"]
    assert arrays.shape == (5, 16, 16, 3)
    assert not np.array_equal(arrays[0], arrays[1])  # the two processes draw from different seeds
    for rank in (0, 1):
        one = tmp_path / f"one{rank}"
        sample_ddp.main(sample_ddp_argv(tiny_dit, one, "--global-seed", str(2 + rank), "--num-fid-samples", "4"))
        alone = one / f"DiT-XL-2-pretrained-size-16-vae-vae-cfg-1.5-seed-{2 + rank}"
        for k in range(4):
            with Image.open(alone / f"{k:06d}.png") as a, Image.open(two / f"{2 * k + rank:06d}.png") as b:
                assert np.abs(np.asarray(a).astype(int) - np.asarray(b).astype(int)).max() <= 1, (rank, k)
