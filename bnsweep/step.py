"""One SGD training step of the study: eager, or replayed from a CUDA graph.

Why a graph: a step of the reference Inception dispatches about 1,100 PyTorch
operations with BN and 670 without (counted on a CPU; 54 convolutions with their
BN and ReLU, pools, concatenations, forward and backward, SGD's updates), each
one or more kernels. Launched one by one from Python, the GPU can wait on the
host between them; a captured graph replays all of them with one launch.
On an H200 that made the no-BN step 1.25x faster (benchmarks/step_variants.py).
The replay runs the same kernels on the same memory: results equal the eager
step's up to the summation order cuDNN/cuBLAS may pick per launch (tests/test_step.py).

What the graph holds fixed, and how this module keeps it right:
- the batch size: a shorter last batch of an epoch runs eagerly;
- the learning rate, which SGD passes to its kernels as a number: the step is
  captured again whenever the optimizer's lr differs from the captured one;
- the momentum buffers must exist before capture: a captured first step would
  record SGD's "buffer = clone(gradient)" and replay it at every later step.
  So capture is preceded by warm-up steps, after which weights, BN statistics,
  momentum buffers and the CUDA RNG are put back exactly, and buffers that did
  not exist yet are zero, which SGD's first step equals (momentum x 0 + g = g,
  with the dampening 0 that train() uses).
- memory: the graph keeps one step's activations and gradients in a pool of its
  own for the whole run; evaluation and a short last batch allocate beside it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Warm-up steps before a capture, on a side stream (PyTorch's CUDA graph notes):
# they create SGD's momentum buffers and initialise cuDNN/cuBLAS for these shapes.
_WARMUP_STEPS = 2


class TrainStep:
    """`step(xb, yb)` runs forward, cross-entropy loss, backward and `optimizer.step()`.

    Returns (loss, logits): the batch's mean loss (float32 scalar) and the logits,
    both on the device. With a graph they are its output buffers, which the next
    step overwrites: read or copy them before calling again.
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.SGD, amp: bool, graph: bool):
        self.model, self.optimizer = model, optimizer
        self.amp, self.graph = amp, graph
        # (graph, static input, static labels, static loss, static logits) once captured
        self._captured: tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor, torch.Tensor,
                              torch.Tensor] | None = None
        self._captured_lr: float | None = None

    def __call__(self, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.graph:
            return self._eager(xb, yb)
        lr = self.optimizer.param_groups[0]["lr"]
        if self._captured is not None and len(yb) != len(self._captured[2]):
            # A shorter last batch: eager, accumulating into the gradient tensors the
            # graph reads (zeroed in place), so p.grad stays the graph's buffer.
            return self._eager(xb, yb, set_to_none=False)
        if self._captured is None or lr != self._captured_lr:
            self._capture(xb, yb)
            self._captured_lr = lr
        graph, static_x, static_y, loss, logits = self._captured
        static_x.copy_(xb)
        static_y.copy_(yb)
        graph.replay()
        return loss, logits

    def _forward_backward(self, xb: torch.Tensor, yb: torch.Tensor, cache: bool = True):
        # cache=False inside a capture: autocast's cache of bf16 weight copies would be
        # allocated during capture and outlive it (PyTorch's CUDA graph notes).
        with torch.autocast(xb.device.type, dtype=torch.bfloat16, enabled=self.amp, cache_enabled=cache):
            logits = self.model(xb)
            loss = F.cross_entropy(logits.float(), yb)
        loss.backward()
        self.optimizer.step()
        return loss.detach(), logits.detach()

    def _eager(self, xb, yb, set_to_none: bool = True):
        self.optimizer.zero_grad(set_to_none=set_to_none)
        return self._forward_backward(xb, yb)

    def _capture(self, xb: torch.Tensor, yb: torch.Tensor) -> None:
        warm = self._captured is not None
        self._captured = None  # frees the previous graph's memory before a new capture
        device = xb.device
        static_x, static_y = xb.clone(), yb.clone()
        if not warm:
            self._warm_up(static_x, static_y)
        self.optimizer.zero_grad(set_to_none=True)  # gradients become the graph's own buffers
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=torch.cuda.Stream(device)):  # on xb's device, not the current one
            loss, logits = self._forward_backward(static_x, static_y, cache=False)
        torch.cuda.current_stream(device).synchronize()
        self._captured = (graph, static_x, static_y, loss, logits)

    def _momentum_buffers(self) -> list[torch.Tensor | None]:
        return [self.optimizer.state.get(p, {}).get("momentum_buffer")
                for group in self.optimizer.param_groups for p in group["params"]]

    @torch.no_grad()
    def _warm_up(self, static_x: torch.Tensor, static_y: torch.Tensor) -> None:
        """Run _WARMUP_STEPS real steps, then put back everything they changed."""
        device = static_x.device
        state = [*self.model.parameters(), *self.model.buffers()]
        saved = [t.clone() for t in state]
        saved_buffers = [None if b is None else b.clone() for b in self._momentum_buffers()]
        rng = torch.cuda.get_rng_state(device)  # dropout's draws
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side), torch.enable_grad():
            for _ in range(_WARMUP_STEPS):
                self._eager(static_x, static_y)
        torch.cuda.current_stream(device).wait_stream(side)
        for tensor, value in zip(state, saved):
            tensor.copy_(value)
        for buffer, value in zip(self._momentum_buffers(), saved_buffers):
            if buffer is None:  # a parameter that gets no gradient has no buffer
                continue
            if value is None:
                buffer.zero_()
            else:
                buffer.copy_(value)
        torch.cuda.set_rng_state(rng, device)
