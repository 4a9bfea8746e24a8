"""The end of a forked child of the master (a worker, or the settings resolver)."""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, NoReturn

__all__ = ["run_child"]


def run_child(
    body: Callable[[], int], report: Callable[[str], None] | None = None
) -> NoReturn:
    """Run ``body`` in a just-forked child and exit with its status, never returning into
    the parent's code: an exception escaping it is printed, or given to ``report`` (status
    1), Ctrl-C is status 130, buffered output is flushed, and `os._exit` skips the parent's
    atexit handlers."""
    status = 1
    try:
        status = body()
    except KeyboardInterrupt:
        status = 130
    except BaseException:  # noqa: BLE001 - nothing may escape a forked child
        import traceback

        if report is None:
            traceback.print_exc()
        else:
            try:
                report(traceback.format_exc())
            except BaseException:  # noqa: BLE001 - the log failing too: print it
                traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
