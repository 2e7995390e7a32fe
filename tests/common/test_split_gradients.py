"""``dualoptim.joint.SplitGradients``: a joint step's two terms feed two optimizer states, exactly as two torch
optimizers stepped side by side on the two gradients."""
import copy

import torch

from dualoptim import DualOptim
from dualoptim.joint import SplitGradients

STEPS, ACCUMULATION, MAX_NORM = 4, 2, 0.5


def batches():
    generator = torch.Generator().manual_seed(0)
    return [(torch.randn(8, 6, generator=generator), torch.randint(3, (8,), generator=generator),
             torch.randn(8, 6, generator=generator), torch.randint(3, (8,), generator=generator))
            for _ in range(STEPS * ACCUMULATION)]


def terms(model, batch):
    """Gradient ascent on forget examples (weight 2) and descent on retain ones (weight 0.5)."""
    x_f, y_f, x_r, y_r = batch
    loss = torch.nn.functional.cross_entropy
    return -2.0 * loss(model(x_f), y_f), 0.5 * loss(model(x_r), y_r)


def test_an_image_model_with_adamw_and_sgd_momentum_equals_the_two_torch_optimizers():
    torch.manual_seed(0)
    start = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    data = batches()

    model = copy.deepcopy(start)
    dual = DualOptim(model.parameters(), forget_optim="adamw", forget_lr=1e-2, forget_weight_decay=0.01,
                     retain_optim="sgd", retain_lr=0.1, momentum=0.9, retain_weight_decay=5e-4)
    split = SplitGradients(model.parameters())

    def clip():
        torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM)

    for step in range(STEPS):
        for batch in data[step * ACCUMULATION:(step + 1) * ACCUMULATION]:
            forget, retain = terms(model, batch)
            split.backward_forget(lambda: (forget / ACCUMULATION).backward())
            (retain / ACCUMULATION).backward()
        split.forget_step(dual, clip)
        assert split.forget is None
        clip()
        dual.retain_step()
        dual.zero_grad()

    reference = copy.deepcopy(start)
    params = list(reference.parameters())
    adamw = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.01)
    sgd = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=5e-4)
    for step in range(STEPS):
        grads = [[torch.zeros_like(p) for p in params] for _ in range(2)]
        for batch in data[step * ACCUMULATION:(step + 1) * ACCUMULATION]:
            for total, term in zip(grads, terms(reference, batch)):
                for into, grad in zip(total, torch.autograd.grad(term / ACCUMULATION, params)):
                    into += grad
        for optimizer, total in ((adamw, grads[0]), (sgd, grads[1])):
            for p, grad in zip(params, total):
                p.grad = grad
            torch.nn.utils.clip_grad_norm_(params, MAX_NORM)
            optimizer.step()

    assert any(not torch.equal(a, b) for a, b in zip(start.parameters(), model.parameters()))
    for got, expected in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-7)
    state = dual.retain_optimizer.state[next(model.parameters())]
    assert "momentum_buffer" in state and "exp_avg" in dual.forget_optimizer.state[next(model.parameters())]
