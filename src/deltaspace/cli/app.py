"""The typer application every command module registers on, and the CLI's one error boundary.

Expected failures (the library's :class:`~deltaspace.errors.DeltaspaceError` and click's usage errors)
print one line, ``error: <problem>``, and exit non-zero without a traceback. Anything else is a bug and
keeps typer's traceback. ``--debug`` (or ``DELTASPACE_DEBUG=1``) shows the traceback for every error.
"""

from __future__ import annotations

import os
from typing import Any

import typer
from typer.core import TyperGroup

try:  # typer >= 0.20 vendors click as typer._click; its exceptions are not the click package's
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - older typer runs on click itself
    from click import exceptions as click_exceptions

from deltaspace.errors import DeltaspaceError

DEBUG_ENV = "DELTASPACE_DEBUG"
_DEBUG_KEY = "deltaspace.debug"


def debug_enabled(ctx: typer.Context | None = None) -> bool:
    if ctx is not None and ctx.meta.get(_DEBUG_KEY):
        return True
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def print_error(message: str) -> None:
    """``error: <message>`` on stderr, on one line (a message spanning lines is joined)."""
    line = " ".join(part.strip() for part in str(message).strip().splitlines() if part.strip())
    typer.echo(typer.style("error:", fg="red", bold=True) + f" {line}", err=True)


class ErrorBoundaryGroup(TyperGroup):
    """Runs every command inside the boundary: subcommand parsing happens in ``invoke`` too, so a bad
    option value or an unknown command is caught here as well."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except typer.Exit:
            raise
        except click_exceptions.UsageError as error:
            if debug_enabled(ctx) or type(error).__name__ == "NoArgsIsHelpError":  # that one prints help
                raise
            where = error.ctx.command_path if error.ctx is not None else ctx.command_path
            hint = f"see `{where} --help`"
            if "--debug" in error.format_message():
                hint = "--debug goes before the command: `deltaspace --debug train ...`"
            print_error(f"{error.format_message()} ({hint})")
            raise typer.Exit(code=2) from None
        except DeltaspaceError as error:
            if debug_enabled(ctx):
                raise
            print_error(str(error))
            raise typer.Exit(code=1) from None


app = typer.Typer(
    name="deltaspace",
    cls=ErrorBoundaryGroup,
    help="Delta tuning for transformers: Coeff-Tuning, a zoo of delta methods, and their unified subspace.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def _main_options(
    ctx: typer.Context,
    debug: bool = typer.Option(
        False, "--debug", help=f"Show the full traceback of every error (or set {DEBUG_ENV}=1)."
    ),
) -> None:
    """Delta tuning for transformers: Coeff-Tuning, a zoo of delta methods, and their unified subspace."""
    ctx.meta[_DEBUG_KEY] = debug


def command_line(command: str, fallback: list[str] | None = None) -> str:
    """``deltaspace report <command> ...`` as the user typed it (the arguments after ``command`` in
    ``sys.argv``; ``fallback`` when it was called otherwise, e.g. from tests), for a report's "regenerate
    with" line."""
    import sys

    given = sys.argv[sys.argv.index(command) + 1 :] if command in sys.argv else (fallback or [])
    return " ".join(["deltaspace report", command, *given])


# `deltaspace report ...`: each command module adds its reports here.
report_app = typer.Typer(help="Reports from finished runs and studies.", no_args_is_help=True)
app.add_typer(report_app, name="report")
