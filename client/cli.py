"""Command line for the feedback ensembles (`python -m client`, or the `feedback` console script).

  feedback classify "the invoice charged me twice" "support never answered"
  feedback classify --input comments.csv --column text --output scored.jsonl --shm system --concurrency 4
  feedback health
  feedback models

Output is a table on a terminal and JSON lines when piped (or as --format says).
Exit codes: 0 success; 1 unexpected error; 2 usage error or unreadable input file; 3 server unavailable or not ready;
4 model missing or not ready; 5 input refused by the server; 6 timeout; 7 shared-memory error; 8 server overloaded;
10 `classify --input` scored the file but some rows are error records (its summary line says how many).
"""

import argparse
import codecs
import json
import os
import sys
from pathlib import Path

from client.bulk import ERRORS, InputFileError, score_file
from client.errors import ROWS_FAILED_EXIT_CODE, USAGE_EXIT_CODE, ClientError, ModelUnavailable, ServerUnavailable
from client.feedback import DEFAULT_URLS, PROTOCOLS, SHM_KINDS, Backoff, FeedbackClient
from client.predictions import IDS_MODEL, TEXT_MODEL


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help="host:port (default localhost:8001 for grpc, localhost:8000 for http)")
    common.add_argument("--protocol", choices=sorted(PROTOCOLS), default="grpc")
    common.add_argument("--shm", choices=SHM_KINDS, default="none", help="shared-memory tensors (same host only)")
    common.add_argument("--timeout", type=float, default=30.0, help="seconds per attempt (default 30)")
    common.add_argument("--retries", type=int, help="retries when unavailable/timeout/overloaded (classify 5, else 0)")
    common.add_argument(
        "--admin-key",
        default=os.environ.get("TRITON_ADMIN_KEY"),
        help="key for the server's restricted endpoints (needed with --shm and for models); default $TRITON_ADMIN_KEY",
    )
    common.add_argument("--header", action="append", default=[], metavar="KEY=VALUE", help="sent with every call")
    common.add_argument("--format", choices=("table", "jsonl"), help="default: table on a terminal, else jsonl")

    parser = argparse.ArgumentParser(
        prog="feedback", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    classify = commands.add_parser("classify", parents=[common], help="classify texts or a CSV/JSONL file")
    classify.add_argument("texts", nargs="*", help="comments to classify")
    classify.add_argument("--input", type=Path, help="a .csv or .jsonl file of comments")
    classify.add_argument("--column", default="text", help="the column (CSV) or key (JSONL) holding the comment")
    classify.add_argument("--output", type=Path, help="JSON-lines file to write (with --input)")
    classify.add_argument("--batch-size", type=int, default=64, help="rows per request (at most 64 per call)")
    classify.add_argument("--concurrency", type=int, default=4, help="requests kept in flight")
    classify.add_argument("--resume", action="store_true", help="keep the rows already in --output, score the rest")
    classify.add_argument("--encoding", default="utf-8", help="the input file's text encoding (default utf-8)")
    classify.add_argument(
        "--errors",
        choices=ERRORS,
        default="strict",
        help="a row that does not decode: strict = an error record for that row, replace = U+FFFD for bad bytes, "
        "skip = drop the bad bytes",
    )
    classify.add_argument(
        "--truncate",
        action="store_true",
        help="cut comments over the server's size limit (16 KiB by default) at a character boundary and mark them "
        "truncated; without it such a row is an error record. The server reads a comment whole (as windows of the "
        "encoder's length), so a cut comment is classified on its first 16 KiB.",
    )
    classify.add_argument(
        "--tenant",
        help="answer in this tenant's own label set (its head, `feedback_tenant`), the default answer beside it",
    )
    commands.add_parser("health", parents=[common], help="server and ensemble readiness")
    commands.add_parser("models", parents=[common], help="models in the repository with versions and states")
    args = parser.parse_args(argv)

    if args.command == "classify":
        if bool(args.texts) == bool(args.input):
            parser.error("classify: give either TEXT arguments or --input FILE")
        if args.input and not args.output:
            parser.error("classify: --input needs --output")
        try:
            codecs.lookup(args.encoding)
        except LookupError:
            parser.error(f"--encoding: unknown encoding {args.encoding!r}")
    try:
        args.headers = dict(pair.split("=", 1) for pair in args.header) or None
    except ValueError:
        parser.error("--header takes KEY=VALUE")
    args.format = args.format or ("table" if sys.stdout.isatty() else "jsonl")
    return args


def emit(rows: list[dict], columns: list[str], fmt: str) -> None:
    if fmt == "jsonl":
        for row in rows:
            print(json.dumps(row, ensure_ascii=False))
        return
    widths = [max([len(c)] + [len(str(row[c])) for row in rows]) for c in columns]
    for line in [dict(zip(columns, columns, strict=True)), *rows]:
        print("  ".join(str(line[c]).ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())


def classify(client: FeedbackClient, args: argparse.Namespace) -> int:
    if args.input:
        summary = score_file(
            client,
            args.input,
            args.column,
            args.output,
            args.batch_size,
            args.resume,
            args.encoding,
            args.errors,
            args.truncate,
            args.tenant,
        )
        print(f"{summary.line()} into {args.output}", file=sys.stderr)
        if summary.stopped:
            return ServerUnavailable.exit_code
        return ROWS_FAILED_EXIT_CODE if summary.failed else 0
    rows = []
    answers = client.classify_tenant(args.texts, args.tenant) if args.tenant else client.classify(args.texts)
    for text, prediction in zip(args.texts, answers, strict=True):
        rows.append({"label": prediction.label, "p": f"{prediction.probabilities[prediction.label]:.2f}", "text": text})
        if args.format == "jsonl":
            rows[-1] = {"text": text, **prediction.as_dict()}
    emit(rows, ["label", "p", "text"], args.format)
    return 0


def health(client: FeedbackClient, args: argparse.Namespace) -> int:
    """Exit 0 only when the server and both ensembles are ready."""
    if not client.server_ready():
        raise ServerUnavailable(f"{client.url}: server is up but not ready")
    rows = [{"model": m, "ready": client.model_ready(m)} for m in (TEXT_MODEL, IDS_MODEL)]
    emit(rows, ["model", "ready"], args.format)
    missing = [row["model"] for row in rows if not row["ready"]]
    if missing:
        raise ModelUnavailable(f"not ready: {', '.join(missing)}")
    return 0


def models(client: FeedbackClient, args: argparse.Namespace) -> int:
    rows = [
        {
            "model": m["name"],
            "version": m.get("version", ""),
            "state": m.get("state", ""),
            "reason": m.get("reason", ""),
        }
        for m in client.models()
    ]
    emit(rows, ["model", "version", "state", "reason"], args.format)
    return 0


COMMANDS = {"classify": classify, "health": health, "models": models}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    retries = args.retries if args.retries is not None else (5 if args.command == "classify" else 0)
    try:
        with FeedbackClient(
            args.url or DEFAULT_URLS[args.protocol],
            protocol=args.protocol,
            shm=args.shm,
            timeout=args.timeout,
            backoff=Backoff(retries=retries),
            headers=args.headers,
            in_flight=getattr(args, "concurrency", 1),
            admin_key=args.admin_key,
        ) as client:
            code = COMMANDS[args.command](client, args)
    except (InputFileError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        code = USAGE_EXIT_CODE
    except ClientError as error:
        print(f"error: {error}", file=sys.stderr)
        code = error.exit_code
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)
