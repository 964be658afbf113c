"""Shared by the method tests: a tiny student/teacher pair, one batch, and the frozen-teacher check."""

import torch

from kdlab.models.registry import build_classifier


def models():
    torch.manual_seed(0)
    return build_classifier("resnet_small", 10, width=4), build_classifier("resnet_small", 10, width=8)


def batch(n: int = 6):
    generator = torch.Generator().manual_seed(1)
    return torch.rand(n, 3, 32, 32, generator=generator), torch.randint(0, 10, (n,), generator=generator)


def train_steps_leave_teacher_untouched(method, teacher, steps: int = 2) -> None:
    """Take ``steps`` SGD steps of ``method``; the teacher must get no gradient, keep its weights and BatchNorm
    statistics (running mean/var/count) and share no parameter with what is trained."""
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    optimizer = torch.optim.SGD(method.parameters(), lr=0.1, momentum=0.9)
    for seed in range(steps):
        result = method(batch(), torch.Generator().manual_seed(seed))
        optimizer.zero_grad()
        result.loss.backward()
        optimizer.step()
    assert all(p.grad is None for p in teacher.parameters())
    after = teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not {id(p) for p in teacher.parameters()} & {id(p) for p in method.parameters()}


def store_output(seen: dict, key: str):
    """A forward hook that keeps a module's output under ``key``."""
    return lambda module, args, out: seen.__setitem__(key, out)


def store_input(seen: dict, key: str):
    """A forward pre-hook that keeps a module's input under ``in:<key>``."""
    return lambda module, args: seen.__setitem__("in:" + key, args[0])
