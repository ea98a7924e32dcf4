"""Tenant heads: train a customer's own classifier over the shared members' features, check it, and put it live.

    python -m release.deploy [--repository DIR] [--server HOST:PORT] tenant add ID --train-data FILE --labels A,B,C
    python -m release.deploy ... tenant replace ID --train-data FILE --labels A,B,C
    python -m release.deploy ... tenant remove ID
    python -m release.deploy ... tenant list

A head is a logistic regression on the comments' FEATURES (the transformer's sentence embedding, each comment's
windows averaged, as `feedback_tenant` computes them), trained on the tenant's own rows (CSV or JSONL, a text and a
label column), in the tenant's own label set. The gates, before the file is written: the labels in the data are the
declared ones, and the head reaches --min-accuracy on a held-out fifth of the rows. The file `head__<ID>.npz` is then
replaced with rename(); the fuse step reads it at the tenant's next request, with no reload of any model.
With --server, the tenant's held-out rows are then sent to `feedback_tenant` and must get the in-process answers
(1e-5); otherwise the previous head (or none) is put back and the change refused. Beside the head goes its canary
for the readiness probe, `canary__head__<ID>.json`: for each class its most confident right held-out row.
"""

import csv
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from conventions import HEAD_CANARY_FILE
from export.train import fit_logistic
from python_backend.heads import HeadCache, head_path, read_head, replace_whole, write_head
from python_backend.inprocess import InProcessEnsemble
from python_backend.layout import latest_version
from python_backend.tenants import check_tenant
from release.gates import Rejected
from server.probe import transformer_stamp

log = logging.getLogger(__name__)

MIN_ACCURACY = 0.7
HELD_OUT_SHARE = 0.2
PARITY_ATOL = 1e-5


@dataclass(frozen=True)
class Rows:
    texts: list[str]
    labels: list[str]


def read_rows(path: Path, text_column: str = "text", label_column: str = "label") -> Rows:
    """A CSV (with a header) or JSONL file's text and label columns; a row missing either is refused by line."""
    if path.suffix == ".jsonl":
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    else:
        with open(path, newline="") as file:
            records = list(csv.DictReader(file))
    texts, labels = [], []
    for line, record in enumerate(records, start=2 if path.suffix != ".jsonl" else 1):
        if not isinstance(record, dict):
            raise Rejected(f"{path}:{line}: expected an object with '{text_column}' and '{label_column}'")
        text, label = record.get(text_column), record.get(label_column)
        if not isinstance(text, str) or not text.strip() or not isinstance(label, str) or not label:
            raise Rejected(f"{path}:{line}: needs a non-empty '{text_column}' and '{label_column}'")
        texts.append(text)
        labels.append(label)
    return Rows(texts, labels)


def split(rows: Rows, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indexes of the training and held-out rows: a fifth of each label held out (at least one)."""
    rng = np.random.default_rng(seed)
    labels = np.array(rows.labels)
    held = []
    for label in sorted(set(rows.labels)):
        where = rng.permutation(np.flatnonzero(labels == label))
        held.extend(where[: max(1, round(len(where) * HELD_OUT_SHARE))])
    held_out = np.array(sorted(held))
    return np.setdiff1d(np.arange(len(labels)), held_out), held_out


def encoder_fingerprint(repository: Path) -> str:
    """What the features come from: the live transformer file's sha256 (a head trained on another must be retrained)."""
    version = latest_version(repository / "transformer")
    model = next(version.glob("model.*"))
    return hashlib.sha256(model.read_bytes()).hexdigest()[:16]


def train(repository: Path, tenant: str, rows: Rows, labels: list[str], min_accuracy: float) -> dict:
    """The head's arrays, once the gates passed (Rejected otherwise); logs its held-out accuracy."""
    check_tenant(tenant)
    if len(set(labels)) != len(labels) or len(labels) < 2:
        raise Rejected(f"--labels must name at least 2 different classes, got {labels}")
    found = set(rows.labels)
    if found != set(labels):
        raise Rejected(
            f"the data's labels are not the declared set: missing {sorted(set(labels) - found)}, "
            f"undeclared {sorted(found - set(labels))}"
        )
    features = InProcessEnsemble(repository).classify(rows.texts)["FEATURES"]
    target = np.array([labels.index(label) for label in rows.labels])
    train_rows, held_out = split(rows)
    weight, bias = fit_logistic(
        torch.from_numpy(features[train_rows]), torch.from_numpy(target[train_rows]), len(labels)
    )
    coef, bias = weight.numpy().T.copy(), bias.numpy()
    scores = features[held_out] @ coef + bias
    accuracy = float((scores.argmax(1) == target[held_out]).mean())
    log.info("%s: held-out accuracy %.3f on %d rows (%d trained)", tenant, accuracy, len(held_out), len(train_rows))
    if accuracy < min_accuracy:
        raise Rejected(f"held-out accuracy {accuracy:.3f} is below {min_accuracy} on {len(held_out)} rows")
    canary = held_out[canary_rows(scores, target[held_out])]
    return {"coef": coef, "bias": bias, "class_names": labels, "held_out": held_out, "canary": canary}


def canary_rows(scores: np.ndarray, target: np.ndarray) -> np.ndarray:
    """For each class, the row the head labels right by the widest margin over the runner-up: the rows whose labels
    the readiness probe checks (none for a class the head gets wrong on every held-out row)."""
    ranked = np.sort(scores, axis=1)
    margin = ranked[:, -1] - ranked[:, -2]
    right = scores.argmax(1) == target
    chosen = [max(np.flatnonzero(right & (target == c)), key=lambda i: margin[i]) for c in np.unique(target[right])]
    return np.array(chosen, dtype=int)


def write_canary(path: Path, texts: list[str], labels: list[str], transformer: dict | None) -> None:
    """A head's canary for server/probe.py (stdlib JSON); `transformer`: the stamp of the transformer file whose
    features the head was trained on (the probe skips a head trained on another)."""
    canary = {"texts": texts, "labels": labels, "transformer": transformer}
    replace_whole(path, (json.dumps(canary, indent=2) + "\n").encode())


def put(
    repository: Path,
    tenant: str,
    rows: Rows,
    labels: list[str],
    replace: bool,
    server: str | None = None,
    min_accuracy: float = MIN_ACCURACY,
) -> Path:
    """Trains, checks and writes the tenant's head (add: none may exist; replace: one must). Returns its path."""
    path = head_path(repository, tenant)
    if path.exists() != replace:
        raise Rejected(f"tenant {tenant} {'has no head to replace' if replace else 'has a head already: replace it'}")
    trained = train(repository, tenant, rows, labels, min_accuracy)
    canary_path = repository / HEAD_CANARY_FILE.format(tenant=tenant)
    previous = {file: file.read_bytes() for file in (path, canary_path) if file.exists()}
    write_head(path, trained["coef"], trained["bias"], labels, encoder_fingerprint(repository))
    canary = trained["canary"]  # with the head, so that the probe never checks one head against another's canary
    texts, canary_labels = [rows.texts[i] for i in canary], [rows.labels[i] for i in canary]
    write_canary(canary_path, texts, canary_labels, transformer_stamp(repository))
    if server:
        held = [rows.texts[i] for i in trained["held_out"]]
        try:
            check_served(repository, server, tenant, held)
        except Rejected:
            for file in (path, canary_path):
                if file in previous:
                    replace_whole(file, previous[file])
                else:
                    file.unlink()
            raise
    log.info("%s: head for %d classes (%s) live in %s", tenant, len(labels), ",".join(labels), path.name)
    return path


def check_served(repository: Path, server: str, tenant: str, texts: list[str]) -> None:
    """The served `feedback_tenant` answers equal the in-process ones for these texts; a server that cannot be
    asked refuses the head too, as nothing checked it."""
    from client import predictions
    from client.errors import ClientError
    from client.feedback import FeedbackClient  # the tenant's answers as a user gets them

    expected = InProcessEnsemble(repository).classify_tenant(texts, tenant, HeadCache(repository, 2**30))
    try:
        with FeedbackClient(server, protocol="http") as client:
            served = client.infer(
                predictions.TENANT_MODEL, predictions.tenant_inputs(texts, tenant), predictions.TENANT_OUTPUTS
            )
    except ClientError as error:
        raise Rejected(f"the server could not check the head: {error}") from None
    gap = float(np.abs(served["TENANT_PROBS"] - expected["TENANT_PROBS"]).max())
    if gap > PARITY_ATOL or (served["TENANT_LABEL"] != expected["TENANT_LABEL"]).any():
        raise Rejected(f"served answers differ from in-process ones by {gap:.2e} (allowed {PARITY_ATOL})")


def remove(repository: Path, tenant: str) -> None:
    path = head_path(repository, tenant)
    if not path.exists():
        raise Rejected(f"tenant {tenant} has no head")
    path.unlink()
    (repository / HEAD_CANARY_FILE.format(tenant=tenant)).unlink(missing_ok=True)
    log.info("%s: head removed; its requests now get an error", tenant)


def listing(repository: Path) -> list[str]:
    """One line per tenant head: its classes, size, and whether it was trained on the live transformer."""
    live = encoder_fingerprint(repository)
    lines = []
    for path in sorted(repository.glob("head__*.npz")):
        head = read_head(path)
        with np.load(path) as stored:
            trained_on = str(stored["encoder"])
        stale = "" if trained_on == live else "  TRAINED ON ANOTHER TRANSFORMER: replace it"
        names = b",".join(head.class_names).decode()
        lines.append(f"{path.stem.removeprefix('head__')}  {len(head.class_names)} classes ({names}){stale}")
    return lines


def add_commands(parser) -> None:
    """The `tenant` subcommands of `python -m release.deploy`."""
    actions = parser.add_subparsers(dest="action", required=True)
    for action in ("add", "replace"):
        command = actions.add_parser(action, help=f"{action} a tenant's head, trained on its own labelled rows")
        command.add_argument("tenant")
        command.add_argument("--train-data", type=Path, required=True, help="CSV (with header) or JSONL")
        command.add_argument("--labels", required=True, help="the tenant's label set, comma-separated")
        command.add_argument("--text-column", default="text")
        command.add_argument("--label-column", default="label")
        command.add_argument("--min-accuracy", type=float, default=MIN_ACCURACY)
    actions.add_parser("remove", help="remove a tenant's head").add_argument("tenant")
    actions.add_parser("list", help="the tenants with a head")


def run(args) -> list[str]:
    """Carries out a `tenant` subcommand; returns what `list` lists."""
    if args.action in ("add", "replace"):
        rows = read_rows(args.train_data, args.text_column, args.label_column)
        labels = [label.strip() for label in args.labels.split(",")]
        put(args.repository, args.tenant, rows, labels, args.action == "replace", args.server, args.min_accuracy)
    elif args.action == "remove":
        remove(args.repository, args.tenant)
    return listing(args.repository) if args.action == "list" else []
