"""The catalog in a process of its own for ``dobaas run``: importing SQLAlchemy, checking the schema and writing
the rows of a snapshot cost tenths of a second of interpreter time that the backup process, bound by one
interpreter lock, would otherwise spend before its next snapshot. The child is forked before the run starts
any thread and serves calls over a pipe until the run closes it (or dies: the child then sees the pipe close).
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import threading
from multiprocessing.connection import Connection, Pipe
from typing import Any

log = logging.getLogger(__name__)


class CatalogProcess:
    """Stands for a ``Catalog``: every method call runs in the child and returns (or raises) what it did there.
    Only method calls are forwarded. Open errors come back from the first call."""

    def __init__(self, url: str | None) -> None:
        if threading.active_count() != 1:  # a fork would copy locks other threads hold, held forever
            raise RuntimeError("the catalog process must be forked before any thread starts")
        parent, child = Pipe(duplex=True)
        self._conn: Connection = parent
        self._lock = threading.Lock()
        self.pid = os.fork()
        if self.pid == 0:  # the child: never returns
            parent.close()
            _serve(child, url)
        child.close()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                try:
                    self._conn.send((name, args, kwargs))
                    ok, value = self._conn.recv()
                except (EOFError, OSError) as e:
                    raise RuntimeError(f"the catalog process ended ({e or 'pipe closed'})") from None
            if not ok:
                raise value
            return value

        return call

    def close(self) -> None:
        """Let the child finish its last call and exit."""
        with self._lock:
            self._conn.close()
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass


def _serve(conn: Connection, url: str | None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the run, which closes the pipe when it stops
    code = 0
    try:
        catalog, error = None, None
        try:
            from orchestrator.catalog.db import Catalog, to_url

            catalog = Catalog(to_url(url) if url else None, checkpoint_early=True)
        except Exception as e:  # every call answers with it
            error = e
        while True:
            try:
                name, args, kwargs = conn.recv()
            except (EOFError, OSError):
                break
            try:
                if error is not None:
                    raise error
                reply = (True, getattr(catalog, name)(*args, **kwargs))
            except Exception as e:
                reply = (False, _portable(e))
            conn.send(reply)
    except BaseException:
        code = 1
        log.exception("catalog process failed")
    finally:
        os._exit(code)  # no atexit handlers nor buffers of the parent's: they are the parent's to run and flush


def _portable(e: Exception) -> Exception:
    """The exception itself when it survives pickling, else its type and text in a RuntimeError."""
    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:
        return RuntimeError(f"{type(e).__name__}: {e}")
