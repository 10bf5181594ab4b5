"""A worker's own disk (its data dir: cache, scratch checkpoints, the hub cache) running out.

A full disk is the machine's fault, not the job's: the job goes back to the queue (the attempt counts,
so a job that fills every disk still ends) and another machine goes on from the stored checkpoint,
while a worker short of space takes no new job until space is freed.
"""

from __future__ import annotations

import errno
import shutil

from hubtune.settings import Settings


def free_bytes(settings: Settings) -> int:
    folder = settings.data_dir.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return shutil.disk_usage(folder).free


def short_of_space(settings: Settings) -> bool:
    return bool(settings.min_free_disk_bytes) and free_bytes(settings) < settings.min_free_disk_bytes


def disk_full(exc: BaseException, settings: Settings) -> bool:
    """ENOSPC anywhere in the chain, or a failure while the data dir is short of space (torch's writer
    words a full disk as "file write failed", without the errno)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno == errno.ENOSPC or "No space left on device" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return short_of_space(settings)
