"""``moa-lab ask`` (stream an MoA answer, then the per-call summary), ``moa-lab batch``, ``moa-lab sweep`` and
``moa-lab serve``.

Over 300 lines: one parser and one short handler per command (ask, batch, sweep, serve); their flags are most of it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from moa_lab._backends import get_backend
from moa_lab._budget import BudgetExceeded
from moa_lab._estimate import estimate
from moa_lab._jsonl import dumps
from moa_lab._logs import verbose
from moa_lab._recipe import Recipe
from moa_lab._records import MoAError
from moa_lab._settings import COMBINE_MODES, DEFAULTS
from moa_lab._sync import run_sync
from moa_lab._terminal_chat import run_chat
from moa_lab._trace import format_trace
from moa_lab._usage import read_prices
from moa_lab.engine._local import (
    BUNDLED_MODELS,
    REFERENCE_ALIASES,
    LocalServerError,
    check_aliases,
    model_path,
    pack_file,
    pack_spec,
)
from moa_lab.engine._models import ModelSpec, chat_formats, check_models, parse_models
from moa_lab.engine._pack import installed_pack
from moa_lab.engine._policy import default_threads, thread_policy
from moa_lab.evaluate._benchmark import KINDS as BENCHMARKS
from moa_lab.evaluate._benchmark import estimate_benchmark, run_benchmark
from moa_lab.moa import run_moa
from moa_lab.prompts import AGGREGATOR_PROMPT_ZH
from moa_lab.runs._batch import run_batch
from moa_lab.runs._files import OutputError, read_prompts
from moa_lab.runs._ray import RayOptions
from moa_lab.sweeps._run import plan_sweep, run_sweep


def _models(text: str) -> list[str]:
    return [m.strip() for m in text.split(",") if m.strip()]


#: The run setting each run flag sets, where its name differs.
_SETTING_OF = {"chinese_prompt": "system_prompt", "no_cache": "cache", "role": "roles"}


def _given(actions: list[argparse.Action]) -> None:
    """Make ``actions`` note in the namespace (``_given``) that their flag was given: a flag given wins over a
    --recipe's value, whatever its value (the built-in default too)."""
    for action in actions:
        base = type(action)

        def call(self, parser, namespace, values, option_string=None, _base=base):
            _base.__call__(self, parser, namespace, values, option_string)
            namespace._given = {*getattr(namespace, "_given", ()), _SETTING_OF.get(self.dest, self.dest)}

        action.__class__ = type(f"Given{base.__name__}", (base,), {"__call__": call})


#: The run settings whose flag gives them as they are (the flag's dest is the setting's name).
_AS_GIVEN = (
    "aggregator layers temperature max_tokens seed min_ok quorum deadline timeout retries backend combine"
    " top_k window shuffle_references max_references early_stop filter_outliers similarity max_cost max_tokens_total"
).split()


def _run_settings(args: argparse.Namespace) -> dict:
    """The run settings shared by ``ask`` and ``batch``, as keyword arguments of run_moa / run_batch."""
    proposers = None
    if args.proposers:
        proposers = args.proposers[0] if len(args.proposers) == 1 else args.proposers
    cli = {name: getattr(args, name) for name in _AS_GIVEN}
    cli.update(
        proposers=proposers,
        system_prompt=AGGREGATOR_PROMPT_ZH if args.chinese_prompt else None,
        cache=False if args.no_cache else (args.cache or None),
        roles=[r or None for r in args.role] or None,
    )
    if args.recipe:  # the recipe's values, changed by the flags given (whatever their values)
        given = {k: v for k, v in cli.items() if k in getattr(args, "_given", ())}
        cli = {**Recipe.from_file(args.recipe, backend=args.backend).arguments(), **given}
    return {**cli, "backend": get_backend(cli.get("backend"))}


def _ask(args: argparse.Namespace) -> int:
    try:
        settings = _run_settings(args)
        print(f"[backend] {settings['backend'].describe()}", file=sys.stderr, flush=True)
        result = asyncio.run(run_moa(args.prompt, **settings, on_chunk=lambda chunk: print(chunk, end="", flush=True)))
    except ValueError as exc:
        print(f"moa-lab ask: error: {exc}", file=sys.stderr)
        return 2
    except (MoAError, LocalServerError) as exc:
        print(f"\nmoa-lab ask: {exc}", file=sys.stderr)
        layers = getattr(exc, "layers", [])
        if layers:
            print(
                "\ncomputed before the failure:\n" + format_trace(c for layer in layers for c in layer.calls),
                file=sys.stderr,
            )
        return 1
    except KeyboardInterrupt:
        print(
            "\nmoa-lab ask: interrupted"
            + ("" if args.no_cache else "; the answers that finished are cached: the same command again replays them"),
            file=sys.stderr,
        )
        return 130
    print("\n")
    print(dumps(result.to_dict(), indent=1) if args.json else result.summary())
    print(f"\n{result.usage()}; {result.seconds:.2f}s wall time")
    return 0


def _chat(args: argparse.Namespace) -> int:
    try:
        settings = _run_settings(args)
    except ValueError as exc:
        print(f"moa-lab chat: error: {exc}", file=sys.stderr)
        return 2
    return run_chat(settings)


def _eval(args: argparse.Namespace) -> int:
    def run() -> int:
        recipe = Recipe.from_file(args.recipe, name=args.name) if args.recipe else Recipe(name=args.name)
        options = {} if args.max_tokens is None else {"max_tokens": args.max_tokens}
        if args.dry_run:
            prices = read_prices(args.prices) if args.prices else None
            print(
                estimate_benchmark(
                    args.kind,
                    args.data,
                    recipe,
                    k=args.k,
                    prices=prices,
                    judge=args.judge,
                    judge_prompts=args.judge_prompts,
                    baseline=args.baseline,
                    reuse=args.reuse,
                    **options,
                )
            )
            return 0
        report = run_sync(
            run_benchmark(
                args.kind,
                args.data,
                args.outdir,
                recipe,
                k=args.k,
                judge=args.judge,
                judge_prompts=args.judge_prompts,
                baseline=args.baseline,
                reuse=args.reuse,
                progress=not args.no_progress,
                concurrency=args.concurrency,
                retry_failed=args.retry_failed,
                **options,
            )
        )
        print(report)
        return 1 if report.failed else 0

    return _exit_code("eval", f"the finished answers are in {args.outdir}", run)


def _exit_code(command: str, kept: str, run: Callable[[], int]) -> int:
    """Run a command that writes its results as it goes (batch, sweep); each way it can end is one message and an
    exit code: 1 the output could not be written mid-run (what was written is kept) or the embedded server failed,
    2 bad input or an output that cannot be written (nothing was run), 3 a budget, 130 Ctrl-C."""
    try:
        return run()
    except OutputError as exc:  # the output could not be written mid-run: stopped, what was written is kept
        print(f"moa-lab {command}: {exc}", file=sys.stderr)
        return 1
    except BudgetExceeded as exc:  # refused before any call, or stopped at the budget: what was written is kept
        print(f"moa-lab {command}: {exc}", file=sys.stderr)
        if exc.summary is not None:
            print(exc.summary)
        return 3
    except (ValueError, OSError) as exc:  # bad input, or an output that cannot be written: nothing was run
        print(f"moa-lab {command}: error: {exc}", file=sys.stderr)
        return 2
    except LocalServerError as exc:
        print(f"moa-lab {command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\nmoa-lab {command}: interrupted; {kept}: run the same command again to go on", file=sys.stderr)
        return 130


def _batch(args: argparse.Namespace) -> int:
    def run() -> int:
        settings = _run_settings(args)
        prices = read_prices(args.prices) if args.prices else None
        if args.estimate:
            items = read_prompts(args.input)
            print(estimate([item.prompt for item in items], prices=prices, **settings))
            return 0
        print(f"[backend] {settings['backend'].describe()}", file=sys.stderr, flush=True)
        engine: dict = {}
        if args.ray:
            engine = dict(
                engine=RayOptions(
                    address=args.ray,
                    actors=args.actors,
                    actor_concurrency=args.actor_concurrency,
                    block_size=args.block_size,
                )
            )
        summary = asyncio.run(
            run_batch(
                args.input,
                args.output,
                concurrency=args.concurrency,
                rps=args.rps,
                shard=args.shard,
                retry_failed=args.retry_failed,
                progress=not args.no_progress,
                prices=prices,
                **engine,
                **settings,
            )
        )
        print(summary)
        return 1 if summary.failed else 0

    return _exit_code("batch", f"the finished prompts are in {args.output}", run)


def _sweep(args: argparse.Namespace) -> int:
    def run() -> int:
        if args.dry_run:
            sweep = plan_sweep(args.notebook, args.spec, args.outdir)
            if sweep.changed:
                print(f"note: {sweep.changed}")
            print(sweep.describe(read_prices(args.prices) if args.prices else None))
            return 0
        options = dict(jobs=args.jobs, retry_failed=args.retry_failed, html=args.html, progress=not args.no_progress)
        summary = asyncio.run(run_sweep(args.notebook, args.spec, args.outdir, **options))
        print(summary)
        print(f"table: {Path(args.outdir) / 'results.csv'} ({len(summary.table)} rows)")
        return 1 if summary.failed else 0

    return _exit_code("sweep", f"the finished points are in {args.outdir}", run)


def parse_alias_args(pairs: list[str], files: list[str], models=tuple(BUNDLED_MODELS)) -> dict[str, str]:
    """``NAME=MODEL`` strings and alias files (a JSON object, or ``NAME=MODEL`` lines, ``#`` comments). A name
    given twice (in one file, in two, or as two flags) is refused naming both places, as specs and prices are."""
    raw: dict[str, str] = {}
    where: dict[str, str] = {}

    def add(name: str, target: object, place: str) -> None:
        if name in where:
            raise ValueError(
                f"the alias {name!r} is given twice: {where[name]} ({raw[name]!r}) and {place} ({target!r}); "
                "give each name one target"
            )
        raw[name], where[name] = target, place  # type: ignore[assignment]  # check_aliases checks the target

    for path in files:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ValueError(f"cannot read alias file {path!r}: {exc.strerror}") from None
        if text.lstrip().startswith("{"):
            try:
                entries = json.loads(text, object_pairs_hook=list)
            except json.JSONDecodeError as exc:
                raise ValueError(f"alias file {path!r} is not a JSON object ({exc})") from None
            for name, target in entries:
                add(name, target, f"alias file {path}")
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip() and not line.strip().startswith("#"):
                name, sep, target = line.strip().rpartition("=")
                if not sep or not name.strip():
                    raise ValueError(f"{path}:{number}: alias {line.strip()!r} is not of the form NAME=MODEL")
                add(name.strip(), target.strip(), f"{path}:{number}")
    for pair in pairs:
        name, sep, target = pair.rpartition("=")
        if not sep or not name.strip():
            raise ValueError(f"alias {pair!r} is not of the form NAME=MODEL")
        add(name.strip(), target.strip(), f"--alias {pair}")
    return check_aliases(raw, models)


def add_run_args(p: argparse.ArgumentParser) -> None:
    before = len(p._actions)
    _add_run_args(p)
    _given(p._actions[before:])


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--recipe",
        metavar="FILE",
        help="a recipe file (YAML or JSON: models and settings); the flags given change its values",
    )
    p.add_argument("--layers", type=int, help="layers incl. the aggregator (default 2)")
    p.add_argument(
        "--proposers",
        type=_models,
        action="append",
        metavar="A,B,C",
        help="proposer models; repeat the flag to give each layer its own list",
    )
    p.add_argument("--aggregator", help="aggregator model")
    p.add_argument("--temperature", type=float, default=DEFAULTS.temperature, help="(default %(default)s)")
    p.add_argument(
        "--max-tokens", type=int, help="per answer (default: the backend's: 512, or 64 on the bundled models)"
    )
    p.add_argument("--seed", type=int, default=DEFAULTS.seed, help="(default %(default)s)")
    p.add_argument(
        "--min-ok", type=int, default=DEFAULTS.min_ok, help="answers a layer needs to go on (default %(default)s)"
    )
    p.add_argument(
        "--quorum", type=int, metavar="K", help="a layer moves on once K proposers answered; the others are cancelled"
    )
    p.add_argument(
        "--deadline", type=float, metavar="S", help="a layer moves on after S seconds with the answers it has"
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=DEFAULTS.timeout,
        help="seconds to wait for an answer, or for each token when streaming (default %(default)s)",
    )
    p.add_argument("--retries", type=int, default=DEFAULTS.retries, help="(default %(default)s)")
    p.add_argument("--backend", help="'local', 'together' or a base URL (default: from env)")
    p.add_argument("--chinese-prompt", action="store_true", help="use the reference script's Chinese aggregator prompt")
    p.add_argument(
        "--cache", metavar="FILE", help="the answers cache file (default: MOA_LAB_CACHE, else the user cache dir)"
    )
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the answers cache")
    p.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="log every call and HTTP request to stderr (the API key is scrubbed from every line)",
    )
    v = p.add_argument_group("variants (see README: Variants)")
    v.add_argument(
        "--combine",
        default=DEFAULTS.combine,
        metavar="MODE",
        help=f"how the last layer combines: {', '.join(COMBINE_MODES)} (default %(default)s)",
    )
    v.add_argument(
        "--top-k", type=int, default=DEFAULTS.top_k, help="rank: references synthesized (default %(default)s)"
    )
    v.add_argument(
        "--window", type=int, default=DEFAULTS.window, help="sequential: references per call (default %(default)s)"
    )
    _repeatable(v, "--role", "TEXT", "a proposer's system prompt, one flag per proposer in order ('' for none)")
    v.add_argument("--shuffle-references", action="store_true", help="every call reads the references in its own order")
    v.add_argument(
        "--max-references", type=int, metavar="K", help="pass on only the K most different answers of a layer"
    )
    v.add_argument(
        "--early-stop",
        type=float,
        metavar="T",
        help="stop adding proposer layers once a layer's answers are T alike (0 to 1)",
    )
    v.add_argument(
        "--filter-outliers",
        type=float,
        metavar="M",
        help="leave out an answer whose mean similarity to the others is M below the median's (a deceptive proposer)",
    )
    v.add_argument(
        "--similarity",
        choices=["lexical", "semantic"],
        help="how alike answers are, for the three above: shared words (default) or meaning ('moa_lab[semantic]')",
    )
    v.add_argument("--max-cost", type=float, metavar="USD", help="the run's (batch's) budget in USD")
    v.add_argument(
        "--max-tokens-total", type=int, metavar="N", help="the run's (batch's) budget in tokens, prompt and completion"
    )


def add_serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, loopback only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 = any free port)")
    p.add_argument(
        "--threads",
        "--workers",
        type=int,
        dest="threads",
        help="cores the calls running share (default: every core this process may use; MOA_LAB_WORKERS)",
    )
    _repeatable(
        p,
        "--model",
        "NAME=PATH.gguf[:CHAT_FORMAT]",
        "serve your own GGUF model as NAME (repeatable); chat format: the file's own template unless "
        "given (e.g. chatml, llama-3, gemma, alpaca)",
    )
    _repeatable(p, "--alias", "NAME=MODEL", "serve NAME with one of the models (repeatable)")
    _repeatable(p, "--alias-file", "FILE", "aliases from a file: a JSON object or NAME=MODEL lines")
    p.add_argument(
        "--reference-aliases",
        "--seed-aliases",  # its first name, kept one release
        dest="reference_aliases",
        action="store_true",
        help="alias the Together model names of Together's reference script",
    )
    _repeatable(
        p,
        "--recipe",
        "NAME=FILE",
        "serve a recipe file as the model moa/NAME (repeatable; moa/default: the default models)",
    )
    p.add_argument(
        "--api-key",
        help="require this bearer key on every request (better: set MOA_LAB_SERVE_KEY, which ps cannot show); "
        "needed to listen beyond 127.0.0.1",
    )
    p.add_argument("--keep-runs", type=int, default=256, help="MoA run records kept (default %(default)s)")
    p.add_argument("--concurrency", type=int, default=16, help="calls at once over all MoA runs (default %(default)s)")
    p.add_argument("--max-tokens-cap", type=int, default=1024, help="max_tokens for requests that set none")
    p.add_argument(
        "--max-tokens-limit",
        type=int,
        metavar="N",
        help="no request generates more than N tokens, whatever it asks (e.g. the reference scripts' 512, on a laptop)",
    )
    p.add_argument(
        "--patience",
        type=float,
        default=5.0,
        metavar="S",
        help="a non-streamed moa/NAME answer not ready after S seconds gets its 200 status, then a space every "
        "second until its body (clients' read timeouts stay quiet; a failure is then the body's error object)",
    )
    p.add_argument("--ready-file", help=argparse.SUPPRESS)
    p.add_argument("--watch-stdin", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--log-dir", help=argparse.SUPPRESS)
    p.add_argument("--model-file", action="append", default=[], help=argparse.SUPPRESS)  # NAME=PATH (LocalServer)
    p.add_argument("--model-broken", action="append", default=[], help=argparse.SUPPRESS)  # NAME=WHY (LocalServer)


def _repeatable(parser: argparse.ArgumentParser | argparse._ArgumentGroup, flag: str, metavar: str, help: str) -> None:
    """A flag given once per value (``--alias a=b --alias c=d``): a list of them, empty when not given."""
    parser.add_argument(flag, action="append", default=[], metavar=metavar, help=help)


def serve_models(args: argparse.Namespace) -> list:
    """The bundled models (their files from --model-file, else found) and those of --model, checked. A pack model
    whose file cannot be made (a damaged part package, a full disk) is served as broken: a 503 naming it and the
    reason for each of its calls, the other models served as ever."""

    files = dict(pair.split("=", 1) for pair in args.model_file)
    broken = dict(pair.split("=", 1) for pair in args.model_broken)

    def pack(name: str) -> ModelSpec:
        if name in files or name in broken:
            return pack_spec(name, Path(files[name]) if name in files else None, broken.get(name))
        try:
            return pack_spec(name, pack_file(name))
        except LocalServerError as exc:
            print(f"moa-lab serve: {exc}; the other models are served", file=sys.stderr, flush=True)
            return pack_spec(name, None, str(exc))

    bundled = [
        ModelSpec(name, Path(files[name]) if name in files else model_path(name), fmt, bundled=True)
        for name, fmt in BUNDLED_MODELS.items()
    ] + [pack(name) for name in installed_pack()]
    return check_models(bundled + parse_models(args.model, "--model"), chat_formats())


def run_serve(args: argparse.Namespace) -> int:
    from moa_lab.serve import MoAEndpoint, load_recipes  # uvicorn and starlette are needed only here
    from moa_lab.serve._front import serve

    try:
        thread_policy()
        if args.threads is not None and args.threads < 1:
            raise ValueError(f"--threads must be at least 1, got {args.threads}")
        if not 0 <= args.port <= 65535:
            raise ValueError(f"--port must be from 0 to 65535 (0: any free port), got {args.port}")
        if args.max_tokens_cap < 1:
            raise ValueError(f"--max-tokens-cap must be at least 1, got {args.max_tokens_cap}")
        if args.max_tokens_limit is not None and args.max_tokens_limit < 1:
            raise ValueError(f"--max-tokens-limit must be at least 1, got {args.max_tokens_limit}")
        models = serve_models(args)
        aliases = (dict(REFERENCE_ALIASES) if args.reference_aliases else {}) | parse_alias_args(
            args.alias, args.alias_file, [m.name for m in models]
        )
        if args.keep_runs < 1 or args.concurrency < 1:
            raise ValueError(
                f"--keep-runs and --concurrency must be at least 1, got {args.keep_runs}, {args.concurrency}"
            )
        recipes = load_recipes(args.recipe, [m.name for m in models] + list(aliases))
        if args.patience < 0:
            raise ValueError(f"--patience must be at least 0 seconds, got {args.patience}")
        endpoint = MoAEndpoint(recipes, concurrency=args.concurrency, keep_runs=args.keep_runs, patience=args.patience)
        serve(
            models,
            host=args.host,
            port=args.port,
            threads=args.threads or default_threads(),
            aliases=aliases,
            max_tokens_cap=args.max_tokens_cap,
            ready_file=args.ready_file,
            watch_stdin=args.watch_stdin,
            log_dir=args.log_dir,
            announce=lambda s: print(s, flush=True),
            extension=endpoint,
            api_key=args.api_key or os.environ.get("MOA_LAB_SERVE_KEY") or None,
            max_tokens_limit=args.max_tokens_limit,
        )
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
    add_run_args(ask)
    ask.add_argument("--json", action="store_true", help="print the whole result as JSON after the answer")
    ask.set_defaults(func=_ask)

    chat = sub.add_parser("chat", help="a conversation with an MoA in the terminal (/trace, /reset, /quit)")
    add_run_args(chat)
    chat.set_defaults(func=_chat)

    batch = sub.add_parser("batch", help="an MoA answer for every prompt of a file, one JSON line each (resumable)")
    batch.add_argument("input", help='prompts: JSONL ({"prompt": ..., "id": ...} per line) or one per line')
    batch.add_argument(
        "output",
        help="results, one JSON line per prompt (with --ray: a folder of block files); run again with it to resume",
    )
    batch.add_argument("--concurrency", type=int, default=16, help="model calls at once, over the batch (default 16)")
    batch.add_argument("--rps", type=float, help="at most this many requests started per second")
    batch.add_argument(
        "--shard",
        metavar="I/N",
        help="run only the prompts whose prompt_hash %% N == I (by their text, not their position: "
        "an input edited between runs keeps each prompt in its shard)",
    )
    batch.add_argument("--retry-failed", action="store_true", help="run the prompts that failed before again")
    batch.add_argument("--prices", metavar="FILE", help="JSON {model: [input, output]}: USD per million tokens")
    batch.add_argument("--estimate", action="store_true", help="print the calls and token/cost bounds; run nothing")
    batch.add_argument("--no-progress", action="store_true", help="no progress bar")
    batch.add_argument(
        "--ray",
        nargs="?",
        const="auto",
        metavar="ADDRESS",
        help="run on a Ray cluster (OUTPUT is then a folder): 'auto' (the default) a running one, else a "
        "local one; 'local'; or an address (pip install 'moa_lab[ray]')",
    )
    batch.add_argument("--actors", type=int, default=2, help="--ray: actors running blocks (default %(default)s)")
    batch.add_argument("--actor-concurrency", type=int, default=8, help="--ray: calls at once per actor (%(default)s)")
    batch.add_argument("--block-size", type=int, default=64, help="--ray: prompts per block (default %(default)s)")
    add_run_args(batch)
    batch.set_defaults(func=_batch)

    ev = sub.add_parser(
        "eval", help="a recipe through a benchmark file: its answer format out, a table for checkable sets"
    )
    ev.add_argument("kind", choices=BENCHMARKS, help="the benchmark's file format")
    ev.add_argument("data", help="the benchmark's file (your copy: AlpacaEval JSON, MT-Bench question.jsonl, JSONL)")
    ev.add_argument("outdir", help="answers (a batch file each, resumable), the benchmark's own format, report.json")
    ev.add_argument("--recipe", metavar="FILE", help="models and settings (default: the backend's)")
    ev.add_argument("--k", type=int, default=1, help="gsm8k/choice: samples per question, for maj@k (default 1)")
    ev.add_argument("--name", help="the generator / model_id written in the answer files")
    ev.add_argument("--max-tokens", type=int, help="per answer (default: the recipe's)")
    ev.add_argument("--reuse", metavar="FILE", help="an earlier answers file: its proposers' answers, combined again")
    ev.add_argument("--judge", metavar="MODEL", help="mt-bench: grade both turns; alpaca-eval: judge vs --baseline")
    ev.add_argument("--baseline", metavar="FILE", help="alpaca-eval: a reference model's model_outputs.json")
    ev.add_argument("--judge-prompts", metavar="FILE", help="mt-bench: FastChat's judge_prompts.jsonl")
    ev.add_argument("--concurrency", type=int, default=16, help="model calls at once (default 16)")
    ev.add_argument("--retry-failed", action="store_true", help="run the questions whose run failed before again")
    ev.add_argument("--prices", metavar="FILE", help="prices for --dry-run's cost bound")
    ev.add_argument("--dry-run", action="store_true", help="print the calls and token/cost bounds; run nothing")
    ev.add_argument("--no-progress", action="store_true", help="no progress bar")
    ev.set_defaults(func=_eval)

    sweep = sub.add_parser("sweep", help="run a notebook for every point of a parameter grid; one table of results")
    sweep.add_argument("notebook", help="the notebook (.ipynb, or the .py of a jupytext pair)")
    sweep.add_argument("spec", help="YAML or JSON: parameters (fixed), grid, zip, seeds")
    sweep.add_argument("outdir", help="one folder per point, sweep.json and results.csv/.parquet; again to resume")
    sweep.add_argument("--jobs", type=int, default=2, help="kernels at once (default 2)")
    sweep.add_argument("--dry-run", action="store_true", help="list the points and the calls/cost bound; run nothing")
    sweep.add_argument("--retry-failed", action="store_true", help="run the points that failed before again")
    sweep.add_argument("--html", action="store_true", help="also export each executed notebook as HTML")
    sweep.add_argument("--prices", metavar="FILE", help="prices for --dry-run's cost bound")
    sweep.add_argument("--no-progress", action="store_true", help="no progress bar")
    sweep.set_defaults(func=_sweep)

    serve = sub.add_parser("serve", help="serve the bundled models (OpenAI-compatible) in the foreground")
    add_serve_args(serve)
    serve.set_defaults(func=run_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "verbose", False):
        verbose()
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
