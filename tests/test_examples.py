"""Every example runs offline against the mock provider and prints what it shows."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parent.parent / "examples"

EXPECTED = {
    "simple.py": ["Response: ", "Chat: "],
    "streaming.py": ["[stop]", "Count to five"],
    "advanced.py": ["Token usage:", "Cost: $", "TOTAL"],
    "tools.py": ["-> calling ['get_weather']", "It is sunny", "steps: 2"],
    "mcp_tools.py": ["calc__multiply", "6 times 7 is 42."],
    "mcp_in_process.py": ["['papers__search']", "-> calling ['papers__search']", "Logical qubits"],
    "fan_out.py": ["300 answers", "fan-out"],
    "observability.py": [
        '"name": "chat flaky"',
        '"name": "execute_tool get_weather"',
        '"attempts":2,"retries":1',
        "It is sunny in Paris.",
    ],
    "embed_in_trio_app.py": ["[worker]", "gave up on a slow call", "0 calls in flight"],
    "websocket_client.py": ["story: error (canceled)", "joke: done", "joke (371 characters)"],
    "web_integration.py": ["chat page at http://127.0.0.1:", "GET / -> 200"],
    "http_chat.py": [
        "POST /v1/chat/completions -> 200",
        "(stream) -> 200",
        "ledger: token 'example' made 2 calls",
    ],
    "custom_provider.py": [
        "LineChat heard: hello there [stop]",
        "streamed usage: 2 in, 4 out",
        "whole answer: 'LineChat heard: hi'",
        "busy model: ProviderOverloaded",
        "registered twice: duplicate_provider",
    ],
}

ARGUMENTS = {"web_integration.py": ["--check"], "http_chat.py": ["--check"]}


def offline_env() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if not k.endswith("_API_KEY") and not k.startswith("LLM_")
    }


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_the_example_runs_offline(name: str) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *ARGUMENTS.get(name, [])],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=offline_env(),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    for text in EXPECTED[name]:
        assert text in done.stdout, (text, done.stdout[-2000:])
    assert "Traceback" not in done.stderr


def test_every_example_is_tested() -> None:
    present = {p.name for p in EXAMPLES.glob("*.py")}
    assert present == set(EXPECTED)


def readme_programs() -> list[str]:
    """The README's Python blocks that are whole programs (they end by running ``main``)."""
    text = (EXAMPLES.parent / "README.md").read_text()
    blocks = [block.split("```", 1)[0] for block in text.split("```python\n")[1:]]
    return [block for block in blocks if "trio.run(main)" in block]


def test_the_readme_has_programs_to_run() -> None:
    assert len(readme_programs()) >= 2


@pytest.mark.parametrize("source", readme_programs(), ids=lambda _: "program")
def test_the_readme_program_runs_offline(source: str, tmp_path: Path) -> None:
    program = tmp_path / "readme_program.py"
    program.write_text(source)
    done = subprocess.run(
        [sys.executable, str(program)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=offline_env(),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip(), "the program printed nothing"
    assert "Traceback" not in done.stderr
