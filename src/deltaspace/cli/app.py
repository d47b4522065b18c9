"""The typer application every command module registers on."""

import typer

app = typer.Typer(
    name="deltaspace",
    help="Delta tuning for transformers: Coeff-Tuning, a zoo of delta methods, and their unified subspace.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
