"""``python -m fingen`` runs the CLI."""

from __future__ import annotations

__all__: list[str] = []

from fingen.cli import main

main()
