import csv
import json
import logging
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import soundfile as sf
import torch

from lightning_asr.batch import SAMPLING_RATE, Skipped
from lightning_asr.data import SpeechDataModule
from lightning_asr.data.audio import AudioError
from lightning_asr.data.dataset import collate
from lightning_asr.data.sampling import ShardSampler
from lightning_asr.data.sources import DataConfigError, clip_lengths, common_voice_index
from tests.conftest import SENTENCES, SHARED, requires_shared, tone, write_common_voice


def module(tiny_model, **kwargs) -> SpeechDataModule:
    defaults = dict(model=tiny_model, language="Marathi", num_workers=0, batch_size=2, eval_batch_size=2)
    return SpeechDataModule(**(defaults | kwargs))


def all_items(dm: SpeechDataModule, name: str) -> list:
    return [dm.datasets[name][i] for i in range(len(dm.datasets[name]))]


def test_common_voice_reads_every_rate_and_keeps_quotes(tmp_path, tiny_model):
    root = write_common_voice(tmp_path, rates=(48000, 8000, 22050))
    dm = module(tiny_model, path=str(root), locale="mr")
    dm.setup("fit")
    assert set(dm.datasets) == {"train", "val"}  # fit builds train (train+dev) and validation only
    assert len(dm.datasets["train"]) == 4 and len(dm.datasets["val"]) == 2
    items = all_items(dm, "train")
    assert [round(x["duration"], 2) for x in items] == [1.0, 1.25, 1.5, 1.75]  # 48k, 8k, 22.05k, 48k
    assert all(x["input_features"].shape == (80, 400) for x in items)  # the tiny model's 4 s window
    assert items[2]["text"] == '"No, I don\'t," was the blunt reply.'  # CV TSVs are unquoted


def test_setup_validate_and_test_build_only_their_split(tmp_path, tiny_model):
    root = write_common_voice(tmp_path)
    dm = module(tiny_model, path=str(root))
    dm.setup("validate")
    assert set(dm.datasets) == {"val"}
    dm = module(tiny_model, path=str(root))
    dm.setup("test")
    assert set(dm.datasets) == {"test"}


def test_labels_carry_the_marathi_prompt(tmp_path, tiny_model):
    dm = module(tiny_model, path=str(write_common_voice(tmp_path)))
    dm.setup("validate")
    labels = dm.datasets["val"][0]["labels"]
    assert labels[:4] == [50258, 50320, 50359, 50363] and labels[-1] == 50257


def test_manifest_jsonl_and_csv(tmp_path, tiny_model):
    rows = []
    for i, rate in enumerate((8000, 48000)):
        sf.write(tmp_path / f"a{i}.wav", tone(1.0, rate), rate)
        rows.append({"file": f"a{i}.wav", "transcript": SENTENCES[i]})
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows))
    with open(tmp_path / "test.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["file", "transcript"])
        writer.writeheader()
        writer.writerows(rows)
    dm = module(
        tiny_model, source="manifest", path=str(tmp_path / "train.jsonl"), audio_column="file", text_column="transcript"
    )
    dm.setup("validate")
    assert [x["text"] for x in all_items(dm, "val")] == SENTENCES[:2]
    dm = module(
        tiny_model, source="manifest", path=str(tmp_path / "{split}.csv"), audio_column="file", text_column="transcript"
    )
    dm.setup("test")
    assert [round(x["duration"], 2) for x in all_items(dm, "test")] == [1.0, 1.0]


def test_hugging_face_parquet_dataset_decoded_by_our_decoder(tmp_path, tiny_model):
    import datasets

    payloads = []
    for i, rate in enumerate((8000, 48000)):
        sf.write(tmp_path / f"c{i}.flac", tone(1.5, rate), rate)
        payloads.append({"bytes": (tmp_path / f"c{i}.flac").read_bytes(), "path": f"c{i}.flac"})
    ds = datasets.Dataset.from_dict({"audio": payloads, "sentence": SENTENCES[:2]}).cast_column(
        "audio", datasets.Audio(decode=False)
    )
    (tmp_path / "hub" / "data").mkdir(parents=True)
    ds.to_parquet(tmp_path / "hub" / "data" / "test-00000-of-00001.parquet")
    dm = module(tiny_model, source="hf", path=str(tmp_path / "hub"), text_column="sentence")
    dm.setup("test")
    items = all_items(dm, "test")
    assert [x["text"] for x in items] == SENTENCES[:2]
    assert [round(x["duration"], 2) for x in items] == [1.5, 1.5]
    assert list(clip_lengths(dm.datasets["test"].rows)) == [len(p["bytes"]) for p in payloads]  # for group_by_length
    cells = [{"bytes": None, "path": str(tmp_path / f"c{i}.flac")} for i in range(2)]
    by_path = pa.table({"audio": pa.array(cells, pa.struct([("bytes", pa.binary()), ("path", pa.string())]))})
    assert list(clip_lengths(by_path)) == [len(p["bytes"]) for p in payloads]  # cells that only name a file


def test_filters_drop_and_count_long_clips_long_labels_and_empty_text(tmp_path, tiny_model, caplog):
    locale = tmp_path / "mr"
    (locale / "clips").mkdir(parents=True)
    rows = {
        "ok.wav": (2.0, "मी घरी जातो."),
        "long.wav": (5.0, "मी घरी जातो."),
        "empty.wav": (1.0, "   "),
        "words.wav": (1.0, "मी घरी जातो " * 80),
    }
    lines = ["client_id\tpath\tsentence\tup_votes\tdown_votes\tage\tgender\taccents\tlocale\tsegment"]  # legacy header
    for name, (seconds, text) in rows.items():
        sf.write(locale / "clips" / name, tone(seconds, 16000), 16000)
        lines.append(f"c\t{name}\t{text}\t2\t0\t\t\t\tmr\t")
    (locale / "test.tsv").write_text("\n".join(lines) + "\n")
    dm = module(tiny_model, path=str(tmp_path))  # the tiny model's window is 4 s; 448 label tokens
    with caplog.at_level(logging.WARNING):
        dm.setup("test")
        batch = dm.on_after_batch_transfer(dm.collate(all_items(dm, "test")), 0)
    assert batch["paths"] == [str(locale / "clips" / "ok.wav")]
    assert dict(dm.skipped) == {"empty_text": 1, "too_long": 1, "label_too_long": 1}
    assert "long.wav: too_long (5.0 s > 4 s)" in caplog.text and "empty.wav" in caplog.text
    assert "skipped 3 clip(s)" in dm.summary()


def test_collate_pads_labels_strips_start_token_and_stacks_features():
    items = [
        {
            "input_features": np.ones((80, 300), np.float32),
            "labels": [50258, 1, 2, 50257],
            "duration": 1.2,
            "path": "a",
            "text": "a",
        },
        {
            "input_features": np.zeros((80, 300), np.float32),
            "labels": [50258, 7, 50257],
            "duration": 2.9,
            "path": "b",
            "text": "b",
        },
    ]
    batch = collate(items, decoder_start_token_id=50258)
    assert batch["input_features"].shape == (2, 80, 300) and batch["input_features"].dtype == torch.float32
    assert batch["labels"].tolist() == [[1, 2, 50257], [7, 50257, -100]]
    items[1]["labels"] = [3, 50257]  # not every row starts with it: nothing is stripped
    assert collate(items, 50258)["labels"].tolist() == [[50258, 1, 2, 50257], [3, 50257, -100, -100]]
    assert collate(items, 50258, trim_encoder=True)["input_features"].shape == (2, 80, 300)  # ceil(2.9 s) = 300 frames
    items[1]["duration"] = 1.4
    items[0]["input_features"] = np.arange(80 * 300, dtype=np.float32).reshape(80, 300)
    trimmed = collate(items, 50258, trim_encoder=True)["input_features"]
    assert trimmed.shape == (2, 80, 200) and trimmed.is_contiguous()
    assert torch.equal(trimmed[0], torch.from_numpy(items[0]["input_features"][:, :200])) and not trimmed[1].any()


def test_collate_of_only_skipped_rows_is_an_empty_batch():
    from lightning_asr.batch import Skipped

    batch = collate([Skipped("x.mp3", "missing")], 50258)
    assert batch["paths"] == [] and len(batch["skipped"]) == 1


def test_config_errors_name_the_field(tmp_path, tiny_model):
    root = write_common_voice(tmp_path)
    with pytest.raises(DataConfigError, match="data.path"):
        module(tiny_model, path=str(tmp_path / "nowhere")).setup("validate")
    with pytest.raises(DataConfigError, match=r"split 'valid'.*splits here: \['dev', 'test', 'train'\]"):
        module(tiny_model, path=str(root), val_split="valid").setup("validate")
    (root / "mr" / "test.tsv").write_text("client_id\tpath\ttext\nc\ta.wav\thello\n")
    with pytest.raises(DataConfigError, match=r"test.tsv: missing column\(s\) \['sentence'\]"):
        module(tiny_model, path=str(root)).setup("test")
    with pytest.raises(ValueError, match="data.language: 'Klingon' is not a language"):
        module(tiny_model, path=str(root), language="Klingon").setup("test")


@pytest.mark.parametrize("grouped", [False, True])
def test_resume_position_carries_across_a_change_of_world_size(grouped):
    data = list(range(1536))  # several grouping windows, cut differently for 4 and for 2 ranks
    group = dict(lengths=np.random.default_rng(0).uniform(1, 10, 1536), batch_size=3) if grouped else {}
    whole = ShardSampler(data, 1, 0, shuffle=True, seed=3, pad=True, **group)
    whole.order_for = (0, 4, 3)  # the global order as 4 ranks of 3 cut it
    order = list(whole)
    consumed = set()
    for rank in range(4):  # 4 ranks each ran 2 batches of 3
        consumed |= set(list(ShardSampler(data, 4, rank, shuffle=True, seed=3, pad=True, **group))[:6])
    resumed = set()
    for rank in range(2):  # resumed on 2 ranks from the global count 4 * 2 * 3 = 24
        sampler = ShardSampler(data, 2, rank, shuffle=True, seed=3, pad=True, **group)
        sampler.order_for = (0, 4, 3)  # what SpeechDataModule reads from the checkpoint
        sampler.start = 24 // 2
        resumed |= set(sampler)
    assert consumed == set(order[:24]) and resumed == set(order[24:])


def test_sampler_shards_every_clip_once_and_resumes_mid_epoch():
    data = list(range(11))
    shards = [list(ShardSampler(data, 3, r, shuffle=False, seed=0, pad=False)) for r in range(3)]
    assert sorted(sum(shards, [])) == data  # evaluation: no clip twice, none missing
    padded = [list(ShardSampler(data, 3, r, shuffle=True, seed=0, pad=True)) for r in range(3)]
    assert {len(s) for s in padded} == {4}  # training: equal steps on every rank
    sampler = ShardSampler(data, 1, 0, shuffle=True, seed=7, pad=True)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.start = 5
    assert list(sampler) == full[5:] and list(sampler) == full  # the offset applies once


@pytest.mark.parametrize("world, batch, n", [(4, 8, 1000), (64, 2, 3 * 64 * 64 * 2)])
def test_length_grouping_gives_every_rank_similar_clips_each_step(world, batch, n):
    lengths = np.random.default_rng(0).uniform(1, 10, n)
    data = list(range(n))

    def steps(**group) -> list[np.ndarray]:
        shards = [list(ShardSampler(data, world, r, shuffle=True, seed=1, pad=True, **group)) for r in range(world)]
        assert sorted(sum(shards, [])) == data  # every clip once, whatever the order
        return [
            lengths[sum((s[k * batch : (k + 1) * batch] for s in shards), [])]
            for k in range(-(-len(shards[0]) // batch))
        ]

    plain, grouped = steps(), steps(lengths=lengths, batch_size=batch)
    spread = {
        name: np.mean([r.max() - r.min() for r in runs]) for name, runs in (("plain", plain), ("grouped", grouped))
    }
    assert spread["grouped"] < 0.25 * spread["plain"], spread
    assert grouped[0].max() == lengths.max()  # the longest clip comes first: an OOM shows at once
    sampler = ShardSampler(data, world, 0, shuffle=True, seed=1, pad=True, lengths=lengths, batch_size=batch)
    first = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != first  # still shuffled per epoch


def test_clip_lengths_from_common_voice_durations_else_file_sizes(tmp_path):
    root = write_common_voice(tmp_path, rates=(16000,), splits=("train",), rows_per_split=4)
    rows, _ = common_voice_index(str(root), "mr", "train")
    sizes = clip_lengths(rows, root / "mr" / "clip_durations.tsv")  # no such file: sizes
    assert list(np.argsort(sizes)) == [0, 1, 2, 3]  # clips of 1, 1.25, 1.5, 1.75 s
    names = [Path(p).name for p in rows["audio"].to_pylist()]
    tsv = root / "mr" / "clip_durations.tsv"
    tsv.write_text("clip\tduration[ms]\n" + "".join(f"{n}\t{ms}\n" for n, ms in zip(names, [900, 100, 300, 200])))
    assert list(clip_lengths(rows, tsv)) == [900, 100, 300, 200]
    tsv.write_text("clip\tduration[ms]\n" + f"{names[0]}\t900\n")  # an outdated file: sizes again
    assert list(clip_lengths(rows, tsv)) == list(sizes)


def test_grouped_trimmed_batches_carry_less_padding(tmp_path, whisper30):
    root = write_common_voice(tmp_path, rates=(16000,), splits=("train", "test"), rows_per_split=48)
    header, *lines = (root / "mr" / "test.tsv").read_text().splitlines()  # written shortest first: unsort it
    np.random.default_rng(0).shuffle(lines)
    (root / "mr" / "test.tsv").write_text("\n".join([header, *lines]) + "\n")
    rows, _ = common_voice_index(str(root), "mr", "train+test")
    (root / "mr" / "clip_durations.tsv").write_text(
        "clip\tduration[ms]\n"
        + "".join(f"{Path(p).name}\t{1000 + 250 * int(Path(p).stem[-8:])}\n" for p in rows["audio"].to_pylist())
    )

    def frames(grouped: bool, loader: str) -> tuple[int, list[float]]:
        dm = module(
            whisper30,
            path=str(root),
            train_split="train",
            val_split="test",
            batch_size=4,
            eval_batch_size=4,
            trim_encoder=True,
            group_by_length=grouped,
        )
        dm.setup("fit")
        batches = list(getattr(dm, loader)())
        return sum(b["input_features"].shape[0] * b["input_features"].shape[-1] for b in batches), sum(
            (b["durations"].tolist() for b in batches), []
        )

    for loader, bound in (("train_dataloader", 0.85), ("val_dataloader", 0.95)):
        (plain, plain_clips), (grouped, grouped_clips) = frames(False, loader), frames(True, loader)
        assert sorted(plain_clips) == sorted(grouped_clips)
        assert grouped < bound * plain, (loader, grouped, plain)
    assert grouped_clips == sorted(grouped_clips, reverse=True)  # evaluation: fully sorted, longest first
    dm = module(whisper30, path=str(root), test_split="test", group_by_length=True)
    dm.setup("predict")
    paths = [p for b in dm.predict_dataloader() for p in b["paths"]]
    assert paths == dm.datasets["predict"].rows["audio"].to_pylist()  # transcripts keep the input order


@requires_shared
def test_broken_release_skips_exactly_the_broken_rows(whisper30, caplog):
    root = SHARED / "data" / "cv-broken"
    with open(root / "mr" / "DEFECTS.tsv") as f:
        defects = list(csv.DictReader(f, delimiter="\t"))
    dm = SpeechDataModule(
        model=whisper30, path=str(root), train_split="train+dev+test", val_split="dev", batch_size=8, num_workers=1
    )
    with caplog.at_level(logging.WARNING):
        dm.setup("fit")
        # Through a real DataLoader: decoding happens in a worker process, counting in this one.
        batches = [dm.on_after_batch_transfer(b, 0) for b in dm._loader("train", 8, train=False)]
    kept = sorted(Path(p).name for b in batches for p in b["paths"])
    # The truncated_tail clip decodes cleanly to 2.5 s of its 6.3 s ("keep-with-warning or skip"): we keep it.
    keep = [d["path"] for d in defects if d["expected"].startswith("keep") or d["defect"] == "truncated_tail"]
    assert kept == sorted(keep)
    assert dict(dm.skipped) == {
        "empty_text": 2,
        "missing": 2,
        "empty": 2,
        "undecodable": 2,
        "too_long": 1,
        "label_too_long": 1,
    }
    for d in defects:
        if d["expected"].startswith("skip"):
            assert d["path"] in caplog.text, f"{d['defect']} row not named in a warning"
    assert "skipped 10 clip(s)" in dm.summary()
    assert batches[0]["input_features"].shape[1:] == (80, 3000)


@requires_shared
def test_strict_raises_on_the_first_bad_clip_naming_it(whisper30):
    dm = SpeechDataModule(
        model=whisper30, path=str(SHARED / "data" / "cv-broken"), val_split="dev", strict=True, num_workers=0
    )
    dm.setup("validate")
    with pytest.raises(AudioError, match=r"common_voice_mr_\d+\.mp3: (missing|empty)"):
        all_items(dm, "val")


@requires_shared
def test_legacy_header_release(tiny_model):
    dm = SpeechDataModule(model=tiny_model, path=str(SHARED / "data" / "cv-legacy"), num_workers=0)
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 16 and len(dm.datasets["val"]) == 4


def test_resumed_grouped_epoch_keeps_the_order_it_was_cut_for(tmp_path, tiny_model):
    root = write_common_voice(tmp_path, rates=(16000,), splits=("train", "test"), rows_per_split=24)
    dm = module(tiny_model, path=str(root), train_split="train", val_split="test", batch_size=3, group_by_length=True)
    dm.load_state_dict({"epoch": 0, "samples": 12, "world": 4, "batch_size": 3})  # as a 4-GPU run saved it
    dm.setup("fit")
    sampler = dm.train_dataloader().sampler
    assert sampler.order_for == (0, 4, 3) and sampler.start == 12
    cut_for_four = ShardSampler(
        list(range(24)), 1, 0, shuffle=True, seed=dm.hparams.seed, pad=True, lengths=dm._lengths("train"), batch_size=3
    )
    cut_for_four.order_for = (0, 4, 3)
    assert list(sampler) == list(cut_for_four)[12:]


def test_a_checkpoint_saved_after_an_epochs_end_resumes_the_next_epoch_from_its_first_clip(tmp_path, tiny_model):
    """After an epoch's end hooks (SIGTERM there, or the end of training) Lightning's epoch counter is already the
    next epoch's while its batch counter is still the finished epoch's: the position is the next epoch's start.
    Before, the resumed epoch skipped as many clips as the finished one had (all of them)."""
    from types import SimpleNamespace as NS

    root = write_common_voice(tmp_path, rates=(16000,), splits=("train", "test"), rows_per_split=16)
    dm = module(tiny_model, path=str(root), train_split="train", val_split="test", batch_size=4)

    def saved(started: int, completed: int, batches: int) -> dict:
        dm.trainer = NS(
            world_size=1,
            current_epoch=completed,
            fit_loop=NS(
                epoch_progress=NS(current=NS(started=started, completed=completed)),
                epoch_loop=NS(batch_progress=NS(current=NS(processed=batches))),
            ),
        )
        return dm.state_dict()

    assert saved(started=4, completed=3, batches=2)["samples"] == 8  # mid-epoch 3: two batches done
    after_end = saved(started=3, completed=3, batches=4)  # epoch 2 ended, epoch 3 not started
    assert after_end["epoch"] == 3 and after_end["samples"] == 0
    dm.trainer = None
    dm.load_state_dict(after_end)
    dm.setup("fit")
    dm.trainer = NS(world_size=1, global_rank=0, current_epoch=3)
    assert len(list(dm.train_dataloader().sampler)) == 16


@pytest.mark.parametrize("seconds", [0.0, 0.3, 2.3, 5.0, 9.99, 29.5, 30.0])
def test_log_mel_over_the_audio_alone_equals_the_extractors(seconds):
    from transformers import WhisperFeatureExtractor

    from lightning_asr.data.audio import log_mel

    extractor = WhisperFeatureExtractor()  # Whisper's 30 s, 80-bin extractor
    rng = np.random.default_rng(int(seconds * 100))
    for waveform in (0.1 * rng.standard_normal(int(seconds * 16000)), np.zeros(int(seconds * 16000))):
        waveform = waveform.astype(np.float32)
        expected = extractor(waveform, sampling_rate=16000, return_tensors="np").input_features[0]
        np.testing.assert_allclose(log_mel(extractor, waveform), expected, rtol=0, atol=1e-6)


def test_a_truncated_mp3_is_skipped_for_training_and_transcribed_when_asked(tmp_path, tiny_model):
    locale = tmp_path / "mr"
    (locale / "clips").mkdir(parents=True)
    sf.write(locale / "clips" / "whole.mp3", tone(3.0, 48000), 48000)
    data = (locale / "clips" / "whole.mp3").read_bytes()
    (locale / "clips" / "cut.mp3").write_bytes(data[: len(data) // 3])
    lines = ["client_id\tpath\tsentence", "c\twhole.mp3\tमी घरी जातो.", "c\tcut.mp3\tमी घरी जातो."]
    (locale / "test.tsv").write_text("\n".join(lines) + "\n")
    dm = module(tiny_model, path=str(tmp_path))
    dm.setup("test")
    items = all_items(dm, "test")
    assert isinstance(items[1], Skipped) and items[1].reason == "truncated" and "header states" in items[1].detail
    assert not isinstance(items[0], Skipped)
    dm = module(tiny_model, path=str(tmp_path), text_column=None)
    dm.setup("predict")
    assert not any(isinstance(x, Skipped) for x in all_items(dm, "predict"))


def test_an_unreadable_cache_entry_is_decoded_again_and_replaced(tmp_path, tiny_model, caplog):
    root = write_common_voice(tmp_path / "cv", rates=(16000,), splits=("test",), rows_per_split=1)
    dm = module(tiny_model, path=str(root), cache_dir=str(tmp_path / "cache"))
    dm.setup("test")
    first = dm.datasets["test"][0]["input_features"]
    (entry,) = (tmp_path / "cache").glob("*.npy")
    entry.write_bytes(entry.read_bytes()[:100])  # cut mid-write by a full disk, say
    with caplog.at_level(logging.WARNING):
        again = dm.datasets["test"][0]["input_features"]
    assert f"{entry} (cache of" in caplog.text and "decoding the clip again" in caplog.text
    np.testing.assert_allclose(again, first, atol=1e-3)
    np.load(entry)  # replaced by a whole one


def test_manifest_lines_that_cannot_be_read_or_lack_a_field_are_named(tmp_path, tiny_model, caplog):
    sf.write(tmp_path / "a.wav", tone(1.0, 16000), 16000)
    lines = [
        '{"audio": "a.wav", "text": "मी घरी जातो."}',
        '{"audio": "a.wav", "text": "one more',
        "[1, 2]",
        '{"audio": "b.wav"}',
        '{"text": "no audio"}',
        '{"audio": "a.wav", "text": "ती शाळेत गेली."}',
    ]
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n")
    dm = module(tiny_model, source="manifest", path=str(tmp_path / "m.jsonl"), val_split="x")
    with caplog.at_level(logging.WARNING):
        dm.setup("validate")
    assert len(dm.datasets["val"]) == 1  # the first row; its repeat, the last row, is a duplicate
    assert dict(dm.skipped) == {"bad_json": 2, "no_text": 1, "no_audio": 1, "duplicate": 1}
    for where in (
        "m.jsonl:2: bad_json",
        "m.jsonl:3: bad_json",
        "b.wav: no_text (m.jsonl row 2 has no 'text')",
        "row 3: no_audio",
    ):
        assert where in caplog.text


def test_bad_sizes_are_errors_naming_the_field(tiny_model):
    for field, value in (("batch_size", 0), ("eval_batch_size", -1), ("num_workers", -1), ("max_samples", 0)):
        with pytest.raises(DataConfigError, match=f"data.{field}: must be at least"):
            module(tiny_model, **{field: value})
    with pytest.raises(DataConfigError, match="data.max_duration_s: must exceed"):
        module(tiny_model, max_duration_s=0)


def test_skips_are_counted_once_per_clip_across_validations(tmp_path, tiny_model):
    root = write_common_voice(tmp_path, splits=("test",), rows_per_split=3)
    (root / "mr" / "clips" / "common_voice_mr_00000001.wav").unlink()
    dm = module(tiny_model, path=str(root))
    dm.setup("test")
    for _ in range(3):  # three validations of the same split
        dm.on_after_batch_transfer(dm.collate(all_items(dm, "test")), 0)
    assert dict(dm.skipped) == {"missing": 1} and "skipped 1 clip(s)" in dm.summary()


def test_manifest_spans_decode_only_their_part_of_the_recording(tmp_path, tiny_model, monkeypatch):
    import soundfile as sf

    rate = 8000
    parts = [tone(2.0, rate, seed=0), tone(3.0, rate, seed=5), tone(1.5, rate, seed=10)]  # 220, 420, 620 Hz
    sf.write(tmp_path / "talk.wav", np.concatenate(parts), rate)
    rows = [
        {"audio": "talk.wav", "text": "एक", "offset": 0.0, "duration": 2.0},
        {"audio": "talk.wav", "text": "दोन", "offset": 2.0, "duration": 3.0},
        {"audio": "talk.wav", "text": "तीन", "offset": 5.0, "duration": 1.5},
        {"audio": "talk.wav", "text": "चार", "offset": 6.0, "duration": 4.0},  # runs past the end
        {"audio": "talk.wav", "text": "पाच", "offset": "soon", "duration": 1.0},
    ]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    monkeypatch.setattr("soundfile.read", lambda *a, **k: pytest.fail("a span decoded the whole file"))
    dm = SpeechDataModule(
        source="manifest",
        path=str(tmp_path / "m.jsonl"),
        model=tiny_model,
        language="mr",
        num_workers=0,
        train_split="train",
        val_split="train",
    )
    dm.setup("fit")
    items = [dm.datasets["train"][i] for i in range(len(dm.datasets["train"]))]
    good = [x for x in items if isinstance(x, dict)]
    assert [x["duration"] for x in good] == pytest.approx([2.0, 3.0, 1.5], abs=1e-3)
    assert [x["path"] for x in good] == [
        f"{tmp_path}/talk.wav#t=0,2",
        f"{tmp_path}/talk.wav#t=2,5",
        f"{tmp_path}/talk.wav#t=5,6.5",
    ]
    assert [x["text"] for x in good] == ["एक", "दोन", "तीन"]
    from lightning_asr.data.audio import read_clip

    for cell, hz in zip(dm.datasets["train"].rows["audio"].to_pylist(), (220, 420, 620)):
        wave = read_clip(cell, "span")
        peak = np.fft.rfftfreq(len(wave), 1 / SAMPLING_RATE)[np.abs(np.fft.rfft(wave)).argmax()]
        assert peak == pytest.approx(hz, abs=2)
    assert [x.reason for x in items if not isinstance(x, dict)] == ["span_out_of_range"]
    assert dm.skipped["bad_span"] == 1
    assert list(dm._lengths("train")) == [2.0, 3.0, 1.5, 4.0]  # group_by_length uses the stated durations


def test_timestamp_share_labels_training_clips_with_their_own_start_and_end(tmp_path, tiny_model):
    """``data.timestamp_share``: the chosen training clips learn ``<|0.00|> text <|end|>`` (Whisper's
    timestamped form), the rest and every validation clip keep ``<|notimestamps|>``; per clip and epoch, seeded."""
    from lightning_asr.data import SpeechDataModule
    from lightning_asr.data.sources import DataConfigError

    root = write_common_voice(tmp_path / "cv", rows_per_split=8)

    def module(share: float) -> SpeechDataModule:
        dm = SpeechDataModule(
            path=str(root),
            model=tiny_model,
            language="mr",
            train_split="train",
            val_split="train",
            num_workers=0,
            timestamp_share=share,
            seed=3,
        )
        dm.setup("fit")
        return dm

    every, half = module(1.0), module(0.5)
    tokenizer = every.processor.tokenizer
    no_ts, first = tokenizer.convert_tokens_to_ids("<|notimestamps|>"), tokenizer.convert_tokens_to_ids("<|0.00|>")
    for i in range(8):
        plain, timed = every.datasets["val"][i]["labels"], every.datasets["train"][(i, 0)]["labels"]
        at = plain.index(no_ts)
        end = first + round(every.datasets["train"][(i, 0)]["duration"] / 0.02)
        assert timed == [*plain[:at], first, *plain[at + 1 : -1], end, plain[-1]]
        assert tokenizer.decode(timed[at + 1 : -2]) == tokenizer.decode(plain[at + 1 : -1])  # the same words
    timed = [no_ts not in half.datasets["train"][(i, e)]["labels"] for i in range(8) for e in range(4)]
    assert 0 < sum(timed) < len(timed)  # a share, drawn per clip and epoch
    assert timed == [no_ts not in module(0.5).datasets["train"][(i, e)]["labels"] for i in range(8) for e in range(4)]
    assert isinstance(next(iter(half.train_dataloader().sampler)), tuple)  # the sampler hands each clip its epoch
    with pytest.raises(DataConfigError, match="data.timestamp_share"):
        SpeechDataModule(path=str(root), model=tiny_model, timestamp_share=1.5)


def test_pack_share_joins_training_clips_into_windows_timed_by_their_boundaries(tmp_path, tiny_model):
    """``data.pack_share``: a chosen training clip opens a window of 2-4 clips, 0.3-1.0 s apart, labelled with
    every clip's start and end (Whisper's timestamped form); validation never packs; per clip and epoch, seeded;
    a partner that fails to load is left out of the window, not fatal to it."""
    root = write_common_voice(tmp_path / "cv", rows_per_split=8)  # clip n lasts 1.0 + 0.25 n s: its length names it
    (root / "mr/clips/common_voice_mr_00000005.wav").unlink()

    def module(share: float, clips: tuple[int, int] = (2, 4), longest: float | None = None) -> SpeechDataModule:
        dm = SpeechDataModule(
            path=str(root),
            model=tiny_model,
            language="mr",
            train_split="train",
            val_split="train",
            num_workers=0,
            pack_share=share,
            pack_clips=clips,
            seed=3,
            max_duration_s=longest,
        )
        dm.setup("fit")
        return dm

    every = module(1.0)
    train, val = every.datasets["train"], every.datasets["val"]
    tokenizer = every.processor.tokenizer
    no_ts, first = tokenizer.convert_tokens_to_ids("<|notimestamps|>"), tokenizer.convert_tokens_to_ids("<|0.00|>")
    single = {i: val[i] for i in range(8) if i != 5}
    assert isinstance(val[5], Skipped) and isinstance(train[(5, 0)], Skipped)
    assert all(no_ts in x["labels"] for x in single.values())  # validation never packs
    words = {x["duration"]: x["labels"][x["labels"].index(no_ts) + 1 : -1] for x in single.values()}
    at = single[0]["labels"].index(no_ts)
    sizes = []
    for i, alone in single.items():
        for epoch in range(3):
            item = train[(i, epoch)]
            assert item["labels"][:at] == alone["labels"][:at] and item["labels"][-1] == alone["labels"][-1]
            body = item["labels"][at:-1]
            marks = [k for k, token in enumerate(body) if token >= first]
            assert body[0] == first and len(marks) % 2 == 0  # opens at <|0.00|>, every segment closed
            times = [
                ((body[a] - first) * 0.02, (body[b] - first) * 0.02, body[a + 1 : b])
                for a, b in zip(marks[::2], marks[1::2])
            ]
            assert times[0][1] == pytest.approx(alone["duration"], abs=0.011)  # the item's own clip first
            for k, (start, end, segment) in enumerate(times):
                length = min(words, key=lambda d: abs(d - (end - start)))
                assert (
                    abs(length - (end - start)) < 0.03 and words[length] == segment
                )  # one clip's words, for its length
                assert length != pytest.approx(2.25, abs=0.01)  # the missing clip is in no window
                if k + 1 < len(times):
                    assert 0.3 - 0.03 <= times[k + 1][0] - end <= 1.0 + 0.03
            assert item["duration"] == pytest.approx(times[-1][1], abs=0.011) and item["duration"] <= 30
            assert item["text"].startswith(alone["text"])
            sizes.append(len(times))
            assert item["clips"] == len(times)
    assert max(sizes) > 1 and set(sizes) <= {1, 2, 3, 4}
    batch = every.collate([train[(i, 0)] for i in single], train=True)
    assert batch["clips"] == sum(train[(i, 0)]["clips"] for i in single) > len(batch["paths"])  # what throughput counts
    again = module(1.0).datasets["train"]
    assert all(train[(i, e)]["labels"] == again[(i, e)]["labels"] for i in single for e in range(3))  # seeded
    assert any(train[(i, 0)]["labels"] != train[(i, 1)]["labels"] for i in single)  # drawn anew each epoch
    half = module(0.5).datasets["train"]
    packed = [no_ts not in half[(i, e)]["labels"] for i in single for e in range(4)]
    assert 0 < sum(packed) < len(packed)

    # data.pack_clips: windows drawn to hold 3-3 clips hold 3 where they fit (clips last 1-2.75 s: in 12 s windows
    # all do, unless a partner is the missing clip or the item itself); the default [2, 4] reaches past 3.
    def counts(clips: tuple[int, int]) -> list[int]:
        packed = module(1.0, clips, longest=12.0).datasets["train"]
        return [packed[(i, e)]["clips"] for i in single for e in range(4)]

    two, three = counts((2, 2)), counts((3, 3))
    assert set(two) == {1, 2} and set(three) == {1, 2, 3} and sum(three) > sum(two) + len(three) / 4
    default = counts((2, 4))
    assert set(default) <= {1, 2, 3, 4} and max(default) == 4
    with pytest.raises(DataConfigError, match="data.pack_share"):
        SpeechDataModule(path=str(root), model=tiny_model, pack_share=-0.1)
    for wrong in [(1, 4), (4, 2)]:
        with pytest.raises(DataConfigError, match=r"data.pack_clips: .*got \[" + str(wrong[0])):
            SpeechDataModule(path=str(root), model=tiny_model, pack_share=1.0, pack_clips=wrong)


def test_pack_leaves_out_clips_past_the_window_or_the_token_budget(tiny_model):
    from transformers import WhisperTokenizer

    from lightning_asr.data.windows import pack

    tokenizer = WhisperTokenizer.from_pretrained(tiny_model, language="mr", task="transcribe")
    clips = [
        (np.full(12 * SAMPLING_RATE, k + 1, np.float32), tokenizer(text).input_ids, text)
        for k, text in enumerate(["एक", "दोन", "तीन"])
    ]
    audio, labels, text, count = pack(clips, np.array([0.5, 0.5, 0.5]), tokenizer, 30.0, 448)
    assert (
        text == "एक दोन" and count == 2 and len(audio) == int(24.5 * SAMPLING_RATE)
    )  # a third 12 s clip would end at 37 s
    assert (audio[: 12 * SAMPLING_RATE] == 1).all() and not audio[12 * SAMPLING_RATE : int(12.5 * SAMPLING_RATE)].any()
    assert (audio[int(12.5 * SAMPLING_RATE) :] == 2).all()
    first = tokenizer.convert_tokens_to_ids("<|0.00|>")
    assert [t - first for t in labels if t >= first] == [0, 600, 625, 1225]  # 0.00, 12.00, 12.50, 24.50 s
    _, alone, text, count = pack(clips, np.array([0.5, 0.5, 0.5]), tokenizer, 30.0, len(clips[0][1]) + 2)
    assert (
        text == "एक" and count == 1 and [t - first for t in alone if t >= first] == [0, 600]
    )  # the second's words would not fit


def test_full_window_share_keeps_some_trimmed_training_batches_at_the_whole_window(tmp_path, tiny_model):
    from lightning_asr.data import SpeechDataModule

    root = write_common_voice(tmp_path / "cv", rows_per_split=12)
    dm = SpeechDataModule(
        path=str(root),
        model=tiny_model,
        language="mr",
        train_split="train",
        val_split="train",
        num_workers=0,
        trim_encoder=True,
        full_window_share=0.5,
    )
    dm.setup("fit")
    items = [dm.datasets["train"][i] for i in range(12)]
    window = items[0]["input_features"].shape[-1]
    batches = [items[i : i + 2] for i in range(0, 12, 2)] + [items[i : i + 3] for i in range(0, 12, 3)]
    trimmed = [min(window, 100 * math.ceil(max(x["duration"] for x in b))) for b in batches]
    train = [dm.collate(b, train=True)["input_features"].shape[-1] for b in batches]
    assert [dm.collate(b)["input_features"].shape[-1] for b in batches] == trimmed  # evaluation always trims
    kept = [f == window != t for f, t in zip(train, trimmed)]
    assert any(kept) and not all(kept) and all(f in (t, window) for f, t in zip(train, trimmed))  # a share of batches
    assert train == [dm.collate(b, train=True)["input_features"].shape[-1] for b in batches]  # drawn from the batch
