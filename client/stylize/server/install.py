"""Which tritonserver runs and what its python stubs need: the binary (NGC's on PATH, or the nvidia-pytriton wheel's), the
backend directory assembled for the wheel's binary, the stub's environment and the numpy it imports."""

from __future__ import annotations

import errno
import hashlib
import importlib.util
import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from stylize.contract import access
from stylize.engine.ort_runner import ORT_THREADS_ENV
from stylize.engine.ov_runner import OV_CACHE_ENV
from stylize.server.errors import StubEnvironmentError, TritonNotFoundError
from stylize.server.settings import PACKAGE_DIR

PYTHON_BASED_BACKENDS = (
    Path(__file__).resolve().parent / "triton_models" / "backends"
)  # <runtime>/model.py: backend "<runtime>"
ORT_BACKEND_MODEL = PYTHON_BASED_BACKENDS / "onnxruntime" / "model.py"


def python_based_backends() -> dict[str, Path]:
    """Backend name -> its model.py, for every Python-based backend this package ships."""
    return {d.name: d / "model.py" for d in sorted(PYTHON_BASED_BACKENDS.iterdir()) if (d / "model.py").is_file()}


def install_python_based_backends(backends: Path) -> list[str]:
    """Make a Triton installation's backend directory (``/opt/tritonserver/backends`` in NVIDIA's container) run this
    package's Python-based backends under their own names, so that the CPU pod serves the ``<id>_net`` models with
    the code the suite serves and enforces what it enforces (``max_request_pixels``, which the native OpenVINO
    backend ignores). Each native backend of the same name is moved aside to ``<name>-native`` (a directory Triton
    never loads: configs name ``openvino``, ``onnxruntime``); its replacement holds only a symlink to the package's
    ``model.py``, which Triton then runs with its python backend (``backends/python`` must be there). Returns the
    names installed. Run at image build (k8s/image/Dockerfile, target server-cpu), as root, before the server user
    takes over; running it again is a no-op."""
    python = backends / "python" / "libtriton_python.so"
    if not python.is_file():
        raise TritonNotFoundError(f"{backends} has no python backend ({python}): Python-based backends need it")
    done = []
    for name, model in python_based_backends().items():
        target = backends / name
        if (target / "model.py").is_symlink() and os.readlink(target / "model.py") == str(model):
            done.append(name)
            continue
        if target.exists():
            aside = backends / f"{name}-native"
            if aside.exists():
                raise FileExistsError(f"{aside} exists: refusing to overwrite a backend set aside before")
            os.rename(target, aside)
        target.mkdir()
        os.symlink(model, target / "model.py")
        done.append(name)
    return done


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

    @property
    def python_stub(self) -> Path | None:
        """The wheel's python backend stub for this interpreter (None for NGC's server, whose container has it)."""
        if not self.embedded or self.root is None:
            return None
        return self.root / "python_backend_stubs" / _python_version() / "triton_python_backend_stub"


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
            "(pip install '.[server]' installs nvidia-pytriton==0.7.0, which ships tritonserver 2.51)"
        )
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


def prepare_backend_directory(install: TritonInstallation, cache_dir: Path) -> Path:
    """Assemble (or reuse) the backend directory for the wheel's server; safe to call concurrently."""
    if not install.embedded or install.root is None:
        raise ValueError("only the nvidia-pytriton server needs an assembled backend directory")
    python_dir = install.root / "backends" / "python"
    stub = install.python_stub
    if stub is None or not stub.is_file():
        raise TritonNotFoundError(
            f"the nvidia-pytriton wheel has no python backend stub for Python {_python_version()} ({stub})"
        )
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
        return all(_same_symlink(d / rel, src) for rel, src in links.items()) and all(
            _same_copy(d / rel, src) for rel, src in copies.items()
        )

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
    return PACKAGE_DIR.parent


def server_environment(
    install: TritonInstallation,
    *,
    ort_threads: int | None = None,
    ov_cache: Path | None = None,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
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


# What provides a shared library the wheel's stub links, on Debian 12 (Makefile's APT_PACKAGES installs them)
_LIBRARY_PACKAGES = {"libpython3.11.so.1.0": "libpython3.11"}


def missing_libraries(sonames: Iterable[str], env: Mapping[str, str]) -> list[str]:
    """Those of ``sonames`` the dynamic loader cannot open in a process started with ``env`` (LD_LIBRARY_PATH)."""
    probe = "import ctypes, sys\nfor n in sys.argv[1:]:\n    try: ctypes.CDLL(n)\n    except OSError: print(n)\n"
    out = subprocess.run(
        [sys.executable, "-c", probe, *sonames], env=dict(env), capture_output=True, text=True, timeout=60
    ).stdout
    return out.split()


def missing_stub_libraries(stub: Path, env: Mapping[str, str]) -> list[str]:
    """The shared libraries the python backend stub links that the dynamic loader cannot find with ``env``: all of
    them by ``ldd`` when the file can be read, else the one the wheel's stub is known to link, libpython3.X.so.1.0
    (the wheel ships its stub execute-only). Without them every python model fails to load with only the loader's
    message in Triton's log."""
    ldd = shutil.which("ldd")
    if ldd is not None and os.access(stub, os.R_OK):
        out = subprocess.run([ldd, str(stub)], env=dict(env), capture_output=True, text=True, timeout=60).stdout
        return [line.split("=>")[0].strip() for line in out.splitlines() if "not found" in line]
    return missing_libraries([f"libpython{_python_version()}.so.1.0"], env)


def check_stub_environment(env: Mapping[str, str], stub: Path | None = None) -> dict[str, Any]:
    """Ask the interpreter the stub will adopt (``python3`` on the server's PATH) what it imports, and the dynamic
    loader whether ``stub`` (the wheel's python backend stub) finds its shared libraries.

    Raises :class:`StubEnvironmentError` when a library of the stub is missing, numpy is missing or >= 2, or
    stylize cannot be imported.
    """
    missing = missing_stub_libraries(stub, env) if stub is not None else []
    if missing:
        packages = sorted({_LIBRARY_PACKAGES[m] for m in missing if m in _LIBRARY_PACKAGES})
        raise StubEnvironmentError(
            f"the python backend stub ({stub}) cannot load {', '.join(missing)}, so no python model would load"
            + (
                f": install {' '.join(packages)} (Debian 12: sudo apt-get install {' '.join(packages)})"
                if packages
                else ""
            )
        )
    python3 = shutil.which("python3", path=env.get("PATH"))
    if python3 is None:
        raise StubEnvironmentError("no python3 on the server's PATH: the python backend stub cannot find packages")
    try:
        out = subprocess.run(
            [python3, "-c", _STUB_PROBE], env=dict(env), capture_output=True, text=True, timeout=60, check=True
        ).stdout
        info = json.loads(out.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError) as e:
        raise StubEnvironmentError(f"cannot inspect the python stub environment with {python3}: {e}") from e
    info["python3"] = python3
    if "numpy" not in info:
        raise StubEnvironmentError(
            f"numpy is not importable in the python stub environment ({python3}): {info.get('numpy_error')}"
        )
    if int(info["numpy"].split(".")[0]) >= 2:
        raise StubEnvironmentError(
            f"the python stub would load numpy {info['numpy']} ({info['numpy_file']}); tritonserver 2.51's python "
            "backend needs numpy<2 (numpy 2 silently corrupts tensors): pip install numpy==1.26.4"
        )
    if not info.get("stylize"):
        raise StubEnvironmentError(
            f"the stylize package is not importable in the python stub environment "
            f"({python3}); pip install -e . or set PYTHONPATH"
        )
    return info


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(
        prog="python -m stylize.server.install",
        description="Install this package's Python-based backends into a Triton backend "
        "directory (the CPU server image does, at build time).",
    )
    p.add_argument(
        "--python-based-backends",
        type=Path,
        required=True,
        metavar="BACKENDS_DIR",
        help="e.g. /opt/tritonserver/backends",
    )
    args = p.parse_args(argv)
    names = install_python_based_backends(args.python_based_backends)
    print(
        f"{args.python_based_backends}: Python-based backends {', '.join(names)} "
        "(native ones of those names moved to <name>-native)"
    )


if __name__ == "__main__":
    main()
