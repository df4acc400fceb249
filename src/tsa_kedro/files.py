"""Writing a local file so that readers see the old file or the new one, never a part.

Standard library only: the serving bundle ships this module with the archive code.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_bytes_atomically(
    path: str | os.PathLike, payload: bytes, *, durable: bool = False
) -> Path:
    """Write ``payload`` to ``path`` through a temporary file beside it and a rename.

    The folder is created when missing. The new file gets the permissions ``open``
    would give it (the temporary file starts as 0600). On any failure, interruption
    included, the temporary file is removed and ``path`` is left as it was.

    Args:
        path: The local file to write.
        payload: Its new content.
        durable: Also ``fsync`` the data before the rename (a checkpoint that must
            survive a machine crash, not just a killed process).

    Returns:
        ``path`` as a ``Path``.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_name, 0o666 & ~umask)
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return target
