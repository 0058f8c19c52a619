"""``moa-lab ask`` (stream an MoA answer, then the per-call summary) and ``moa-lab serve``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from .backends import get_backend
from .local import SEED_ALIASES, LocalServerError, check_aliases, default_workers
from .moa import run_moa
from .prompts import AGGREGATOR_PROMPT_EN, AGGREGATOR_PROMPT_ZH
from .records import MoAError
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


def parse_alias_args(pairs: list[str], files: list[str]) -> dict[str, str]:
    """``NAME=MODEL`` strings and alias files (a JSON object, or ``NAME=MODEL`` lines, ``#`` comments)."""
    raw: dict[str, str] = {}
    for path in files:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ValueError(f"cannot read alias file {path!r}: {exc.strerror}") from None
        if text.lstrip().startswith("{"):
            raw.update(json.loads(text))
            continue
        pairs = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")] + pairs
    for pair in pairs:
        name, sep, target = pair.rpartition("=")
        if not sep or not name.strip():
            raise ValueError(f"alias {pair!r} is not of the form NAME=MODEL")
        raw[name.strip()] = target.strip()
    return check_aliases(raw)


def add_serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, loopback only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 = any free port)")
    p.add_argument("--workers", type=int, default=None, help="calls served at once, one core each (default: cores, max 4)")
    p.add_argument("--alias", action="append", default=[], metavar="NAME=MODEL",
                   help="serve NAME with a bundled model (repeatable)")
    p.add_argument("--alias-file", action="append", default=[], metavar="FILE",
                   help="aliases from a file: a JSON object or NAME=MODEL lines")
    p.add_argument("--seed-aliases", action="store_true", help="alias the seed's Together model names")
    p.add_argument("--max-tokens-cap", type=int, default=1024, help="max_tokens for requests that set none")
    p.add_argument("--ready-file", help=argparse.SUPPRESS)
    p.add_argument("--watch-stdin", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--log-dir", help=argparse.SUPPRESS)


def run_serve(args: argparse.Namespace) -> int:
    from .server import serve  # uvicorn and starlette are needed only here

    try:
        aliases = (dict(SEED_ALIASES) if args.seed_aliases else {}) | parse_alias_args(args.alias, args.alias_file)
        if args.workers is not None and args.workers < 1:
            raise ValueError(f"--workers must be at least 1, got {args.workers}")
        if args.max_tokens_cap < 1:
            raise ValueError(f"--max-tokens-cap must be at least 1, got {args.max_tokens_cap}")
        serve(args.host, args.port, args.workers or default_workers(), aliases, args.max_tokens_cap,
              args.ready_file, args.watch_stdin, args.log_dir, announce=lambda s: print(s, flush=True))
    except (ValueError, LocalServerError) as exc:
        print(f"moa-lab serve: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
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
    ask.add_argument("--timeout", type=float, default=120.0, help="seconds to wait on the server (per chunk when streaming)")
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
