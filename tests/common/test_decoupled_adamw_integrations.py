"""DecoupledAdamW where a single optimizer is expected: Hugging Face Trainer and accelerate."""
import torch
from torch import nn

from dualoptim.optimizers import DecoupledAdamW, set_objective


class TinyRegression(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 1)

    def forward(self, x, labels=None):
        prediction = self.linear(x).squeeze(-1)
        return {"loss": nn.functional.mse_loss(prediction, labels), "logits": prediction}


class Rows(torch.utils.data.Dataset):
    def __init__(self, n=16):
        generator = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 4, generator=generator)
        self.y = self.x.sum(dim=1)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, index):
        return {"x": self.x[index], "labels": self.y[index]}


def test_hf_trainer_steps_the_selected_objective(tmp_path):
    from transformers import Trainer, TrainingArguments

    torch.manual_seed(0)
    model = TinyRegression()
    optimizer = DecoupledAdamW(model.parameters(), lr=1e-2, forget_lr_ratio=2.0)
    optimizer.set_objective("forget")
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=3,
                             report_to=[], use_cpu=True, logging_steps=100, save_strategy="no")
    Trainer(model=model, args=args, train_dataset=Rows(), optimizers=(optimizer, scheduler)).train()
    state = optimizer.state[model.linear.weight]
    assert state["step_forget"].item() == 3 and state["step_retain"].item() == 0


def test_accelerate_prepared_optimizer_keeps_the_objective():
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    model = TinyRegression()
    optimizer = DecoupledAdamW(model.parameters(), lr=1e-2)
    model, prepared = accelerator.prepare(model, optimizer)
    batch = Rows()[0]
    for objective in ("forget", "retain", "retain"):
        set_objective(prepared, objective)
        accelerator.backward(model(batch["x"][None], batch["labels"][None])["loss"])
        prepared.step()
        prepared.zero_grad()
    state = optimizer.state[accelerator.unwrap_model(model).linear.weight]
    assert (state["step_forget"].item(), state["step_retain"].item()) == (1, 2)
