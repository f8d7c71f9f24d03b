"""Open the catalog on a thread while a run does its first work. Importing SQLAlchemy and checking the schema
costs a few tenths of a second that a nightly incremental of 100,000 unchanged files would otherwise wait for;
the run only needs the catalog once its snapshot is written, and by then the catalog is open."""

from __future__ import annotations

import threading
from typing import Any


class CatalogWhenReady:
    """Stands for a ``Catalog``: the first use waits for the opening and raises what it raised."""

    def __init__(self, url: str | None) -> None:
        self._catalog: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._open, args=(url,), name="catalog-open", daemon=True)
        self._thread.start()

    def _open(self, url: str | None) -> None:
        try:
            from orchestrator.catalog.db import Catalog, to_url

            self._catalog = Catalog(to_url(url) if url else None)
        except BaseException as e:  # handed to the first user, in its thread
            self._error = e

    def ready(self) -> Any:
        """The open catalog (waits for it)."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._catalog

    def __getattr__(self, name: str) -> Any:
        return getattr(self.ready(), name)
