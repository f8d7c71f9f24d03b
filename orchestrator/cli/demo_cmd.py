"""``dobaas demo``: run the main job end to end on embedded defaults."""

from __future__ import annotations

import click

from orchestrator.cli.common import parse_size
from orchestrator.errors import EXIT_FAILED, EXIT_OK


@click.command("demo")
@click.option("--dir", "workdir", type=click.Path(file_okay=False), help="Work directory (default: a temp dir).")
@click.option("--size", default="256MiB", show_default=True, help="Size of the generated disk image.")
def demo_cmd(workdir: str | None, size: str) -> int:
    """Back up a generated disk, change it, back up incrementally, verify, restore and compare."""
    from rich.console import Console

    from orchestrator.demo.run import run_demo

    ok = run_demo(workdir, parse_size(size, "--size"), Console())
    return EXIT_OK if ok else EXIT_FAILED


def register(cli: click.Group) -> None:
    cli.add_command(demo_cmd)
