"""``moa-lab ask`` (stream an MoA answer, then the per-call summary) and ``moa-lab serve``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from .backends import get_backend
from .local import LocalServerError
from .moa import run_moa
from .prompts import AGGREGATOR_PROMPT_EN, AGGREGATOR_PROMPT_ZH
from .records import MoAError
from .server import add_serve_args, run_serve
from .trace import format_trace


def _models(text: str) -> list[str]:
    return [m.strip() for m in text.split(",") if m.strip()]


def _ask(args: argparse.Namespace) -> int:
    try:
        backend = get_backend(args.backend)
        proposers = None
        if args.proposers:
            proposers = args.proposers[0] if len(args.proposers) == 1 else args.proposers
        print(f"[backend] {backend.describe()}", file=sys.stderr, flush=True)
        result = asyncio.run(
            run_moa(
                args.prompt, proposers, args.aggregator, layers=args.layers,
                system_prompt=AGGREGATOR_PROMPT_ZH if args.chinese_prompt else AGGREGATOR_PROMPT_EN,
                temperature=args.temperature, max_tokens=args.max_tokens, seed=args.seed, min_ok=args.min_ok,
                timeout=args.timeout, retries=args.retries, backend=backend,
                on_chunk=lambda chunk: print(chunk, end="", flush=True),
            )
        )
    except ValueError as exc:
        print(f"moa-lab ask: error: {exc}", file=sys.stderr)
        return 2
    except (MoAError, LocalServerError) as exc:
        print(f"\nmoa-lab ask: {exc}", file=sys.stderr)
        layers = getattr(exc, "layers", [])
        if layers:
            print("\ncomputed before the failure:\n" + format_trace(c for layer in layers for c in layer.calls),
                  file=sys.stderr)
        return 1
    print("\n")
    print(json.dumps(result.to_dict(), ensure_ascii=False, indent=1) if args.json else result.summary())
    print(f"\n{len(result.trace)} calls, {result.seconds:.2f}s wall time")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="moa-lab", description="Mixture-of-Agents from the command line.")
    sub = parser.add_subparsers(dest="command", required=True)

    ask = sub.add_parser("ask", help="stream an MoA answer, then a per-call summary")
    ask.add_argument("prompt")
    ask.add_argument("--layers", type=int, default=None, help="layers incl. the aggregator (default 2)")
    ask.add_argument("--proposers", type=_models, action="append", metavar="A,B,C",
                     help="proposer models; repeat the flag to give each layer its own list")
    ask.add_argument("--aggregator", default=None, help="aggregator model")
    ask.add_argument("--temperature", type=float, default=0.7)
    ask.add_argument("--max-tokens", type=int, default=512)
    ask.add_argument("--seed", type=int, default=0)
    ask.add_argument("--min-ok", type=int, default=1, help="answers a layer needs to go on (default 1)")
    ask.add_argument("--timeout", type=float, default=120.0, help="seconds per call (per chunk when streaming)")
    ask.add_argument("--retries", type=int, default=3)
    ask.add_argument("--backend", default=None, help="'local', 'together' or a base URL (default: from env)")
    ask.add_argument("--chinese-prompt", action="store_true", help="use the seed's Chinese aggregator prompt")
    ask.add_argument("--json", action="store_true", help="print the whole result as JSON after the answer")
    ask.set_defaults(func=_ask)

    serve = sub.add_parser("serve", help="serve the bundled models (OpenAI-compatible) in the foreground")
    add_serve_args(serve)
    serve.set_defaults(func=run_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
