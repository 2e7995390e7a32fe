"""Files that run code when unpickled with full pickle: the security and bad-input tests show they are refused."""
from __future__ import annotations

import os
from pathlib import Path

import torch


class RunsShellCommand:
    """Pickles as ``os.system(command)``: loading it with full pickle would run the command."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def writes_pwned(folder: Path) -> RunsShellCommand:
    """A value whose unpickling writes ``PWNED`` to ``<folder>/pwned.txt``."""
    return RunsShellCommand(f"echo PWNED > {folder / 'pwned.txt'}")


def malicious_checkpoint(folder: Path) -> Path:
    """``<folder>/found_online.pth.tar``: a resnet20s checkpoint whose ``state_dict`` is :func:`writes_pwned`."""
    path = folder / "found_online.pth.tar"
    torch.save({"state_dict": writes_pwned(folder), "arch": "resnet20s"}, path)
    return path
