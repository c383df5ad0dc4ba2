"""Audio without speech (``data.no_speech``): generated clips at their levels, training items swapped for them toward no
words, empty transcripts trained on when asked, and the share of non-speech clips the model writes words on."""

import numpy as np
import pytest

from lightning_asr.data import SpeechDataModule
from lightning_asr.data.nonspeech import KINDS, NonSpeechSet, NoSpeech, non_speech
from lightning_asr.data.sources import DataConfigError
from tests.conftest import REPO, demo_args, run, write_common_voice


@pytest.mark.parametrize("kind", KINDS)
def test_generated_clips_are_quiet_or_loud_as_their_kind_and_the_same_for_the_same_seed(kind):
    clip = non_speech(kind, 3.0, np.random.default_rng(0))
    assert clip.dtype == np.float32 and len(clip) == 48_000
    assert np.array_equal(clip, non_speech(kind, 3.0, np.random.default_rng(0)))
    dbfs = 20 * np.log10(np.sqrt(np.mean(clip.astype(np.float64) ** 2)))
    low, high = {"silence": (-71, -69), "noise": (-41, -14), "music": (-31, -11)}[kind]
    assert low <= dbfs <= high


def test_the_knobs_are_checked_at_parse_time():
    with pytest.raises(DataConfigError, match="data.no_speech.share: a share, from 0 to 1; got 1.5"):
        SpeechDataModule(no_speech={"share": 1.5})


def test_a_share_of_training_items_becomes_non_speech_labelled_with_no_words(tmp_path, tiny_model):
    write_common_voice(tmp_path, rows_per_split=8)
    dm = SpeechDataModule(
        path=str(tmp_path),
        model=tiny_model,
        language="mr",
        num_workers=0,
        no_speech=NoSpeech(share=0.5),
        seed=3,
        val_split="train",
    )
    dm.setup("fit")
    tokenizer = dm.processor.tokenizer
    prompt = tokenizer("").input_ids  # <|sot|><|mr|><|transcribe|><|notimestamps|><|eot|>
    items = [dm.datasets["train"][(i, e)] for i in range(12) for e in range(2)]
    swapped = [x for x in items if x["text"] == ""]
    assert 5 <= len(swapped) <= 19 and all(x["labels"] == prompt for x in swapped)
    assert all(x["labels"] != prompt and x["text"] for x in items if x["text"])
    assert [x["text"] for x in items] == [dm.datasets["train"][(i, e)]["text"] for i in range(12) for e in range(2)]
    val = [dm.datasets["val"][i] for i in range(8)]  # the same clips, validated: never swapped
    assert all(x["text"] and x["labels"] != prompt for x in val)


def test_empty_transcripts_train_toward_no_words_only_when_asked(tmp_path, tiny_model):
    root = write_common_voice(tmp_path, rows_per_split=3)
    train = root / "mr" / "train.tsv"
    lines = train.read_text().splitlines()
    cells = lines[1].split("\t")
    cells[3] = ""
    train.write_text("\n".join([lines[0], "\t".join(cells), *lines[2:]]) + "\n")
    kept = SpeechDataModule(
        path=str(root), model=tiny_model, num_workers=0, train_split="train", no_speech=NoSpeech(train_empty=True)
    )
    dropped = SpeechDataModule(path=str(root), model=tiny_model, num_workers=0, train_split="train")
    for dm in (kept, dropped):
        dm.setup("fit")
    assert len(kept.datasets["train"]) == 3 and len(dropped.datasets["train"]) == 2
    assert dropped.skipped == {"empty_text": 1}
    assert kept.datasets["train"][0]["labels"] == kept.processor.tokenizer("").input_ids


def test_the_non_speech_set_is_scored_at_validation_as_the_readme_shows(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run(
        demo_args(
            tmp_path,
            "--data.no_speech.share=0.1",
            "--data.no_speech.eval_clips=3",
            "--data.max_samples=4",
            "--trainer.max_steps=2",
            "--trainer.val_check_interval=2",
            "--model.decoding.max_new_tokens=4",
        ),
        REPO,
    )
    acc = EventAccumulator(str(tmp_path / "runs/demo/version_0")).Reload()
    assert {"val/wer", "val_nospeech/words", "val_nospeech/degenerate"} <= set(acc.Tags()["scalars"])
    words = [e.value for e in acc.Scalars("val_nospeech/words")]
    assert all(0.0 <= w <= 1.0 for w in words) and all(w * 3 == round(w * 3) for w in words)  # a share of 3 clips


def test_the_non_speech_set_is_fixed_by_its_seed(tiny_model):
    from lightning_asr.model.whisper import load_processor

    processor = load_processor(tiny_model, "mr", "transcribe")
    a, b = NonSpeechSet(4, processor, "mr", seed=1), NonSpeechSet(4, processor, "mr", seed=1)
    assert [x["path"] for x in (a[i] for i in range(4))] == [f"nonspeech/{k}-{i}" for i, k in enumerate(KINDS * 2)][:4]
    assert np.array_equal(a[2]["input_features"], b[2]["input_features"]) and a[2]["text"] == ""


def test_the_non_speech_set_validates_beside_length_grouped_clips(tmp_path, tiny_model):
    """A generated set has no corpus to take lengths from: with ``group_by_length`` it is read in order."""
    write_common_voice(tmp_path, rows_per_split=2)
    dm = SpeechDataModule(
        path=str(tmp_path), model=tiny_model, num_workers=0, group_by_length=True, no_speech=NoSpeech(eval_clips=3)
    )
    dm.setup("fit")
    val, nospeech = dm.val_dataloader()
    assert list(nospeech.sampler) == [0, 1, 2] and len(list(val.sampler)) == 2
