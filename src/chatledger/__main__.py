"""``python -m chatledger``: the ``chatledger`` command."""

from chatledger.cli import main

raise SystemExit(main())
