"""checkov, the infrastructure scanner, over infra/: the Kubernetes manifests as kustomize renders them (base and
GPU overlay) and the Dockerfile. No failed check; a waiver lives beside what it waives, with its reason (issue #16).
checkov has no docker-compose framework: docker-compose.yml is validated by tests/test_compose.py."""

import json
import os
import subprocess
from pathlib import Path

from infra.tools import kubectl
from server import ROOT
from tests.conftest import installed

CHECKOV = ROOT / "build" / "checkov-venv" / "bin" / "checkov"  # make scan-tools


def scan() -> list[dict]:
    path = os.pathsep.join(
        [str(Path(installed(kubectl)).parent), os.environ["PATH"]]
    )  # its kustomize runner calls kubectl
    done = subprocess.run(
        [str(CHECKOV), "--directory", str(ROOT / "infra"), "--framework", "kustomize", "dockerfile",
         "--skip-download", "--output", "json"],  # fmt: skip
        capture_output=True, text=True, timeout=300, check=False, env=os.environ | {"PATH": path},
    )  # fmt: skip
    assert done.stdout.strip(), f"checkov said nothing (exit {done.returncode}): {done.stderr[-2000:]}"
    reports = json.loads(done.stdout)
    return reports if isinstance(reports, list) else [reports]


def test_checkov_finds_no_failed_check_and_every_waiver_has_a_reason():
    reports = scan()
    assert {report["check_type"] for report in reports} == {"kustomize", "dockerfile"}
    failed = [
        f"{check['check_id']} {check['resource']}: {check['check_name']}"
        for report in reports
        for check in report["results"]["failed_checks"]
    ]
    waived = {
        (check["check_id"], check["check_result"].get("suppress_comment", ""))
        for report in reports
        for check in report["results"]["skipped_checks"]
    }
    for report in reports:
        print(f"checkov {report['check_type']}: {report['summary']}")
    print("waived:", *sorted(waived), sep="\n  ")
    assert not failed, "\n".join(failed)
    assert all(len(reason) > 20 for _, reason in waived), waived
    assert sum(report["summary"]["passed"] for report in reports) > 100
