"""Keep tritonserver serving: run it as a child, heal a model whose stub died, restart the server if it dies.

Every `interval` seconds the watchdog runs the canary probe (server/probe.py). tritonserver 2.51 does not restart
a dead Python-backend stub; when the canary names one ("Stub process 'fuse_0' is not healthy"), the watchdog
touches that model's version folders: poll mode sees a changed version and loads the model again with a new stub,
and the ensembles that use it follow, while the other models keep serving. (Touching config.pbtxt is not enough:
Triton applies an unchanged config in place and keeps the dead stub.) If the model is not back within
`heal_timeout`, or the repository is read-only, or the server runs in explicit model-control mode (no poll), the
whole server is restarted. If tritonserver exits on its own, it is started again after removing the stub regions it
left in /dev/shm (a killed server cannot).
"""

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

from server import probe
from server.launch import Ports, stop, stub_regions, wait_ready


class Supervisor:
    def __init__(
        self,
        argv: list[str],
        env: dict[str, str],
        ports: Ports,
        repository: Path,
        *,
        interval: float = 1.0,
        probe_timeout: float = 3.0,
        heal_timeout: float = 30.0,
        poll: bool = True,
        log=None,
    ):
        self.argv, self.env, self.ports, self.repository = argv, env, ports, repository
        self.interval, self.probe_timeout, self.heal_timeout = interval, probe_timeout, heal_timeout
        self.poll, self.log = poll, log
        self.url = f"http://127.0.0.1:{ports.http}"
        self.stopping = threading.Event()
        self.process: subprocess.Popen | None = None
        self.regions: set[Path] = set()
        self.healing: dict[str, float] = {}  # model -> when its reload was asked for

    def say(self, message: str) -> None:
        print(f"supervisor: {message}", flush=True)

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.argv, env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.healing.clear()
        self.say(f"tritonserver started, pid {self.process.pid}")

    def restart(self, reason: str) -> None:
        self.say(f"restarting tritonserver: {reason}")
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.reap()
        self.start()

    def reap(self) -> None:
        """Wait for tritonserver to exit, then remove the stub regions it left: a killed server leaves all of
        them, and one that healed a model keeps the dead stub's model loaded, so at shutdown it waits its exit
        timeout (30 s) and leaves that model's regions."""
        self.process.wait()
        for region in self.regions:
            region.unlink(missing_ok=True)
        self.regions.clear()

    def heal(self, model: str) -> None:
        if not self.poll:  # explicit mode: no poll to pick up the touched folder (and a load alone keeps the stub)
            return self.restart(f"{model}: stub not healthy")
        asked = self.healing.get(model)
        if asked is not None:  # poll mode takes up to its interval to notice, then loads the model
            if time.monotonic() - asked > self.heal_timeout:
                self.restart(f"{model} not back {self.heal_timeout:.0f} s after its reload was asked for")
            return
        self.healing[model] = time.monotonic()
        try:
            for version in (self.repository / model).iterdir():
                if version.name.isdigit():
                    os.utime(version)
        except OSError as error:
            return self.restart(f"cannot ask {model} to reload ({error})")
        self.say(f"{model}: stub not healthy, reloading it")

    def watch_once(self) -> None:
        if self.process.poll() is not None:
            return self.restart(f"it exited with code {self.process.returncode}")
        self.regions |= stub_regions(self.process.pid)
        checks = probe.probe(self.url, self.probe_timeout)
        if all(check.ok for check in checks):
            for model, asked in self.healing.items():
                self.say(f"{model}: serving again {time.monotonic() - asked:.1f} s after its reload was asked for")
            self.healing.clear()
        for model in {check.broken_model for check in checks} - {None}:
            self.heal(model)

    def run(self) -> int:
        """Until SIGTERM/SIGINT; then stop tritonserver gracefully."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stopping.set())
        self.start()
        try:
            wait_ready(self.process, self.ports, timeout=300)
        except (RuntimeError, TimeoutError):
            pass  # exited or stuck while loading: the loop restarts it if it exits
        while not self.stopping.wait(self.interval):
            self.watch_once()
        stop(self.process, timeout=60)
        self.reap()
        return self.process.returncode
