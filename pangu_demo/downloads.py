"""Files the page offers for download (trace files and GIFs), each in a folder of its own."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from pathlib import Path

DOWNLOAD_DIR = Path(tempfile.gettempdir()) / "pangu-demo-downloads"  # traces and GIFs
KEEP_SECONDS = 3600  # the page's own copies go after an hour too (gr.Blocks' delete_cache)


def new_file(kind: str, suffix: str, content: bytes) -> str:
    """A new file for a download, named for the reader (block-diffusion-trace-20261205-083501.json) in a folder
    of its own under DOWNLOAD_DIR, so that two sessions' files never clash. Folders older than KEEP_SECONDS are
    removed, so that a long-running host does not fill its disk."""
    DOWNLOAD_DIR.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for old in DOWNLOAD_DIR.iterdir():
        with contextlib.suppress(OSError):  # another session may remove it first
            if now - old.stat().st_mtime > KEEP_SECONDS:
                shutil.rmtree(old) if old.is_dir() else old.unlink()
    folder = Path(tempfile.mkdtemp(dir=DOWNLOAD_DIR))
    path = folder / f"block-diffusion-{kind}-{time.strftime('%Y%m%d-%H%M%S')}{suffix}"
    path.write_bytes(content)
    return str(path)
