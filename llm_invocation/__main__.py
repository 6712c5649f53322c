"""``python -m llm_invocation``: the command line."""

from .cli import main

raise SystemExit(main())
