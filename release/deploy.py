"""`python -m release.deploy`: add a checked new version of a model to a served repository, or roll back.

    python -m release.deploy [--repository DIR] [--server HOST:PORT] deploy MODEL SOURCE [--tenant ID]
                                                                    [--min-accuracy A] [--max-drop D]
    python -m release.deploy [--repository DIR] [--server HOST:PORT] rollback MODEL [VERSION]
    python -m release.deploy [--repository DIR] [--server HOST:PORT] tenant add|replace|remove|list ...

`tenant` manages a customer's own head over the shared members (release/heads.py), the light way to give a tenant
its own model and label set; --tenant below deploys a whole member of its own.

SOURCE is a model folder as the exporter writes one: config.pbtxt beside numbered version folders (the highest is
taken). The candidate is copied into a staging folder beside the repository, checked there (release/gates.py), and
moved in with rename() only when every check passed, so Triton never sees a candidate that failed.

Poll mode picks a new version up by itself. With --server (Triton's HTTP endpoint) deploy returns only once the
version serves: in explicit mode it calls the repository load API, in poll mode (which refuses that API) it waits.

Rollback moves the versions above the target out to `<repository>.retired/<model>/` (outside Triton's view), so the
target is the latest version again and `version_policy: latest` serves it.

--tenant ID deploys SOURCE as `<MODEL>__<ID>`, that customer's own member, checked as MODEL is; it generates the
ensembles `<ensemble>__<ID>` that run it in MODEL's place, writes the tenant's canary (`canary__<ID>.json`: the
labels its own models give held-out comments, which the readiness probe checks) and lists the tenant in
tenants.json, which the `feedback_routed` model reads to route requests that carry TENANT.
"""

import argparse
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

from google.protobuf import text_format
from tritonclient.utils import InferenceServerException

from conventions import REPOSITORY, TENANTS_FILE, tenant_canary_file
from python_backend.errors import BadRequest
from python_backend.layout import latest_version, next_version, parse_config, read_config, versions
from python_backend.tenants import SEPARATOR, read_mapping, tenant_model
from release import canary, heads, staging
from release.gates import MAX_DROP, MIN_ACCURACY, Rejected, ensemble_interface, read_configs, validate
from release.live import make_live
from server.backends import precompile

log = logging.getLogger(__name__)


def retired(repo: Path) -> Path:
    """Where rollback puts the versions it takes out: beside the repository, on the same file system."""
    return repo.resolve().parent / f"{repo.name}.retired"


def stage_candidate(stage: Path, model: str, version_dir: Path, version: int, config_text: str) -> Path:
    """`stage` becomes a one-model repository holding the candidate, exactly as it will be moved in."""
    staged = stage / model / str(version)
    shutil.copytree(version_dir, staged, ignore=shutil.ignore_patterns("__pycache__"))  # links become copies
    (staged / "config.pbtxt").write_text(config_text)  # each version keeps the config it was checked with
    (stage / model / "config.pbtxt").write_text(config_text)
    precompile(stage)  # else the stub writes __pycache__ into the live version folder, and poll mode reloads it
    return staged


def deploy(
    repo: Path,
    model: str,
    source: Path,
    server: str | None = None,
    min_accuracy: float = MIN_ACCURACY,
    max_drop: float = MAX_DROP,
    tenant: str | None = None,
    admin_key: str | None = None,
) -> int:
    """Add the highest version in `source` as the next version of `model` (of `<model>__<tenant>` with a tenant);
    returns the version number."""
    try:
        name = tenant_model(model, tenant) if tenant else model
    except BadRequest as error:
        raise Rejected(str(error)) from None
    if not (source / "config.pbtxt").is_file() or not versions(source):
        raise Rejected(f"{source}: expected a model folder with config.pbtxt and a numbered version folder")
    try:
        config = read_config(source)
    except text_format.ParseError as error:
        raise Rejected(f"config.pbtxt does not parse: {error}") from None
    config.name = name  # the folder names the model; a candidate exported under another name is renamed
    config_text = text_format.MessageToString(config)
    model_dir = repo / name
    with staging.locked(repo), staging.staging(repo) as stage:
        staged = stage_candidate(stage, name, latest_version(source), next_version(model_dir), config_text)
        live_dir = model_dir if versions(model_dir) else repo / model  # a new tenant is held to the default's score
        live = latest_version(live_dir) if versions(live_dir) else None
        report = validate(repo, model, stage, staged, config, live, (min_accuracy, max_drop))
        version = staging.install_version(staged, config_text, model_dir)
        ensembles = register_tenant(repo, tenant, model) if tenant else []  # [(name, config before or None)]
        if tenant:
            write_tenant_canary(repo, tenant, model)
    log.info("deployed %s version %d: %s", name, version, report)
    if server:
        try:
            make_live(server, [(name, version)] + [(ensemble, None) for ensemble, _ in ensembles], admin_key)
        except (InferenceServerException, TimeoutError, OSError) as error:  # OSError: the server is unreachable
            with staging.locked(repo):
                retire(repo, name, [version])
                if not versions(model_dir):  # a new model: its folder goes too (the version keeps its config)
                    (model_dir / "config.pbtxt").unlink()
                    model_dir.rmdir()
                unregister_tenant(repo, ensembles)
                if tenant in read_mapping(repo / TENANTS_FILE):  # its canary, from the models that serve it again
                    write_tenant_canary(repo, tenant)
                elif tenant:
                    (repo / tenant_canary_file(tenant)).unlink(missing_ok=True)
            raise Rejected(f"the server did not serve version {version} ({error}); it was moved out again") from None
    if tenant:  # only now may requests be routed to the tenant's ensembles (at once in poll mode without --server)
        with staging.locked(repo), staging.staging(repo) as stage:
            mapping = read_mapping(repo / TENANTS_FILE)
            mapping[tenant] = sorted(set(mapping.get(tenant, [])) | {model})
            staging.replace_file(stage, repo / TENANTS_FILE, json.dumps(mapping, indent=2, sort_keys=True) + "\n")
    return version


def add(
    repo: Path,
    source: Path,
    model: str,
    companions: tuple[str, ...] = (),
    min_accuracy: float = MIN_ACCURACY,
    max_drop: float = MAX_DROP,
) -> int:
    """Put what an exporter wrote in `source` (a folder per model) live; returns `model`'s new version number.

    `model` becomes its next version: through deploy() and every gate when an ensemble runs it, else as it is. Then
    each of `companions` (the models that serve it, such as its own tokenizer and text ensemble), in that order,
    each whole in one step."""
    member = any(ensemble_interface(repo, model))
    if member:
        version = deploy(repo, model, source / model, min_accuracy=min_accuracy, max_drop=max_drop)
    with staging.locked(repo), staging.staging(repo) as stage:
        if not member:  # a model of its own: no live version or ensemble to hold it to
            config_text = (source / model / "config.pbtxt").read_text()
            staged = stage_candidate(
                stage, model, latest_version(source / model), next_version(repo / model), config_text
            )
            version = staging.install_version(staged, config_text, repo / model)
        for companion in companions:
            shutil.copytree(source / companion, stage / companion)
        staging.publish(stage, repo, list(companions))
    return version


def tenant_members(repo: Path, tenant: str, member: str | None = None) -> dict[str, str]:
    """Each member the tenant replaces (those in tenants.json, and `member`) and the tenant's model for it."""
    replaced = set(read_mapping(repo / TENANTS_FILE).get(tenant, [])) | ({member} if member else set())
    return {name: tenant_model(name, tenant) for name in sorted(replaced)}


def write_tenant_canary(repo: Path, tenant: str, member: str | None = None) -> None:
    """The tenant's canary, from the tenant's models as they are now in the repository."""
    canary.write(repo, tenant, tenant_members(repo, tenant, member))


def register_tenant(repo: Path, tenant: str, member: str) -> list[tuple[str, str | None]]:
    """Write `<ensemble>__<tenant>` for each default ensemble that runs `member` or another of the tenant's custom
    members, with those steps pointing at the tenant's models; returns each ensemble's name and the config it had
    before (None for a new one), for unregister_tenant."""
    custom = set(tenant_members(repo, tenant, member))
    written = []
    with staging.staging(repo) as stage:
        for ensemble in read_configs(repo).values():
            steps = [step for step in ensemble.ensemble_scheduling.step if step.model_name in custom]
            if ensemble.platform != "ensemble" or SEPARATOR in ensemble.name or not steps:
                continue
            for step in steps:
                step.model_name = tenant_model(step.model_name, tenant)
            ensemble.name = tenant_model(ensemble.name, tenant)
            folder = stage / ensemble.name
            (folder / "1").mkdir(parents=True)  # Triton wants a version folder, even an empty one
            (folder / "config.pbtxt").write_text(text_format.MessageToString(ensemble))
            if (repo / ensemble.name).exists():
                before = (repo / ensemble.name / "config.pbtxt").read_text()
                (folder / "config.pbtxt").replace(repo / ensemble.name / "config.pbtxt")
            else:
                before = None
                folder.rename(repo / ensemble.name)
            written.append((ensemble.name, before))
    return written


def unregister_tenant(repo: Path, ensembles: list[tuple[str, str | None]]) -> None:
    """Undo register_tenant: a new ensemble goes (beside the repository first, then away), a changed one gets its
    config back; either way no ensemble is left pointing at a version that was moved out."""
    with staging.staging(repo) as stage:
        for name, before in ensembles:
            if before is None:
                (repo / name).rename(stage / name)
            else:
                staging.replace_file(stage, repo / name / "config.pbtxt", before)


def retire(repo: Path, model: str, numbers: list[int]) -> None:
    archive = retired(repo) / model
    archive.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for number in sorted(numbers, reverse=True):
        (repo / model / str(number)).rename(archive / f"{number}-{stamp}")


def rollback(
    repo: Path, model: str, version: int | None = None, server: str | None = None, admin_key: str | None = None
) -> int:
    """Serve `version` (default: the one before the latest) again; returns it."""
    model_dir = repo / model
    with staging.locked(repo):
        present = versions(model_dir)
        if version is None:
            if len(present) < 2:
                raise Rejected(f"{model} has versions {present}: nothing to roll back to")
            version = present[-2]
        if version not in present:
            raise Rejected(f"{model} has no version {version} (it has {present})")
        target = model_dir / str(version)
        recorded = target / "config.pbtxt"
        config_text = (recorded if recorded.exists() else model_dir / "config.pbtxt").read_text()
        role = model.split(SEPARATOR)[0]  # a tenant's model is checked as the member it replaces
        with staging.staging(repo) as stage:
            staged = stage_candidate(stage, model, target, version, config_text)
            report = validate(repo, role, stage, staged, parse_config(config_text), None, None)
        newer = [number for number in present if number > version]
        retire(repo, model, newer)  # now the target is the latest version, and Triton loads it
        if (model_dir / "config.pbtxt").read_text() != config_text:
            with staging.staging(repo) as stage:
                staging.replace_file(stage, model_dir / "config.pbtxt", config_text)
        if SEPARATOR in model:  # a tenant's model: its canary follows the version that serves now
            write_tenant_canary(repo, model.split(SEPARATOR)[1])
    log.info(
        "rolled %s back to version %d (%s); retired %s to %s", model, version, report, newer, retired(repo) / model
    )
    if server:
        make_live(server, [(model, version)], admin_key)
    return version


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m release.deploy", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repository", type=Path, default=REPOSITORY)
    parser.add_argument("--server", metavar="HOST:PORT", help="Triton's HTTP endpoint: return once the change serves")
    parser.add_argument(
        "--admin-key", default=os.environ.get("TRITON_ADMIN_KEY"), help="the server's admin key (for the load API)"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("deploy", help="add SOURCE as the next version of MODEL")
    add.add_argument("model")
    add.add_argument("source", type=Path)
    add.add_argument("--tenant", help="deploy as this customer's own MODEL (1-32 of a-z, 0-9 and inner '-')")
    add.add_argument("--min-accuracy", type=float, default=MIN_ACCURACY)
    add.add_argument("--max-drop", type=float, default=MAX_DROP)
    back = commands.add_parser("rollback", help="serve an earlier version of MODEL again")
    back.add_argument("model")
    back.add_argument("version", type=int, nargs="?")
    heads.add_commands(commands.add_parser("tenant", help="a tenant's own head over the shared members (add|...)"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    try:
        if args.command == "tenant":
            print("\n".join(heads.run(args)))
        elif args.command == "deploy":
            deploy(
                args.repository,
                args.model,
                args.source,
                args.server,
                args.min_accuracy,
                args.max_drop,
                args.tenant,
                args.admin_key,
            )
        else:
            rollback(args.repository, args.model, args.version, args.server, args.admin_key)
    except (Rejected, BadRequest) as error:
        sys.exit(f"{args.command} {getattr(args, 'model', None) or getattr(args, 'tenant', '')}: refused: {error}")


if __name__ == "__main__":
    main()
