"""``python -m llm_invocation``: the command line."""

import gc

from .cli import main

status = main()
# The process ends here: its objects need no final collections (on a loaded machine they
# took longer than the rest of a graceful shutdown after the grace).
gc.freeze()
raise SystemExit(status)
