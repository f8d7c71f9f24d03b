"""``dobaas completion bash|zsh|fish``: the shell's completion script (click's), and ``dobaas man``: the manual
page in roff, generated from the commands' own help so it never drifts from them (``make man``)."""

from __future__ import annotations

import datetime
import re

import click

from orchestrator import __version__


@click.command("completion")
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
@click.pass_context
def completion_cmd(ctx: click.Context, shell: str) -> None:
    """Print SHELL's completion script: `eval "$(dobaas completion bash)"` in ~/.bashrc, or save it under
    /etc/bash_completion.d/dobaas."""
    from click.shell_completion import get_completion_class

    root = ctx.find_root().command
    cls = get_completion_class(shell)
    assert cls is not None  # every choice has one
    click.echo(cls(root, {}, "dobaas", "_DOBAAS_COMPLETE").source())


@click.command("man")
@click.pass_context
def man_cmd(ctx: click.Context) -> None:
    """Print dobaas(1) in roff (`man -l <(dobaas man)`; `make man` writes docs/dobaas.1)."""
    root = ctx.find_root().command
    lines = [f'.TH DOBAAS 1 "{datetime.date.today():%Y-%m-%d}" "dobaas {__version__}" "Do\'BaaS manual"',
             ".SH NAME", "dobaas \\- consistent, encrypted, deduplicated backups into a vault", ".SH SYNOPSIS",
             ".B dobaas", "[\\fIOPTIONS\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR]...", ".SH DESCRIPTION",
             _roff(root.help or ""), ".SH COMMANDS"]
    for path, cmd in _walk(root, []):
        sub = ctx.__class__(cmd, info_name=path[-1], parent=ctx)
        lines += [".SS " + _roff(" ".join(["dobaas", *path])) + " " + _roff(" ".join(
            p.make_metavar(sub) for p in cmd.params if isinstance(p, click.Argument))), _roff(cmd.help or "")]
        for p in cmd.params:
            if isinstance(p, click.Option) and not p.hidden:
                lines += [".TP", "\\fB" + _roff(", ".join(p.opts)) + "\\fR", _roff(p.help or "")]
    lines += [".SH EXIT STATUS", "0 success, 1 failure, 2 usage, 3 damage found, 4 wrong passphrase, 5 not found, "
              "6 bad input file, 7 vault busy, 8 storage full or unwritable, 9 partial, 130 interrupted.",
              ".SH SEE ALSO", "The docs/ directory of the project: cli.md, policies.md, restore.md, vault-format.md."]
    click.echo("\n".join(lines))


def _walk(group: click.Command, path: list[str]) -> list[tuple[list[str], click.Command]]:
    out = []
    if isinstance(group, click.Group):
        for name in sorted(group.commands):
            cmd = group.commands[name]
            if isinstance(cmd, click.Group):
                out += _walk(cmd, [*path, name])
            else:
                out.append(([*path, name], cmd))
    return out


def _roff(text: str) -> str:
    text = re.sub(r"\s+", " ", text).strip().replace("\\", "\\\\").replace("-", "\\-")
    return ("\\&" + text) if text.startswith((".", "'")) else text


def register(cli: click.Group) -> None:
    cli.add_command(completion_cmd)
    cli.add_command(man_cmd)
