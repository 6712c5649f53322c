"""llm-invocation: a trio-native, supervised actor runtime for invoking LLMs."""

from ._version import __version__ as __version__
