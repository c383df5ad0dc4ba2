"""The encoder's saved activations in host memory until backward (``model.speed.offload_encoder``).

With gradient checkpointing, what a 30 s window costs through the backward pass is each encoder
layer's input, kept for its recompute (large-v2: 32 layers x 1500 x 1280 in bf16, ~0.12 GiB a
window), plus one layer's recompute at a time. Those inputs are saved through autograd (non-reentrant
and reentrant checkpointing, and a compiled layer's graph, all save them with ``save_for_backward``),
so saved-tensor hooks around the encoder's forward catch them: they go to pinned CPU memory as they
are saved and come back as each layer's backward starts. The hooks of a checkpointed region itself
take precedence inside it, so nothing that region recomputes is copied.

The copies are asynchronous on the compute stream: kernels stay in order, and the host does not wait.
``torch.autograd.graph.save_on_cpu`` does the same with a blocking device-to-host copy, which would
stall the host that launches the step's kernels (the small-batch configs are host-bound).
"""

import functools

import torch


def copy_to(tensor: torch.Tensor, device: torch.device | str, pin_memory: bool = False) -> torch.Tensor:
    """A copy of ``tensor`` on ``device`` with its own strides, queued on the current stream. The strides
    matter: a compiled layer's backward asserts those of what it saved, and the first encoder layer's
    input (the conv stem's output, transposed) is not contiguous. (``empty_like`` keeps a dense tensor's
    strides and makes an expanded one contiguous, which a copy into its own strides could not hold.)"""
    out = torch.empty_like(tensor, device=device, pin_memory=pin_memory)
    return out.copy_(tensor, non_blocking=True)


def pack(tensor: torch.Tensor) -> torch.Tensor | tuple[torch.device, torch.Tensor]:
    if tensor.device.type != "cuda":  # already in host memory
        return tensor
    return tensor.device, copy_to(tensor, "cpu", pin_memory=True)


def unpack(packed: torch.Tensor | tuple[torch.device, torch.Tensor]) -> torch.Tensor:
    if isinstance(packed, torch.Tensor):
        return packed
    device, host = packed
    return copy_to(host, device)


def offload_saved_tensors(module: torch.nn.Module) -> None:
    """Every tensor autograd saves during ``module``'s forward waits in host memory until backward."""
    forward = module.forward

    @functools.wraps(forward)
    def offloaded_forward(*args, **kwargs):
        with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
            return forward(*args, **kwargs)

    module.forward = offloaded_forward
