"""The command line: `deltaspace fetch | train | eval | sweep | study | tune | report`.

Each command lives in its own module and registers itself on :data:`deltaspace.cli.app.app`.
"""

from deltaspace.cli.app import app


def main() -> None:
    # Command modules are imported here, not at package import, so `import deltaspace` stays light.
    import importlib

    for name in ("fetch", "train", "study", "tune"):
        importlib.import_module(f"deltaspace.cli.{name}")
    app()


__all__ = ["app", "main"]
