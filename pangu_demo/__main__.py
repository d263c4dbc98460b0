"""`python -m pangu_demo COMMAND …`: see pangu_demo.cli."""

from .cli import main

raise SystemExit(main())
