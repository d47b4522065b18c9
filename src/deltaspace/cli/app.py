"""The typer application every command module registers on."""

from typing import NoReturn

import typer

app = typer.Typer(
    name="deltaspace",
    help="Delta tuning for transformers: Coeff-Tuning, a zoo of delta methods, and their unified subspace.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


def fail(message: str) -> NoReturn:
    """A one-line error for a problem the user can fix (no traceback), exit code 1."""
    from rich.console import Console

    Console(stderr=True).print(f"[red]error:[/] {message}", soft_wrap=True, highlight=False)
    raise typer.Exit(code=1)
