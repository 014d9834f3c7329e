"""Test helpers for package tests: tiny real wheels built by uv, and a folder served over HTTP on
127.0.0.1 (a PEP 503 index, files, a stand-in uv installer)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path


def uv_binary() -> str:
    from uv import find_uv_bin

    return find_uv_bin()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_wheel(
    name: str,
    version: str,
    out: Path,
    work: Path,
    deps: Sequence[str] = (),
    extras: Mapping[str, Sequence[str]] | None = None,
) -> Path:
    """A real, tiny wheel (with its dependencies and extras): uv builds it with its own build
    backend, offline."""
    module = name.replace("-", "_")
    src = work / f"{name}-{version}"
    (src / "src" / module).mkdir(parents=True)
    (src / "src" / module / "__init__.py").write_text(f"V = {version!r}\n")
    optional = "".join(f"{k} = {json.dumps(list(v))}\n" for k, v in (extras or {}).items())
    (src / "pyproject.toml").write_text(
        f'[project]\nname = "{name}"\nversion = "{version}"\nrequires-python = ">=3.8"\n'
        f"dependencies = {json.dumps(list(deps))}\n"
        + (f"[project.optional-dependencies]\n{optional}" if optional else "")
        + '[build-system]\nrequires = ["uv_build>=0.7,<2"]\nbuild-backend = "uv_build"\n'
    )
    subprocess.run(
        [uv_binary(), "build", "--wheel", "--quiet", "--out-dir", str(out), str(src)],
        env={**os.environ, "UV_OFFLINE": "1"},
        check=True,
        capture_output=True,
    )
    return next(out.glob(f"{module}-{version.replace('+', '*')}-*.whl"))


@contextlib.contextmanager
def serve(root: Path, port: int | None = None) -> Iterator[str]:
    """Serve `root` on 127.0.0.1 (our own process, stopped by PID); yields the base URL."""
    port = port or free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", str(root), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the loopback HTTP server did not start") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(10)
