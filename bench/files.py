"""Files: the server's memory while it takes and serves large uploads, on each blob store.

Starts ``threadline serve`` as its own process (SQLite, the local blob store; then the S3 store
against moto's S3 server, when moto is installed), uploads files of growing size with a client that
streams them from disk, downloads each back and checks its digest. The server's peak resident
memory is read from ``/proc/<pid>/status`` (``VmHWM``), reset before each transfer through
``/proc/<pid>/clear_refs``, so each row shows how far that one transfer raised it.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.common import (
    HOST,
    Child,
    child_env,
    free_port,
    log,
    machine,
    markdown_table,
    publish,
    today,
    wait_healthy,
)

SECTION = "## Files: server memory during uploads and downloads"
MiB = 1024 * 1024
BUCKET = "threadline-bench"


def memory(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` (peak) of a process, in bytes."""
    found: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) * 1024
    return found


def reset_peak(pid: int) -> bool:
    """Make ``VmHWM`` start again from the current RSS; ``False`` where the kernel does not allow it."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


@dataclass
class Transfer:
    store: str
    size: int
    upload_seconds: float
    upload_peak_growth: int
    download_seconds: float
    download_peak_growth: int
    rss_after: int


def make_file(path: Path, size: int) -> str:
    """A file of random bytes (written a MiB at a time); returns its SHA-256."""
    digest = hashlib.sha256()
    with path.open("wb") as f:
        left = size
        while left:
            chunk = os.urandom(min(MiB, left))
            digest.update(chunk)
            f.write(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def transfer(client: httpx.Client, url: str, pid: int, store: str, path: Path, digest: str) -> Transfer:
    size = path.stat().st_size
    reset_peak(pid)
    before = memory(pid)["VmRSS"]
    began = time.monotonic()
    with path.open("rb") as f:  # httpx streams a file object from disk
        response = client.post(f"{url}/files", data={"purpose": "assistants"}, files={"file": (path.name, f)})
    response.raise_for_status()
    upload_seconds = time.monotonic() - began
    upload_peak = memory(pid)["VmHWM"] - before
    file_id = response.json()["id"]

    reset_peak(pid)
    before = memory(pid)["VmRSS"]
    began = time.monotonic()
    check = hashlib.sha256()
    with client.stream("GET", f"{url}/files/{file_id}/content") as download:
        download.raise_for_status()
        for chunk in download.iter_bytes():
            check.update(chunk)
    download_seconds = time.monotonic() - began
    download_peak = memory(pid)["VmHWM"] - before
    if check.hexdigest() != digest:
        raise RuntimeError(f"{store}: the {size} bytes downloaded differ from those uploaded")
    client.delete(f"{url}/files/{file_id}").raise_for_status()
    return Transfer(
        store, size, upload_seconds, upload_peak, download_seconds, download_peak, memory(pid)["VmRSS"]
    )


@contextlib.contextmanager
def serve(workdir: Path, name: str, env: dict[str, str]) -> Iterator[tuple[str, int]]:
    port = free_port()
    settings = {
        "THREADLINE_DATA_DIR": str(workdir / name),
        # Never called: no run is made. Set so the embedded model is not loaded into the process.
        "THREADLINE_UPSTREAM_BASE_URL": f"http://{HOST}:9/v1",
        "THREADLINE_LOG_LEVEL": "warning",
        **env,
    }
    argv = [sys.executable, "-m", "threadline.cli", "serve", "--port", str(port)]
    server = Child(f"threadline ({name})", argv, child_env(settings), workdir / f"serve-{name}.log")
    try:
        url = wait_healthy(server, port, timeout=60)
        yield url, server.pid
    finally:
        server.stop()


@contextlib.contextmanager
def moto(workdir: Path) -> Iterator[dict[str, str] | None]:
    """moto's S3 server in its own process, with a bucket; ``None`` when moto is not installed."""
    try:
        import boto3
        import moto  # noqa: F401
    except ImportError:
        yield None
        return
    port = free_port()
    credentials = {
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    argv = [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)]
    server = Child("moto", argv, child_env(credentials), workdir / "moto.log")
    endpoint = f"http://{HOST}:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            server.check_alive()
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(endpoint, timeout=1)
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"moto did not start:\n{server.tail()}")
            time.sleep(0.1)
        os.environ.update(credentials)
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
        yield {
            **credentials,
            "THREADLINE_FILE_STORE": "s3",
            "THREADLINE_S3_BUCKET": BUCKET,
            "THREADLINE_S3_ENDPOINT_URL": endpoint,
        }
    finally:
        server.stop()


def bench(sizes: Sequence[int], workdir: Path) -> tuple[list[Transfer], dict[str, int]]:
    files = []
    for size in sizes:
        path = workdir / f"upload-{size // MiB}MiB.bin"
        log(f"writing {path.name}")
        files.append((path, make_file(path, size)))
    results: list[Transfer] = []
    idle: dict[str, int] = {}
    with moto(workdir) as s3_env:
        stores = [("local", {})] + ([("s3 (moto)", s3_env)] if s3_env is not None else [])
        for store, env in stores:
            with serve(workdir, store.split()[0], env) as (url, pid), httpx.Client(timeout=600) as client:
                idle[store] = memory(pid)["VmRSS"]
                for path, digest in files:
                    log(f"{store}: {path.name}")
                    results.append(transfer(client, url, pid, store, path, digest))
    return results, idle


def report(results: list[Transfer], idle: dict[str, int], info: str, peaks_reset: bool) -> str:
    def mib(n: int) -> str:
        return f"{n / MiB:.1f}"

    rows = [
        [
            r.store,
            f"{r.size // MiB}",
            f"{r.size / MiB / r.upload_seconds:.0f}",
            mib(r.upload_peak_growth),
            f"{r.size / MiB / r.download_seconds:.0f}",
            mib(r.download_peak_growth),
            mib(r.rss_after),
        ]
        for r in results
    ]
    head = [
        "store",
        "file MiB",
        "upload MiB/s",
        "peak RSS growth, upload (MiB)",
        "download MiB/s",
        "peak RSS growth, download (MiB)",
        "RSS after (MiB)",
    ]
    idle_text = ", ".join(f"{store} {mib(rss)} MiB" for store, rss in idle.items())
    return "\n".join(
        [
            f"- date: {today()}",
            f"- machine: {info}",
            "- server: `threadline serve` (API and worker in one process), SQLite; the local blob store, then"
            " the S3 store against moto's S3 server in its own process",
            "- client: httpx, streaming each file from disk as `multipart/form-data`, then streaming it back"
            " and checking its SHA-256",
            f"- server RSS when idle: {idle_text}",
            "- peak RSS growth: `VmHWM` after the transfer minus `VmRSS` before it, the peak reset first"
            + ("" if peaks_reset else " (reset not permitted here: growth is over the process's whole life)"),
            "",
            markdown_table(head, rows),
            "",
            "Uploads go from the socket to the blob store a buffer at a time (1 MiB locally, 8 MiB parts"
            " to S3) and downloads come back a chunk at a time, so the server's peak memory does not grow"
            " with the size of the file.",
        ]
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.files", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[1, 10, 100], help="file sizes in MiB")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md")
    args = parser.parse_args(argv)
    if not all(1 <= size <= 512 for size in args.sizes):
        parser.error("--sizes between 1 and 512 MiB")
    info = str(machine())
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="threadline-bench-") as tmp:
        workdir = Path(tmp)
        peaks_reset = reset_peak(os.getpid())
        results, idle = bench([size * MiB for size in args.sizes], workdir)
    publish([(SECTION, report(results, idle, info, peaks_reset))], write=not args.no_write, began=began)


if __name__ == "__main__":
    main()
