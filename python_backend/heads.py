"""Per-tenant heads: each customer's own classifier, a linear layer over the shared encoder's sentence features.

The expensive members run once per comment for every tenant, batched together; a tenant's model is only its head
(`head__<tenant>.npz` at the repository's root, a few KB: coef [width, classes], bias [classes], class_names), which
the fuse step applies to each comment's features (the transformer's EMBEDDING, its windows averaged). Heads are
read when first asked for, re-read when their file changes (release/heads.py replaces it with rename(), so a reader
never sees half of it), and the least recently used ones are dropped beyond a memory budget, so a thousand
registered tenants need not all sit in memory.

The files live at the repository's root, beside tenants.json, not in a model's folder: Triton reloads a polled model
whenever anything in its folder changes, and would take a folder at the root for a model.
"""

import io
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from python_backend.errors import BadRequest
from python_backend.tenants import check_tenant

HEAD_FILE = "head__{tenant}.npz"


@dataclass(frozen=True)
class Head:
    coef: np.ndarray  # float32 [width, classes]
    bias: np.ndarray  # float32 [classes]
    class_names: np.ndarray  # object (bytes) [classes]: LABEL's values
    stamp: tuple[int, int, int]  # the file's inode, mtime and size when read

    @property
    def nbytes(self) -> int:
        return self.coef.nbytes + self.bias.nbytes + sum(len(name) for name in self.class_names)

    def probs(self, features: np.ndarray) -> np.ndarray:
        """softmax(features @ coef + bias): [rows, width] -> [rows, classes]."""
        logits = features @ self.coef + self.bias
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)

    def labels(self, probs: np.ndarray) -> np.ndarray:
        return self.class_names[probs.argmax(axis=1)].reshape(-1, 1)


def head_path(repository: Path, tenant: str) -> Path:
    return repository / HEAD_FILE.format(tenant=check_tenant(tenant))


def write_head(path: Path, coef: np.ndarray, bias: np.ndarray, class_names: list[str], encoder: str) -> None:
    """The head file, replaced whole with rename(). `encoder` names the features it was trained on (the transformer
    file's sha256), so that a head trained on another encoder can be found (release/heads.py list)."""
    arrays = io.BytesIO()
    np.savez(
        arrays,
        coef=coef.astype(np.float32),
        bias=bias.astype(np.float32),
        class_names=np.array(class_names),
        encoder=np.array(encoder),
    )
    replace_whole(path, arrays.getvalue())


def replace_whole(path: Path, data: bytes) -> None:
    """Give `path` the contents `data` with rename(), so that the fuse step and the probe read the old file or the
    new one, never half of one."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(data)
    partial.replace(path)


def read_head(path: Path) -> Head:
    status = os.stat(path)
    with np.load(path) as stored:
        coef, bias = stored["coef"].astype(np.float32), stored["bias"].astype(np.float32)
        names = np.array([str(name).encode() for name in stored["class_names"]], dtype=object)
    if coef.ndim != 2 or bias.shape != (coef.shape[1],) or names.shape != bias.shape:
        raise ValueError(f"{path.name}: coef {list(coef.shape)}, bias {list(bias.shape)}, {len(names)} class names")
    return Head(coef, bias, names, (status.st_ino, status.st_mtime_ns, status.st_size))


class HeadCache:
    """Tenant -> its head, read lazily from `repository`, least recently used dropped beyond `budget_bytes`."""

    def __init__(self, repository: Path, budget_bytes: int):
        self.repository, self.budget = repository, budget_bytes
        self.heads: OrderedDict[str, Head] = OrderedDict()
        self.nbytes = 0  # of the heads held
        self.loads = 0  # file reads, first ones and re-reads: what the tests and the bench watch

    def drop(self, tenant: str) -> None:
        if (head := self.heads.pop(tenant, None)) is not None:
            self.nbytes -= head.nbytes

    def head(self, tenant: str) -> Head:
        """The tenant's current head (BadRequest for a malformed tenant or one with no head)."""
        path = head_path(self.repository, tenant)
        try:
            status = os.stat(path)
        except FileNotFoundError:
            self.drop(tenant)
            raise BadRequest(f"TENANT {tenant!r}: no head is deployed for this tenant") from None
        cached = self.heads.get(tenant)
        if cached is None or cached.stamp != (status.st_ino, status.st_mtime_ns, status.st_size):
            try:
                cached = read_head(path)
            except (OSError, ValueError, KeyError) as error:  # a damaged file fails its tenant's requests alone
                raise BadRequest(f"TENANT {tenant!r}: its head cannot be read ({error})") from None
            self.loads += 1
            self.drop(tenant)
            self.heads[tenant] = cached
            self.nbytes += cached.nbytes
        self.heads.move_to_end(tenant)
        while len(self.heads) > 1 and self.nbytes > self.budget:
            self.drop(next(iter(self.heads)))
        return cached

    def answer(self, requests: list[tuple[np.ndarray, str]]) -> list[list[np.ndarray] | Exception]:
        """For each request's (features [comments, width], tenant), its TENANT_PROBS, TENANT_LABEL and
        TENANT_CLASSES (the tenant's class names, PROBS' columns, on each row), or the BadRequest that fails it
        alone. The requests of one tenant are computed in one call."""
        results: list[list[np.ndarray] | Exception | None] = [None] * len(requests)
        by_tenant: dict[str, list[int]] = {}
        for index, (_, tenant) in enumerate(requests):
            by_tenant.setdefault(tenant, []).append(index)
        for tenant, indexes in by_tenant.items():
            try:
                head = self.head(tenant)
                width = head.coef.shape[0]
                if any(requests[i][0].shape[1:] != (width,) for i in indexes):
                    raise BadRequest(f"TENANT {tenant!r}: its head reads {width} features, the encoder gives another")
            except BadRequest as error:
                for i in indexes:
                    results[i] = error
                continue
            probs = head.probs(np.concatenate([requests[i][0] for i in indexes]))
            cuts = np.cumsum([len(requests[i][0]) for i in indexes])[:-1]
            for i, part in zip(indexes, np.split(probs, cuts), strict=True):
                results[i] = [part, head.labels(part), np.tile(head.class_names, (len(part), 1))]
        return results

    def with_tenant_answers(self, results: list, tenants: list[np.ndarray | None]) -> list:
        """The fuse step's results (PROBS, LABEL, MEMBER_PROBS, WINDOWS, and FEATURES when it was sent the
        embedding), each followed by its tenant head's answer where the request named a TENANT (ROW_TENANTS: one per
        row), or the BadRequest that fails it. FEATURES is dropped: it is the heads' input, not an output."""
        answered = list(results)
        asked: list[tuple[int, np.ndarray, str]] = []
        for index, (result, rows) in enumerate(zip(results, tenants, strict=True)):
            if isinstance(result, Exception):
                continue
            answered[index] = result[:4]
            if rows is None:
                continue
            try:
                if len(result) < 5:
                    raise BadRequest("TENANT: a tenant's head needs the transformer's `embedding` beside it")
                asked.append((index, result[4], request_tenant(rows)))
            except BadRequest as error:
                answered[index] = error
        heads = self.answer([(features, tenant) for _, features, tenant in asked])
        for (index, _, _), head in zip(asked, heads, strict=True):
            answered[index] = head if isinstance(head, Exception) else [*answered[index], *head]
        return answered


def request_tenant(tenants: np.ndarray) -> str:
    """The one tenant a request names on each of its rows (BadRequest for several, or a malformed one)."""
    values = {value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value) for value in tenants.ravel()}
    if len(values) != 1:
        raise BadRequest(f"TENANT: one tenant per request, got {len(values)} different values")
    return check_tenant(values.pop())
