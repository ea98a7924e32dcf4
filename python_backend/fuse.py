"""Combine member probabilities into one prediction: vectorized numpy over the whole batch."""

import numpy as np

from python_backend.errors import BadRequest

# INPUT_ERRORS bits, one int32 per row, that every member graph outputs (export.members.CheckedInputs).
ID_OUT_OF_RANGE, MASK_NOT_BINARY, BAD_LENGTH = 1, 2, 4


def check_input_errors(errors: np.ndarray, vocab_size: int, max_seq_len: int) -> None:
    """The request's error, if the members had to repair any of its rows: the native backends cannot refuse a single
    request of a dynamic batch, so the graphs flag it and this step, which answers each request alone, refuses it."""
    if not errors.any():  # the common case; the per-bit scan below took 5% of the stub's samples under load
        return
    problems = []
    for bit, problem in (
        (BAD_LENGTH, f"sequence length must be in the supported range 1..{max_seq_len}, the same for ids and mask"),
        (ID_OUT_OF_RANGE, f"INPUT_IDS: token ids must be in [0, {vocab_size})"),
        (MASK_NOT_BINARY, "ATTENTION_MASK: values must be 0 or 1"),
    ):
        rows = np.flatnonzero(errors.ravel() & bit)
        if len(rows):
            problems.append(f"{problem} (rows {rows[:8].tolist()}{' ...' if len(rows) > 8 else ''})")
    if problems:
        raise BadRequest("; ".join(problems))


def stack_members(member_probs: list[np.ndarray], num_classes: int) -> np.ndarray:
    """Validate each member's [batch, num_classes] probabilities and stack them into [batch, members, classes]."""
    batch = len(member_probs[0])
    for index, probs in enumerate(member_probs):
        if probs.dtype != np.float32 or probs.shape != (batch, num_classes):
            raise BadRequest(
                f"member {index}: expected float32 [{batch}, {num_classes}] (rows as in member 0), "
                f"got {probs.dtype.name} {list(probs.shape)}"
            )
    if batch == 0:
        raise BadRequest("empty batch (0 rows); send at least one row")
    stacked = np.stack(member_probs, axis=1)
    if not np.isfinite(stacked).all() or stacked.min() < 0 or stacked.max() > 1:
        raise BadRequest("member probabilities must be finite and within [0, 1]")
    return stacked


def pool_windows(stacked: np.ndarray, windows: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Each comment's rows averaged into one: [rows, members, classes] -> [comments, members, classes], and the
    window count of each comment, int32 [comments, 1].

    `windows` (the tokenizer's WINDOWS, int32 [rows, 1]) gives, for each row, how many windows its comment has; a
    comment's windows are consecutive rows. Without it (the `feedback` ensemble: token ids in) each row is a comment.
    Every window is as long as the encoder reads, so a token-weighted mean is the plain mean.
    """
    starts = comment_starts(windows, len(stacked))
    if starts is None:
        return stacked, windows if windows is not None else np.ones((len(stacked), 1), np.int32)
    return mean_over(stacked, starts, windows), windows.ravel()[starts][:, None]


def comment_starts(windows: np.ndarray | None, rows: int) -> np.ndarray | None:
    """The first row of each comment, from the tokenizer's WINDOWS; None when every row is a comment of its own."""
    if windows is None:
        return None
    if windows.dtype != np.int32 or windows.shape != (rows, 1):
        raise BadRequest(f"windows: expected int32 [{rows}, 1], got {windows.dtype.name} {list(windows.shape)}")
    counts = windows.ravel()
    if (counts == 1).all():  # the common case: every comment fits one window
        return None
    starts, row = [], 0
    while row < rows:
        count = int(counts[row])
        if count < 1 or row + count > rows or (counts[row : row + count] != count).any():
            raise BadRequest(f"windows: row {row} starts a comment of {count} windows, which the rows do not hold")
        starts.append(row)
        row += count
    return np.array(starts)


def mean_over(rows: np.ndarray, starts: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """Each comment's rows (any trailing shape) averaged into one."""
    sizes = windows.ravel()[starts].astype(np.float32).reshape(-1, *[1] * (rows.ndim - 1))
    return (np.add.reduceat(rows, starts, axis=0) / sizes).astype(np.float32)


def weighted_mean(stacked: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted average over members; weights are normalized so rows still sum to 1."""
    w = (weights / weights.sum()).astype(np.float32)
    return np.einsum("bmc,m->bc", stacked, w)


def stacking(stacked: np.ndarray, coef: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Learned combiner: softmax(log member probs, flattened) @ coef + bias), fitted by export/train.py fit_stacking."""
    features = np.log(np.clip(stacked, 1e-7, 1.0)).reshape(stacked.shape[0], -1)
    logits = features @ coef + bias
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


def labels(probs: np.ndarray, class_names: list[str]) -> np.ndarray:
    """Class name of the most probable class per row, as a BYTES [batch, 1] array."""
    names = np.array([name.encode() for name in class_names], dtype=object)
    return names[probs.argmax(axis=1)].reshape(-1, 1)


def make_combiner(members: list[str], parameters: dict[str, str], version_dir: str):
    """combine(stacked) -> probs, as chosen by the fuse config's `combiner` parameter.

    weighted_mean: `weights` is "member=weight,..."; a member not named weighs 1 (no `weights`: equal weights).
    stacking: reads stacking.npz (coef, bias, members) that export/ wrote beside the fuse model.
    """
    combiner = parameters.get("combiner", "weighted_mean")
    if combiner == "weighted_mean":
        pairs = [item.split("=") for item in parameters.get("weights", "").split(",") if item.strip()]
        if any(len(pair) != 2 for pair in pairs):
            raise ValueError(f"weights must look like 'member=1.5,other=1', got {parameters['weights']!r}")
        given = {name.strip(): float(value) for name, value in pairs}
        unknown = set(given) - set(members)
        if unknown:
            raise ValueError(f"weights name unknown members {sorted(unknown)}; members are {members}")
        weights = np.array([float(given.get(m, 1.0)) for m in members])
        if (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(f"weights must be >= 0 with a positive sum, got {weights.tolist()}")
        return lambda stacked: weighted_mean(stacked, weights)
    if combiner == "stacking":
        fitted = np.load(f"{version_dir}/stacking.npz")
        if fitted["members"].tolist() != members:
            raise ValueError(f"stacking.npz was fitted on {fitted['members'].tolist()}, the config has {members}")
        coef, bias = fitted["coef"].astype(np.float32), fitted["bias"].astype(np.float32)
        return lambda stacked: stacking(stacked, coef, bias)
    raise ValueError(f"combiner must be 'weighted_mean' or 'stacking', got {combiner!r}")


class Fuse:
    """The fuse step as its config sets it up: what the Triton model and the in-process reference both run.

    Inputs are one `<member>_probs` per member, in config order, `input_errors` (see check_input_errors) and,
    from the tokenizer, the optional `windows` (see pool_windows). With the optional `embedding` (the transformer's
    sentence features, one row per window), the outputs end with FEATURES: each comment's features, its windows'
    mean, to which the fuse model applies the tenant heads (python_backend/heads.py).
    """

    def __init__(self, inputs: list[str], parameters: dict[str, str], version_dir: str):
        self.class_names = parameters["class_names"].split(",")
        self.probs_inputs = [name for name in inputs if name.endswith("_probs")]
        self.member_names = [name.removesuffix("_probs") for name in self.probs_inputs]
        self.limits = int(parameters["vocab_size"]), int(parameters["max_seq_len"])
        self.combine = make_combiner(self.member_names, parameters, version_dir)

    def stacked(self, named: dict[str, np.ndarray | None]) -> list[np.ndarray]:
        """Checks one request's inputs (BadRequest), stacks its members' probabilities and pools each comment's
        windows: [comments, members, classes], each comment's window count [comments, 1] and, given the embedding,
        each comment's features [comments, width]."""
        check_input_errors(named["input_errors"], *self.limits)
        stacked = stack_members([named[name] for name in self.probs_inputs], len(self.class_names))
        windows = named.get("windows")
        pooled = list(pool_windows(stacked, windows))
        embedding = named.get("embedding")
        if embedding is None:
            return pooled
        if embedding.dtype != np.float32 or embedding.ndim != 2 or len(embedding) != len(stacked):
            raise BadRequest(f"embedding: expected float32 [{len(stacked)}, width], got {list(embedding.shape)}")
        starts = comment_starts(windows, len(stacked))
        return [*pooled, embedding if starts is None else mean_over(embedding, starts, windows)]

    def outputs(self, stacked: np.ndarray, windows: np.ndarray, *features: np.ndarray) -> list[np.ndarray]:
        """PROBS, LABEL, MEMBER_PROBS and WINDOWS for a batch of pooled comments, and FEATURES when given."""
        probs = self.combine(stacked)
        return [probs, labels(probs, self.class_names), stacked, windows, *features]
