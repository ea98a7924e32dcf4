"""Bulk scoring: read comments from CSV or JSON lines, classify them in pipelined batches, write JSON lines in order.

Each output line is {"row": n, "text": ..., "label": ..., "probabilities": {...}, "members": {...}, "windows": w},
with n counting input rows from 0, or, for a row that cannot be scored, {"row": n, "text": (cut to 200 characters),
"error": ...}. A bad row never stops the run or loses its neighbours: rows are checked here before they are sent
(decodable, not empty, not over the server's size limit), so a batch holds only rows the server accepts. Batches are
written in input order as they complete and flushed, so an interrupted run leaves a prefix of the result; `resume`
continues after it, and only for the run that wrote it: `<output>.run.json` records what was scored (the input's path
and first bytes, the column and reading options, the model and its labels), and a resume of anything else is refused.
Failed calls are retried by the client, so a server restart mid-run loses and duplicates nothing. What the server
still refuses after that fails the batch's rows alone, each with an error record that names the cause; a batch the
server refuses as input is sent again row by row, so only a row it refuses itself fails. A server that stays
unreachable past the retries stops the run: the rows written so far stay, and the summary says how many were not
attempted and that `--resume` continues.
"""

import csv
import hashlib
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from client.errors import ClientError, InvalidInput, ServerUnavailable
from client.feedback import FeedbackClient
from client.predictions import TENANT_MODEL, TEXT_MODEL

ERRORS = ("strict", "replace", "skip")  # a row that does not decode: an error record, U+FFFD, or its bad bytes dropped
SHOWN_CHARACTERS = 200  # of a failed row's text in its error record
FINGERPRINT_BYTES = 1 << 20  # of the input, hashed: the rows an interrupted run scored are in it (or it is small)
csv.field_size_limit(1 << 30)  # the default 128 KiB would end the run at the first long comment


class InputFileError(ValueError):
    """The input file cannot be read as asked (missing, unknown format, no such column)."""


@dataclass
class Row:
    number: int
    text: str
    error: str = ""
    truncated: bool = False


@dataclass
class Summary:
    read: int = 0
    scored: int = 0
    failed: int = 0
    truncated: int = 0
    stopped: str = ""  # why the run ended before the input did (the server stayed unreachable)
    not_attempted: int = 0

    def count(self, failed: bool, truncated: bool) -> None:
        self.read += 1
        self.failed += failed
        self.scored += not failed
        self.truncated += truncated

    def line(self) -> str:
        line = f"rows read {self.read}, scored {self.scored}, failed {self.failed}, truncated {self.truncated}"
        if self.stopped:
            line += (
                f"; stopped, {self.not_attempted} rows not attempted: {self.stopped}. "
                "Run the same command with --resume to continue"
            )
        return line


def decoded(value: str, encoding: str, errors: str) -> str:
    """The file is read as UTF-8 with undecodable bytes kept as surrogates; here each field gets its own decoding."""
    raw = value.encode("utf-8", "surrogateescape")
    return raw.decode(encoding, {"strict": "strict", "replace": "replace", "skip": "ignore"}[errors])


def json_type(value) -> str:
    return (
        "null" if value is None else {bool: "a boolean", dict: "an object", list: "a list"}.get(type(value), "a number")
    )


def fields(path: Path, column: str) -> Iterator[tuple[str | None, str]]:
    """(raw value or None, why it is missing) per data row, in order."""
    with path.open(newline="", encoding="utf-8-sig", errors="surrogateescape") as file:
        if path.suffix == ".csv":
            reader = csv.DictReader(file)
            if column not in (reader.fieldnames or []):
                raise InputFileError(f"{path}: no column {column!r} (has: {', '.join(reader.fieldnames or [])})")
            for row in reader:
                value = row.get(column)
                yield (value, "") if value is not None else (None, f"no value in column {column!r}")
        elif path.suffix in (".jsonl", ".ndjson"):
            for number, line in enumerate(line for line in file if line.strip()):
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    yield None, f"not a JSON object ({error.msg})"
                    continue
                if isinstance(record, dict) and column in record:
                    value = record[column]
                    # null, a number, a list or an object is not a comment; its repr would be scored as one
                    yield (
                        (value, "") if isinstance(value, str) else (None, f"{column!r} is {json_type(value)}, not text")
                    )
                elif number == 0:  # the first record decides whether --column is wrong for the whole file
                    keys = ", ".join(record) if isinstance(record, dict) else type(record).__name__
                    raise InputFileError(f"{path}: no column {column!r} (has: {keys})")
                else:
                    yield None, f"no key {column!r}"
        else:
            raise InputFileError(f"{path}: expected a .csv or .jsonl file")


def read_rows(
    path: Path,
    column: str,
    encoding: str = "utf-8",
    errors: str = "strict",
    max_bytes: int | None = None,
    truncate: bool = False,
) -> Iterator[Row]:
    """Every data row, checked: a row that cannot be scored carries its error instead of reaching the server."""
    if not path.is_file():
        raise InputFileError(f"{path}: no such file")
    for number, (value, missing) in enumerate(fields(path, column)):
        if value is None:
            yield Row(number, "", missing)
            continue
        try:
            text = decoded(value, encoding, errors)
        except UnicodeDecodeError as error:
            yield Row(
                number,
                decoded(value, encoding, "replace"),
                f"not valid {encoding} ({error.reason} at byte {error.start})",
            )
            continue
        except UnicodeEncodeError as error:  # JSON "\ud800": half a surrogate pair, which no encoding writes
            shown = value.encode("utf-8", "replace").decode("utf-8")
            yield Row(
                number,
                shown,
                f"not valid text (a lone surrogate U+{ord(value[error.start]):04X} at character {error.start})",
            )
            continue
        if not text.strip():
            yield Row(number, text, "empty comment: nothing to classify")
            continue
        size = len(text.encode("utf-8"))
        if max_bytes is not None and size > max_bytes:
            if not truncate:
                yield Row(number, text, f"{size} bytes, the limit is {max_bytes} (--truncate cuts it)")
                continue
            text = text.encode("utf-8")[:max_bytes].decode("utf-8", "ignore")  # on a character boundary
            yield Row(number, text, truncated=True)
            continue
        yield Row(number, text)


def count_rows(path: Path) -> int:
    """An estimate of an input's rows, for the progress bar (a comment with line breaks counts more than once)."""
    with path.open("rb") as file:
        lines = sum(1 for line in file if line.strip())
    return lines - 1 if path.suffix == ".csv" else lines  # the CSV header


def drop_partial_line(path: Path) -> None:
    """A run killed while writing can leave half a line; resuming rewrites that row whole."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as file:
            file.truncate(data.rfind(b"\n") + 1)


def batched(rows: Iterator[Row], size: int) -> Iterator[list[Row]]:
    while batch := list(itertools.islice(rows, size)):
        yield batch


def predictions_or_errors(client: FeedbackClient, texts: list[str], tenant: str | None = None) -> list:
    """Each text's prediction (with `tenant`, that tenant head's), or its error message: what the server still
    refuses after the client's retries fails these rows alone. A refused input is retried row by row (one row's
    refusal would otherwise fail all its neighbours). ServerUnavailable is raised: no later batch can do better, so
    the run stops."""
    try:
        return client.classify_tenant(texts, tenant) if tenant else client.classify(texts)
    except ServerUnavailable:
        raise
    except InvalidInput as error:
        if len(texts) > 1:
            return [answer for text in texts for answer in predictions_or_errors(client, [text], tenant)]
        return [f"refused by the server: {error}"]
    except ClientError as error:  # model not ready, timeout, overload: the cause, on each row of the batch
        return [f"{type(error).__name__}: {error}"] * len(texts)


def record(row: Row, prediction) -> dict:
    """A row's output line: its prediction, or its error (the row's own, or the server's message for it)."""
    error = row.error or (prediction if isinstance(prediction, str) else "")
    if error:
        return {"row": row.number, "text": row.text[:SHOWN_CHARACTERS], "error": error}
    return {"row": row.number, "text": row.text, **prediction.as_dict()} | (
        {"truncated": True} if row.truncated else {}
    )


def run_record(path: Path) -> Path:
    return path.with_name(path.name + ".run.json")


def what_is_scored(
    client: FeedbackClient, source: Path, column: str, encoding: str, errors: str, truncate: bool, tenant: str | None
) -> dict:
    """What decides an output's rows: resuming is only sound when all of it is the same."""
    with source.open("rb") as file:
        head = hashlib.sha256(file.read(FINGERPRINT_BYTES)).hexdigest()
    return {
        "input": str(source.resolve()),
        "input_first_mib_sha256": head,
        "column": column,
        "encoding": encoding,
        "errors": errors,
        "truncate": truncate,
        "model": TENANT_MODEL if tenant else TEXT_MODEL,
        "tenant": tenant,
        "labels": client.schema.class_names,
    }


def check_resume(run: Path, scored: dict) -> None:
    """Refuses, in one line, to append to an output that another input, column or model began."""
    if not run.exists():
        raise InputFileError(f"--resume: {run} is missing, so nothing says what the output was scored from")
    before = json.loads(run.read_text(encoding="utf-8"))
    differ = [key for key in scored if before.get(key) != scored[key]]
    if differ:
        raise InputFileError(
            f"--resume: the output was scored with other {', '.join(differ)} ({run}); "
            "score into a new --output, or run the same command as before"
        )


def score_file(
    client: FeedbackClient,
    source: Path,
    column: str,
    target: Path,
    batch_size: int = 64,
    resume: bool = False,
    encoding: str = "utf-8",
    errors: str = "strict",
    truncate: bool = False,
    tenant: str | None = None,
) -> Summary:
    """Score every row of source into target, one line per row in input order; returns the target's counts. With
    `tenant`, each row gets that tenant head's label (and the default one beside it)."""
    from tqdm import tqdm  # here, so that the rest of the CLI runs where only tritonclient and numpy are installed

    next(read_rows(source, column), None)  # a missing file, unknown format or column fails here, before target
    rows = read_rows(source, column, encoding, errors, client.max_text_bytes, truncate)
    summary = Summary()  # of the whole output file: with resume, the rows kept from before count too
    scored = what_is_scored(client, source, column, encoding, errors, truncate, tenant)
    scored_with = run_record(target)
    if resume and target.exists():
        check_resume(scored_with, scored)
        drop_partial_line(target)
        for line in target.read_text(encoding="utf-8").splitlines():
            kept = json.loads(line)
            summary.count("error" in kept, kept.get("truncated", False))
    done = summary.read
    if not done:
        scored_with.write_text(json.dumps(scored, indent=2) + "\n", encoding="utf-8")
    with (
        target.open("a" if done else "w", encoding="utf-8") as out,
        tqdm(total=count_rows(source), initial=done, unit="row", disable=None) as progress,
    ):
        # Only the rows that can be scored are sent; tee keeps each batch until its predictions come back.
        to_send, to_write = itertools.tee(batched(itertools.islice(rows, done, None), batch_size))
        sendable = ([row.text for row in batch if not row.error] for batch in to_send)
        answered = client.classify_stream(sendable, lambda texts: predictions_or_errors(client, texts, tenant))
        try:
            for batch, predictions in zip(to_write, answered, strict=True):
                answers = iter(predictions)
                for row in batch:
                    line = record(row, None if row.error else next(answers))
                    out.write(json.dumps(line, ensure_ascii=False) + "\n")
                    summary.count("error" in line, row.truncated)
                out.flush()
                progress.update(len(batch))
                progress.set_postfix(failed=summary.failed)
        except ServerUnavailable as error:
            summary.stopped = str(error)
            summary.not_attempted = sum(1 for _ in fields(source, column)) - summary.read
    return summary
