"""Keep tritonserver serving: run it as a child, heal a model whose stub died, restart the server if it dies.

Every `interval` seconds the watchdog looks for dead Python-backend stubs and runs the canary probe
(server/probe.py). tritonserver 2.51 does not restart a dead stub, and is slow to say so: each batch sent to it fails
only after the backend's one-second health timeout, so under load the canaries wait behind a growing queue and time
out. So a stub that tritonserver has not reaped counts as dead as soon as it is seen (killed: a stub tritonserver
stops, it reaps at once), as does a model the canary names ("Stub process 'fuse_0' is not healthy"). The watchdog
touches such a model's version folders: poll mode sees a changed version and loads the model again with a new stub,
and the ensembles that use it follow, while the other models keep serving. (Touching config.pbtxt is not enough:
Triton applies an unchanged config in place and keeps the dead stub.) In explicit model-control mode it then asks
the repository API to load the model, which reloads the touched model in the same way; in a read-only repository
(the image's) it unloads and loads the model, then the ensembles that run it. If the model is not back within
`heal_timeout`, or the repository is read-only in poll mode, the whole server is restarted, as it is when every
canary times out `hung_probes` probes in a row with no heal under way (alive but hung). If tritonserver exits on
its own, it is started again after removing the stub regions it left in /dev/shm (a killed server cannot), after a
back-off that doubles with each start that never became ready.

SIGTERM and SIGINT only set a flag (nothing else is safe in a signal handler: a threading.Event there deadlocked
when the signal landed inside Event.wait()); the loop sees it within `interval` and stops tritonserver: SIGTERM, at
most `stop_timeout` seconds, then SIGKILL of its process group and removal of its stub regions.
"""

import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from conventions import ADMIN_HEADER
from server import ROOT, probe
from server.flags import Ports, region_prefix
from server.processes import (
    alive,
    kill_group,
    orphaned_stub_regions,
    remove_regions,
    stop,
    stop_with_parent,
    stub_models,
    zombie,
)

log = logging.getLogger(__name__)


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
        stop_timeout: float = 6.0,
        max_failed_starts: int = 5,
        hung_probes: int = 3,
        poll: bool = True,
        admin_key: str | None = None,
        log=None,
    ):
        self.argv, self.env, self.ports, self.repository = argv, env, ports, repository
        self.interval, self.probe_timeout, self.heal_timeout = interval, probe_timeout, heal_timeout
        self.stop_timeout, self.max_failed_starts, self.hung_probes = stop_timeout, max_failed_starts, hung_probes
        self.poll, self.log = poll, log
        self.prefix = region_prefix(argv) or ""  # its stub regions' names start so (none for a stand-in server)
        self.url = f"http://127.0.0.1:{ports.http}"
        self.admin = {"Content-Type": "application/json"} | ({ADMIN_HEADER: admin_key} if admin_key else {})
        self.signalled = 0  # the stop signal's number, set by the handler: the only thing the handler does
        self.process: subprocess.Popen | None = None
        self.reaper: subprocess.Popen | None = None
        self.ready = False  # has the current tritonserver answered ready yet?
        self.failed_starts = 0  # starts in a row that exited before they were ready
        self.timeouts = 0  # probes in a row in which every canary timed out
        self.healing: dict[str, float] = {}  # model -> when its reload was asked for
        self.orphans: set[Path] = set()  # regions without a stub when a heal began: the dead stubs' regions
        self.stubs: dict[int, str] = {}  # the stubs running at the last watch: pid -> model

    def say(self, message: str) -> None:
        log.info("supervisor: %s", message)

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.argv,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=stop_with_parent,
        )
        # Cleans up after tritonserver if this process is killed before it can (server/reaper.py); a session of its
        # own, so that what kills this process group does not kill it.
        self.reaper = subprocess.Popen(
            [sys.executable, "-m", "server.reaper", str(self.process.pid), str(os.getpid()), self.prefix],
            cwd=ROOT,
            start_new_session=True,
        )
        self.healing.clear()
        self.orphans.clear()
        self.stubs.clear()
        self.timeouts = 0
        self.ready = False
        self.say(f"tritonserver started, pid {self.process.pid}")

    def restart(self, reason: str) -> None:
        self.say(f"restarting tritonserver: {reason}")
        kill_group(self.process.pid)  # a server that died on its own leaves its stubs running
        self.reap()
        self.start()

    def reap(self) -> None:
        """Wait for tritonserver to exit (its process group killed), then remove the stub regions it left, by its
        region prefix: a killed server leaves all of them, and one that healed a model keeps the dead stub's model
        loaded, so at shutdown it waits its exit timeout (--exit-timeout-secs) and leaves that model's regions."""
        self.process.wait()
        self.reaper.kill()  # this process cleans up itself
        self.reaper.wait()
        remove_regions(self.prefix)

    def heal(self, model: str, why: str) -> None:
        if model in self.healing:  # the reload takes a poll interval (poll mode) or a load (explicit mode)
            return
        self.healing[model] = time.monotonic()
        self.orphans |= orphaned_stub_regions(self.process.pid)
        self.say(f"{model}: {why}, reloading it")
        try:
            for version in (self.repository / model).iterdir():
                if version.name.isdigit():
                    os.utime(version)
            touched = True
        except OSError as error:
            if self.poll:
                return self.restart(f"cannot ask {model} to reload ({error})")
            touched = False  # a read-only repository, as in the image
        if not self.poll:
            # In its own thread, so that a stop signal is still seen within a second while a big model loads.
            threading.Thread(target=self.reload, args=(model, touched), daemon=True).start()

    def reload(self, model: str, touched: bool) -> None:
        """Explicit mode, through the repository API (with the admin key). A touched model is loaded again, which
        reloads it as a poll would: the old version serves until the new one is ready. In a read-only repository a
        load alone would keep the dead stub, so the model is unloaded first; that takes the ensembles that run it
        down with it, so they are loaded again after it, and their callers see "no available versions" meanwhile."""
        steps = [("load", model)]
        if not touched:
            steps = [("unload", model), *steps, *(("load", e) for e in ensembles_using(self.repository, model))]
        try:
            for action, name in steps:
                request = urllib.request.Request(
                    f"{self.url}/v2/repository/models/{name}/{action}", data=b"{}", headers=self.admin, method="POST"
                )
                urllib.request.urlopen(request, timeout=self.heal_timeout).close()
        except OSError as error:  # HTTPError included: refused, or the model does not load; the timeout acts then
            self.say(f"{model}: reload failed ({error}); the server is restarted if it is not back in time")

    def remove_dead_stub_regions(self) -> None:
        """Once healed, the dead stubs' regions: still without a stub now (not a model that was loading when the
        heal began), so nothing will open them again. Removed here, they cannot outlive a supervisor that is then
        killed (its tritonserver, stopping by itself, would leave them)."""
        if not self.orphans:
            return
        dead = self.orphans & orphaned_stub_regions(self.process.pid)
        for region in dead:
            region.unlink(missing_ok=True)
        self.orphans.clear()
        if dead:
            self.say(f"removed {len(dead)} dead stub region(s) from /dev/shm")

    def newly_dead_stubs(self) -> dict[str, int]:
        """model -> pid of each stub that ran at the last watch and is now dead and not reaped: killed, not stopped."""
        running = stub_models(self.process.pid)
        died = {model: pid for pid, model in self.stubs.items() if pid not in running and zombie(pid)}
        # A stub caught while it exits has no command line left and is not a zombie yet: watched again next time,
        # or its death would go unseen (a fresh-clone run on 2026-12-07 took the timed-out canaries for a hang).
        exiting = {pid: model for pid, model in self.stubs.items() if pid not in running and alive(pid)}
        self.stubs = running | exiting
        return died

    def exited(self) -> None:
        """A server that ran and died is restarted at once; one that never came up, after a growing back-off, and
        not at all after `max_failed_starts` such starts in a row (a port in use or a repository that does not
        load will not fix itself)."""
        code = self.process.returncode
        if self.ready:
            self.failed_starts = 0
            return self.restart(f"it exited with code {code}")
        self.failed_starts += 1
        if self.failed_starts >= self.max_failed_starts:
            self.reap()
            raise StartFailed(f"tritonserver exited with code {code} before it was ready, {self.failed_starts} times")
        delay = min(2.0**self.failed_starts, 30.0)
        self.say(f"tritonserver exited with code {code} before it was ready; starting it again in {delay:.0f} s")
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline and not self.signalled:
            time.sleep(min(self.interval, 0.2))
        if not self.signalled:
            self.restart("after a failed start")

    def watch_once(self) -> None:
        if self.process.poll() is not None:
            return self.exited()
        died = self.newly_dead_stubs()  # watched while loading too: a stub killed just after, is then known
        if not self.ready:
            if not probe.server_ready(self.url, self.probe_timeout):
                return  # still loading: its models are checked once it says ready
            self.ready = True
            self.say("tritonserver is ready")
        for model, pid in died.items():
            self.heal(model, f"its stub (pid {pid}) died")
        checks = probe.probe(self.url, self.probe_timeout, self.repository)
        self.timeouts = self.timeouts + 1 if all(check.timed_out for check in checks) else 0
        if self.timeouts >= self.hung_probes and not self.healing:  # a heal under way ends within heal_timeout
            return self.restart(f"alive but not answering: every canary timed out {self.timeouts} probes in a row")
        if all(check.ok for check in checks):
            for model, asked in self.healing.items():
                self.say(f"{model}: serving again {time.monotonic() - asked:.1f} s after its reload was asked for")
            self.healing.clear()
            self.remove_dead_stub_regions()
        for model, asked in self.healing.items():
            if time.monotonic() - asked > self.heal_timeout:
                return self.restart(f"{model} not back {self.heal_timeout:.0f} s after its reload was asked for")
        for model in {check.broken_model for check in checks} - {None}:
            self.heal(model, "a canary says its stub is not healthy")

    def on_signal(self, signum: int, _frame) -> None:
        self.signalled = signum

    def run(self) -> int:
        """Until SIGTERM/SIGINT; then stop tritonserver within stop_timeout. 0 after a signal, 1 if it gave up."""
        previous = {sig: signal.signal(sig, self.on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        self.start()
        try:
            while not self.signalled:
                time.sleep(self.interval)  # the handler runs within the sleep; the flag is seen after it
                if not self.signalled:
                    self.watch_once()
        except StartFailed as error:
            self.say(f"giving up: {error}")
            return 1
        finally:
            stop(self.process, timeout=self.stop_timeout)
            self.reap()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        self.say(f"stopped on {signal.Signals(self.signalled).name}")
        return 0


def ensembles_using(repository: Path, model: str) -> list[str]:
    """The ensembles in the repository with a step that runs `model`."""
    found = []
    for config in sorted(repository.glob("*/config.pbtxt")):
        text = config.read_text()
        if 'platform: "ensemble"' in text and f'model_name: "{model}"' in text:
            found.append(config.parent.name)
    return found


class StartFailed(RuntimeError):
    pass
