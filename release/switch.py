"""Make new versions of several models live together: every ensemble answer comes from the old versions or from the
new ones, never from a mix.

Triton 2.51 has no transaction across models: in poll mode it swaps each changed model in as soon as its new version
has loaded, under ensembles still running the others' old versions. An ensemble's own config, though, is swapped
whole. So the switch goes through Triton's own version pins (an ensemble step's `model_version`), in four steps, each
serving before the next is written:

1. pin: each ensemble that uses a changed model names the version it serves now, instead of -1 (the latest);
2. load: each changed model gets its new files as its next version and keeps the old one loaded (latest 2);
3. switch: each of those ensembles names the new versions, one config per ensemble;
4. unpin: the ensembles and the models get their configs back (-1, latest 1), which now mean the new versions.

Each step waits for the server's word (release/live.py), so this needs the server. The models keep their configs:
a config applies to every loaded version, so a model whose config changes cannot serve old and new side by side.
"""

import logging
from pathlib import Path

from google.protobuf import text_format
from tritonclient.utils import InferenceServerException

from python_backend.layout import parse_config, versions
from release.gates import read_configs
from release.live import Live
from release.staging import in_repository, replace_file

log = logging.getLogger(__name__)


def blockers(stage: Path, repo: Path, models: list[str]) -> list[str]:
    """Why `models` (staged as stage/<model>/config.pbtxt and 1/) cannot be switched together; [] when they can."""
    reasons = []
    for model in models:
        if not in_repository(repo, model):
            reasons.append(f"{model} is new")
        elif (stage / model / "config.pbtxt").read_text() != (repo / model / "config.pbtxt").read_text():
            reasons.append(f"{model}'s config changed")
    return reasons


def _pinned(config_text: str, pins: dict[str, int]) -> str:
    config = parse_config(config_text)
    for step in config.ensemble_scheduling.step:
        step.model_version = pins.get(step.model_name, step.model_version)
    return text_format.MessageToString(config)


def _keeping_two(config_text: str) -> str:
    config = parse_config(config_text)
    config.version_policy.latest.num_versions = 2
    return text_format.MessageToString(config)


def _serves_pins(live: Live, ensemble: str, pins: dict[str, int]) -> bool:
    """Whether the ensemble as it serves now runs each model in `pins` at that version (-1: the latest)."""
    served = {
        step["model_name"]: int(step.get("model_version", -1))
        for step in live.config(ensemble)["ensemble_scheduling"]["step"]
    }
    return all(served[model] == version for model, version in pins.items() if model in served)


def _unloaded(live: Live, model: str, version: int) -> bool:
    return not live.ready(model, version)


def release_together(stage: Path, repo: Path, models: list[str], live: Live) -> None:
    """Make stage/<model>/1 live as the next version of each of `models`, switching the ensembles at once (the module's
    four steps). The caller holds the repository's lock and has checked blockers()."""
    release = Release(stage, repo, models, live)
    try:
        release.pin(release.old)
        release.load()
        release.pin(release.new)
    except BaseException:
        release.undo()
        raise
    release.unpin()


class Release:
    """One switch: the ensembles that run the changed models, the configs and versions before it, and its steps."""

    def __init__(self, stage: Path, repo: Path, models: list[str], live: Live):
        self.stage, self.repo, self.models, self.live = stage, repo, models, live
        self.ensembles = {
            name: (repo / name / "config.pbtxt").read_text()
            for name, config in sorted(read_configs(repo).items())
            if config.platform == "ensemble"
            and {step.model_name for step in config.ensemble_scheduling.step} & set(models)
        }
        self.configs = {model: (repo / model / "config.pbtxt").read_text() for model in models}
        self.old = {model: versions(repo / model)[-1] for model in models}
        self.new = {model: number + 1 for model, number in self.old.items()}

    def pin(self, pins: dict[str, int]) -> None:
        """Steps 1 and 3: every ensemble runs the changed models at these versions, confirmed by the server."""
        for ensemble, text in self.ensembles.items():
            replace_file(self.stage, self.repo / ensemble / "config.pbtxt", _pinned(text, pins))
        for ensemble in self.ensembles:
            self.live.load(ensemble)
            self.live.wait(f"{ensemble} serving versions {pins}", _serves_pins, self.live, ensemble, pins)

    def load(self) -> None:
        """Step 2: each model's new files as its next version, loaded beside the old one."""
        for model in self.models:
            replace_file(self.stage, self.repo / model / "config.pbtxt", _keeping_two(self.configs[model]))
            (self.stage / model / "1").rename(self.repo / model / str(self.new[model]))
        for model in self.models:
            self.live.load(model)
            self.live.wait(f"{model} version {self.new[model]} serving", self.live.ready, model, self.new[model])

    def unpin(self) -> None:
        """Step 4: the ensembles first, so that -1 already means the new versions when the old ones unload."""
        for ensemble, text in self.ensembles.items():
            replace_file(self.stage, self.repo / ensemble / "config.pbtxt", text)
        for model in self.models:
            replace_file(self.stage, self.repo / model / "config.pbtxt", self.configs[model])
        for model in [*self.models, *self.ensembles]:
            self.live.load(model)
        for model in self.models:
            self.live.wait(f"{model} version {self.old[model]} unloaded", _unloaded, self.live, model, self.old[model])
        unpinned = {model: -1 for model in self.models}
        for ensemble in self.ensembles:
            self.live.wait(f"{ensemble} serving the latest versions", _serves_pins, self.live, ensemble, unpinned)

    def undo(self) -> None:
        """Back in the order that keeps every answer whole: the ensembles on the old versions (still loaded), then
        the files. If the server cannot confirm the first (it may be what failed), the files go back all the same."""
        try:
            self.pin(self.old)
        except (InferenceServerException, OSError, TimeoutError) as error:
            log.warning("undoing the switch: the server did not confirm the ensembles on the old versions: %s", error)
        for model in self.models:
            replace_file(self.stage, self.repo / model / "config.pbtxt", self.configs[model])
            if (self.repo / model / str(self.new[model])).exists():  # out to the staging folder, removed with it
                (self.repo / model / str(self.new[model])).rename(self.stage / model / "1")
        for ensemble, text in self.ensembles.items():
            replace_file(self.stage, self.repo / ensemble / "config.pbtxt", text)
        try:
            for model in [*self.models, *self.ensembles]:
                self.live.load(model)
        except (InferenceServerException, OSError) as error:
            log.warning("undoing the switch: the server did not load the old files: %s", error)
        log.warning("the switch was undone: %s is as it was", self.repo)
