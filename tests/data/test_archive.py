"""A release archive as downloaded from the Mozilla Data Collective: unpacked once beside it and read; a damaged one
is a one-line error naming the member, with nothing half-written left behind."""

import shutil
import tarfile

import pytest

from lightning_asr.data import SpeechDataModule
from lightning_asr.data.archive import unpacked
from lightning_asr.data.sources import DataConfigError
from tests.conftest import REPO, run, write_common_voice

RELEASE = "cv-corpus-24.0-2025-12-05"


def write_archive(tmp_path, name: str = f"{RELEASE}-mr.tar.gz"):
    """A Common Voice locale as the Collective ships it: ``cv-corpus-…/mr/…`` inside one .tar.gz."""
    release = tmp_path / "made" / RELEASE
    write_common_voice(release)
    archive = tmp_path / "downloads" / name
    archive.parent.mkdir(parents=True)
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(release, arcname=RELEASE)
    shutil.rmtree(tmp_path / "made")
    return archive


def test_the_archive_unpacks_once_beside_itself_and_indexes_like_the_folder(tmp_path, tiny_model, caplog):
    archive = write_archive(tmp_path)
    data = SpeechDataModule(path=str(archive), model=tiny_model, language="mr", num_workers=0)
    with caplog.at_level("INFO", logger="lightning_asr.data.archive"):
        data.prepare_data()
    folder = tmp_path / "downloads" / RELEASE
    assert (folder / "mr" / "train.tsv").is_file()
    assert f"unpacked {archive.name} into {folder} (locales: mr)" in caplog.text
    assert [p.name for p in folder.parent.iterdir() if p.name.startswith(".")] == []  # no staging folder left
    data.setup("fit")
    assert len(data.datasets["train"]) == 4 and all(
        a.startswith(str(folder / "mr" / "clips")) for a in data.datasets["train"].rows["audio"].to_pylist()
    )
    stamp = (folder / "mr" / "train.tsv").stat().st_mtime_ns
    assert unpacked(str(archive)) == str(folder) and (folder / "mr" / "train.tsv").stat().st_mtime_ns == stamp


def test_a_truncated_archive_names_the_member_and_leaves_nothing(tmp_path):
    archive = write_archive(tmp_path)
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(DataConfigError, match=rf"{archive.name} is damaged or incomplete at {RELEASE}/mr/\S+"):
        unpacked(str(archive))
    assert sorted(p.name for p in archive.parent.iterdir()) == [archive.name]


def test_fit_reads_the_downloaded_archive_as_the_readme_shows(tmp_path):
    archive = write_archive(tmp_path)
    args = [
        "fit",
        "--config",
        "configs/demo.yaml",
        f"--data.path={archive}",
        "--trainer.max_steps=2",
        f"--model.model={REPO}/demo/whisper-tiny-random",
        f"--trainer.default_root_dir={tmp_path}",
        f"--trainer.logger.init_args.save_dir={tmp_path}/runs",
        f"--adapter_checkpoint.dirpath={tmp_path}/adapters",
    ]
    out = run(args, REPO)
    assert f"unpacked {archive.name}" in out.stderr + out.stdout
    assert (tmp_path / "adapters" / "last" / "adapter_model.safetensors").is_file()
