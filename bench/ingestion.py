"""Ingestion: the server's memory under DOCX bombs, another project's search latency while a project
ingests, and the ingestion rate of an ordinary file.

Starts ``threadline serve`` as its own process (SQLite, the embedded e5 model) and measures:

- ``bombs``: the server's resident memory before, at its peak during, and after ``--bombs`` DOCX
  files of 10.5 million empty paragraphs (89 KB each) are added to a store at once;
- ``search``: project B searches its small store ``--searches`` times while project A ingests a
  300 KB text (p50, p95);
- ``rate``: chunks per second for an ordinary text of ``--chunks`` chunks (800/400), from adding the
  file to the store to its ``completed``.

Prints a Markdown table; run it against another checkout's sources with ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import time
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import httpx

from bench.common import HOST, Child, child_env, free_port, wait_healthy

ADMIN = "bench-admin"
MiB = 1024 * 1024
W = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def docx_bomb() -> bytes:
    xml = f'<w:document xmlns:w="{W}"><w:body>{"<w:p/>" * 10_500_000}</w:body></w:document>'
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("word/document.xml", xml)
    return out.getvalue()


def text(sentences: int) -> bytes:
    return " ".join(
        f"Sentence {i} tells of tides, moons and the sea floor {i % 13}." for i in range(sentences)
    ).encode()


@contextlib.contextmanager
def serve(workdir: Path) -> Iterator[tuple[str, int]]:
    port = free_port()
    settings = {
        "THREADLINE_DATA_DIR": str(workdir),
        "THREADLINE_UPSTREAM_BASE_URL": f"http://{HOST}:9/v1",  # never called: no runs are made
        "THREADLINE_LOG_LEVEL": "warning",
        "THREADLINE_ADMIN_KEY": ADMIN,
    }
    argv = [sys.executable, "-m", "threadline.cli", "serve", "--port", str(port)]
    server = Child("threadline", argv, child_env(settings), workdir / "serve.log")
    try:
        yield wait_healthy(server, port, timeout=120), server.pid
    finally:
        server.stop()


class Api:
    def __init__(self, url: str, key: str) -> None:
        self.client = httpx.Client(
            base_url=url,
            headers={"Authorization": f"Bearer {key}", "OpenAI-Beta": "assistants=v2"},
            timeout=600,
        )

    def store(self, name: str) -> str:
        return str(self.post("/vector_stores", json={"name": name})["id"])

    def post(self, path: str, **kwargs: Any) -> dict[str, Any]:
        response = self.client.post(path, **kwargs)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def add(self, store_id: str, name: str, data: bytes) -> str:
        file_id = str(self.post("/files", data={"purpose": "assistants"}, files={"file": (name, data)})["id"])
        self.post(f"/vector_stores/{store_id}/files", json={"file_id": file_id})
        return file_id

    def status(self, store_id: str, file_id: str) -> str:
        return str(self.client.get(f"/vector_stores/{store_id}/files/{file_id}").json()["status"])

    def search(self, store_id: str, query: str) -> float:
        started = time.perf_counter()
        self.post(f"/vector_stores/{store_id}/search", json={"query": query})
        return time.perf_counter() - started


def project_key(url: str, name: str) -> str:
    admin = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=60)
    project = admin.post("/organization/projects", json={"name": name}).json()
    key = admin.post(f"/organization/projects/{project['id']}/api_keys", json={"name": "bench"}).json()
    return str(key["value"])


def wait(api: Api, store_id: str, file_ids: Sequence[str], timeout: float, pid: int) -> tuple[bool, int]:
    """Whether the files settled within ``timeout``; the server's peak RSS meanwhile."""
    deadline, peak = time.monotonic() + timeout, rss(pid)
    while time.monotonic() < deadline:
        peak = max(peak, rss(pid))
        if all(api.status(store_id, f) != "in_progress" for f in file_ids):
            return True, peak
        time.sleep(0.25)
    return False, peak


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ingestion", description=__doc__.split("\n")[0])
    parser.add_argument("--bombs", type=int, default=6)
    parser.add_argument("--searches", type=int, default=20)
    parser.add_argument("--chunks", type=int, default=40)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for each step")
    options = parser.parse_args(argv)
    rows: list[tuple[str, str]] = []
    with TemporaryDirectory() as tmp, serve(Path(tmp)) as (url, pid):
        a, b = Api(url, project_key(url, "a")), Api(url, project_key(url, "b"))
        small = b.store("small")
        warm = b.add(small, "tides.txt", b"Tides follow the Moon.")
        wait(b, small, [warm], options.timeout, pid)
        b.search(small, "tides")  # the query model loads on first use

        # The rate of an ordinary file: 40 chunks of 800 tokens with 400 overlapping.
        store = a.store("rate")
        started = time.monotonic()
        file_id = a.add(store, "normal.txt", text(options.chunks * 30))
        done, _ = wait(a, store, [file_id], options.timeout, pid)
        seconds = time.monotonic() - started
        chunks = options.chunks
        rows.append(
            ("ordinary file: chunks/s", f"{chunks / seconds:.2f} ({seconds:.1f} s)" if done else "timed out")
        )

        # Another project's searches while a project ingests 300 KB.
        big_store = a.store("big")
        big = a.add(big_store, "big.txt", text(5200))
        time.sleep(2)
        latencies = [b.search(small, "What do tides follow?") for _ in range(options.searches)]
        rows.append(
            ("search p50 while another project ingests", f"{statistics.median(latencies) * 1000:.1f} ms")
        )
        rows.append(("search max", f"{max(latencies) * 1000:.1f} ms"))
        a.client.delete(f"/vector_stores/{big_store}/files/{big}")

        # DOCX bombs.
        bombs = a.store("bombs")
        bomb = docx_bomb()
        time.sleep(2)
        before = rss(pid)
        ids = [a.add(bombs, f"bomb{i}.docx", bomb) for i in range(options.bombs)]
        done, peak = wait(a, bombs, ids, options.timeout, pid)
        time.sleep(5)
        after = rss(pid)
        rows.append(
            (
                f"server RSS, {options.bombs} DOCX bombs ({len(bomb) // 1024} KB)",
                f"{before / MiB:.0f} MiB before",
            )
        )
        rows.append(
            ("", f"{peak / MiB:.0f} MiB peak, {after / MiB:.0f} MiB after" + ("" if done else " (timed out)"))
        )
        errors = {
            str(a.client.get(f"/vector_stores/{bombs}/files/{i}").json().get("last_error")) for i in ids
        }
        rows.append(("bombs' last_error", "; ".join(sorted(errors))[:300]))
    print("| measure | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
