"""Several weighted sources (``data.sources``): draws in proportion, every row before any twice, the same order after
a resume, each source's own language token and its own validation scores."""

from collections import Counter

import lightning as L
import pytest

from lightning_asr.data import SpeechDataModule
from lightning_asr.data.mixture import DataSource, Mixture
from lightning_asr.data.sources import DataConfigError
from lightning_asr.model.knobs import Decoding, Speed
from lightning_asr.model.lora import LoRA
from lightning_asr.model.module import WhisperLoRA
from tests.conftest import REPO, demo_args, run, write_common_voice


def test_an_epoch_draws_each_source_by_weight_and_every_row_before_any_twice():
    mixture = Mixture([10, 30], [3.0, 1.0])  # 40 draws an epoch: 30 of the 10-row source, 10 of the 30-row one
    assert len(mixture) == 40 and mixture.draws.tolist() == [30, 10]
    epochs = [mixture.order(seed=7, epoch=e) for e in range(3)]
    assert epochs[1] == mixture.order(seed=7, epoch=1) and epochs[0] != epochs[1]
    for order in epochs:
        assert Counter(i < 10 for i in order) == {True: 30, False: 10}
        small = Counter(i for i in order if i < 10)
        assert max(small.values()) - min(small.values()) <= 1  # 3 passes of 10 rows, none favoured
    # The 30-row source, drawn 10 an epoch, shows all 30 rows over 3 epochs, each once.
    assert sorted(i for order in epochs for i in order if i >= 10) == list(range(10, 40))


def test_the_sources_are_checked_at_parse_time():
    with pytest.raises(DataConfigError, match=r"data.sources\[1\].name: 'a' is used twice"):
        SpeechDataModule(sources=[DataSource("a", "x"), DataSource("a", "y")])
    with pytest.raises(DataConfigError, match=r"data.sources\[0\].name: 'retain' is data.retain's"):
        SpeechDataModule(sources=[DataSource("retain", "x")])
    with pytest.raises(DataConfigError, match="every weight is 0"):
        SpeechDataModule(sources=[DataSource("a", "x", weight=0)])
    with pytest.raises(DataConfigError, match=r"data.sources\[0\].weight \(a\): must be >= 0"):
        SpeechDataModule(sources=[DataSource("a", "x", weight=-1)])


@pytest.fixture
def two(tmp_path, tiny_model):
    write_common_voice(tmp_path / "a", rows_per_split=6)
    write_common_voice(tmp_path / "b", rows_per_split=2)
    return SpeechDataModule(
        model=tiny_model,
        language="mr",
        num_workers=0,
        batch_size=2,
        eval_batch_size=2,
        sources=[
            DataSource("a", str(tmp_path / "a"), weight=1.0),
            DataSource("b", str(tmp_path / "b"), weight=1.0, language="en", val_split="test"),
        ],
    )


def test_each_source_trains_toward_its_own_language_token_and_resumes_where_it_stopped(two):
    two.setup("fit")
    tokenizer = two.processor.tokenizer
    assert set(two.datasets) == {"train", "val/a", "val/b"} and len(two.datasets["train"]) == 12 + 4
    languages = Counter(tokenizer.convert_ids_to_tokens(two.datasets["train"][i]["labels"][1]) for i in range(16))
    assert languages == {"<|mr|>": 12, "<|en|>": 4}
    loader = two.train_dataloader()
    assert len(loader.sampler) == 16  # an epoch is the rows of both, drawn half and half
    drawn = list(loader.sampler)
    assert sum(i >= 12 for i in drawn) == 8  # the 4-row source, weight 1 of 2, drawn 8 times: twice round
    two.load_state_dict({"epoch": 0, "samples": 6, "world": 1, "batch_size": 2})
    assert list(two.train_dataloader().sampler) == drawn[6:]


def test_validation_scores_each_source_and_pools_those_in_the_target_language(two, tiny_model):
    module = WhisperLoRA(
        model=tiny_model,
        language="mr",
        quantization="none",
        lora=LoRA(r=4),
        decoding=Decoding("static", max_new_tokens=4),
        speed=Speed(gradient_checkpointing=False),
    )
    seen, transcribe = [], module.transcribe
    module.transcribe = lambda features, language=None: seen.append(language) or transcribe(features, language)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    result = {k: v for per_loader in trainer.validate(module, two) for k, v in per_loader.items()}
    assert {"val/wer", "val/a/wer", "val/a/cer", "val/b/wer", "val/b/wer_norm"} <= set(result)
    assert result["val/wer"] == pytest.approx(result["val/a/wer"])  # b is English: scored, not pooled
    assert Counter(seen) == {"mr": 1, "en": 1}  # a's dev (2 rows) in Marathi, b's test (2 rows) in English


def test_fit_trains_on_weighted_sources_as_the_readme_shows(tmp_path):
    """README "Data": two corpora in one YAML list, the second in English at a quarter of the draws."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    write_common_voice(tmp_path / "en")
    config = tmp_path / "sources.yaml"
    config.write_text(
        "data:\n"
        "  sources:\n"
        f"    - {{name: mr, path: {REPO}/demo/common_voice, locale: mr, weight: 3}}\n"
        f"    - {{name: en, path: {tmp_path}/en, locale: mr, language: English, weight: 1}}\n"
    )
    extra = ["--config", str(config), "--data.max_samples=4", "--trainer.max_steps=2", "--trainer.val_check_interval=2"]
    run(demo_args(tmp_path, *extra, "--model.decoding.max_new_tokens=4"), REPO)
    tags = set(EventAccumulator(str(tmp_path / "runs/demo/version_0")).Reload().Tags()["scalars"])
    assert {"val/wer", "val/mr/wer", "val/en/wer", "val/en/cer"} <= tags


def test_under_ddp_each_rank_takes_its_share_of_the_mixtures_draws(two):
    """Two ranks: their shards interleave to the one global order, so a resume under any world size continues it."""
    from lightning_asr.data.sampling import ShardSampler

    two.setup("fit")
    train = two.datasets["train"]
    mixture = Mixture([len(p) for p in train.parts], [1.0, 1.0])
    ranks = [ShardSampler(train, 2, r, shuffle=True, seed=42, pad=True, mixture=mixture) for r in (0, 1)]
    shards = [list(s) for s in ranks]
    assert len(shards[0]) == len(shards[1]) == 8
    assert [i for pair in zip(*shards) for i in pair] == mixture.order(42, 0)
