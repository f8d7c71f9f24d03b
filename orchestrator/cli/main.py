"""Entry point: global options, logging, and the one place errors become a one-line message and an exit code."""

from __future__ import annotations

import logging
import os
import sys

import click

from orchestrator import __version__
from orchestrator.cli import (
    backup_cmd,
    browse_cmd,
    catalog_cmd,
    completion_cmd,
    copy_cmd,
    daemon_cmd,
    demo_cmd,
    diff_cmd,
    export_cmd,
    jobs_cmd,
    mount_cmd,
    policy_cmd,
    portal_cmd,
    prune_cmd,
    report_cmd,
    restore_cmd,
    snapshots_cmd,
    stats_cmd,
    tenant_cmd,
    vault_cmd,
    verify_cmd,
)
from orchestrator.cli.common import teardown_skipped
from orchestrator.errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, DobaasError

log = logging.getLogger("dobaas")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dobaas")
@click.option("-v", "--verbose", count=True,
              help="More log output on stderr: -v each step, -vv debug (vault, locks, packs, remote calls), -vvv "
                   "also the libraries' own.")
@click.option("--log-file", type=click.Path(dir_okay=False), help="Also append logs to this file.")
@click.option("--log-json", is_flag=True, help="Logs as JSON lines (for the daemon and log collectors).")
def cli(verbose: int, log_file: str | None, log_json: bool) -> None:
    """Do'BaaS: consistent, encrypted, deduplicated backups into a vault."""
    level = logging.WARNING - 10 * min(verbose, 2)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        handlers.append(logging.FileHandler(log_file))
    # -vv: debug, and where each line comes from (thread, module and line) for a support engineer
    detail = " [%(threadName)s %(module)s:%(lineno)d]" if verbose >= 2 else ""
    fmt: logging.Formatter = JsonLines() if log_json else logging.Formatter(
        f"%(asctime)s %(levelname)s %(name)s{detail}: %(message)s")
    for h in handlers:
        h.setFormatter(fmt)
    logging.basicConfig(level=level, handlers=handlers)
    for library in ("alembic", "paramiko", "urllib3", "requests_ntlm", "spnego", "smbprotocol", "matplotlib", "PIL",
                    "asyncio"):  # the libraries' own chatter (migrations, every packet) only with -vvv
        logging.getLogger(library).setLevel(logging.DEBUG if verbose >= 3 else logging.WARNING)


class JsonLines(logging.Formatter):
    """One JSON object per line: time (ISO 8601, local time with its offset), level, logger, message."""

    def format(self, record: logging.LogRecord) -> str:
        import json
        from datetime import datetime

        doc = {"time": datetime.fromtimestamp(record.created).astimezone().isoformat(), "level": record.levelname,
               "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


for module in (vault_cmd, backup_cmd, policy_cmd, snapshots_cmd, browse_cmd, restore_cmd, verify_cmd, prune_cmd,
               catalog_cmd, jobs_cmd, daemon_cmd, demo_cmd, diff_cmd, stats_cmd, completion_cmd, report_cmd, copy_cmd,
               export_cmd, mount_cmd, tenant_cmd, portal_cmd):
    module.register(cli)


def main() -> None:
    try:
        rc = cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("dobaas: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except click.UsageError as e:  # one line, as every error: what is wrong and where to look
        sub = e.ctx.command_path.partition(" ")[2] if e.ctx else ""
        hint = f" (see 'dobaas {sub} --help')" if sub else " (see 'dobaas --help')"
        click.echo(f"dobaas: error: {e.format_message()}{hint}", err=True)
        sys.exit(EXIT_USAGE)
    except click.ClickException as e:
        click.echo(f"dobaas: error: {e.format_message()}", err=True)
        sys.exit(e.exit_code)
    except DobaasError as e:
        for line in str(e).splitlines() or [type(e).__name__]:  # several problems (a policy's): a line each
            click.echo(f"dobaas: error: {line}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("dobaas: interrupted; nothing partial was published", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except OSError as e:  # the system refused something (a missing directory, no permission): say what and where
        if os.environ.get("DOBAAS_DEBUG"):
            raise
        where = f": {e.filename}" if e.filename else ""
        click.echo(f"dobaas: error: {e.strerror or e}{where}", err=True)
        sys.exit(EXIT_FAILED)
    except RecursionError:
        click.echo("dobaas: error: an input is nested too deeply to be read", err=True)
        sys.exit(EXIT_BAD_INPUT)
    except Exception as e:
        if os.environ.get("DOBAAS_DEBUG"):
            raise
        click.echo(f"dobaas: internal error: {type(e).__name__}: {e} (set DOBAAS_DEBUG=1 for details)", err=True)
        sys.exit(EXIT_FAILED)
    code = rc if isinstance(rc, int) else EXIT_OK
    if teardown_skipped():  # everything is written and closed; only memory would be freed
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except OSError:  # a reader that went away (`dobaas run | head -1`): nothing more to tell it
                pass
        os._exit(code)
    sys.exit(code)
