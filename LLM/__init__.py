"""DualOptim for LLMs: TOFU fine-tuning, unlearning (forget losses x optimizers) and evaluation."""
