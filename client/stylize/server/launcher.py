"""Start, watch and stop a real Triton Inference Server: the one on PATH (NVIDIA's container) or the ``tritonserver``
2.51 binary inside the ``nvidia-pytriton`` wheel.

For the wheel's binary the launcher assembles a backend directory (idempotent, in the cache dir)::

    <cache>/backends/<key>/python/libtriton_python.so         copy: Triton refuses a python-based backend whose
                                                              library resolves outside the backend directory
    <cache>/backends/<key>/python/triton_python_backend_stub  symlink to the stub of this interpreter's version
    <cache>/backends/<key>/python/triton_python_backend_utils.py   symlink
    <cache>/backends/<key>/<runtime>/model.py                symlink to stylize/server/backends/<runtime>/model.py,
                                                              one per Python-based backend (onnxruntime, openvino)

and sets the environment the python stub needs (see :func:`server_environment`): the stub embeds libpython and its
interpreter looks for ``python3`` on PATH to find its prefix, so the venv's ``bin`` goes first on PATH (the venv's
``pyvenv.cfg`` then puts its site-packages on ``sys.path``); PYTHONPATH repeats site-packages and the source tree of
``stylize``; LD_LIBRARY_PATH gets the wheel's bundled libraries (the copied library's $ORIGIN RPATH no longer reaches
them) and this interpreter's libpython. Before starting, the same interpreter is asked which numpy it imports:
numpy 2 in the stub silently corrupts tensors.

Every server it starts binds 127.0.0.1 unless told otherwise (``--host``/``STYLIZE_ADDRESS``) and restricts the
admin APIs (stylize.access) to the key of ``STYLIZE_ADMIN_KEY``, or to a random key per server held in
:attr:`TritonServer.admin_key` (never printed; the command line written to the log shows ``<admin key>``).
"""

from __future__ import annotations

import argparse
import atexit
import collections
import dataclasses
import errno
import hashlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import site
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence, TextIO

from stylize import access
from stylize.server import healing
from stylize.server.ort_runner import ORT_THREADS_ENV
from stylize.server.ov_runner import OV_CACHE_ENV

ENV_PREFIX = "STYLIZE_"
_PACKAGE_DIR = Path(__file__).resolve().parents[1]  # .../stylize
PYTHON_BASED_BACKENDS = Path(__file__).resolve().parent / "backends"  # <runtime>/model.py: backend "<runtime>"
ORT_BACKEND_MODEL = PYTHON_BASED_BACKENDS / "onnxruntime" / "model.py"


def python_based_backends() -> dict[str, Path]:
    """Backend name -> its model.py, for every Python-based backend this package ships."""
    return {d.name: d / "model.py" for d in sorted(PYTHON_BASED_BACKENDS.iterdir()) if (d / "model.py").is_file()}


# ---------------------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------------------


class ServerError(Exception):
    """Base class of the launcher's errors; ``log_tail`` holds the last lines of the server log when known."""

    def __init__(self, message: str, *, log_tail: str = ""):
        super().__init__(message)
        self.log_tail = log_tail


class TritonNotFoundError(ServerError):
    """No tritonserver binary: neither on PATH nor in the nvidia-pytriton wheel (pip install '.[server]')."""


class StubEnvironmentError(ServerError):
    """The python backend stub would run with a broken environment (numpy missing or numpy>=2, stylize missing)."""


class PortInUseError(ServerError):
    def __init__(self, message: str, *, port: int, log_tail: str = ""):
        super().__init__(message, log_tail=log_tail)
        self.port = port


class ModelRepositoryError(ServerError):
    """The repository is missing or empty, or models failed to load; ``failures`` maps model name -> reason."""

    def __init__(self, message: str, *, failures: Mapping[str, str] | None = None, log_tail: str = ""):
        super().__init__(message, log_tail=log_tail)
        self.failures = dict(failures or {})


class ServerStartError(ServerError):
    """tritonserver exited during startup for another reason (see ``log_tail``)."""


class ServerTimeoutError(ServerError):
    """The server did not become ready in time."""


# ---------------------------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------------------------

_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(value: str | int) -> int:
    """Bytes from ``1048576``, ``256M``, ``256MiB``, ``1g`` (binary units)."""
    if isinstance(value, int):
        size = value
    else:
        m = re.fullmatch(r"\s*(\d+)\s*([kmgt]?)(?:i?b)?\s*", str(value), re.IGNORECASE)
        if not m:
            raise ValueError(f"not a size: {value!r} (examples: 1048576, 256M, 1G)")
        size = int(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]
    if size < 0:
        raise ValueError(f"size must not be negative: {value!r}")
    return size


def parse_bool(value: str | bool) -> bool:
    if isinstance(value, bool):
        return value
    raw = str(value).strip().lower()
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _source_checkout_root() -> Path | None:
    """The project root when stylize runs from its source tree (client/stylize), else None."""
    root = _PACKAGE_DIR.parent.parent
    return root if (root / "pyproject.toml").is_file() and _PACKAGE_DIR.parent.name == "client" else None


def default_cache_dir() -> Path:
    """``$STYLIZE_CACHE``, else ``.cache/stylize`` in a source checkout, else ``~/.cache/stylize``."""
    if os.environ.get(f"{ENV_PREFIX}CACHE"):
        return Path(os.environ[f"{ENV_PREFIX}CACHE"])
    root = _source_checkout_root()
    return root / ".cache" / "stylize" if root else Path.home() / ".cache" / "stylize"


def _optional_path(value: str) -> Path | None:
    return Path(value) if value else None


def _optional_int(value: str) -> int | None:
    return int(value) if value.strip() else None


# field name -> (environment variable, parser of its text)
_ENV_FIELDS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "model_repository": ("MODEL_REPOSITORY", Path),
    "address": ("ADDRESS", str),
    "grpc_port": ("GRPC_PORT", int),
    "http_port": ("HTTP_PORT", int),
    "metrics_port": ("METRICS_PORT", int),
    "cache_size": ("CACHE_SIZE", parse_size),
    "log_verbose": ("LOG_VERBOSE", int),
    "ort_threads": ("ORT_THREADS", _optional_int),
    "strict_readiness": ("STRICT_READINESS", parse_bool),
    "exit_timeout": ("EXIT_TIMEOUT", int),
    "startup_timeout": ("STARTUP_TIMEOUT", float),
    "tritonserver": ("TRITONSERVER", _optional_path),
    "backend_directory": ("BACKEND_DIRECTORY", _optional_path),
    "cache_dir": ("CACHE", Path),
    "log_file": ("LOG_FILE", _optional_path),
    "extra_args": ("TRITON_ARGS", lambda s: tuple(shlex.split(s))),
    "admin_key": ("ADMIN_KEY", str),
    "heal": ("HEAL", parse_bool),
    "models": ("MODELS", lambda v: tuple(m.strip() for m in v.split(",") if m.strip())),
}


@dataclass(frozen=True, kw_only=True)
class ServerSettings:
    """Everything `stylize serve` and the tests configure; every field maps onto ``STYLIZE_<NAME>`` (see
    :meth:`from_env`; ``cache_dir`` is ``STYLIZE_CACHE``, ``extra_args`` is ``STYLIZE_TRITON_ARGS``)."""

    model_repository: Path = Path("model_repository")
    address: str = "127.0.0.1"  # bind address of all three endpoints: loopback unless asked (--host 0.0.0.0)
    grpc_port: int = 8001
    http_port: int = 8000
    metrics_port: int = 8002
    cache_size: int = 0  # bytes of Triton's local response cache; 0 disables it
    log_verbose: int = 0
    ort_threads: int | None = None  # server-wide intra-op threads per ORT session; None keeps the model config's
    strict_readiness: bool = True
    exit_timeout: int = 30  # seconds Triton waits for in-flight requests after SIGTERM
    startup_timeout: float = 180.0
    tritonserver: Path | None = None  # explicit binary; default: PATH, then the nvidia-pytriton wheel
    backend_directory: Path | None = None  # explicit --backend-directory; default: assembled for the wheel
    cache_dir: Path = field(default_factory=default_cache_dir)
    log_file: Path | None = None  # default: <cache_dir>/logs/tritonserver-<http_port>.log
    extra_args: tuple[str, ...] = ()
    # Key of the restricted admin APIs (stylize.access); None: a random one per server, never printed
    admin_key: str | None = field(default=None, repr=False)
    # Reload a model whose python stub died (stylize.server.healing): explicit model-control mode, every model
    # loaded at start. Off, or when extra_args choose a model-control mode, a dead stub stays dead.
    heal: bool = True
    # Triton models to load (client-facing ids: Triton loads what an ensemble is made of); empty: the whole repository
    models: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.admin_key is not None:
            access.check_key(self.admin_key)
        ports = (self.grpc_port, self.http_port, self.metrics_port)
        for p in ports:
            if not 1 <= p <= 65535:
                raise ValueError(f"port {p} is outside 1..65535")
        if len(set(ports)) != 3:
            raise ValueError(f"gRPC, HTTP and metrics ports must differ, got {ports}")
        if self.cache_size < 0 or self.exit_timeout < 0 or self.startup_timeout <= 0:
            raise ValueError("cache_size and exit_timeout must be >= 0, startup_timeout > 0")
        object.__setattr__(self, "model_repository", Path(self.model_repository))
        object.__setattr__(self, "cache_dir", Path(self.cache_dir))
        object.__setattr__(self, "extra_args", tuple(self.extra_args))
        object.__setattr__(self, "models", tuple(self.models))
        if self.models and any(a.startswith("--model-control-mode") for a in self.extra_args):
            raise ValueError("models= chooses explicit model control: do not pass --model-control-mode as well")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> "ServerSettings":
        """Defaults, then ``STYLIZE_*`` variables, then ``overrides`` (None values are ignored, so parsed
        argparse namespaces can be passed as they are)."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, (suffix, parse) in _ENV_FIELDS.items():
            raw = environ.get(ENV_PREFIX + suffix)
            if raw is None or raw == "":
                continue
            try:
                values[name] = parse(raw)
            except ValueError as e:
                raise ValueError(f"{ENV_PREFIX}{suffix}={raw!r}: {e}") from None
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(overrides) - known
        if unknown:
            raise TypeError(f"unknown server setting(s): {', '.join(sorted(unknown))}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        if isinstance(values.get("cache_size"), str):
            values["cache_size"] = parse_size(values["cache_size"])
        return cls(**values)

    @classmethod
    def local(cls, model_repository: Path | str, **overrides: Any) -> "ServerSettings":
        """Loopback-only settings on three free ports (tests, demos); ``overrides`` as for the constructor."""
        grpc_port, http_port, metrics_port = find_free_ports(3)
        values: dict[str, Any] = {"address": "127.0.0.1", "grpc_port": grpc_port, "http_port": http_port,
                                  "metrics_port": metrics_port}
        values.update(overrides)
        return cls(model_repository=Path(model_repository), **values)

    @property
    def heals(self) -> bool:
        """Whether the server reloads a model whose stub died: ``heal`` on and no model-control mode of the user's."""
        return self.heal and not any(a.startswith("--model-control-mode") for a in self.extra_args)

    @property
    def client_host(self) -> str:
        """Where a client on this machine reaches the server (wildcard binds are reached over loopback)."""
        return "127.0.0.1" if self.address in ("0.0.0.0", "", "::", "[::]") else self.address


# ---------------------------------------------------------------------------------------------------------------
# Ports
# ---------------------------------------------------------------------------------------------------------------


def port_is_free(port: int, host: str = "0.0.0.0") -> bool:
    """True when nothing listens on ``host:port``. SO_REUSEADDR so a port left in TIME_WAIT by a server that just
    stopped still counts as free (Triton can bind it too)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def find_free_ports(count: int = 3, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports that were free a moment ago (held together while choosing, so they differ)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


# ---------------------------------------------------------------------------------------------------------------
# Installation and environment
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TritonInstallation:
    binary: Path
    embedded: bool  # the nvidia-pytriton wheel's server (needs an assembled backend directory)
    root: Path | None = None  # .../pytriton/tritonserver
    libs: Path | None = None  # .../nvidia_pytriton.libs

    @property
    def caches(self) -> Path | None:
        return self.root / "caches" if self.root else None


def _pytriton_root() -> Path | None:
    spec = importlib.util.find_spec("pytriton")  # top-level lookup: does not import the package
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        root = Path(location) / "tritonserver"
        if (root / "bin" / "tritonserver").is_file():
            return root
    return None


def find_tritonserver(explicit: Path | None = None) -> TritonInstallation:
    """The server binary: ``explicit``, else ``tritonserver`` on PATH (NGC container), else the wheel's."""
    if explicit is not None:
        binary = Path(explicit)
        if not (binary.is_file() and os.access(binary, os.X_OK)):
            raise TritonNotFoundError(f"tritonserver {binary} does not exist or is not executable")
        root = _pytriton_root()
        embedded = root is not None and binary.resolve() == (root / "bin" / "tritonserver").resolve()
        return _installation(binary, root if embedded else None)
    on_path = shutil.which("tritonserver")
    if on_path:
        return TritonInstallation(binary=Path(on_path), embedded=False)
    root = _pytriton_root()
    if root is None:
        raise TritonNotFoundError(
            "no tritonserver found: none on PATH and the nvidia-pytriton wheel is not installed "
            "(pip install '.[server]' installs nvidia-pytriton==0.7.0, which ships tritonserver 2.51)")
    return _installation(root / "bin" / "tritonserver", root)


def _installation(binary: Path, root: Path | None) -> TritonInstallation:
    if root is None:
        return TritonInstallation(binary=binary, embedded=False)
    return TritonInstallation(binary=binary, embedded=True, root=root, libs=root.parent.parent / "nvidia_pytriton.libs")


def _python_version() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def _same_symlink(link: Path, target: Path) -> bool:
    return link.is_symlink() and os.readlink(link) == str(target)


def _same_copy(copy: Path, source: Path) -> bool:
    if not copy.is_file() or copy.is_symlink():
        return False
    a, b = copy.stat(), source.stat()
    return a.st_size == b.st_size and a.st_mtime_ns == b.st_mtime_ns


# the python backend's regions, and those of Python-based backends (ours: triton_openvino_backend_shm_region_...)
_SHM_REGION = re.compile(r"^triton_\w+?_backend_shm_region_")
_SHM_MIN_AGE_S = 120.0  # a leftover is older than this; a region of a server being started or growing is not
_STUB_NAME = "triton_python_backend_stub"


@dataclass(frozen=True)
class Cleanup:
    killed_stubs: tuple[int, ...]
    removed_regions: tuple[str, ...]


def _proc_cmdline(pid: str) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _proc_ppid(pid: str) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat[stat.rindex(")") + 2:].split()[1])  # the name may hold spaces: fields follow its ")"
    except (OSError, ValueError, IndexError):
        return None


def clean_up_after_crashes(cache_dir: Path, *, shm_dir: Path = Path("/dev/shm"),
                           min_age_s: float = _SHM_MIN_AGE_S, dead_regions: Iterable[str] = ()) -> Cleanup:
    """What a server killed with SIGKILL leaves behind, removed before the next start: python-backend stubs of our
    backend directory whose tritonserver is gone (re-parented to init, with the processes they started; they held
    their memory for good), and shared-memory regions of the python backend that no living process maps or names (a
    memory-backed /dev/shm counts against the machine's, or the pod's, memory). Stubs of a live server keep their
    parent and their regions are mapped: both are left alone.

    ``min_age_s``: regions younger than this are never removed (another server on the machine may have just made
    one); 0 only where no other server can use ``shm_dir``, as the pod's entrypoint does on its own emptyDir before
    tritonserver starts (stylize.server.entrypoint)."""
    backends = str(Path(cache_dir).resolve() / "backends")
    proc = Path("/proc")
    cmds = {int(p.name): _proc_cmdline(p.name) for p in proc.iterdir() if p.name.isdigit()} if proc.is_dir() else {}
    parents = {pid: _proc_ppid(str(pid)) for pid in cmds}

    def ours(pid: int) -> bool:
        cmd = cmds.get(pid) or [""]
        return cmd[0].endswith(_STUB_NAME) and cmd[0].startswith(backends)

    def orphaned(pid: int) -> bool:  # a stub of ours whose chain of stub parents ends at init
        seen = set()
        while ours(pid) and pid not in seen:
            seen.add(pid)
            pid = parents.get(pid) or 0
        return pid == 1

    killed = [pid for pid in cmds if ours(pid) and orphaned(pid)]
    # each stub names its region on its command line: those of the orphans belong to their dead server, whatever
    # their age (what lets a restart right after a crash start clean)
    theirs = {a for pid in killed for a in cmds[pid] if _SHM_REGION.match(a)}
    theirs.update(dead_regions)  # a restart knows the regions of the server that died (its stubs may be gone)
    for pid in killed:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    deadline = time.monotonic() + 5
    while killed and time.monotonic() < deadline and any(Path(f"/proc/{pid}/maps").exists() and
                                                         _proc_ppid(str(pid)) is not None for pid in killed):
        time.sleep(0.05)  # their mappings go when they are gone
    in_use: set[str] = set()
    for pid in [p.name for p in proc.iterdir() if p.name.isdigit()] if proc.is_dir() else []:
        in_use.update(a for a in _proc_cmdline(pid) if _SHM_REGION.match(a))
        try:
            maps = Path(f"/proc/{pid}/maps").read_text(errors="replace")
        except OSError:
            continue
        in_use.update(name for line in maps.splitlines() if "_backend_shm_region_" in line
                      and _SHM_REGION.match(name := line.rsplit("/", 1)[-1].split()[0]))
    removed: list[str] = []
    now = time.time()
    for region in shm_dir.glob("triton_*_backend_shm_region_*") if shm_dir.is_dir() else ():
        try:
            st = region.stat()
            # young regions are never touched: another live server may have just made one (at a stub's start, or
            # when its shared memory grows) and not mapped it yet when /proc was read above
            old = min_age_s <= 0 or now - st.st_mtime > min_age_s or region.name in theirs
            if region.name not in in_use and st.st_uid == os.geteuid() and old:
                region.unlink()
                removed.append(region.name)
        except OSError:
            pass
    return Cleanup(tuple(killed), tuple(removed))


def prepare_backend_directory(install: TritonInstallation, cache_dir: Path) -> Path:
    """Assemble (or reuse) the backend directory for the wheel's server; safe to call concurrently."""
    if not install.embedded or install.root is None:
        raise ValueError("only the nvidia-pytriton server needs an assembled backend directory")
    python_dir = install.root / "backends" / "python"
    stub = install.root / "python_backend_stubs" / _python_version() / "triton_python_backend_stub"
    if not stub.is_file():
        raise TritonNotFoundError(f"the nvidia-pytriton wheel has no python backend stub for Python "
                                  f"{_python_version()} ({stub})")
    links = {
        Path("python/triton_python_backend_stub"): stub,
        Path("python/triton_python_backend_utils.py"): python_dir / "triton_python_backend_utils.py",
        **{Path(name, "model.py"): model for name, model in python_based_backends().items()},
    }
    copies = {Path("python/libtriton_python.so"): python_dir / "libtriton_python.so"}

    key = hashlib.sha256("\n".join(str(p) for p in (install.root, stub, *links.values())).encode()).hexdigest()[:12]
    base = Path(cache_dir) / "backends"
    target = base / key

    def valid(d: Path) -> bool:
        return (all(_same_symlink(d / rel, src) for rel, src in links.items())
                and all(_same_copy(d / rel, src) for rel, src in copies.items()))

    if valid(target):
        return target
    base.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=base))
    try:
        staging.chmod(0o755)  # mkdtemp makes it private; a server running as another user must read it
        for rel, src in links.items():
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(src, staging / rel)
        for rel, src in copies.items():
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, staging / rel)
        if target.exists():  # stale (wheel reinstalled, project moved): move it away, then replace
            stale = Path(tempfile.mkdtemp(prefix=f".{key}-stale-", dir=base))
            try:
                os.rename(target, stale / "old")
            except FileNotFoundError:
                pass  # another process replaced it meanwhile
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.rename(staging, target)
        except OSError as e:
            if e.errno not in (errno.EEXIST, errno.ENOTEMPTY) or not valid(target):
                raise
            # another process assembled the same directory at the same time: use theirs
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _stylize_search_path() -> Path:
    """The directory that contains the ``stylize`` package (client/ in a checkout, site-packages when installed)."""
    return _PACKAGE_DIR.parent


def server_environment(install: TritonInstallation, *, ort_threads: int | None = None,
                       ov_cache: Path | None = None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment of the tritonserver process (the python stubs inherit it). ``ov_cache``: OpenVINO's model
    cache folder, unless the environment already names one (``STYLIZE_OV_CACHE``)."""
    env = dict(os.environ if base is None else base)
    env.pop(access.ADMIN_KEY_ENV, None)  # it is on the command line; the python stubs have no use for it

    def prepend(key: str, entries: Iterable[str]) -> None:
        parts = [e for e in entries if e]
        old = [p for p in env.get(key, "").split(os.pathsep) if p]
        env[key] = os.pathsep.join(dict.fromkeys(parts + old))  # keep order, drop duplicates

    # The stub's embedded interpreter searches PATH for `python3` and adopts that interpreter's prefix; the venv's
    # bin dir first makes it read this venv's pyvenv.cfg (sys.executable is deliberately not resolved).
    prepend("PATH", [str(Path(sys.executable).parent)])
    # Belt and braces for interpreters whose bin dir has no python3: the same packages through PYTHONPATH.
    site_dirs = [*site.getsitepackages(), site.getusersitepackages() if site.ENABLE_USER_SITE else ""]
    prepend("PYTHONPATH", [str(_stylize_search_path()), *site_dirs])
    if install.embedded:
        libdirs = [str(install.libs)] if install.libs else []
        # The stub links libpython3.X.so.1.0; prefer this interpreter's own (same patch release as its stdlib)
        # over the system one when it is a shared build outside the system library dirs.
        libdir, soname = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("INSTSONAME")
        if libdir and soname and (Path(libdir) / soname).is_file() and not libdir.startswith(("/usr/lib", "/lib")):
            libdirs.insert(0, libdir)
        prepend("LD_LIBRARY_PATH", libdirs)
    if ort_threads is not None:
        env[ORT_THREADS_ENV] = str(ort_threads)
    if ov_cache is not None:
        env.setdefault(OV_CACHE_ENV, str(ov_cache))
    return env


_STUB_PROBE = """
import importlib.util, json, sys
info = {"python": sys.version.split()[0]}
try:
    import numpy
    info["numpy"] = numpy.__version__
    info["numpy_file"] = numpy.__file__
except Exception as e:
    info["numpy_error"] = repr(e)
for name in ("onnxruntime", "openvino", "stylize", "PIL"):
    spec = importlib.util.find_spec(name)
    info[name] = spec.origin if spec else None
print(json.dumps(info))
"""


def check_stub_environment(env: Mapping[str, str]) -> dict[str, Any]:
    """Ask the interpreter the stub will adopt (``python3`` on the server's PATH) what it imports.

    Raises :class:`StubEnvironmentError` when numpy is missing or >= 2, or stylize cannot be imported.
    """
    python3 = shutil.which("python3", path=env.get("PATH"))
    if python3 is None:
        raise StubEnvironmentError("no python3 on the server's PATH: the python backend stub cannot find packages")
    try:
        out = subprocess.run([python3, "-c", _STUB_PROBE], env=dict(env), capture_output=True, text=True,
                             timeout=60, check=True).stdout
        info = json.loads(out.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError) as e:
        raise StubEnvironmentError(f"cannot inspect the python stub environment with {python3}: {e}") from e
    info["python3"] = python3
    if "numpy" not in info:
        raise StubEnvironmentError(f"numpy is not importable in the python stub environment ({python3}): "
                                   f"{info.get('numpy_error')}")
    if int(info["numpy"].split(".")[0]) >= 2:
        raise StubEnvironmentError(
            f"the python stub would load numpy {info['numpy']} ({info['numpy_file']}); tritonserver 2.51's python "
            "backend needs numpy<2 (numpy 2 silently corrupts tensors): pip install numpy==1.26.4")
    if not info.get("stylize"):
        raise StubEnvironmentError(f"the stylize package is not importable in the python stub environment "
                                   f"({python3}); pip install -e . or set PYTHONPATH")
    return info


# ---------------------------------------------------------------------------------------------------------------
# Repository checks and log parsing
# ---------------------------------------------------------------------------------------------------------------


def repository_models(path: Path) -> list[str]:
    """Model directories of a repository (a directory with a config.pbtxt or a numeric version dir)."""
    return sorted(d.name for d in path.iterdir() if d.is_dir() and not d.name.startswith(".") and (
        (d / "config.pbtxt").is_file() or any(v.is_dir() and v.name.isdigit() for v in d.iterdir())))


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
            "(`stylize build` without --trt, into another folder)")
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
    from stylize.descriptors import REGISTRY

    if not models:
        return ["*"]
    out: list[str] = []
    for m in models:
        for name in (REGISTRY[m].triton_models if m in REGISTRY else (m,)):
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

    def __init__(self, settings: ServerSettings | None = None, *, echo: TextIO | None = None,
                 run_as: tuple[int, int] | None = None):
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
        # the admin APIs (stylize.access.RESTRICTED_APIS) answer only requests with this key; never printed
        self.admin_key = self.settings.admin_key or access.new_key()
        self.install: TritonInstallation | None = None
        self.log_path: Path = Path(self.settings.log_file) if self.settings.log_file else (
            self.settings.cache_dir / "logs" / f"tritonserver-{self.settings.http_port}.log")
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
            f"--http-address={s.address}", f"--http-port={s.http_port}",
            f"--grpc-address={s.address}", f"--grpc-port={s.grpc_port}",
            f"--metrics-address={s.address}", f"--metrics-port={s.metrics_port}",
            f"--strict-readiness={'true' if s.strict_readiness else 'false'}",
            f"--exit-timeout-secs={s.exit_timeout}",
            f"--log-verbose={s.log_verbose}",
            *access.restriction_args(self.admin_key),
        ]
        if self.heals_stubs or s.models:
            # the same models as the default mode loads (or those asked for), but reloadable (by the admin key
            # only: stylize.access)
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
            raise ModelRepositoryError(f"model repository {s.model_repository} has no model {', '.join(missing)} "
                                       f"(it holds: {', '.join(present)})")
        for name, port in (("gRPC", s.grpc_port), ("HTTP", s.http_port), ("metrics", s.metrics_port)):
            if check_ports and not port_is_free(port, s.address or "0.0.0.0"):
                raise PortInUseError(f"{name} port {port} is already in use on {s.address}; pick another with "
                                     f"--{name.lower()}-port or {ENV_PREFIX}{name.upper()}_PORT", port=port)
        if self.run_as is not None and os.geteuid() != 0:
            raise ServerError(f"running tritonserver as uid {self.run_as[0]} needs root (this is uid {os.geteuid()})")
        self.install = find_tritonserver(s.tritonserver)
        self.cleanup = clean_up_after_crashes(s.cache_dir, dead_regions=self._dead_regions)
        cmd = self.command()
        # OpenVINO's compiled models persist next to the backend directory: a restart does not recompile
        env = server_environment(self.install, ort_threads=s.ort_threads, ov_cache=s.cache_dir / "openvino")
        if check_stub:
            self.stub_info = check_stub_environment(env)

        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log_path, "w", encoding="utf-8")
        self._log_file.write("# " + access.redact(shlex.join(cmd), self.admin_key) + "\n")
        if self.cleanup.killed_stubs or self.cleanup.removed_regions:
            self._log_file.write(f"# after a crash: killed {len(self.cleanup.killed_stubs)} orphaned python stub(s), "
                                 f"removed {len(self.cleanup.removed_regions)} shared-memory region(s)\n")
        self._tail.clear()
        self._log_lines.clear()
        self._metrics_event.clear()
        self._proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
            cwd=str(s.cache_dir if s.cache_dir.is_dir() else Path.cwd()),
            start_new_session=True,  # Ctrl-C in a terminal reaches us, and we drain the server on purpose
            # after the uid change (which clears a parent-death signal): Popen switches user before preexec_fn
            preexec_fn=_parent_death_signal if threading.current_thread() is threading.main_thread() else None,
            **({} if self.run_as is None else {"user": self.run_as[0], "group": self.run_as[1], "extra_groups": []}))
        self._reader = threading.Thread(target=self._pump, name=f"tritonserver-log-{self._proc.pid}", daemon=True)
        self._reader.start()
        _RUNNING.add(self)
        return self

    def _pump(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for raw in self._proc.stdout:
            line = raw.decode("utf-8", errors="replace")
            self._tail.append(line)
            if ("failed to load" in line or "failed to start" in line or "error: creating server" in line
                    or "Poll failed for model directory" in line):
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

    def _get(self, path: str, *, port: int | None = None, timeout: float = 2.0, method: str = "GET",
             admin: bool = False) -> tuple[int, bytes]:
        url = f"http://{self.settings.client_host}:{port or self.settings.http_port}{path}"
        req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None,
                                     headers=access.http_headers(self.admin_key) if admin else {})
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
            method="POST", data=json.dumps({"parameters": {"config": json.dumps(config)}}).encode(),
            headers={"Content-Type": "application/json", **access.http_headers(self.admin_key)})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                status, body = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, body = e.code, e.read()
        if status != 200:
            raise ServerError(f"reloading {model} failed with HTTP {status}: "
                              f"{access.redact(body[:300].decode(errors='replace'), self.admin_key)}")

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
        deadline = time.monotonic() + (timeout if timeout is not None else self.settings.startup_timeout)
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
                    self._note(f"stylize: starting tritonserver again: a python stub died while its model loaded "
                               f"({'; '.join(f'{m}: {r}' for m, r in e.failures.items())})")
                    deadline = time.monotonic() + (timeout if timeout is not None else self.settings.startup_timeout)
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
                    failures = {m["name"]: m.get("reason") or m.get("state", "?")
                                for m in index if m.get("state") not in ("READY", "LOADING")}
                    if failures and not any(m.get("state") == "LOADING" for m in index):
                        tail = self.log_tail()
                        self.stop()
                        raise ModelRepositoryError(_failure_message(self.settings.model_repository, failures),
                                                   failures=failures, log_tail=tail)
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError, ValueError):
                pass  # not listening yet
            if time.monotonic() > deadline:
                tail = self.log_tail()
                self.stop()
                raise ServerTimeoutError(f"tritonserver was not ready after {timeout or self.settings.startup_timeout:.0f}"
                                         f" s (log: {self.log_path})", log_tail=tail)
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
                raise PortInUseError(f"{m.group(1)} port {p} is already in use (tritonserver could not bind it)",
                                     port=p, log_tail=tail)
        self._close_log()
        if failures:
            raise ModelRepositoryError(_failure_message(self.settings.model_repository, failures),
                                       failures=failures, log_tail=tail)
        raise ServerStartError(f"tritonserver exited with code {code} during startup (log: {self.log_path})",
                               log_tail=tail)

    def repository_index(self) -> list[dict[str, Any]]:
        status, body = self._get("/v2/repository/index", method="POST", admin=True)
        if status != 200:
            raise ServerError(f"repository index failed with HTTP {status}: {body[:200]!r}")
        return json.loads(body)

    def ready_models(self) -> list[str]:
        return sorted({m["name"] for m in self.repository_index() if m.get("state") == "READY"})

    def model_failures(self) -> dict[str, str]:
        """``{model: reason}`` for models that are not ready (from the repository index API)."""
        return {m["name"]: m.get("reason") or m.get("state", "UNKNOWN")
                for m in self.repository_index() if m.get("state") not in ("READY", "LOADING")}

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


def start_local(model_repository: Path | str, *, attempts: int = 3, run_as: tuple[int, int] | None = None,
                **overrides: Any) -> TritonServer:
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


# ---------------------------------------------------------------------------------------------------------------
# CLI glue
# ---------------------------------------------------------------------------------------------------------------


_WILDCARDS = ("0.0.0.0", "", "::", "[::]")


# Errors Triton logs on every healthy CPU start (no GPU, no CUDA driver): not a problem of the server, so not shown
_CPU_ONLY_NOISE = re.compile(r"CudaDriverHelper has not been initialized|CUDA driver version is insufficient|"
                             r"no CUDA-capable device|Unable to get number of GPUs|NVML")
_TRITON_LINE = re.compile(r"^([IWE])\d{4} ")


def worth_echoing(line: str) -> bool:
    """Whether a line of Triton's log is shown on the terminal: its errors, except the CPU-only noise above, and
    any line that is not a Triton log record (a stub's traceback, a crash). Everything goes to the log file."""
    m = _TRITON_LINE.match(line)
    if m is None:  # Triton's start-up tables (+---+ / | ... |) are in the log file; the banner lists the models
        return bool(line.strip()) and not line.startswith(("+", "|"))
    return m.group(1) == "E" and not _CPU_ONLY_NOISE.search(line)


def banner(settings: ServerSettings, models: Sequence[str], *, pid: int | None, log_path: Path) -> str:
    """What `stylize serve` prints once ready: the addresses the endpoints are bound to (not where a local client
    would connect: a wildcard bind is said to be one), and how the admin APIs are guarded (never the key)."""
    s = settings
    host = s.address or "0.0.0.0"
    shown = f"[{host.strip('[]')}]" if ":" in host else host
    loopback = host in ("127.0.0.1", "::1", "localhost")
    scope = "all interfaces" if host in _WILDCARDS else ("this machine only" if loopback else "this address only")
    key_from = (f"the key in {access.ADMIN_KEY_ENV}" if s.admin_key
                else f"a random key of this process (set {access.ADMIN_KEY_ENV} to choose one)")
    heal = ("a model whose python stub dies is reloaded (off: --no-heal)" if s.heals
            else "off: a dead python stub stays dead")
    return (f"tritonserver ready (pid {pid}, log {log_path})\n"
            f"  bound to {host} ({scope})\n"
            f"  gRPC     {shown}:{s.grpc_port}\n"
            f"  HTTP     http://{shown}:{s.http_port}\n"
            f"  metrics  http://{shown}:{s.metrics_port}/metrics\n"
            f"  admin    {', '.join(access.RESTRICTED_APIS)}: only with header {access.ADMIN_HEADER}, {key_from}\n"
            f"  healing  {heal}\n"
            f"  models   {', '.join(models) if models else '(none)'}")


# `stylize serve` starts a tritonserver that died (a kill -9, the OOM killer) again, this many times in this window
MAX_RESTARTS = 3
RESTART_WINDOW_S = 600


def serve(settings: ServerSettings, *, block: bool = True, out: TextIO | None = None,
          echo_log: bool = True) -> "int | TritonServer":
    """Start, wait until ready, print the endpoints and ready models; with ``block`` run until SIGINT/SIGTERM and
    drain gracefully, returning the exit code. Without ``block`` the running :class:`TritonServer` is returned."""
    out = out or sys.stdout
    server = TritonServer(settings, echo=sys.stderr if echo_log else None)
    try:
        server.start()
        server.wait_ready()
    except BaseException as e:
        server.stop()
        if not isinstance(e, ServerError):
            raise
        return _report_start_failure(e, echo_log)
    models = server.ready_models()
    print(banner(settings, models, pid=server.pid, log_path=server.log_path), file=out, flush=True)
    if not block:
        return server

    stop_requested = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        received.append(signum)
        stop_requested.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    restarts: list[float] = []
    try:
        while not stop_requested.wait(0.5):
            if not server.is_running():
                code = server.stop()
                now = time.monotonic()
                restarts = [t for t in restarts if now - t < RESTART_WINDOW_S]
                if len(restarts) >= MAX_RESTARTS:
                    print(f"stylize serve: tritonserver exited unexpectedly with code {code}, the "
                          f"{len(restarts) + 1}th time in {RESTART_WINDOW_S // 60} minutes: giving up\n"
                          f"{server.log_tail()}", file=sys.stderr)
                    return code or 1
                print(f"stylize serve: tritonserver exited unexpectedly with code {code} (log {server.log_path}); "
                      f"restarting it on the same ports", file=sys.stderr, flush=True)
                restarts.append(now)
                dead = server.stub_regions()
                server = TritonServer(settings, echo=sys.stderr if echo_log else None)
                server._dead_regions = dead
                try:
                    server.start()  # removes what the dead one left: its stubs and their shared memory
                    server.wait_ready()
                except ServerError as e:
                    server.stop()
                    return _report_start_failure(e, echo_log)
                print(f"stylize serve: tritonserver restarted (pid {server.pid}); removed "
                      f"{len(server.cleanup.killed_stubs)} orphaned stub(s) and "
                      f"{len(server.cleanup.removed_regions)} shared-memory region(s) of the dead one",
                      file=out, flush=True)
        print(f"stylize serve: {signal.Signals(received[0]).name} received, draining in-flight requests "
              f"(up to {settings.exit_timeout} s)", file=out, flush=True)
        code = server.stop()
        return 0 if code in (0, -signal.SIGTERM) else (code or 0)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.stop()


def _report_start_failure(error: ServerError, echo_log: bool) -> int:
    print(f"stylize serve: {error}", file=sys.stderr)
    if error.log_tail and not echo_log:
        print(error.log_tail, file=sys.stderr, end="")
    return 2 if isinstance(error, PortInUseError) else 1


def add_serve_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The `stylize serve` flags; each defaults to its STYLIZE_* variable, then to ServerSettings' default."""
    parser.add_argument("--model-repository", type=Path, default=None,
                        help="Triton model repository (env STYLIZE_MODEL_REPOSITORY, default ./model_repository)")
    parser.add_argument("--host", "--address", dest="address", default=None, metavar="ADDRESS",
                        help="bind address of all endpoints (env STYLIZE_ADDRESS); default 127.0.0.1, this machine "
                             "only: --host 0.0.0.0 serves other machines too")
    parser.add_argument("--grpc-port", type=int, default=None, help="gRPC port (env STYLIZE_GRPC_PORT, default 8001)")
    parser.add_argument("--http-port", type=int, default=None, help="HTTP port (env STYLIZE_HTTP_PORT, default 8000)")
    parser.add_argument("--metrics-port", type=int, default=None,
                        help="Prometheus metrics port (env STYLIZE_METRICS_PORT, default 8002)")
    parser.add_argument("--cache-size", type=parse_size, default=None, metavar="SIZE",
                        help="local response cache size, e.g. 1G; 0 disables (env STYLIZE_CACHE_SIZE; default 256M)")
    parser.add_argument("--ort-threads", type=int, default=None,
                        help="intra-op threads per ONNX Runtime session, overriding the model configs "
                             "(env STYLIZE_ORT_THREADS)")
    parser.add_argument("--log-verbose", type=int, default=None, help="Triton verbose log level (env STYLIZE_LOG_VERBOSE)")
    parser.add_argument("--exit-timeout", type=int, default=None,
                        help="seconds to drain in-flight requests on shutdown (env STYLIZE_EXIT_TIMEOUT, default 30)")
    parser.add_argument("--startup-timeout", type=float, default=None,
                        help="seconds to wait for readiness (env STYLIZE_STARTUP_TIMEOUT, default 180)")
    parser.add_argument("--tritonserver", type=Path, default=None,
                        help="tritonserver binary (env STYLIZE_TRITONSERVER; default: PATH, then nvidia-pytriton)")
    parser.add_argument("--models", type=lambda v: tuple(m.strip() for m in v.split(",") if m.strip()),
                        default=None, metavar="ID,ID",
                        help="load only these models, e.g. animeganv2,esrgan_x4 (env STYLIZE_MODELS); default: all")
    parser.add_argument("--no-heal", dest="heal", action="store_const", const=False, default=None,
                        help="do not reload a model whose python stub died (env STYLIZE_HEAL=0); by default the "
                             "server runs in explicit model-control mode so that it can (stylize.server.healing)")
    parser.add_argument("--triton-arg", dest="extra_args", action="append", default=None, metavar="ARG",
                        help="extra tritonserver argument, repeatable; write it as --triton-arg=--flag=value "
                             "(env STYLIZE_TRITON_ARGS, shell-quoted)")
    return parser


_SERVE_ARGS = ("model_repository", "address", "grpc_port", "http_port", "metrics_port", "cache_size", "ort_threads",
               "log_verbose", "exit_timeout", "startup_timeout", "tritonserver", "extra_args", "heal", "models")


# What `stylize serve` and `stylize web --serve` give Triton's response cache when neither --cache-size nor
# STYLIZE_CACHE_SIZE says: bounded, and on, so that an identical request is answered from it (the tests' and the
# bench's servers keep ServerSettings' 0: a measurement must not be a cache hit)
DEFAULT_SERVE_CACHE = 256 * 1024 * 1024


def serve_cache_size(flag: int | None) -> int | None:
    """The cache size to pass to :meth:`ServerSettings.from_env`: the flag, else the env's (None), else the default."""
    if flag is not None or os.environ.get(ENV_PREFIX + "CACHE_SIZE"):
        return flag
    return DEFAULT_SERVE_CACHE


def run_serve(args: argparse.Namespace) -> int:
    """Entry point for `stylize serve` (blocks until stopped)."""
    try:
        values = {k: getattr(args, k, None) for k in _SERVE_ARGS}
        values["cache_size"] = serve_cache_size(values["cache_size"])
        settings = ServerSettings.from_env(**values)
    except (TypeError, ValueError) as e:
        print(f"stylize serve: {e}", file=sys.stderr)
        return 2
    result = serve(settings, block=True)
    return result if isinstance(result, int) else 0


__all__ = [
    "ENV_PREFIX", "ServerSettings", "TritonServer", "TritonInstallation",
    "ServerError", "TritonNotFoundError", "StubEnvironmentError", "PortInUseError", "ModelRepositoryError",
    "ServerStartError", "ServerTimeoutError",
    "find_tritonserver", "prepare_backend_directory", "server_environment", "check_stub_environment",
    "check_repository", "repository_models", "model_failures_from_log", "is_transient_load_failure", "port_is_free", "find_free_ports",
    "parse_size", "parse_bool", "default_cache_dir", "start_local", "banner", "serve", "add_serve_arguments",
    "run_serve", "DEFAULT_SERVE_CACHE", "serve_cache_size",
]
