import math
import threading
from types import SimpleNamespace

import bitsandbytes as bnb
import lightning as L
import numpy as np
import pytest
import torch

from lightning_asr.callbacks import ValidationReport
from lightning_asr.data import SpeechDataModule
from lightning_asr.model.knobs import Decoding, Speed
from lightning_asr.model.lora import LoRA
from lightning_asr.model.module import NonFiniteLossError, WhisperLoRA
from lightning_asr.model.whisper import LANGUAGES, load_base, load_processor, train_flops
from lightning_asr.text import clean_transcript
from tests.conftest import (
    SENTENCES,
    compiled_fp8_module,
    fp8_casts,
    gpu,
    randomize_lora_b,
    tiny_module,
    train_steps,
    write_common_voice,
    write_tiny_model,
)


def test_trainable_count_matches_a_hand_count(tiny_model):
    module = tiny_module(tiny_model, quantization="none", lora=LoRA(r=4, alpha=8, dropout=0.0))
    config = module.model.config
    # q_proj and v_proj (d_model -> d_model) in every attention block: 1 per encoder layer,
    # 2 per decoder layer (self + cross); each LoRA pair adds r * (in + out).
    blocks = config.encoder_layers + 2 * config.decoder_layers
    expected = blocks * 2 * 4 * (config.d_model + config.d_model)
    trainable, total = module.model.get_nb_trainable_parameters()
    assert trainable == expected == sum(p.numel() for p in module.parameters() if p.requires_grad)
    assert total == expected + sum(p.numel() for p in module.model.get_base_model().parameters() if not p.requires_grad)


@pytest.mark.parametrize("quantization, layer", [("int8", bnb.nn.Linear8bitLt), ("nf4", bnb.nn.Linear4bit)])
def test_kbit_base_trains_only_lora_and_loss_falls(tiny_model, batch, quantization, layer):
    module = tiny_module(
        tiny_model,
        quantization=quantization,
        speed=Speed(gradient_checkpointing=True),
        lora=LoRA(r=16, alpha=32, dropout=0.0),
    )
    q_proj = module.model.get_base_model().model.encoder.layers[0].self_attn.q_proj
    assert isinstance(q_proj.base_layer, layer)  # the real bitsandbytes path, on CPU
    frozen = {n: p.detach().clone() for n, p in module.named_parameters() if not p.requires_grad}
    lora = {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}
    assert lora and all("lora_" in n for n in lora)
    losses = train_steps(module, batch, steps=6, lr=1e-2)
    assert losses[-1] < losses[0] - 0.2 and losses == sorted(losses, reverse=True), losses
    for name, before in frozen.items():
        assert torch.equal(before, dict(module.named_parameters())[name]), f"{name} changed"
    assert any(not torch.equal(before, dict(module.named_parameters())[n]) for n, before in lora.items())


def test_gradient_checkpointing_is_active_in_lightning_training(tmp_path, tiny_model):
    """Lightning keeps submodule modes: a base left in eval mode would skip checkpointing silently."""
    seen = {}

    class Probe(WhisperLoRA):
        def training_step(self, batch, batch_idx):
            layer = self.model.get_base_model().model.encoder.layers[0]
            seen["training"], seen["checkpointing"] = layer.training, layer.gradient_checkpointing
            saved = []
            with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
                loss = super().training_step(batch, batch_idx)
            seen["saved"] = len(saved)
            return loss

    def saved_tensors(checkpointing: bool) -> int:
        module = Probe(
            model=tiny_model,
            language="mr",
            quantization="none",
            speed=Speed(gradient_checkpointing=checkpointing),
            lora=LoRA(r=4),
            validate_before_training=False,
        )
        data = SpeechDataModule(
            path=str(write_common_voice(tmp_path / str(checkpointing))),
            model=tiny_model,
            language="mr",
            num_workers=0,
            batch_size=2,
        )
        L.Trainer(
            accelerator="cpu",
            max_steps=1,
            limit_val_batches=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        ).fit(module, data)
        return seen["saved"]

    without = saved_tensors(False)
    with_checkpointing = saved_tensors(True)
    assert seen["training"] and seen["checkpointing"]
    assert with_checkpointing < without / 2, (with_checkpointing, without)


def test_prompt_ids_for_marathi(tiny_model):
    processor = load_processor(tiny_model, "Marathi", "transcribe")
    assert processor.tokenizer.prefix_tokens == [50258, 50320, 50359, 50363]
    assert processor.tokenizer.convert_ids_to_tokens([50258, 50320, 50359, 50363]) == [
        "<|startoftranscript|>",
        "<|mr|>",
        "<|transcribe|>",
        "<|notimestamps|>",
    ]


def test_generation_starts_from_audio_alone(tiny_model, batch):
    module = tiny_module(tiny_model, quantization="none", decoding=Decoding(max_new_tokens=5))
    module.eval()
    texts, degenerate = module.transcribe(batch["input_features"])
    assert len(texts) == 4 and len(degenerate) == 4
    ids = module.model.generate(
        input_features=batch["input_features"],
        language="mr",
        task="transcribe",
        max_new_tokens=5,
        return_dict_in_generate=True,
    )
    # Only the forced prompt precedes generation: nothing from the labels leaks in.
    assert ids.sequences.shape[1] <= 5 + 4


def test_outdated_generation_config_is_a_clear_error(tmp_path):
    folder = write_tiny_model(tmp_path / "old")
    (folder / "generation_config.json").write_text('{"decoder_start_token_id": 50258, "eos_token_id": 50257}')
    with pytest.raises(
        ValueError,
        match="lacks lang_to_id, task_to_id, is_multilingual, no_timestamps_token_id.*generation_config.json",
    ):
        load_base(str(folder), "none")


def test_unknown_language_fails_before_loading():
    with pytest.raises(ValueError, match="model.language: 'Elvish' is not a language Whisper knows"):
        WhisperLoRA(model="does/not-matter", language="Elvish")


def test_validation_gives_finite_metrics_and_zero_shot_at_step_0(tmp_path, tiny_model):
    root = write_common_voice(tmp_path / "cv")
    module = WhisperLoRA(
        model=tiny_model,
        language="mr",
        quantization="int8",
        lora=LoRA(r=4),
        decoding=Decoding(max_new_tokens=6),
        speed=Speed(gradient_checkpointing=False),
        warmup_steps=1,
    )
    data = SpeechDataModule(
        path=str(root), model=tiny_model, language="mr", num_workers=0, batch_size=2, eval_batch_size=2
    )
    report = ValidationReport()
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=2,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        callbacks=[report],
        logger=L.pytorch.loggers.TensorBoardLogger(tmp_path),
        enable_checkpointing=False,
        enable_progress_bar=False,
    )
    trainer.fit(module, data)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    for name in ("val/wer", "val/wer_norm", "val/cer", "val/degenerate"):
        assert math.isfinite(metrics[name])
    assert [step for step, *_ in report.history] == [0, 2]  # zero-shot, then after the epoch
    assert report.history[-1][1] == pytest.approx(metrics["val/wer"])
    # The examples table holds the validation split's own transcripts (test.tsv: the guide validates on test).
    refs = [ref for ref, _ in report.examples]
    assert refs and set(refs) <= {clean_transcript(s) for s in SENTENCES}
    trainer.test(module, data)  # the same table for a test run
    events = b"".join(p.read_bytes() for p in tmp_path.rglob("events.out.tfevents.*"))
    assert b"val/examples" in events and b"test/examples" in events and refs[0].encode() in events
    assert 0.0 <= metrics["val/degenerate"] <= 1.0


def test_nonfinite_losses_are_skipped_then_stop_the_run(tiny_model, batch, monkeypatch):
    module = tiny_module(tiny_model, quantization="none", max_bad_steps=3)
    trainer = L.Trainer(accelerator="cpu", logger=False)
    module.trainer = trainer
    module.log = lambda *args, **kwargs: None  # no loop is running to log into
    monkeypatch.setattr("lightning_asr.model.module.token_loss", lambda *_, **__: torch.tensor(float("nan")))
    assert module.training_step(batch, 0) is None
    assert module.training_step(batch, 1) is None
    with pytest.raises(NonFiniteLossError, match="3 non-finite losses in a row"):
        module.training_step(batch, 2)


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("quantization", ["int8", "nf4", "none"])
def test_training_step_on_gpu(tiny_model, batch, quantization):
    module = WhisperLoRA(
        model=tiny_model, language="mr", quantization=quantization, lora=LoRA(r=4), validate_before_training=False
    )
    trainer = L.Trainer(accelerator="gpu", devices=1, precision="bf16-mixed", logger=False)
    module.trainer = trainer
    module._trainer = trainer
    module.configure_model()
    layer = module.model.get_base_model().model.encoder.layers[0].self_attn.q_proj.base_layer
    assert next(layer.parameters()).device.type == "cuda"
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = module.model(input_features=batch["input_features"].cuda(), labels=batch["labels"].cuda()).loss
    loss.backward()
    assert torch.isfinite(loss)


def outside_a_trainer(module: WhisperLoRA) -> None:
    """training_step as a Trainer calls it, without one: logging, the learning rate and the strategy stubbed."""
    module.log = lambda *args, **kwargs: None
    module._trainer = SimpleNamespace(
        optimizers=[SimpleNamespace(param_groups=[{"lr": 0.0}])],
        strategy=L.pytorch.strategies.SingleDeviceStrategy("cpu"),
        world_size=1,
    )


def int8_nodes_in_graph(loss: torch.Tensor) -> int:
    """bitsandbytes int8 matmul nodes reachable from ``loss``: each one holds its layer's input."""
    seen, stack, found = set(), [loss.grad_fn], 0
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        found += "MatMul8bit" in type(node).__name__
        stack += [fn for fn, _ in node.next_functions]
    return found


def test_int8_checkpointing_holds_no_layer_inputs_and_still_trains_every_adapter(tiny_model, batch):
    """int8 matmuls stash their input on ctx, where non-reentrant checkpointing cannot free it."""
    plain = tiny_module(tiny_model, quantization="int8", speed=Speed(gradient_checkpointing=False))
    plain.train()
    loss = plain.model(input_features=batch["input_features"], labels=batch["labels"]).loss
    assert int8_nodes_in_graph(loss) > 0  # the probe sees them when nothing is checkpointed
    module = tiny_module(tiny_model, quantization="int8", speed=Speed(gradient_checkpointing=True))
    module.train()
    loss = module.model(input_features=batch["input_features"], labels=batch["labels"]).loss
    assert int8_nodes_in_graph(loss) == 0
    loss.backward()
    lora_b = {n: p for n, p in module.named_parameters() if "lora_B" in n}
    assert any(".encoder." in n for n in lora_b) and any(".decoder." in n for n in lora_b)
    for name, param in lora_b.items():  # the encoder too: its checkpoints need an input that requires grad
        assert param.grad is not None and param.grad.abs().sum() > 0, name


@pytest.mark.parametrize("quantization", ["none", "nf4"])
def test_compiled_layers_train_like_eager_and_decode_without_compiling(tiny_model, batch, quantization):
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    modules = {
        c: tiny_module(tiny_model, quantization=quantization, speed=Speed(gradient_checkpointing=True, compile=c))
        for c in (False, True)
    }
    grads, losses = {}, {}
    for compiled, module in modules.items():
        randomize_lora_b(module)
        module.train()
        loss = module.model(input_features=batch["input_features"], labels=batch["labels"]).loss
        loss.backward()
        losses[compiled] = loss.item()
        grads[compiled] = [p.grad for p in module.parameters() if p.requires_grad]
    assert counters["stats"]["unique_graphs"] > 0  # the compiled path really ran
    assert not counters["graph_break"]  # and whole: each layer one graph (nf4: its biases are cast up front)
    # Layer.compile() keeps parameter names: checkpoints and saved adapters are the same either way.
    assert modules[True].state_dict().keys() == modules[False].state_dict().keys()
    assert losses[True] == pytest.approx(losses[False], rel=1e-5)
    for eager, compiled in zip(grads[False], grads[True], strict=True):
        if quantization == "none":
            torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-6)
        else:  # nf4 multiplies in bf16, where fused kernels round differently: each gradient to within 1 %
            assert (compiled - eager).norm() <= 1e-2 * eager.norm()
    graphs = counters["stats"]["unique_graphs"]
    texts = {}
    for compiled, module in modules.items():
        module.eval()
        texts[compiled], _ = module.transcribe(batch["input_features"])
    assert counters["stats"]["unique_graphs"] == graphs  # decoding compiled nothing
    assert texts[True] == texts[False]


def test_compiled_checkpointed_layers_recompute_the_forwards_graph_on_the_forwards_thread_count(tiny_model):
    """Two guards of a checkpointed compiled layer's recompute: which cache entry runs where several pass (the first,
    not dynamo's most recently used: pytorch#166926), and the thread count the autograd engine's device thread
    starts with (the training thread's, not the 1 a DataLoader's pin-memory thread sets), which dynamo guards on."""
    eval_frame, threads = torch._C._dynamo.eval_frame, torch.get_num_threads()
    eval_frame._set_lru_cache(True)  # dynamo's default, whatever an earlier test's module set
    torch.set_num_threads(2)
    try:
        module = tiny_module(tiny_model, quantization="none", speed=Speed(gradient_checkpointing=True, compile=True))
        ran, graphs = [], []

        def backend(gm, inputs):
            tag = len(graphs)
            graphs.append(gm)

            def run(*args):
                ran.append(tag)
                return gm(*args)

            return run

        double = torch.compile(lambda x: 2 * x, backend=backend)
        for n in (2, 3, 2):  # a static entry for length 2, then a dynamic one: both pass for length 2
            double(torch.zeros(n))
        assert ran == [0, 1, 0]

        def started_thread_count() -> int:  # what a newly started thread takes, as the engine's device thread does
            counts = []

            def start():
                torch._C.init_num_threads()
                counts.append(torch.get_num_threads())

            thread = threading.Thread(target=start)
            thread.start()
            thread.join()
            return counts[0]

        pin_memory = threading.Thread(target=torch.set_num_threads, args=(1,))  # as the DataLoader's does
        pin_memory.start()
        pin_memory.join()
        assert started_thread_count() == 1
        module.on_before_backward(torch.zeros(()))
        assert started_thread_count() == 2
    finally:
        eval_frame._set_lru_cache(True)
        torch.set_num_threads(threads)


def test_compile_names_a_gpu_triton_cannot_target_before_the_base_loads(tiny_model, monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (6, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla P100-PCIE-16GB")
    module = WhisperLoRA(model=tiny_model, language="mr", quantization="nf4", speed=Speed(compile=True))
    module._trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cuda", 0)))
    with pytest.raises(ValueError, match=r"compile: true needs a GPU that Triton supports.*P100-PCIE-16GB has 6.0"):
        module.configure_model()
    assert module.model is None


def test_compile_refuses_int8_and_merge_lora_any_k_bit_base():
    with pytest.raises(ValueError, match="model.speed.compile: true needs model.quantization: none or nf4 .got 'int8'"):
        WhisperLoRA(model="unused", language="mr", quantization="int8", speed=Speed(compile=True))
    for quantization in ("int8", "nf4"):
        with pytest.raises(
            ValueError, match=f"model.decoding.merge_lora: true needs model.quantization: none .got '{quantization}'"
        ):
            WhisperLoRA(model="unused", language="mr", quantization=quantization, decoding=Decoding(merge_lora=True))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_merge_lora_skips_the_lora_branch_and_restores_the_exact_base(tiny_model, batch, dtype):
    module = tiny_module(tiny_model, quantization="none", dtype=dtype, decoding=Decoding(merge_lora=True))
    randomize_lora_b(module)
    module.eval()
    base = {n: p.detach().clone() for n, p in module.model.named_parameters() if "lora_" not in n}
    features = batch["input_features"].to(getattr(torch, dtype))
    branch_calls = []
    hooks = [
        m.register_forward_hook(lambda *_: branch_calls.append(1))
        for n, m in module.model.named_modules()
        if n.endswith("lora_A.default")
    ]
    merged_texts, _ = module.transcribe(features)
    assert not branch_calls  # the update was in the weights, not in a branch
    for n, p in module.model.named_parameters():
        if "lora_" not in n:
            assert torch.equal(p, base[n]), f"{n} changed by a merged decode"
    module.decoding.merge_lora = False
    plain_texts, _ = module.transcribe(features)
    assert branch_calls
    for hook in hooks:
        hook.remove()
    if dtype == "float32":
        assert merged_texts == plain_texts
    else:
        # Why the weights are copied: PEFT's merge + unmerge alone does not give bf16 weights back.
        module.model.merge_adapter()
        module.model.unmerge_adapter()
        assert any(not torch.equal(p, base[n]) for n, p in module.model.named_parameters() if "lora_" not in n)


@pytest.mark.parametrize("cudnn", [False, True])
def test_attention_kernel_choice_holds_in_forward_recompute_and_decoding(tmp_path, tiny_model, cudnn):
    """cuDNN attention is off (unless asked) wherever attention runs, backward's recompute included."""
    seen = []
    module = WhisperLoRA(
        model=tiny_model,
        language="mr",
        quantization="none",
        speed=Speed(gradient_checkpointing=True, cudnn_attention=cudnn),
        lora=LoRA(r=4),
        validate_before_training=False,
        decoding=Decoding(max_new_tokens=4),
    )
    module.configure_model()
    attention = module.model.get_base_model().model.decoder.layers[0].self_attn
    attention.register_forward_pre_hook(
        lambda *_: seen.append((torch.is_grad_enabled(), torch.backends.cuda.cudnn_sdp_enabled()))
    )
    data = SpeechDataModule(
        path=str(write_common_voice(tmp_path)),
        model=tiny_model,
        language="mr",
        num_workers=0,
        batch_size=2,
        eval_batch_size=2,
    )
    L.Trainer(
        accelerator="cpu",
        max_steps=1,
        limit_val_batches=1,
        val_check_interval=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    ).fit(module, data)
    assert {grad for grad, _ in seen} == {True, False}  # training (forward, recompute) and decoding both ran
    assert len(seen) >= 3 and {flag for _, flag in seen} == {cudnn}
    assert torch.backends.cuda.cudnn_sdp_enabled()  # and the process default is back afterwards


def test_a_missing_local_base_is_an_error_not_a_hub_lookup(tmp_path):
    from lightning_asr.model.whisper import resolve_model

    assert resolve_model("openai/whisper-base") == "openai/whisper-base"
    (tmp_path / "m").mkdir()
    assert resolve_model(str(tmp_path / "m" / ".." / "m")) == str(tmp_path / "m")
    for missing in (str(tmp_path / "gone"), "./gone", "runs/demo/gone", "~/gone-whisper"):
        with pytest.raises(FileNotFoundError, match="model folder not found"):
            resolve_model(missing)


def test_a_retained_set_in_another_language_is_scored_beside_the_target(tmp_path, tiny_model):
    from lightning_asr.data import RetainedSet

    target = write_common_voice(tmp_path / "target", splits=("test",), rows_per_split=3)
    other = write_common_voice(tmp_path / "other", splits=("test",), rows_per_split=2, rates=(16000,))
    module = WhisperLoRA(
        model=tiny_model,
        language="mr",
        quantization="none",
        lora=LoRA(r=4),
        decoding=Decoding("static", max_new_tokens=4),
        speed=Speed(gradient_checkpointing=False),
    )
    data = SpeechDataModule(
        path=str(target),
        model=tiny_model,
        language="mr",
        num_workers=0,
        eval_batch_size=2,
        val_split="test",
        retain=RetainedSet(path=str(other), locale="mr", language="English"),
    )
    seen = []
    transcribe = module.transcribe
    module.transcribe = lambda features, language=None: (
        seen.append((len(features), language)) or transcribe(features, language)
    )
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    result = {k: v for per_loader in trainer.validate(module, data) for k, v in per_loader.items()}
    assert sorted(seen) == [(1, "mr"), (2, "en"), (2, "mr")]  # 3 target clips in Marathi, 2 retained in English
    assert {"val/wer", "val/cer", "val_retain/wer", "val_retain/wer_norm", "val_retain/cer"} <= set(result)
    # The prompt forced for the retained batches is English's, in both decoders.
    from lightning_asr.model.decode import prompt_ids

    assert prompt_ids(module.processor.tokenizer, "en")[1] == module.processor.tokenizer.convert_tokens_to_ids("<|en|>")


def test_spec_augment_masks_training_features_on_the_audio_only_and_never_outside_training(tiny_model, batch):
    from lightning_asr.model.spec_augment import SpecAugment

    seen = []

    def capture(module):
        outside_a_trainer(module)
        encoder = module.model.get_base_model().model.encoder
        return encoder.register_forward_pre_hook(
            lambda _, args, kwargs: seen.append((args[0] if args else kwargs["input_features"]).clone()),
            with_kwargs=True,
        )

    features, frames = batch["input_features"], batch["input_features"].shape[-1]
    audio_frames = (batch["durations"] * 100).ceil().long().tolist()
    assert max(audio_frames) < frames  # the window holds padding, where no time mask may fall
    augment = SpecAugment(time_prob=0.2, time_length=5, feature_prob=0.2, feature_length=4, feature_min_masks=1)
    module = tiny_module(tiny_model, quantization="none", spec_augment=augment)
    capture(module)
    module.train()
    np.random.seed(0)
    module.training_step(dict(batch, input_features=features.clone()), 0)
    masked = seen.pop()
    for clip, length in enumerate(audio_frames):
        time_masked = (masked[clip] == 0).all(dim=0)  # every mel bin zero: a time mask
        feature_masked = (masked[clip] == 0).all(dim=1)  # every frame zero: a frequency mask
        assert time_masked[:length].any() and not time_masked[length:].any()
        assert 4 <= int(feature_masked.sum()) < masked.shape[1]
    # Validation, test and predict run in eval mode: the features reach the encoder untouched.
    module.eval()
    with torch.no_grad():
        module.model(input_features=features.clone(), labels=batch["labels"])
    assert torch.equal(seen.pop(), features)
    # Off by default: training sees the features as they are.
    plain = tiny_module(tiny_model, quantization="none")
    capture(plain)
    plain.train()
    plain.training_step(dict(batch, input_features=features.clone()), 0)
    assert torch.equal(seen.pop(), features)


def test_spec_augment_knobs_are_checked():
    from lightning_asr.model.spec_augment import SpecAugment

    with pytest.raises(ValueError, match="model.spec_augment.time_prob"):
        SpecAugment(time_prob=1.5)


@pytest.mark.parametrize("quantization", ["none", "int8"])
def test_decoder_only_lora_trains_like_the_full_forward_with_a_gradient_free_encoder(
    tmp_path, tiny_model, batch, quantization
):
    lora = LoRA(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj", "proj_out"], encoder=False)
    module = tiny_module(tiny_model, quantization=quantization, lora=lora, speed=Speed(gradient_checkpointing=True))
    adapted = [n for n, _ in module.model.named_modules() if n.endswith("lora_A")]
    assert adapted and not any(".encoder." in n for n in adapted)
    assert any(".decoder." in n for n in adapted) and any("proj_out" in n for n in adapted)
    randomize_lora_b(module, std=0.05)
    module.train()
    # The same loss and LoRA gradients as the model's own forward through the encoder, whose
    # backward only ever fed parameters that do not train.
    full = module.model(input_features=batch["input_features"], labels=batch["labels"]).loss
    full.backward()
    expected = {n: p.grad.clone() for n, p in module.named_parameters() if p.requires_grad}
    module.zero_grad()
    grad_on = []
    hook = module.model.get_base_model().model.encoder.register_forward_hook(
        lambda *_: grad_on.append(torch.is_grad_enabled())
    )
    outside_a_trainer(module)
    loss = module.training_step(batch, 0)
    hook.remove()
    assert grad_on == [False] and loss.item() == pytest.approx(full.item(), rel=1e-5)
    # MFU counts the step's real work: the encoder's forward (2·N per frame), not a backward too (6·N).
    config, shape, tokens = module.model.config, batch["input_features"].shape, batch["labels"].shape[1]
    encoder = train_flops(config, shape, 0)
    assert module.flops_per_batch == train_flops(config, shape, tokens) - encoder + encoder // 3
    loss.backward()
    for name, p in module.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p.grad, expected[name], rtol=1e-4, atol=1e-6)


def test_decoder_only_lora_refuses_to_train_encoder_layers():
    with pytest.raises(ValueError, match="model.lora.modules_to_save: \\['conv1'\\] are encoder layers"):
        LoRA(modules_to_save=["conv1"], encoder=False)


def test_predict_with_language_auto_decodes_each_clip_in_its_detected_language(tiny_model, batch):
    from lightning_asr.model.decode import detect_languages

    module = tiny_module(tiny_model, quantization="none", language="auto")
    randomize_lora_b(module, std=0.05)
    module.eval()
    features = batch["input_features"]
    codes = detect_languages(module.model.get_base_model(), features, module.processor.tokenizer)
    rows = module.predict_step(batch | {"paths": [f"c{i}" for i in range(len(codes))]}, 0)
    assert [r["language"] for r in rows] == codes and all(c in LANGUAGES for c in codes)
    for i, (row, code) in enumerate(zip(rows, codes)):
        assert row["text"] == module.transcribe(features[i : i + 1], code)[0][0]
    with pytest.raises(ValueError, match="model.language: auto only transcribes"):
        module.setup("fit")


def test_language_detection_decodes_like_transcribe_eagerly_and_in_the_base_dtype(tiny_model, batch, monkeypatch):
    """predict's language detection runs the encoder and a decoder step: in the context transcribe decodes in, so
    compiled layers do not compile for it and FP8 layers multiply in the base's dtype (torchao's casts disabled)."""
    from torch._dynamo.utils import counters

    import lightning_asr.model.module as module_py

    module = compiled_fp8_module(tiny_model)
    detect, contexts = module_py.detect_languages, []

    def spy(whisper, *args, **kwargs):
        contexts.append(fp8_casts(whisper))
        return detect(whisper, *args, **kwargs)

    monkeypatch.setattr(module_py, "detect_languages", spy)
    module.predict_step(batch | {"paths": [f"c{i}" for i in range(len(batch["input_features"]))]}, 0)
    assert contexts and all(c == {"disabled"} for c in contexts)
    assert not counters["stats"]["unique_graphs"]  # nothing compiled for decoding
