"""What a tracking store's failures say: a full disk under the store is one
line naming the store and its folder (:func:`store_full_error`), raised as
such around the writes that cannot wait (:func:`full_store_named`).
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator
from pathlib import Path


def store_full_error(error: BaseException, tracking_uri: str) -> OSError | None:
    """A one-line error for a write the tracking store refused for want of
    disk space (``ENOSPC``, or SQLite's "database or disk is full", on
    ``error`` or what caused it), naming the store and its folder; None for
    any other error.
    """
    seen: BaseException | None = error
    while seen is not None:
        text = str(seen)
        if (
            getattr(seen, "errno", None) == errno.ENOSPC
            or "disk is full" in text
            or "No space left on device" in text
        ):
            return OSError(
                errno.ENOSPC,
                f"the tracking store {tracking_uri} could not be written: no space left in "
                f"{store_folder(tracking_uri)}; free space there, or log to another store "
                "(MLFLOW_TRACKING_URI)",
            )
        seen = seen.__cause__ or seen.__context__
    return None


@contextlib.contextmanager
def full_store_named(tracking_uri: str) -> Iterator[None]:
    """Raise a full tracking store's error as :func:`store_full_error`'s one line (others as
    they are).
    """
    try:
        yield
    except Exception as e:
        full = store_full_error(e, tracking_uri)
        if full is None:
            raise
        raise full from None


def store_folder(tracking_uri: str) -> str:
    """Where a tracking store keeps its data: a SQLite file's folder, a file store's folder,
    else the URI itself (a server's store is on the server).
    """
    for prefix in ("sqlite:///", "file://"):
        if tracking_uri.startswith(prefix):
            path = Path(tracking_uri[len(prefix) :])
            return str(path.parent if prefix == "sqlite:///" else path)
    if "://" not in tracking_uri:
        return tracking_uri
    return f"the server's store behind {tracking_uri}"
