"""``moa-lab chat``: a conversation with an MoA in the terminal. Each turn is one run over the whole conversation so
far (:func:`moa_lab.run_moa` with ``messages``), the final answer streamed; ``/trace`` shows the last run's calls,
``/reset`` forgets the conversation, ``/quit`` (or end of input) leaves."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import TextIO

from moa_lab._backends import close_clients
from moa_lab._records import MoAError
from moa_lab._results import MoAResult
from moa_lab.moa import run_moa

HELP = "commands: /trace (the last run's calls), /reset (a new conversation), /quit"


class Chat:
    """A conversation: ``history`` (the turns so far) and ``last`` (the last run's :class:`MoAResult`). Each
    :meth:`send` makes one MoA run (the recipe's calls) over the whole history."""

    def __init__(self, settings: dict, write: Callable[[str], None] | None = None) -> None:
        self.settings, self.write = settings, write or _stdout
        self.history: list[dict[str, str]] = []
        self.last: MoAResult | None = None

    async def send(self, text: str) -> MoAResult:
        """Run the conversation with ``text`` as the user's next turn, streaming the final answer to ``write``; on
        success both turns join the history (on a failure, neither: send it again)."""
        turn = {"role": "user", "content": text}
        result = await run_moa(messages=[*self.history, turn], **self.settings, on_chunk=self.write)
        self.history, self.last = result.messages, result
        return result


def _stdout(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def run_chat(settings: dict, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> int:
    """The terminal loop of ``moa-lab chat``: 0 at the end of input or /quit, 130 for Ctrl-C at the prompt (Ctrl-C
    during a run stops that run only)."""

    def write(text: str) -> None:
        stdout.write(text)
        stdout.flush()

    chat = Chat(settings, write)
    write(f"[backend] {settings['backend'].describe()}\nMoA chat; {HELP}\n")
    with asyncio.Runner() as runner:
        try:
            return _loop(chat, runner, stdin, write)
        except KeyboardInterrupt:  # Ctrl-C at the prompt (one during a run stops that run only: see _loop)
            write("\n")
            return 130
        finally:
            runner.run(close_clients())


def _loop(chat: Chat, runner: asyncio.Runner, stdin: TextIO, write: Callable[[str], None]) -> int:
    while True:
        write("\nyou> ")
        line = stdin.readline()
        if not line:
            write("\n")
            return 0
        text = line.rstrip("\n")
        command = text.strip()
        if not command:
            continue
        if command in ("/quit", "/exit"):
            return 0
        if command == "/reset":
            chat.history, chat.last = [], None
            write("(a new conversation)\n")
            continue
        if command == "/trace":
            write((chat.last.summary() + f"\n{chat.last.usage()}" if chat.last else "(no run yet)") + "\n")
            continue
        if command.startswith("/"):
            write(f"unknown command {command!r}; {HELP}\n")
            continue
        write("moa> ")
        try:
            runner.run(chat.send(text))
            write("\n")
        except ValueError as exc:
            write(f"\nerror: {exc}\n")
        except MoAError as exc:
            write(f"\nthe run failed (the turn was not kept; send it again): {exc}\n")
        except KeyboardInterrupt:
            write("\n(interrupted: the turn was not kept)\n")
