"""Streaming: print a reply as it arrives, then its usage. Seed 000's examples/streaming.

python examples/streaming.py
"""

from __future__ import annotations

import trio

import llm_invocation as llm


async def main() -> None:
    async with llm.open_client(llm.Config.load()) as client:
        request = llm.Request(
            model=client.config.default_model or "mock",
            messages=[llm.user("Write a story about a brave knight.")],
            options=llm.ModelOptions(max_tokens=1000),
        )
        async with client.invoke(request) as stream:
            async for chunk in stream:
                print(chunk.text, end="", flush=True)
        print()
        print(f"[{stream.response.finish_reason}] {stream.response.usage}")

        # The first specification's StreamChat: ChatResponse deltas, errors as a final delta.
        async with client.stream_chat([llm.user("Count to five.")]) as deltas:
            async for delta in deltas:
                if delta.error is not None:
                    print(f"\nerror: {delta.error.message}")
                elif delta.messages:
                    print(delta.messages[0].content, end="", flush=True)
        print()


if __name__ == "__main__":
    trio.run(main)
