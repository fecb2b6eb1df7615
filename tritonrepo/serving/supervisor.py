"""Keeping tritonserver serving under `tritonrepo serve`: start it, watch it and its Python backend stubs, restart it
when a stub dies, give up (exit 5, with the reason) after too many restarts or when tritonserver itself exits.

Why stubs are watched: a Python model runs in a stub process of its own; when one dies (killed, out of memory, a
crash in native code) tritonserver keeps running and keeps reporting the model READY, but every request to it fails
("Stub process ... is not healthy") and open streams hang; Triton 2.51 never restarts it. Only a new tritonserver
brings the model back.

Everything here runs on the main thread: tritonserver is started with a parent-death signal that fires when the
thread that started it ends (tritonserver.die_with_parent), and the main thread lasts as long as serve.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from dataclasses import dataclass

from tritonrepo import progress
from tritonrepo.errors import ServerError
from tritonrepo.serving import shm
from tritonrepo.serving.tritonserver import StubProcess, TritonServer

POLL_S = 0.25  # how often the stubs are looked at: a dead one is noticed within this, plus /proc reading time
STOP_BROKEN_S = 5.0  # a tritonserver with a dead stub gets this long to exit on SIGTERM before SIGKILL


@dataclass(frozen=True)
class RestartPolicy:
    """At most `max_restarts` restarts within any `window_s` seconds; the next fault ends serve. 0: never restart."""

    max_restarts: int = 3
    window_s: float = 600.0

    def describe(self) -> str:
        return f"{self.max_restarts} within {self.window_s / 60:g} minutes"


class Supervisor:
    """Owns the tritonserver of one `serve`: `start()` it ready, `watch()` until told to stop, `stop()` always.

    `on_fault(reason)` runs when the deployment breaks (the front end then answers 503 and fails what is in flight),
    `on_recovered()` once a restarted tritonserver has every model ready again.
    """

    def __init__(
        self,
        make_server: Callable[[], TritonServer],
        *,
        ready_timeout: float,
        policy: RestartPolicy = RestartPolicy(),
        on_states: Callable[[dict[str, str]], None] | None = None,
    ) -> None:
        self.make_server = make_server
        self.ready_timeout = ready_timeout
        self.policy = policy
        self.on_states = on_states
        self.on_fault: Callable[[str], None] = lambda reason: None
        self.on_recovered: Callable[[], None] = lambda: None
        self.server: TritonServer | None = None
        self.restarts: collections.deque[float] = collections.deque()
        self._stubs: list[StubProcess] = []

    def start(self) -> TritonServer:
        """Start tritonserver and return once every model is ready (ServerStartError otherwise)."""
        removed = shm.remove_stale_regions()
        if removed:
            progress.say(
                f"    removed {len(removed)} shared-memory region(s) in {shm.SHM_ROOT} left by a tritonrepo "
                "process that no longer runs"
            )
        self.server = self.make_server()
        self.server.start()
        self.server.wait_ready(timeout=self.ready_timeout, on_progress=self.on_states)
        # Counted once every model is READY: each model instance has its stub by then.
        self._stubs = self.server.python_stubs()
        return self.server

    def watch(self, keep_going: Callable[[], bool] = lambda: True) -> None:
        """Block while `keep_going()` holds, restarting tritonserver when a stub dies. Raises ServerError when
        tritonserver exits or the restart budget is spent."""
        while keep_going():
            server = self._require_server()
            if server.returncode is not None:
                reason = f"tritonserver exited with code {server.returncode}"
                self.on_fault(f"{reason}; serve is stopping")
                raise ServerError(reason, hint=f"See {server.log_path}.")
            dead = [stub for stub in self._stubs if not stub.alive()]
            if dead:
                self._recover(dead)
            else:
                time.sleep(POLL_S)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _require_server(self) -> TritonServer:
        if self.server is None:
            raise RuntimeError("start() the Supervisor before watching")
        return self.server

    def _recover(self, dead: list[StubProcess]) -> None:
        server = self._require_server()
        names = ", ".join(f"{stub.instance} (pid {stub.pid})" for stub in dead)
        reason = f"the Python backend stub of model instance {names} died, so tritonserver cannot serve that model"
        now = time.monotonic()
        while self.restarts and now - self.restarts[0] > self.policy.window_s:
            self.restarts.popleft()
        if len(self.restarts) >= self.policy.max_restarts:
            self.on_fault(f"{reason}; serve is stopping")
            spent = (
                "restarts are off (--max-restarts 0)"
                if self.policy.max_restarts == 0
                else f"it was restarted {len(self.restarts)} time(s) within {self.policy.window_s / 60:g} minutes"
            )
            raise ServerError(f"{reason}; {spent}", hint=f"See {server.log_path}.")
        self.restarts.append(now)
        self.on_fault(f"{reason}; tritonserver is restarting")
        progress.warn(
            f"{reason}. Restarting tritonserver (restart {len(self.restarts)}, at most {self.policy.describe()})."
        )
        server.stop(timeout=STOP_BROKEN_S)
        started = time.monotonic()
        self.server = self.make_server()
        self.server.start()
        self.server.wait_ready(timeout=self.ready_timeout, on_progress=self.on_states)
        self._stubs = self.server.python_stubs()
        progress.warn(f"tritonserver restarted: every model is ready again after {time.monotonic() - started:.1f}s")
        self.on_recovered()
