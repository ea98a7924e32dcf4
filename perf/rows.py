"""A bench run's CSV rows, as the report reads them: numbers parsed, rows picked, repetitions merged."""

import csv
import statistics
from pathlib import Path


def read(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path) as file:
        return [{key: _number(value) for key, value in row.items()} for row in csv.DictReader(file)]


def _number(value: str):
    try:
        return float(value)
    except ValueError:
        return value


def pick(rows: list[dict], **match) -> list[dict]:
    return [row for row in rows if all(row.get(key) == value for key, value in match.items())]


def medians(rows: list[dict], keys: tuple[str, ...]) -> list[dict]:
    """One row per `keys` combination: each numeric column's median over the interleaved repetitions."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row.get(key) for key in keys), []).append(row)
    merged = []
    for group in groups.values():
        row = {key: value for member in reversed(group) for key, value in member.items()}
        for key in row:
            values = [member[key] for member in group if isinstance(member.get(key), float)]
            if key not in keys and key != "rep" and values:
                row[key] = statistics.median(values)
        merged.append(row)
    return merged


def per_rep(rows: list[dict], **match) -> dict[float, dict]:
    """The matching measured rows, by repetition."""
    return {row.get("rep", 0.0): row for row in pick(rows, **match) if not row.get("error")}


def at(results: list[dict], profile: str, system: str, concurrency: int) -> dict | None:
    found = [row for row in pick(results, profile=profile, system=system, concurrency=float(concurrency))]
    return found[0] if found and isinstance(found[0].get("throughput"), float) else None


def saturation(results: list[dict], profile: str, system: str) -> float | None:
    measured = [row["throughput"] for row in pick(results, profile=profile, system=system)]
    measured = [value for value in measured if isinstance(value, float)]
    return max(measured) if measured else None


def ms(us) -> str:
    return f"{us / 1e3:.2f}" if isinstance(us, float) else "—"
