"""Parquet shards (``data.source: shards``) and ``lightning-asr shard``: any corpus written as shards reads back as the
same clips and words, opens by reading transcripts only, is the hub's own layout, and resumes exactly."""

import numpy as np
import pyarrow.parquet as pq
import pytest

from lightning_asr.data import SpeechDataModule, sources
from lightning_asr.data.shards import INDEX, ROW_GROUP, shard_files
from lightning_asr.data.sources import DataConfigError
from tests.conftest import REPO, demo_args, run


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """The demo release's train split written by the command as a user types it, 3 clips a file."""
    tmp_path = tmp_path_factory.mktemp("shards")
    out = run(
        [
            "shard",
            str(tmp_path / "shards"),
            f"--path={REPO}/demo/common_voice",
            "--locale=mr",
            "--split=train",
            "--rows_per_shard=3",
        ],
        REPO,
    )
    return tmp_path / "shards", out


def test_a_release_written_as_shards_reads_back_as_the_same_clips_and_words(written, tiny_model):
    folder, out = written
    release = SpeechDataModule(
        path=f"{REPO}/demo/common_voice", model=tiny_model, train_split="train", val_split="train", num_workers=0
    )
    shards = SpeechDataModule(
        source="shards", path=str(folder), model=tiny_model, train_split="train", val_split="train", num_workers=0
    )
    for dm in (release, shards):
        dm.setup("fit")
    a, b = release.datasets["train"], shards.datasets["train"]
    files = shard_files(str(folder), "train")
    assert len(files) == -(-len(a) // 3) and f"shard: {len(a)} clips" in out.stdout
    assert [f.name for f in files][0] == f"train-00000-of-{len(files):05d}.parquet"
    assert len(a) == len(b) and a.rows["text"].to_pylist() == b.rows["text"].to_pylist()
    for i in (0, len(a) - 1):
        x, y = a[i], b[i]
        assert np.array_equal(x["input_features"], y["input_features"]) and x["labels"] == y["labels"]
    assert b[1]["path"] == f"{files[0]}#row=1"


def test_a_shard_without_its_sidecar_reads_its_own_columns(written, tmp_path):
    """A hub dataset's Parquet files have no ``.index.arrow`` beside them: the transcripts come from the shard."""
    import shutil

    folder, _ = written
    copy = tmp_path / "hub"
    shutil.copytree(folder, copy)
    sidecars = sorted(copy.glob(f"*{INDEX}"))
    assert len(sidecars) == len(shard_files(str(copy), "train"))
    with_sidecars = sources.index("shards", str(copy), "mr", "train")[0]
    for sidecar in sidecars:
        sidecar.unlink()
    without = sources.index("shards", str(copy), "mr", "train")[0]
    assert without["text"].to_pylist() == with_sidecars["text"].to_pylist()
    assert without["audio"].to_pylist() == with_sidecars["audio"].to_pylist()


def test_shards_are_the_hubs_parquet_layout_read_by_datasets_itself(written):
    import datasets

    folder, _ = written
    streamed = datasets.load_dataset(
        "parquet", data_files=str(folder / "train-*.parquet"), split="train", streaming=True
    ).cast_column("audio", datasets.Audio(decode=False))
    first = next(iter(streamed))
    original = REPO / "demo/common_voice/mr/clips" / first["audio"]["path"]
    assert first["audio"]["bytes"] == original.read_bytes()  # the MP3 as released, not decoded and re-encoded
    assert pq.ParquetFile(shard_files(str(folder), "train")[0]).metadata.row_group(0).num_rows <= ROW_GROUP


def test_training_resumes_at_the_same_clip_from_shards(written, tiny_model):
    folder, _ = written
    dm = SpeechDataModule(
        source="shards", path=str(folder), model=tiny_model, train_split="train", val_split="train", num_workers=0
    )
    dm.setup("fit")
    whole = list(dm.train_dataloader().sampler)
    dm.load_state_dict({"epoch": 0, "samples": 4, "world": 1, "batch_size": 2})
    assert list(dm.train_dataloader().sampler) == whole[4:]


def test_a_missing_split_or_a_file_that_is_not_a_shard_is_one_line_naming_it(written, tmp_path):
    folder, _ = written
    with pytest.raises(DataConfigError, match=r"split 'dev': no dev-\*.parquet in .*; splits here: \['train'\]"):
        shard_files(str(folder), "dev")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "train-00000-of-00001.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataConfigError, match=r"train-00000-of-00001.parquet: not a readable shard"):
        SpeechDataModule(source="shards", path=str(broken), train_split="train").rows("train")


def test_fit_trains_from_shards_as_the_readme_shows(tmp_path):
    """README, "Your data": the downloaded archive written as shards, then trained from, as the commands are typed."""
    from tests.data.test_archive import write_archive

    archive = write_archive(tmp_path)
    run(["shard", "shards/", "--path", str(archive), "--split", "train"], tmp_path)
    shards = ["--data.source", "shards", "--data.path", "shards/", "--data.train_split", "train"]
    run(demo_args(tmp_path, *shards, "--data.val_split=train", "--trainer.max_steps=2"), tmp_path)
    assert [p.name for p in (tmp_path / "shards").glob("*.parquet")] == ["train-00000-of-00001.parquet"]
    assert (tmp_path / "adapters" / "last" / "adapter_model.safetensors").is_file()
