"""``python -m narrator_cli``: the same as the ``narrator`` command."""

from .cli import main

main()
