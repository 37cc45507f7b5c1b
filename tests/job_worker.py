"""A worker process for the job queue tests: runs ``slow`` jobs that never finish, until killed.

``python -m tests.job_worker DATABASE_URL MARKER`` writes the job's id to MARKER once it has
started one, so the test knows when to kill it (SIGKILL: no hand-back, no last words).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from threadline.config import Settings
from threadline.domain.entities import Job
from threadline.runtime import Runtime
from threadline.workers.worker import Worker


async def main(database_url: str, marker: Path) -> None:
    settings = Settings(
        database_url=database_url,
        data_dir=marker.parent,
        upstream_base_url="http://127.0.0.1:9/v1",  # never called: this worker runs jobs only
        job_lease_seconds=1.0,
        worker_poll_seconds=0.1,
    )

    async def slow(job: Job) -> None:
        marker.write_text(job.id)
        await asyncio.Event().wait()

    runtime = await Runtime.open(settings)
    Worker(settings, runtime.stores, runtime.bus, runtime.router, runtime.jobs, {"slow": slow}).start()
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2])))
