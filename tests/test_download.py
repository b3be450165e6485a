"""`dfflab data download`: the hub call and the completeness check (no network: the hub is faked)."""

import shutil

import huggingface_hub
import pytest

from dfflab.config import load_config
from dfflab.data.download import check_zip, download
from dfflab.data.reader import DataError
from dfflab.data.synth import SynthSpec, write_synth


@pytest.fixture(scope="module")
def zips(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub") / "synthdff"
    write_synth(root, SynthSpec(n_real=6, fake_size=32, real_min=32, real_max=48), load_config("tiny"),
                as_zip=True, progress=False)
    return root


def test_download_fetches_and_checks_each_zip(zips, tmp_path, monkeypatch):
    calls = []

    def fake_hub_download(repo_id, filename, repo_type, revision, local_dir, token):
        calls.append((repo_id, filename, repo_type, revision))
        dest = local_dir / filename
        shutil.copy(zips / filename, dest)
        return str(dest)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_hub_download)
    counts = download(tmp_path / "dff", revision="abc123", verify=True)
    assert counts == {"wiki": 6, "inpainting": 6, "insight": 6, "text2img": 6}
    assert calls[0] == ("OpenRL/DeepFakeFace", "wiki.zip", "dataset", "abc123")


def test_incomplete_zip_is_caught(zips, tmp_path):
    data = (zips / "wiki.zip").read_bytes()
    cut = tmp_path / "wiki.zip"
    cut.write_bytes(data[: len(data) // 2])  # an interrupted download
    with pytest.raises(DataError, match="incomplete or not a zip"):
        check_zip(cut, "wiki")
    with pytest.raises(DataError, match="not under 'insight/'"):
        check_zip(zips / "wiki.zip", "insight")
    assert check_zip(zips / "wiki.zip", "wiki", verify=True) == 6
