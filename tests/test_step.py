"""TrainStep: a step replayed from a CUDA graph equals the eager step (CUDA only)."""

from __future__ import annotations

import pytest
import torch

from bnsweep.config import make_config
from bnsweep.model import build_model
from bnsweep.step import TrainStep
from bnsweep.train import set_lr

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _step(graph: bool, dropout: float) -> TrainStep:
    torch.manual_seed(0)
    model = build_model(make_config({"bn": True, "width": 0.25, "dropout": dropout}))
    model = model.cuda().to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return TrainStep(model, optimizer, amp=True, graph=graph)


def _run(step: TrainStep, batches) -> list[float]:
    """Steps as train() makes them: an lr drop after 3 (a new capture), a short batch (eager),
    and a reseeded RNG, as train() reseeds dropout's draws every epoch."""
    torch.cuda.manual_seed(1)
    losses = []
    for i, (x, y) in enumerate(batches):
        if i == 3:
            set_lr(step.optimizer, 0.01)
        if i == 5:
            torch.cuda.manual_seed(2)
        loss, logits = step(x, y)
        assert logits.shape == (len(y), 10)
        losses.append(loss.item())
    return losses


def _state(step: TrainStep) -> list[torch.Tensor]:
    buffers = [step.optimizer.state[p]["momentum_buffer"] for p in step.model.parameters()]
    return [t.float() for t in (*step.model.parameters(), *step.model.buffers(), *buffers)]


@needs_cuda
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_graphed_steps_equal_eager_steps(dropout):
    gen = torch.Generator(device="cuda").manual_seed(0)
    sizes = [50, 50, 50, 50, 30, 50, 50]  # the 30 is an epoch's shorter last batch
    batches = [(torch.rand(n, 3, 32, 32, device="cuda", generator=gen).contiguous(memory_format=torch.channels_last),
                torch.randint(0, 10, (n,), device="cuda", generator=gen)) for n in sizes]
    eager, graphed = _step(False, dropout), _step(True, dropout)
    eager_losses, graph_losses = _run(eager, batches), _run(graphed, batches)
    # The same kernels on the same data: equal up to the order of floating-point sums
    # in kernels that may choose it per launch (bf16 autocast).
    assert graph_losses == pytest.approx(eager_losses, rel=2e-3)
    for a, b in zip(_state(eager), _state(graphed)):
        assert torch.allclose(a, b, rtol=2e-2, atol=2e-3), (a - b).abs().max()


@needs_cuda
def test_graph_warm_up_leaves_no_trace():
    # The warm-up steps before a capture change weights, BN statistics, momentum and
    # the RNG; the capture must start from the state the caller handed it.
    step = _step(True, 0.3)
    x = torch.rand(50, 3, 32, 32, device="cuda").contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (50,), device="cuda")
    before = [t.detach().clone() for t in (*step.model.parameters(), *step.model.buffers())]
    rng = torch.cuda.get_rng_state()  # after the draws of x and y above
    step._warm_up(x, y)
    assert all(torch.equal(a, b) for a, b in zip(before, (*step.model.parameters(), *step.model.buffers())))
    assert all(not step.optimizer.state[p]["momentum_buffer"].any() for p in step.model.parameters())
    assert torch.equal(torch.cuda.get_rng_state(), rng)
