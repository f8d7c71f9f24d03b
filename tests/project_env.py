"""Plain ``pytest``, as a newcomer types it, may be another Python's (Debian's, pyenv's) without the project's
dependencies: the suite is then run again in the project's environment (``.venv``, made by ``make test``) rather
than failing to import them. Re-running is the only way: the tests call ``dobaas`` beside ``sys.executable``."""

from __future__ import annotations

import os
import site
import sys
from pathlib import Path

import pytest

VENV = Path(__file__).resolve().parent.parent / ".venv"
AGAIN = "DOBAAS_TESTS_REEXEC"  # set for the re-run: never a second one


def outside() -> bool:
    return Path(sys.prefix).resolve() != VENV.resolve()


def borrow_imports() -> None:
    """Outside ``.venv``: let this interpreter import the dependencies from it, so that the conftest loads until
    ``rerun_inside`` (at configure time, once pytest has let go of the standard outputs) runs the suite there."""
    if not outside():
        return
    if not (VENV / "bin" / "python").exists():
        raise SystemExit("the tests run in the project's environment .venv, which does not exist yet: run "
                         "`make test` (it installs and starts what the tests need)")
    packages = VENV / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    if not packages.is_dir():
        raise SystemExit(f"this pytest runs Python {sys.version.split()[0]}, the project's environment another: "
                         "run `. .venv/bin/activate && pytest`")
    site.addsitedir(str(packages))


def rerun_inside(config: pytest.Config) -> None:
    """Outside ``.venv``: replace this process by the same pytest command run by ``.venv``'s Python."""
    if not outside():
        return
    if os.environ.get(AGAIN):
        raise pytest.UsageError(f"pytest was run again with {VENV}/bin/python and still runs outside it")
    capture = config.pluginmanager.getplugin("capturemanager")
    if capture is not None:
        capture.stop_global_capturing()
    sys.stdout.flush()
    sys.stderr.flush()
    python = str(VENV / "bin" / "python")
    os.environ[AGAIN] = "1"
    os.chdir(config.invocation_params.dir)
    os.execv(python, [python, "-m", "pytest", *config.invocation_params.args])
