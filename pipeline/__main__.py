"""``python -m pipeline`` is the same as the ``landwatch`` command."""

from pipeline.cli.main import cli

if __name__ == "__main__":
    cli()
