"""The `zeta-local` command: ask, route, embed, status, stats, models, plan, download, doctor,
bench, serve.

What a person sees is decided here: answers on stdout as they are generated, which model
answered and every model skipped (with why) on stderr, and a one-line error with a non-zero exit
instead of a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

from zeta_local.config import Config, load_config
from zeta_local.errors import FallbackExhausted, InvalidRequest, ZetaError
from zeta_local.results import Done, Fallback, GenerationResult, ReasoningChunk, TextChunk

PROG = "zeta-local"
EXIT_FAILED = 1  # the request or the config failed
EXIT_USAGE = 2  # argparse's own code for bad arguments


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # -v counts wherever it is given: before the command and after it.
    args.verbose += getattr(args, "verbose_after", 0)
    _setup_logging(args.verbose)
    try:
        return int(args.run(args) or 0)
    except FallbackExhausted as exc:
        if getattr(args, "json", False):
            _print_json({"error": str(exc), "task": exc.task,
                         "attempts": [asdict(a) for a in exc.attempts]})
        _err(f"error: no model could answer the {exc.task!r} request")
        for attempt in exc.attempts:
            _err(f"  {attempt.model}: {attempt.outcome}: {attempt.detail}")
        return EXIT_FAILED
    except ZetaError as exc:
        if getattr(args, "json", False):
            _print_json({"error": str(exc)})
        _err(f"error: {exc}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    except BrokenPipeError:  # `zeta-local ask ... | head` closed our stdout: not an error
        sys.stderr.close()
        return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Route prompts to the right local "
                                     "GGUF model, falling back along each task's chain.")
    _global_options(parser, config=None, verbose=0)
    # The same options after the subcommand, as with git, docker and kubectl. Their default
    # there is "not given", so that a value given before the subcommand survives.
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, config=argparse.SUPPRESS, verbose=argparse.SUPPRESS,
                    verbose_dest="verbose_after")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ask = sub.add_parser("ask", parents=[common], help="answer a prompt, streaming the text")
    ask.add_argument("prompt")
    ask.add_argument("--task", choices=("code", "reason", "chat"),
                     help="skip the classifier and use this task's chain")
    ask.add_argument("--max-tokens", type=int, metavar="N")
    ask.add_argument("--temperature", type=float, metavar="T")
    ask.add_argument("--seed", type=int, metavar="N")
    ask.add_argument("--think", choices=("auto", "on", "off"), dest="thinking",
                     help="whether a model with a thinking mode (Qwen3) thinks first; auto "
                          "(models.toml's default): for reason tasks only")
    ask.add_argument("--reasoning-budget", type=int, metavar="N",
                     help="close the thinking after N tokens and answer")
    ask.add_argument("--show-reasoning", action="store_true",
                     help="print the model's thinking (to stderr) as it thinks; hidden by default")
    ask.add_argument("--raw", action="store_true",
                     help="plain completion of the prompt instead of a chat turn")
    ask.add_argument("--json", action="store_true",
                     help="print one JSON object with the text, model, route and attempts")
    ask.set_defaults(run=_ask)

    route = sub.add_parser("route", parents=[common], help="show the task and chain a prompt would get")
    route.add_argument("prompt")
    route.add_argument("--json", action="store_true")
    route.set_defaults(run=_route)

    embed = sub.add_parser("embed", parents=[common], help="embed texts into normalised vectors")
    embed.add_argument("texts", nargs="+", metavar="TEXT")
    embed.add_argument("--model", help="use exactly this model (default: the embed chain)")
    embed.add_argument("--json", action="store_true")
    embed.set_defaults(run=_embed)

    status = sub.add_parser("status", parents=[common],
                            help="every model's state: unloaded, unavailable (and why), ready, ...")
    status.add_argument("--json", action="store_true")
    status.set_defaults(run=_status)

    stats = sub.add_parser("stats", parents=[common],
                           help="how each model did per task, from the metrics file (loads no model)")
    stats.add_argument("--since", type=_duration, metavar="DURATION",
                       help="only attempts in the last DURATION: 30s, 15m, 2h, 7d, 1h30m")
    stats.add_argument("--json", action="store_true")
    stats.set_defaults(run=_stats)

    download = sub.add_parser("download", parents=[common],
                              help="fetch models' GGUF files from the Hugging Face hub, verified")
    download.add_argument("names", nargs="*", metavar="NAME")
    download.add_argument("--all", action="store_true", help="every model of models.toml")
    download.add_argument("--dir", type=Path, help="download here instead of the Hugging Face cache "
                          "(then point `path` in models.toml at the file)")
    download.add_argument("--min-free", default="1GiB", metavar="SIZE",
                          help="space that must stay free after the download (default 1GiB)")
    download.set_defaults(run=_download)

    doctor = sub.add_parser("doctor", parents=[common],
                            help="check this machine, llama.cpp, every model file and every route")
    doctor.set_defaults(run=_doctor)

    bench = sub.add_parser("bench", parents=[common],
                           help="measure overhead, failover, cancel, memory, concurrency, server, routing, "
                                "adaptive, remote, gpu, roofline")
    bench.add_argument("--quick", action="store_true", help="fewer runs: under two minutes on 2 cores")
    bench.add_argument("--skip", action="append", default=[], metavar="SECTION",
                       choices=("gpu", "server", "routing", "adaptive", "remote"),
                       help="leave out a section (gpu, server, routing, adaptive or remote); repeatable")
    bench.add_argument("--json", type=Path, metavar="PATH", help="write the figures as JSON")
    bench.add_argument("--markdown", type=Path, metavar="PATH", help="write them as markdown tables")
    bench.add_argument("--plots", type=Path, metavar="DIR", help="write PNG charts (needs the bench extra)")
    bench.set_defaults(run=_bench)

    plan = sub.add_parser("plan", parents=[common],
                          help="predicted memory of every model, by part, from its GGUF header")
    plan.add_argument("--json", action="store_true")
    plan.set_defaults(run=_plan)

    models = sub.add_parser("models", parents=[common], help="list the models and their files")
    models.add_argument("--json", action="store_true")
    models.set_defaults(run=_models)

    serve = sub.add_parser("serve", parents=[common],
                           help="serve the router over the OpenAI HTTP API (needs the serve extra)")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    serve.add_argument("--api-key-env", metavar="NAME",
                       help="require `Authorization: Bearer KEY`, KEY being this environment variable's value")
    serve.add_argument("--max-request-size", default="8MiB", metavar="SIZE",
                       help="refuse larger request bodies with 413 (default 8MiB)")
    serve.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                       help="let web pages from ORIGIN call the server (repeatable; default: none)")
    serve.set_defaults(run=_serve)
    return parser


def _global_options(parser: argparse.ArgumentParser, *, config: Any, verbose: Any,
                    verbose_dest: str = "verbose") -> None:
    parser.add_argument("--config", metavar="PATH", default=config,
                        help="models.toml to use (default: $ZETA_CONFIG, ./models.toml, "
                             "then the copy shipped with zeta_local)")
    parser.add_argument("-v", "--verbose", action="count", default=verbose, dest=verbose_dest,
                        help="log routing decisions (-v) and llama.cpp's own log (-vv)")


def _duration(text: str) -> float:
    """--since: a bad value is argparse's usage error (exit 2), like any other bad argument."""
    from zeta_local.metrics import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _setup_logging(verbosity: int) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{PROG}: %(name)s: %(message)s"))
    root = logging.getLogger("zeta_local")
    root.addHandler(handler)
    root.propagate = False
    # The CLI reports hops itself; library logging is for -v.
    root.setLevel(logging.INFO if verbosity == 1 else logging.DEBUG if verbosity > 1 else logging.ERROR)
    logging.getLogger("zeta_local.llama_cpp").setLevel(
        logging.DEBUG if verbosity > 1 else logging.CRITICAL)


def _router(args: argparse.Namespace) -> Any:
    from zeta_local.router import ZetaDynamicRouter  # imports llama.cpp: only when needed

    return ZetaDynamicRouter.from_toml(args.config)


# ---- commands ----------------------------------------------------------------------------


def _ask(args: argparse.Namespace) -> int:
    if not args.prompt.strip():
        raise InvalidRequest("the prompt is empty; nothing to answer")
    sampling = {"max_tokens": args.max_tokens, "temperature": args.temperature, "seed": args.seed,
                "reasoning_budget": args.reasoning_budget,
                "thinking": {"on": True, "off": False}.get(args.thinking, args.thinking)}
    request: Any = args.prompt if args.raw else [{"role": "user", "content": args.prompt}]
    with _router(args) as router:
        if args.json:
            result = (router.generate if args.raw else router.chat)(request, task=args.task, **sampling)
            _print_json(_result_json(result))
            return 0
        result = None
        showing = False  # the thinking is being shown, and its line is not ended yet
        try:
            for event in router.stream(request, task=args.task, **sampling):
                if isinstance(event, ReasoningChunk):
                    if args.show_reasoning:
                        if not showing:
                            sys.stderr.write(f"[{event.model} is thinking]\n")
                        showing = True
                        sys.stderr.write(event.text)
                        sys.stderr.flush()
                    continue
                if showing:
                    sys.stderr.write("\n[done thinking]\n")
                    showing = False
                if isinstance(event, TextChunk):
                    sys.stdout.write(event.text)
                    sys.stdout.flush()
                elif isinstance(event, Fallback):
                    if event.continues:
                        _err(f"{event.from_model} failed mid-answer ({event.outcome}: "
                             f"{event.detail}); {event.to_model} continues the answer")
                    else:
                        _err(f"skipped {event.from_model}: {event.outcome}: {event.detail}")
                elif isinstance(event, Done):
                    result = event.result
        finally:
            # End the answer's line, also when a model failed half-way through it.
            sys.stdout.write("\n")
            sys.stdout.flush()
    assert result is not None
    usage = result.usage
    thought = ""
    if usage.reasoning_tokens or result.reasoning:
        thought = (f"; thought {usage.reasoning_tokens} tokens in {usage.reasoning_seconds:.2f} s"
                   + ("" if args.show_reasoning else " (--show-reasoning shows it)"))
    _err(f"answered by {result.model} (task {result.task}: {result.route.reason}); "
         f"{usage.completion_tokens} tokens in {usage.seconds:.2f} s, "
         f"{usage.tokens_per_s:.1f} tokens/s{thought}"
         + (", cut at max_tokens" if result.finish_reason == "length" else ""))
    return 0


def _route(args: argparse.Namespace) -> int:
    from zeta_local.router import ZetaDynamicRouter

    with ZetaDynamicRouter(load_config(args.config)) as router:  # loads nothing
        decision = router.route(args.prompt)
    if args.json:
        _print_json(asdict(decision) | {"escalated": decision.escalated})
    else:
        print(f"task:       {decision.task}"
              + (f" (escalated from {decision.classified})" if decision.escalated else ""))
        print(f"chain:      {' -> '.join(decision.chain)}")
        print(f"reason:     {decision.reason}")
        print(f"confidence: {decision.confidence:.2f}")
    return 0


def _embed(args: argparse.Namespace) -> int:
    with _router(args) as router:
        result = router.embed(args.texts, model=args.model)
    if args.json:
        _print_json(result.to_dict())
        return 0
    for attempt in result.attempts[:-1]:
        _err(f"skipped {attempt.model}: {attempt.outcome}: {attempt.detail}")
    print(f"model {result.model}, dim {result.dim}")
    for text, row in zip(args.texts, result.vectors):
        head = ", ".join(f"{x:+.4f}" for x in row[:4])
        print(f"norm {float((row ** 2).sum() ** 0.5):.4f}  [{head}, ...]  {text}")
    return 0


def _status(args: argparse.Namespace) -> int:
    from zeta_local.admission import mib

    with _router(args) as router:
        rows = router.status()
    if args.json:
        _print_json([asdict(r) for r in rows])
        return 0
    _print_table(("NAME", "STATE", "MEMORY", "FLASH_ATTN", "QUEUE", "SERVED", "FAILED", "DETAIL"),
                 [(r.name, r.state, mib(r.memory_bytes) if r.memory_bytes else "-",
                   "on" if r.flash_attn else "off", str(r.queue_length), str(r.served), str(r.failed),
                   r.detail) for r in rows])
    return 0


def _stats(args: argparse.Namespace) -> int:
    import time

    from zeta_local.metrics import metrics_file, store_for, summarize

    config = load_config(args.config)
    path = metrics_file(config.router)
    if path is None:
        _err(f"[router] metrics = false in {config.path}; nothing is recorded")
        if args.json:
            _print_json([])
        return 0
    path, rows = path.absolute(), []
    if path.exists():  # stats must not create an empty file
        # What goes wrong with the file (corrupt, locked) is what this command is asked about.
        logging.getLogger("zeta_local.metrics").setLevel(logging.WARNING)
        with store_for(config.router) as store:
            rows = summarize(store.records(None if args.since is None else time.time() - args.since))
    if args.json:
        _print_json([asdict(r) | {"success_rate": r.success_rate} for r in rows])
    if not rows:
        _err(f"no attempts recorded yet in {path}" if args.since is None else
             f"no attempts recorded in the last {_seconds(args.since)} in {path}")
        return 0
    if args.json:
        return 0
    print(f"metrics: {path}" + (f" (the last {_seconds(args.since)})" if args.since else ""))
    _print_table(("MODEL", "TASK", "REQUESTS", "SUCCESS", "FAILURES", "FIRST TOKEN P50",
                  "FIRST TOKEN P95", "TOKENS/S P50", "AS FALLBACK"), [(
        r.model, r.task, str(r.requests), f"{100 * r.success_rate:.1f}%",
        ", ".join(f"{outcome} {n}" for outcome, n in r.failures.items()) or "-",
        _opt(r.first_token_p50, "{:.2f} s"), _opt(r.first_token_p95, "{:.2f} s"),
        _opt(r.tokens_per_s_p50, "{:.1f}"), str(r.as_fallback),
    ) for r in rows])
    return 0


def _download(args: argparse.Namespace) -> int:
    from zeta_local.admission import parse_size
    from zeta_local.downloads import download_model

    config = load_config(args.config)
    if args.all == bool(args.names):
        raise InvalidRequest("name the models to download, or use --all")
    unknown = [n for n in args.names if n not in config.models]
    if unknown:
        raise InvalidRequest(f"no model named {', '.join(unknown)}; models.toml declares "
                             f"{', '.join(config.models)}")
    try:
        min_free = parse_size(args.min_free)
    except ValueError as exc:
        raise InvalidRequest(f"--min-free {exc}") from None
    failed = 0
    for name in args.names or list(config.models):
        try:
            done = download_model(config.models[name], dest_dir=args.dir, min_free=min_free)
            print(f"{name}: {done.detail}")
        except ZetaError as exc:
            _err(f"error: {exc}")
            failed += 1
    return EXIT_FAILED if failed else 0


def _doctor(args: argparse.Namespace) -> int:
    from zeta_local.doctor import run_doctor

    report, healthy = run_doctor(load_config(args.config))
    print(report)
    return 0 if healthy else EXIT_FAILED


def _bench(args: argparse.Namespace) -> int:
    from zeta_local.bench import run_bench, to_markdown, write_plots

    results = run_bench(args.config, quick=args.quick, progress=lambda line: _err(line), skip=args.skip)
    text = to_markdown(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    if args.markdown:
        args.markdown.write_text(text)
    if args.plots:
        for path in write_plots(results, args.plots):
            _err(f"wrote {path}")
    print(text)
    return 0


def _serve(args: argparse.Namespace) -> int:
    import os

    from zeta_local.admission import parse_size

    try:
        from zeta_local.server import is_loopback, listen, serve
    except ImportError as exc:
        raise InvalidRequest(f"serve needs the serve extra ({exc.name} is not installed): "
                             f"pip install 'zeta-local[serve]'") from None
    try:
        max_bytes = parse_size(args.max_request_size)
    except ValueError as exc:
        raise InvalidRequest(f"--max-request-size {exc}") from None
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env, "")
        if not api_key.strip():
            raise InvalidRequest(f"--api-key-env {args.api_key_env}: that environment variable "
                                 f"is not set or empty; export it with the key clients must send")
    if not is_loopback(args.host) and api_key is None:
        _err(f"warning: serving on {args.host} without an API key: anyone who can reach this "
             f"machine can use its models; add --api-key-env NAME")
    try:
        sock = listen(args.host, args.port)
    except OSError as exc:
        raise InvalidRequest(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}; "
                             f"choose another --host or --port") from None
    with sock, _router(args) as router:
        _err(f"serving {len(router.config.models)} models on http://{args.host}:{args.port}/v1 "
             f"(model: auto, {', '.join(router.config.routes)} or a model name); Ctrl-C stops")
        serve(router, sock, api_key=api_key, max_request_bytes=max_bytes,
              cors_origins=args.cors_origin, log_level="info" if args.verbose else "warning")
    return 0


def _plan(args: argparse.Namespace) -> int:
    from zeta_local.admission import mib
    from zeta_local.inventory import plan_models

    plan = plan_models(load_config(args.config))
    if args.json:
        _print_json(plan)
        return 0
    vram = plan["vram_budget"]
    print(f"ram_budget {mib(plan['ram_budget'])}"
          + (f", vram_budget {mib(vram)}" if vram is not None else "")
          + "; this llama.cpp build " + ("can offload to a GPU" if plan["gpu_offload"] else "is CPU-only"))
    if plan["gpu_process_cost"]:
        print(f"per-process GPU cost {mib(plan['gpu_process_cost'])} (CUDA context and workspace), "
              "counted once" + (" against vram_budget" if vram is not None else ""))
    rows = []
    for r in plan["models"]:
        flash = "on" if r["flash_attn"] else "off"
        for purpose in ("generate", "embed"):
            e = r[purpose]
            if e is not None:
                weights = ("shared",) * 2 if e["shares_weights"] else \
                    (mib(e["weights_cpu"]), mib(e["weights_gpu"]))
                rows.append((r["name"], purpose, str(e["n_ctx"]), flash, *weights, *(mib(e[part]) for part in (
                    "kv_cache", "output", "compute", "margin", "total")),
                             mib(e["vram"]) if e["vram"] else "-", "yes" if r["fits"] else "no"))
        if r.get("remote"):
            rows.append((r["name"], "-", "-", "-", "-", "-", "-", "-", "-", "-", "-", "-", r["remote"]))
        elif r["generate"] is None and r["embed"] is None:
            rows.append((r["name"], "-", "-", flash, "-", "-", "-", "-", "-", "-", "-", "-",
                         f"file {r['file']}"))
    _print_table(("NAME", "CONTEXT", "N_CTX", "FLASH_ATTN", "WEIGHTS CPU", "WEIGHTS GPU", "KV", "OUTPUT",
                  "COMPUTE", "MARGIN", "TOTAL", "VRAM", "FITS"), rows)
    return 0


def _models(args: argparse.Namespace) -> int:
    from zeta_local.inventory import describe_models

    config: Config = load_config(args.config)
    rows = describe_models(config)
    if args.json:
        _print_json({"config": str(config.path), "models": rows})
        return 0
    print(f"config: {config.path}")
    _print_table(("NAME", "FILE", "SIZE", "QUANT", "CTX", "CAPABILITIES", "ROUTES", "SOURCE"), [(
        r["name"], r["file"], _size(r["size_bytes"]), r["quantization"] or "-",
        str(r["n_ctx"] or "-"), ",".join(r["capabilities"]), ",".join(r["routes"]) or "-", _source(r),
    ) for r in rows])
    for r in rows:
        if r["problem"]:
            print(f"  {r['name']}: {r['problem']}")
    return 0


# ---- output helpers ----------------------------------------------------------------------


def _source(row: dict[str, Any]) -> str:
    """Where a model comes from; for a remote, its endpoint, the model it asks for and the NAME
    of the variable holding its key (never the key)."""
    if row["file"] != "remote":
        return row["source"]
    key = f", key ${row['api_key_env']}" if row["api_key_env"] else ""
    return f"remote {row['endpoint']} (model {row['remote_model']}{key})"


def _print_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    table = [header] + rows
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def _result_json(result: GenerationResult) -> dict[str, Any]:
    data = result.to_dict()
    data["route_reason"] = result.route.reason
    return data


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return ""  # pragma: no cover


def _opt(value: float | None, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def _seconds(seconds: float) -> str:
    """A --since duration as a person wrote it, roughly: 90 s, 15 min, 2 h, 7 d."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:g} s"


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def _err(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
