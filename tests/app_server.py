"""The demo launched in-process on a free port, for the client and browser tests."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def launched(model: str, slow_replay: bool = False) -> Iterator[str]:
    """Serve the app on `model` (a folder) and yield its URL; closed afterwards. The slow-motion replay is off
    unless asked, so that the page shows each run's end state when it ends."""
    from pangu_demo.ui import build_app, launch_options

    demo = build_app(model, slow_replay=slow_replay)
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                            **launch_options())
    try:
        yield url
    finally:
        demo.close()
