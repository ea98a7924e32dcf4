"""Per-customer routing: which ensemble answers a tenant, from the `tenants.json` file at the repository's root.

The file maps each tenant that has custom models to the members they replace, e.g. {"acme": ["transformer"]};
release/deploy.py --tenant writes it together with that tenant's models (`<member>__<tenant>`) and ensembles
(`<ensemble>__<tenant>`). It is re-read whenever it changes, so a new tenant needs no restart.
"""

import json
import os
import re
from pathlib import Path

from python_backend.errors import BadRequest

# Lowercase letters, digits and inner hyphens, 1 to 32 characters: never a path ('/', '.'), never the '__' that
# separates a model name from its tenant, so a tenant id cannot name another tenant's or another kind of model.
TENANT_ID = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?")
SEPARATOR = "__"


def check_tenant(tenant: str) -> str:
    if not TENANT_ID.fullmatch(tenant):
        shown = tenant if len(tenant) <= 40 else tenant[:40] + "..."
        raise BadRequest(f"TENANT {shown!r}: expected 1-32 lowercase letters, digits or inner hyphens")
    return tenant


def tenant_model(model: str, tenant: str) -> str:
    return f"{model}{SEPARATOR}{check_tenant(tenant)}"


def read_mapping(path: Path) -> dict[str, list[str]]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}


class TenantTable:
    """Tenant -> the ensemble that answers it, following the mapping file as it changes."""

    def __init__(self, path: Path):
        self.path = path
        self.stamp: tuple[int, int] | None = None
        self.tenants: dict[str, list[str]] = {}

    def ensemble(self, base: str, tenant: str) -> str:
        """`<base>__<tenant>` for a tenant with custom models, `base` for everyone else (and for no tenant)."""
        if not tenant:
            return base
        check_tenant(tenant)
        self.refresh()
        return tenant_model(base, tenant) if tenant in self.tenants else base

    def refresh(self) -> None:
        try:
            status = os.stat(self.path)
            stamp = (status.st_mtime_ns, status.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp != self.stamp:  # deploy replaces the file with rename(), so a reader never sees half of it
            self.tenants, self.stamp = read_mapping(self.path), stamp
