"""``python -m gateway.cli``: the same as the ``callback-gateway`` command."""

from gateway.cli import main

main()
