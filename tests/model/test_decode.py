import shutil
from pathlib import Path

import lightning as L
import pytest
import torch
from transformers import WhisperForConditionalGeneration

from lightning_asr import module as module_py
from lightning_asr.model.decode import greedy, prompt_ids
from lightning_asr.model.knobs import Decoding
from lightning_asr.model.module import WhisperLoRA
from tests.conftest import gpu, randomize_lora_b, tiny_module


@pytest.fixture(scope="module")
def talkative_model(tmp_path_factory, tiny_model) -> str:
    """A tiny Whisper whose random decoder emits varied tokens and ends some rows mid-sequence.

    At the default init (std 0.02) a random Whisper repeats one token forever, which would hide
    most ways of decoding wrongly; std 0.3 gives varied tokens. Then EOS takes over a token that
    only some rows emit (its output embedding, 5 % larger, wins wherever that token would). Saved,
    so k-bit bases quantize these weights.
    """
    folder = tmp_path_factory.mktemp("talkative")
    for item in Path(tiny_model).iterdir():
        shutil.copy(item, folder / item.name)
    whisper = WhisperForConditionalGeneration.from_pretrained(folder)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in whisper.model.decoder.parameters():
            if p.dim() == 2:
                p.copy_(0.3 * torch.randn(p.shape, generator=generator))
        ids = whisper.generate(input_features=features(), language="mr", task="transcribe", max_new_tokens=8)
        rows_with = {int(t): int((ids == t).any(1).sum()) for t in ids[:, 2:].unique()}
        token = min(rows_with, key=lambda t: abs(rows_with[t] - len(ids) / 2))
        table = whisper.model.decoder.embed_tokens.weight  # tied to proj_out
        table[whisper.generation_config.eos_token_id] = 1.05 * table[token]
    whisper.save_pretrained(folder)
    return str(folder)


def talkative(model: str, **kwargs) -> WhisperLoRA:
    module = tiny_module(model, decoding=Decoding(max_new_tokens=24), **kwargs)
    randomize_lora_b(module, std=0.05)
    return module.eval()


def static_ids(module, features: torch.Tensor, max_new_tokens: int = 24, cuda_graph: bool = False) -> torch.Tensor:
    return greedy(
        module.model.get_base_model(), features, prompt_ids(module.processor.tokenizer), max_new_tokens, cuda_graph
    )


def features(batch: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 80, 400, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("quantization", ["none", "int8", "nf4"])
def test_static_decoding_gives_generates_tokens(talkative_model, quantization):
    module = talkative(talkative_model, quantization=quantization)
    x = features()
    ref = module.model.generate(input_features=x, language="mr", task="transcribe", max_new_tokens=24)
    ours = static_ids(module, x)
    eos = module.model.generation_config.eos_token_id
    ended = (ours == eos).any(1)
    assert 0 < ended.sum() < len(ours), "the check needs rows that end and rows that do not"
    assert torch.equal(ours[:, : ref.shape[1]], ref)
    assert (ours[:, ref.shape[1] :] == eos).all()  # generate() stops when every row has ended
    # Whisper's first-token suppression: suppress what row 0 began with, and both must move off it.
    config = module.model.generation_config
    config.begin_suppress_tokens = [*config.begin_suppress_tokens, int(ref[0, 0])]
    ref = module.model.generate(input_features=x, language="mr", task="transcribe", max_new_tokens=24)
    ours = static_ids(module, x)
    assert ref[0, 0] != int(config.begin_suppress_tokens[-1])
    assert torch.equal(ours[:, : ref.shape[1]], ref)


def test_static_decoding_stops_when_every_row_has_ended(talkative_model):
    module = talkative(talkative_model, quantization="none")
    eos = module.model.generation_config.eos_token_id
    calls = []
    hook = module.model.get_base_model().proj_out.register_forward_hook(lambda *_: calls.append(1))
    ids = static_ids(module, features(), max_new_tokens=200)
    hook.remove()
    last = max(int((row != eos).nonzero().max()) for row in ids)  # the longest row's last real token
    assert last < 100 and (ids[:, last + 1 :] == eos).all()
    assert len(calls) < last + 1 + 8 + 1  # stopped within one check interval of the last row ending


def test_module_decodes_the_same_texts_either_way(talkative_model):
    module = talkative(talkative_model, quantization="none")
    results = {}
    for decoding in ("generate", "static"):
        module.decoding.method = decoding
        results[decoding] = module.transcribe(features())
    texts, degenerate = results["static"]
    assert results["generate"] == (texts, degenerate)
    assert all(texts) and len(set(texts)) > 1 and any(degenerate) and not all(degenerate)


def test_too_many_new_tokens_is_a_clear_error(talkative_model):
    module = talkative(talkative_model, quantization="none")
    with pytest.raises(ValueError, match="max_new_tokens: 500"):
        static_ids(module, features(1), max_new_tokens=500)


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_graph_replays_decode_like_eager_steps(talkative_model, dtype):
    module = talkative(talkative_model, quantization="none").to("cuda", dtype)
    x = features(16).to("cuda", dtype)
    assert torch.equal(static_ids(module, x, cuda_graph=True), static_ids(module, x, cuda_graph=False))


def test_static_decoding_keeps_autocast_on_a_kbit_base(talkative_model):
    # A k-bit base's other weights are fp32 (prepare_model_for_kbit_training): under bf16-mixed they run
    # in bf16 only through autocast, so the graphed loop must keep it (without its weight-cast cache).
    module = talkative(talkative_model, quantization="nf4")
    x = features()
    with torch.autocast("cpu", torch.bfloat16):
        graphed, eager = static_ids(module, x, cuda_graph=True), static_ids(module, x, cuda_graph=False)
    assert not torch.equal(eager, static_ids(module, x)), "bf16 must change some tokens, or the check proves nothing"
    assert torch.equal(graphed, eager)


@pytest.mark.parametrize(
    ("quantization", "cuda_graph", "expected"),
    [("none", True, True), ("nf4", True, True), ("int8", True, False), ("nf4", False, False)],
)
def test_module_asks_for_graphs_except_on_int8(talkative_model, monkeypatch, quantization, cuda_graph, expected):
    module = talkative(talkative_model, quantization=quantization)
    module.decoding.method, module.decoding.cuda_graph = "static", cuda_graph
    asked = []
    monkeypatch.setattr(
        module_py, "greedy", lambda *args, cuda_graph: asked.append(cuda_graph) or greedy(*args, cuda_graph)
    )
    module.transcribe(features(2))
    assert asked == [expected]


@gpu
@pytest.mark.gpu
def test_cuda_graph_replays_nf4_decode_like_eager_steps(talkative_model):
    trainer = L.Trainer(accelerator="gpu", devices=1, logger=False)
    module = WhisperLoRA(model=talkative_model, language="mr", quantization="nf4", validate_before_training=False)
    module._trainer = trainer  # configure_model loads the k-bit base onto the trainer's GPU, as fit does
    module.configure_model()
    randomize_lora_b(module, std=0.05)
    module = module.eval()
    x = features(16).to("cuda")
    with torch.autocast("cuda", torch.bfloat16):  # what precision: bf16-mixed runs validation under
        graphed, eager = static_ids(module, x, cuda_graph=True), static_ids(module, x, cuda_graph=False)
    assert torch.equal(graphed, eager)
    assert len(graphed.unique()) > 2  # varied tokens, not one repeated
