"""``dfflab data download``: fetch DFF's four zips from the Hugging Face hub.

Uses huggingface_hub (resumable downloads, a pinnable revision). Each zip is checked
after download: it must open as a zip (its central directory sits at the end, so a
cut-off download fails here) and, with ``verify``, every member's CRC must match.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from dfflab.data.layout import HF_REPO, SOURCES
from dfflab.data.reader import DataError


def check_zip(path: Path, source: str, verify: bool = False) -> int:
    """Number of images in a DFF zip; raises DataError if it is incomplete or corrupt."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if n.lower().endswith((".jpg", ".jpeg"))]
            if verify:
                bad = zf.testzip()
                if bad is not None:
                    raise DataError(f"{path}: member {bad} fails its CRC check; delete the file and download again")
    except (zipfile.BadZipFile, OSError) as e:
        raise DataError(f"{path}: incomplete or not a zip ({e}); run the download again to resume") from None
    if not names:
        raise DataError(f"{path}: holds no JPEG files")
    if not all(n.startswith(f"{source}/") for n in names[:100]):
        raise DataError(f"{path}: entries are not under '{source}/' as DFF's are")
    return len(names)


def download(to: Path | str, revision: str | None = None, sources: tuple[str, ...] = SOURCES,
             verify: bool = False, token: str | None = None) -> dict[str, int]:
    """Download (or resume) the DFF zips into ``to`` and check each one.

    Returns:
        ``{source: number of images}``.
    """
    from huggingface_hub import hf_hub_download  # imported here: only this command needs it

    to = Path(to)
    to.mkdir(parents=True, exist_ok=True)
    counts = {}
    for source in sources:
        print(f"downloading {HF_REPO}/{source}.zip (revision {revision or 'main'}) -> {to}")
        try:
            path = hf_hub_download(HF_REPO, f"{source}.zip", repo_type="dataset",
                                   revision=revision, local_dir=to, token=token)
        except Exception as e:  # network errors come in many types; say what failed
            raise DataError(f"could not download {source}.zip from {HF_REPO}: {e}") from None
        counts[source] = check_zip(Path(path), source, verify)
        print(f"  {source}.zip ok: {counts[source]:,} images")
    return counts
