"""Start, watch and stop a real Triton Inference Server: the one on PATH (NVIDIA's container) or the ``tritonserver``
2.51 binary inside the ``nvidia-pytriton`` wheel.

For the wheel's binary the launcher assembles a backend directory (idempotent, in the cache dir)::

    <cache>/backends/<key>/python/libtriton_python.so         copy: Triton refuses a python-based backend whose
                                                              library resolves outside the backend directory
    <cache>/backends/<key>/python/triton_python_backend_stub  symlink to the stub of this interpreter's version
    <cache>/backends/<key>/python/triton_python_backend_utils.py   symlink
    <cache>/backends/<key>/<runtime>/model.py                symlink to stylize/server/triton_models/backends/<runtime>/model.py,
                                                              one per Python-based backend (onnxruntime, openvino)

and sets the environment the python stub needs (see :func:`server_environment`): the stub embeds libpython and its
interpreter looks for ``python3`` on PATH to find its prefix, so the venv's ``bin`` goes first on PATH (the venv's
``pyvenv.cfg`` then puts its site-packages on ``sys.path``); PYTHONPATH repeats site-packages and the source tree of
``stylize``; LD_LIBRARY_PATH gets the wheel's bundled libraries (the copied library's $ORIGIN RPATH no longer reaches
them) and this interpreter's libpython. Before starting, the same interpreter is asked which numpy it imports:
numpy 2 in the stub silently corrupts tensors.

Every server it starts binds 127.0.0.1 unless told otherwise (``--host``/``STYLIZE_ADDRESS``) and restricts the
admin APIs (stylize.contract.access) to the key of ``STYLIZE_ADMIN_KEY``, or to a random key per server held in
:attr:`TritonServer.admin_key` (never printed; the command line written to the log shows ``<admin key>``).
"""

from __future__ import annotations

import atexit
import collections
import json
import os
import re
import shlex
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
import weakref
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence, TextIO

from stylize.contract import access
from stylize.server import healing
from stylize.server.cleanup import Cleanup, clean_up_after_crashes
from stylize.server.errors import (
    ModelRepositoryError,
    PortInUseError,
    ServerError,
    ServerStartError,
    ServerTimeoutError,
)
from stylize.server.install import (
    TritonInstallation,
    check_stub_environment,
    find_tritonserver,
    prepare_backend_directory,
    server_environment,
)
from stylize.server.settings import ENV_PREFIX, ServerSettings, port_is_free

# ---------------------------------------------------------------------------------------------------------------
# Repository checks and log parsing
# ---------------------------------------------------------------------------------------------------------------


def repository_models(path: Path) -> list[str]:
    """Model directories of a repository (a directory with a config.pbtxt or a numeric version dir)."""
    return sorted(
        d.name
        for d in path.iterdir()
        if d.is_dir()
        and not d.name.startswith(".")
        and ((d / "config.pbtxt").is_file() or any(v.is_dir() and v.name.isdigit() for v in d.iterdir()))
    )


def check_repository(path: Path) -> list[str]:
    path = Path(path)
    if not path.exists():
        raise ModelRepositoryError(f"model repository {path} does not exist (build it with `stylize build`)")
    if not path.is_dir():
        raise ModelRepositoryError(f"model repository {path} is not a directory")
    models = repository_models(path)
    if not models:
        raise ModelRepositoryError(f"model repository {path} holds no models (build it with `stylize build`)")
    plans = [m for m in models if _TENSORRT_PLATFORM.search(_read_config(path / m))]
    if plans:
        raise ModelRepositoryError(
            f"model repository {path} holds TensorRT plans ({', '.join(plans)}): the embedded tritonserver has only "
            "the python backend, so a --trt repository is served by NVIDIA's container "
            "(nvcr.io/nvidia/tritonserver:24.10-py3 on a GPU node, k8s/overlays/gpu); serve a CPU repository here "
            "(`stylize build` without --trt, into another folder)"
        )
    return models


_TENSORRT_PLATFORM = re.compile(r'^\s*(platform:\s*"tensorrt_plan"|backend:\s*"tensorrt")', re.M)


def _read_config(model_dir: Path) -> str:
    try:
        return (model_dir / "config.pbtxt").read_text(errors="replace")
    except OSError:
        return ""  # unreadable or absent: Triton's own error says which


_LOAD_FAILURE = re.compile(r"failed to load '([^']+)' version (\d+): (.*?)\"?\s*$")
# a model directory Triton cannot even read (e.g. a private file for a server running as another user)
_POLL_FAILURE = re.compile(r"Poll failed for model directory '([^']+)': (.*?)\"?\s*$")
_SERVICE_FAILURE = re.compile(r"failed to start (\w+) service: (.*)")
_SOCKET = re.compile(r"Socket '[^']*:(\d+)' already in use")


def _unescape(text: str) -> str:
    return text.replace("\\n", "\n").replace('\\"', '"').strip()


# "Stub process '<instance>' is not healthy" while a model loads: its python stub died in initialize() or warmup
# (the python backend checks every second, python_backend r24.10 StubLauncher::ReceiveMessageFromStub). Seen in CI:
# SIGBUS in OpenVINO while two stubs wrote one cache blob (fixed in ov_runner), and one killer can be the OOM killer
# at the peak of a start. Worth another start; a failure in the model's own terms (a bad config, a missing file, an
# exception in initialize) is not. (A stub that stalls there without dying hangs Triton 2.51's start for good:
# measured, SIGSTOP for 2.5 s; wait_ready's startup_timeout ends that start.)
_TRANSIENT_LOAD = re.compile(r"Stub process '[^']*' is not healthy|Failed to obtain the health mutex")


def is_transient_load_failure(failures: Mapping[str, str]) -> bool:
    """Every failed model failed because a python stub died while it loaded: worth one more start."""
    return bool(failures) and all(_TRANSIENT_LOAD.search(reason) for reason in failures.values())


def model_failures_from_log(lines: Iterable[str]) -> dict[str, str]:
    """``{model: reason}`` from Triton's "failed to load 'm' version v: reason" and "Poll failed for model
    directory 'm': reason" lines."""
    failures: dict[str, str] = {}
    for line in lines:
        m = _LOAD_FAILURE.search(line)
        if m:
            reason = _unescape(m.group(3))
            failures[m.group(1)] = reason.split("\n\nAt:")[0].strip()  # keep the message, drop the traceback
        elif m := _POLL_FAILURE.search(line):
            failures[m.group(1)] = _unescape(m.group(2))
    return failures


# ---------------------------------------------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------------------------------------------

_RUNNING: "weakref.WeakSet[TritonServer]" = weakref.WeakSet()


@atexit.register
def _stop_leftovers() -> None:  # a crashed test or script must not leave servers behind
    for server in list(_RUNNING):
        server.stop()


def _load_list(models: Sequence[str]) -> list[str]:
    """What --load-model gets for ``models``: a client-facing id brings every Triton model it needs (its network is
    not a composing model of the ensemble, the step runs it in process, so Triton would not load it by itself)."""
    from stylize.contract.descriptors import REGISTRY

    if not models:
        return ["*"]
    out: list[str] = []
    for m in models:
        for name in REGISTRY[m].triton_models if m in REGISTRY else (m,):
            if name not in out:
                out.append(name)
    return out


def _no_gpu() -> bool:
    return not Path("/dev/nvidiactl").exists()


class TritonServer:
    """One tritonserver process. ``with TritonServer(settings) as server:`` starts it and waits until ready.

    ``grpc_url`` and ``http_url`` are ``host:port`` (what tritonclient expects); ``metrics_url`` is a full URL.
    ``run_as`` (uid, gid): the server process runs as that user with no supplementary groups (the launcher must be
    root), as the image runs it (uid 1000, the repository owned by root): tests on a root machine start it so.
    """

    def __init__(
        self,
        settings: ServerSettings | None = None,
        *,
        echo: TextIO | None = None,
        run_as: tuple[int, int] | None = None,
    ):
        self.settings = settings or ServerSettings.from_env()
        self._echo = echo
        self.cleanup = Cleanup((), ())  # what start() removed of a crashed server's leftovers
        self.run_as = run_as
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._tail: collections.deque[str] = collections.deque(maxlen=400)
        self._log_lines: list[str] = []  # failure lines only (load/service failures), for the reports
        self._log_file: TextIO | None = None
        self._metrics_event = threading.Event()  # the metrics service is the last one Triton starts
        self._watchdog: healing.StubWatchdog | None = None
        self._dead_regions: tuple[str, ...] = ()  # shared memory of a server this one replaces (serve's restart)
        self._server_id = f"stylize-{uuid.uuid4().hex[:12]}"
        # the admin APIs (stylize.contract.access.RESTRICTED_APIS) answer only requests with this key; never printed
        self.admin_key = self.settings.admin_key or access.new_key()
        self.install: TritonInstallation | None = None
        self.log_path: Path = (
            Path(self.settings.log_file)
            if self.settings.log_file
            else (self.settings.cache_dir / "logs" / f"tritonserver-{self.settings.http_port}.log")
        )
        self.stub_info: dict[str, Any] = {}
        self._start_options: dict[str, bool] = {}
        self.load_retries: list[dict[str, str]] = []  # failures of starts that wait_ready started again

    # One more start (twice at most) when every failure was a python stub that died loading (is_transient_load_failure)
    TRANSIENT_LOAD_RETRIES = 2

    # ---- endpoints -------------------------------------------------------------------------------------------
    @property
    def grpc_url(self) -> str:
        return f"{self.settings.client_host}:{self.settings.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"{self.settings.client_host}:{self.settings.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.settings.client_host}:{self.settings.metrics_port}/metrics"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # ---- lifecycle -------------------------------------------------------------------------------------------
    def command(self) -> list[str]:
        """The tritonserver command line (needs :attr:`install`; :meth:`start` fills it)."""
        s = self.settings
        install = self.install or find_tritonserver(s.tritonserver)
        cmd = [
            str(install.binary),
            f"--model-repository={Path(s.model_repository).resolve()}",
            f"--id={self._server_id}",
            f"--http-address={s.address}",
            f"--http-port={s.http_port}",
            f"--grpc-address={s.address}",
            f"--grpc-port={s.grpc_port}",
            f"--metrics-address={s.address}",
            f"--metrics-port={s.metrics_port}",
            f"--strict-readiness={'true' if s.strict_readiness else 'false'}",
            f"--exit-timeout-secs={s.exit_timeout}",
            f"--log-verbose={s.log_verbose}",
            *access.restriction_args(self.admin_key),
        ]
        if self.heals_stubs or s.models:
            # the same models as the default mode loads (or those asked for), but reloadable (by the admin key
            # only: stylize.contract.access)
            cmd += ["--model-control-mode=explicit", *[f"--load-model={m}" for m in _load_list(s.models)]]
        if s.backend_directory is not None:
            cmd.append(f"--backend-directory={Path(s.backend_directory).resolve()}")
        elif install.embedded:
            cmd.append(f"--backend-directory={prepare_backend_directory(install, s.cache_dir)}")
        if s.cache_size > 0:
            cmd.append(f"--cache-config=local,size={s.cache_size}")
            if install.embedded and install.caches is not None:
                cmd.append(f"--cache-directory={install.caches}")
        if _no_gpu():
            # No GPU: skip the pinned pool and GPU metrics instead of logging NVML/DCGM/pinned-memory warnings.
            cmd += ["--pinned-memory-pool-byte-size=0", "--allow-gpu-metrics=false"]
        cmd += list(s.extra_args)
        return cmd

    def start(self, *, check_stub: bool = True, check_ports: bool = True) -> "TritonServer":
        """Check repository and ports, assemble the backend directory, launch. Does not wait (see wait_ready).

        ``check_ports=False`` leaves port conflicts to tritonserver itself (wait_ready still reports them as
        :class:`PortInUseError`, from its log)."""
        if self.is_running():
            raise ServerError("this server is already running")
        self._start_options = {"check_stub": check_stub, "check_ports": check_ports}
        self._watchdog = None
        s = self.settings
        present = check_repository(s.model_repository)
        if missing := [m for m in _load_list(s.models) if s.models and m not in present]:
            raise ModelRepositoryError(
                f"model repository {s.model_repository} has no model {', '.join(missing)} "
                f"(it holds: {', '.join(present)})"
            )
        for name, port in (("gRPC", s.grpc_port), ("HTTP", s.http_port), ("metrics", s.metrics_port)):
            if check_ports and not port_is_free(port, s.address or "0.0.0.0"):
                raise PortInUseError(
                    f"{name} port {port} is already in use on {s.address}; pick another with "
                    f"--{name.lower()}-port or {ENV_PREFIX}{name.upper()}_PORT",
                    port=port,
                )
        if self.run_as is not None and os.geteuid() != 0:
            raise ServerError(f"running tritonserver as uid {self.run_as[0]} needs root (this is uid {os.geteuid()})")
        self.install = find_tritonserver(s.tritonserver)
        self.cleanup = clean_up_after_crashes(s.cache_dir, dead_regions=self._dead_regions)
        cmd = self.command()
        # OpenVINO's compiled models persist next to the backend directory: a restart does not recompile
        env = server_environment(self.install, ort_threads=s.ort_threads, ov_cache=s.cache_dir / "openvino")
        if check_stub:
            self.stub_info = check_stub_environment(env, stub=self.install.python_stub)

        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log_path, "w", encoding="utf-8")
        self._log_file.write("# " + access.redact(shlex.join(cmd), self.admin_key) + "\n")
        if self.cleanup.killed_stubs or self.cleanup.removed_regions:
            self._log_file.write(
                f"# after a crash: killed {len(self.cleanup.killed_stubs)} orphaned python stub(s), "
                f"removed {len(self.cleanup.removed_regions)} shared-memory region(s)\n"
            )
        self._tail.clear()
        self._log_lines.clear()
        self._metrics_event.clear()
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(s.cache_dir if s.cache_dir.is_dir() else Path.cwd()),
            start_new_session=True,  # Ctrl-C in a terminal reaches us, and we drain the server on purpose
            # after the uid change (which clears a parent-death signal): Popen switches user before preexec_fn
            preexec_fn=_parent_death_signal if threading.current_thread() is threading.main_thread() else None,
            **({} if self.run_as is None else {"user": self.run_as[0], "group": self.run_as[1], "extra_groups": []}),
        )
        self._reader = threading.Thread(target=self._pump, name=f"tritonserver-log-{self._proc.pid}", daemon=True)
        self._reader.start()
        _RUNNING.add(self)
        return self

    def _pump(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for raw in self._proc.stdout:
            line = raw.decode("utf-8", errors="replace")
            self._tail.append(line)
            if (
                "failed to load" in line
                or "failed to start" in line
                or "error: creating server" in line
                or "Poll failed for model directory" in line
            ):
                self._log_lines.append(line)
            if "Started Metrics Service" in line or "failed to start" in line:
                self._metrics_event.set()
            if self._log_file:
                self._log_file.write(line)
                self._log_file.flush()
            if self._echo is not None and worth_echoing(line):
                try:
                    self._echo.write(line)
                    self._echo.flush()
                except (OSError, ValueError):
                    self._echo = None

    def log_tail(self, lines: int = 40) -> str:
        return "".join(list(self._tail)[-lines:])

    def _get(
        self, path: str, *, port: int | None = None, timeout: float = 2.0, method: str = "GET", admin: bool = False
    ) -> tuple[int, bytes]:
        url = f"http://{self.settings.client_host}:{port or self.settings.http_port}{path}"
        req = urllib.request.Request(
            url,
            method=method,
            data=b"" if method == "POST" else None,
            headers=access.http_headers(self.admin_key) if admin else {},
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    @property
    def heals_stubs(self) -> bool:
        """Whether this server reloads a model whose stub died (see :mod:`stylize.server.healing`)."""
        return self.settings.heals

    def stub_regions(self) -> tuple[str, ...]:
        """The shared-memory regions of every stub the watchdog has seen (a restart removes them once unmapped)."""
        return self._watchdog.regions() if self._watchdog is not None else ()

    @property
    def heals(self) -> list[healing.Heal]:
        """The repairs made so far (empty without a watchdog)."""
        return list(self._watchdog.heals) if self._watchdog is not None else []

    def reload_model(self, model: str, *, timeout: float = 600.0) -> None:
        """Reload ``model`` (explicit model-control mode; the admin API): its instances are replaced."""
        # Triton 2.51 updates a model in place when a load changes nothing but its instances, and keeps every
        # instance whose settings did not change: a plain load (or the same config sent back) keeps the dead one
        # (measured: "successfully loaded" in 0.5 ms, the same stubs). A config that differs in one parameter the
        # step ignores is a new model: all instances are created anew.
        status, raw = self._get(f"/v2/models/{model}/config", admin=True)
        if status != 200:
            raise ServerError(f"reading the config of {model} failed with HTTP {status}")
        config = json.loads(raw)
        config.setdefault("parameters", {})["stylize_reload"] = {"string_value": uuid.uuid4().hex}
        req = urllib.request.Request(
            f"http://{self.settings.client_host}:{self.settings.http_port}/v2/repository/models/{model}/load",
            method="POST",
            data=json.dumps({"parameters": {"config": json.dumps(config)}}).encode(),
            headers={"Content-Type": "application/json", **access.http_headers(self.admin_key)},
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                status, body = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, body = e.code, e.read()
        if status != 200:
            raise ServerError(
                f"reloading {model} failed with HTTP {status}: "
                f"{access.redact(body[:300].decode(errors='replace'), self.admin_key)}"
            )

    def _note(self, message: str) -> None:
        """A line of the launcher's own in the server log (and on the echo stream)."""
        line = f"{message}\n"
        self._tail.append(line)
        if self._log_file:
            try:
                self._log_file.write(line)
                self._log_file.flush()
            except (OSError, ValueError):
                pass
        if self._echo is not None:
            try:
                self._echo.write(line)
                self._echo.flush()
            except (OSError, ValueError):
                pass

    def _start_watchdog(self) -> None:
        if self.heals_stubs and self._watchdog is None and self.pid is not None:
            self._watchdog = healing.StubWatchdog(self.pid, self.reload_model, log=self._note).start()

    def _is_ours(self) -> bool:
        """The HTTP endpoint answers with our --id: not another server that happens to hold the port."""
        status, body = self._get("/v2")
        return status == 200 and json.loads(body).get("name") == self._server_id

    def wait_ready(self, timeout: float | None = None) -> "TritonServer":
        """Poll /v2/health/ready until ready; raise a typed error (with the log tail) if the server dies or models
        fail to load, or :class:`ServerTimeoutError` after ``timeout`` seconds (default: settings.startup_timeout)."""
        if self._proc is None:
            raise ServerError("start() the server first")
        budget = timeout if timeout is not None else self.settings.startup_timeout
        deadline = time.monotonic() + budget
        retries = self.TRANSIENT_LOAD_RETRIES
        while True:
            if self._proc.poll() is not None:
                try:
                    self._raise_for_exit()
                except ModelRepositoryError as e:
                    if retries <= 0 or not is_transient_load_failure(e.failures):
                        raise
                    retries -= 1
                    self.load_retries.append(e.failures)
                    self.start(**self._start_options)
                    self._note(
                        f"stylize: starting tritonserver again: a python stub died while its model loaded "
                        f"({'; '.join(f'{m}: {r}' for m, r in e.failures.items())})"
                    )
                    deadline = time.monotonic() + budget  # the new start gets the whole budget
                    continue
            try:
                status, _ = self._get("/v2/health/ready", timeout=1.0)
                if status == 200 and self._is_ours():
                    self._settle(deadline)
                    self._start_watchdog()
                    return self
                if status != 200 and self._is_ours():
                    # Serving but not ready: with --exit-on-error=false a failed model keeps it that way for good.
                    index = self.repository_index()
                    failures = {
                        m["name"]: m.get("reason") or m.get("state", "?")
                        for m in index
                        if m.get("state") not in ("READY", "LOADING")
                    }
                    if failures and not any(m.get("state") == "LOADING" for m in index):
                        tail = self.log_tail()
                        self.stop()
                        raise ModelRepositoryError(
                            _failure_message(self.settings.model_repository, failures), failures=failures, log_tail=tail
                        )
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError, ValueError):
                pass  # not listening yet
            if time.monotonic() > deadline:
                tail = self.log_tail()
                self.stop()
                raise ServerTimeoutError(
                    f"tritonserver was not ready after {budget:.0f} s (log: {self.log_path})", log_tail=tail
                )
            time.sleep(0.1)

    def _settle(self, deadline: float) -> None:
        """HTTP answers before the metrics service binds its port; a taken metrics port makes Triton exit a few
        milliseconds later. Wait for that last service before calling the server ready."""
        if "--allow-metrics=false" in self.settings.extra_args:
            return
        self._metrics_event.wait(timeout=max(1.0, deadline - time.monotonic()))
        time.sleep(0.2)  # "Started Metrics Service" is logged just before the bind that may fail
        if any("failed to start" in line for line in self._log_lines) and self._proc is not None:
            try:
                self._proc.wait(timeout=self.settings.exit_timeout + 10)  # it is shutting down: let it finish
            except subprocess.TimeoutExpired:
                self.stop()
            self._raise_for_exit()
        if self._proc is not None and self._proc.poll() is not None:
            self._raise_for_exit()

    def _raise_for_exit(self) -> None:
        assert self._proc is not None
        code = self._proc.wait()
        if self._reader:
            self._reader.join(timeout=5)
        tail = self.log_tail()
        failures = model_failures_from_log(self._log_lines)
        for line in self._log_lines:
            m = _SERVICE_FAILURE.search(line)
            if m and "already in use" in line:
                port = _SOCKET.search(line)
                p = int(port.group(1)) if port else 0
                self._close_log()
                raise PortInUseError(
                    f"{m.group(1)} port {p} is already in use (tritonserver could not bind it)", port=p, log_tail=tail
                )
        self._close_log()
        if failures:
            raise ModelRepositoryError(
                _failure_message(self.settings.model_repository, failures), failures=failures, log_tail=tail
            )
        raise ServerStartError(
            f"tritonserver exited with code {code} during startup (log: {self.log_path})", log_tail=tail
        )

    def repository_index(self) -> list[dict[str, Any]]:
        status, body = self._get("/v2/repository/index", method="POST", admin=True)
        if status != 200:
            raise ServerError(f"repository index failed with HTTP {status}: {body[:200]!r}")
        return json.loads(body)

    def ready_models(self) -> list[str]:
        return sorted({m["name"] for m in self.repository_index() if m.get("state") == "READY"})

    def model_failures(self) -> dict[str, str]:
        """``{model: reason}`` for models that are not ready (from the repository index API)."""
        return {
            m["name"]: m.get("reason") or m.get("state", "UNKNOWN")
            for m in self.repository_index()
            if m.get("state") not in ("READY", "LOADING")
        }

    def stop(self, timeout: float | None = None) -> int | None:
        """SIGTERM (Triton drains in-flight requests for up to exit_timeout s), then SIGKILL. Idempotent."""
        proc = self._proc
        if proc is None:
            return None
        if self._watchdog is not None:
            self._watchdog.stop()  # a draining server's stubs exit: not deaths to repair
        if proc.poll() is None:
            grace = timeout if timeout is not None else self.settings.exit_timeout + 10
            try:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)  # its own session: the server and its python stubs
                except ProcessLookupError:
                    pass
                proc.wait()
        if self._reader:
            self._reader.join(timeout=5)
        self._close_log()
        _RUNNING.discard(self)
        return proc.returncode

    def _close_log(self) -> None:
        if self._log_file:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> "TritonServer":
        if not self.is_running():  # start_local() hands over a server that is already up
            self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# Errors Triton logs on every healthy CPU start (no GPU, no CUDA driver): not a problem of the server, so not shown
_CPU_ONLY_NOISE = re.compile(
    r"CudaDriverHelper has not been initialized|CUDA driver version is insufficient|"
    r"no CUDA-capable device|Unable to get number of GPUs|NVML"
)
_TRITON_LINE = re.compile(r"^([IWE])\d{4} ")


def worth_echoing(line: str) -> bool:
    """Whether a line of Triton's log is shown on the terminal: its errors, except the CPU-only noise above, and
    any line that is not a Triton log record (a stub's traceback, a crash). Everything goes to the log file."""
    m = _TRITON_LINE.match(line)
    if m is None:  # Triton's start-up tables (+---+ / | ... |) are in the log file; the banner lists the models
        return bool(line.strip()) and not line.startswith(("+", "|"))
    return m.group(1) == "E" and not _CPU_ONLY_NOISE.search(line)


def start_local(
    model_repository: Path | str, *, attempts: int = 3, run_as: tuple[int, int] | None = None, **overrides: Any
) -> TritonServer:
    """Start a loopback server on free ports and wait until it is ready (``with start_local(repo) as server:``).

    Other processes pick ports too: a port lost between choosing and binding is retried on a fresh set. A server
    killed by a signal while starting (seen once in a suite on a loaded machine: SIGABRT from gRPC's poller, "epoll_wait
    error: Bad file descriptor") is started again; a start that fails on its own terms (a model, the repository) is not.
    """
    for attempt in range(attempts):
        server = TritonServer(ServerSettings.local(model_repository, **overrides), run_as=run_as)
        try:
            server.start()
            server.wait_ready()
            return server
        except PortInUseError:
            server.stop()
            if attempt == attempts - 1:
                raise
        except ServerStartError:
            code = server._proc.poll() if server._proc is not None else None
            server.stop()
            if code is None or code >= 0 or attempt == attempts - 1:
                raise
        except BaseException:
            server.stop()
            raise
    raise AssertionError("unreachable")


def _failure_message(repository: Path, failures: Mapping[str, str]) -> str:
    lines = [f"{len(failures)} model(s) of {repository} failed to load:"]
    lines += [f"  {name}: {reason.splitlines()[0] if reason else '?'}" for name, reason in sorted(failures.items())]
    return "\n".join(lines)


def _load_prctl() -> Callable[..., int] | None:
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()  # resolved in the parent: the forked child must not import or load anything


def _parent_death_signal() -> None:
    """In the child: get SIGTERM when the launching thread dies, so no server outlives a crashed test run."""
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


__all__ = [
    "repository_models",
    "check_repository",
    "is_transient_load_failure",
    "model_failures_from_log",
    "TritonServer",
    "worth_echoing",
    "start_local",
]
