"""Greedy decoding over a preallocated KV cache, its token step replayed as a CUDA graph on GPU.

``generate()`` grows its cache, runs logits processors and checks stopping criteria in Python
around ~2,000 small kernels a token step. This loop does the same greedy search as
``generate(language=..., task=...)`` (the forced ``<|sot|><|lang|><|task|><|notimestamps|>``
prompt, Whisper's suppressed tokens, EOS padding) with every buffer allocated once, so a token
step is a fixed sequence of kernels: on CUDA it is captured once per batch and replayed per token,
much faster than ``generate()`` at large batches. It calls the model's own submodules (LoRA
layers included), so adapters, merging and k-bit bases work as they do in ``generate()``.
"""

import contextlib
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

# Stop when every row has ended, checked this often: each check waits for the GPU.
CHECK_EVERY = 8


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(batch, time, heads * dim) -> (batch, heads, time, dim), contiguous as the attention kernels want it."""
    return x.unflatten(-1, (heads, -1)).transpose(1, 2).contiguous()


def _unheads(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(1, 2).flatten(2)


def _token_bias(ids: list[int], vocab: int, device: torch.device) -> torch.Tensor:
    """A logits bias of -inf at ``ids``: what transformers' Suppress*LogitsProcessors do."""
    bias = torch.zeros(vocab, dtype=torch.float32, device=device)
    bias[[i for i in ids if i < vocab]] = float("-inf")
    return bias


def graphed(method: str, cuda_graph: bool, quantization: str) -> bool:
    """Whether decoding replays its token step as a CUDA graph (on a GPU): static decoding asked for one, on a base
    whose layers hold no host syncs (bitsandbytes' int8 layers do; see ``greedy``)."""
    return method == "static" and cuda_graph and quantization != "int8"


@torch.no_grad()
def greedy(
    whisper: nn.Module,
    input_features: torch.Tensor,
    prompt: list[int],
    max_new_tokens: int,
    cuda_graph: bool = True,
) -> torch.Tensor:
    """The ``max_new_tokens`` tokens after ``prompt`` for each clip, EOS-padded once a row has ended.

    ``whisper`` is a ``WhisperForConditionalGeneration`` (unwrap a ``PeftModel`` with
    ``get_base_model()``); its generation config gives EOS and the suppressed tokens, as it does
    to ``generate()``. ``cuda_graph``: replay the token step as a CUDA graph when the model is on
    a GPU. A graph must hold no host syncs: bitsandbytes' nf4 layers have none (a GPU test replays
    them), its int8 layers do (the outlier columns are found in each step's input), so the module
    never asks for graphs on an int8 base.

    Autocast keeps a cache of weights it cast, freed when autocast exits, and a graph would go on
    reading those copies. So with ``cuda_graph`` (on any device, so that CPU checks compute what the
    GPU does) an unquantized base runs in its own dtype without autocast, and a k-bit base, whose
    other weights ``prepare_model_for_kbit_training`` keeps in fp32, keeps the caller's autocast
    without its cache: each step casts afresh inside the graph.
    """
    limit = whisper.model.decoder.config.max_target_positions
    if len(prompt) + max_new_tokens > limit:
        raise ValueError(
            f"model.max_new_tokens: {max_new_tokens} + the {len(prompt)}-token prompt exceeds the decoder's "
            f"{limit} positions"
        )
    device = input_features.device.type
    if not cuda_graph:
        numerics = contextlib.nullcontext()
    elif getattr(whisper, "hf_quantizer", None) is not None:
        numerics = torch.autocast(
            device, torch.get_autocast_dtype(device), torch.is_autocast_enabled(device), cache_enabled=False
        )
    else:
        numerics = torch.autocast(device, enabled=False)
    with numerics:
        return _greedy(whisper, input_features, prompt, max_new_tokens, cuda_graph and device == "cuda")


def _greedy(
    whisper, input_features: torch.Tensor, prompt: list[int], max_new_tokens: int, graphs: bool
) -> torch.Tensor:
    config = whisper.generation_config
    eos_token_id = config.eos_token_id
    decoder = whisper.model.decoder
    encoded = whisper.model.encoder(input_features).last_hidden_state
    batch, device = encoded.shape[0], encoded.device
    layers = decoder.layers
    heads = layers[0].self_attn.num_heads
    # Cross-attention keys and values depend only on the audio: once per batch, as generate() caches them.
    cross = [
        (_heads(layer.encoder_attn.k_proj(encoded), heads), _heads(layer.encoder_attn.v_proj(encoded), heads))
        for layer in layers
    ]
    # Rounded up to 8 positions so memory-efficient attention takes the mask without copying it.
    length = -(-(len(prompt) + max_new_tokens) // 8) * 8
    shape = (len(layers), batch, heads, length, cross[0][0].shape[-1])
    keys, values = encoded.new_zeros(shape), encoded.new_zeros(shape)
    slots = torch.arange(length, device=device)

    def logits(ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Next-token logits after ``ids`` (batch, n) at ``positions`` (n,), filling the cache there."""
        x = decoder.embed_tokens(ids) + decoder.embed_positions.weight[positions]
        visible = slots[None, :] <= positions[:, None]  # causal, and hides slots not written yet
        for i, layer in enumerate(layers):
            attn = layer.self_attn
            h = layer.self_attn_layer_norm(x)
            q = _heads(attn.q_proj(h) * attn.scaling, heads)
            keys[i].index_copy_(2, positions, _heads(attn.k_proj(h), heads))
            values[i].index_copy_(2, positions, _heads(attn.v_proj(h), heads))
            x = x + attn.out_proj(_unheads(F.scaled_dot_product_attention(q, keys[i], values[i], visible, scale=1.0)))
            attn = layer.encoder_attn
            h = layer.encoder_attn_layer_norm(x)
            q = _heads(attn.q_proj(h) * attn.scaling, heads)
            x = x + attn.out_proj(_unheads(F.scaled_dot_product_attention(q, *cross[i], scale=1.0)))
            x = x + layer.fc2(layer.activation_fn(layer.fc1(layer.final_layer_norm(x))))
        return whisper.proj_out(decoder.layer_norm(x[:, -1])).float()

    vocab = whisper.proj_out.out_features
    suppress = _token_bias(config.suppress_tokens or [], vocab, device)
    first = logits(torch.tensor(prompt, device=device).expand(batch, -1), slots[: len(prompt)])
    token = (first + suppress + _token_bias(config.begin_suppress_tokens or [], vocab, device)).argmax(-1)
    out = torch.full((batch, max_new_tokens), eos_token_id, dtype=torch.long, device=device)
    out[:, 0] = token
    done = token == eos_token_id
    position = torch.tensor([len(prompt)], device=device)  # where the latest token goes in the cache

    def step() -> None:  # in place on the buffers above: a graph replays exactly this
        nxt = (logits(token[:, None], position) + suppress).argmax(-1)
        nxt = torch.where(done, eos_token_id, nxt)
        done.logical_or_(nxt == eos_token_id)
        token.copy_(nxt)
        out.index_copy_(1, position - len(prompt) + 1, nxt[:, None])
        position.add_(1)

    _run(step, max_new_tokens - 1, done, graphs)
    return out


def _run(step: Callable[[], None], steps: int, done: torch.Tensor, graphs: bool) -> None:
    """``steps`` token steps, as one replayed CUDA graph with ``graphs``, until every row is done."""
    run = step
    if graphs and steps > 1:
        run = _graphed(step)  # runs one step itself, on a side stream, before capturing
        steps -= 1
    for n in range(steps):
        if n % CHECK_EVERY == 0 and bool(done.all()):
            break
        run()


def _graphed(step: Callable[[], None]) -> Callable[[], None]:
    """Run ``step`` once (warm-up: cuBLAS handles, attention kernel choice), capture it, return its replay."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        step()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return graph.replay


@torch.no_grad()
def detect_languages(whisper, input_features: torch.Tensor, tokenizer) -> list[str]:
    """Each clip's most likely language code, from the first decoder step after ``<|startoftranscript|>``
    (Whisper's own detection, transformers' ``detect_language``)."""
    ids = whisper.detect_language(input_features=input_features)
    return [token.strip("<|>") for token in tokenizer.convert_ids_to_tokens(ids.reshape(-1).tolist())]


def prompt_ids(tokenizer, language: str | None = None) -> list[int]:
    """``<|sot|><|lang|><|task|><|notimestamps|>``: the tokenizer's label prefix, the prompt generate()
    forces; ``language`` (a code) replaces the tokenizer's own language token."""
    ids = list(tokenizer.prefix_tokens)
    if language is not None:
        ids[1] = tokenizer.convert_tokens_to_ids(f"<|{language}|>")
    return ids
