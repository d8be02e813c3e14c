"""Images pinned by digest for a release: the Triton base images the server image is built FROM, and the images the
rendered manifests run.

    python -m stylize_k8s.pin record gpu                     # ask the registry for the digest of the GPU base (once)
    python -m stylize_k8s.pin record cpu REGISTRY/NAME:TAG   # the CPU-only base you built and pushed
    python -m stylize_k8s.pin ref gpu                        # NAME:TAG@sha256:... for --build-arg; exit 1 if unpinned
    python -m stylize_k8s.pin check [KUSTOMIZATION_DIR...]   # the release gate: exit 1 on anything unpinned

``k8s/image/base-images.json`` records the digests. A digest is taken from the registry, never typed in: ``record``
runs ``docker buildx imagetools inspect`` (no pull), or ``docker pull`` + ``docker inspect`` where buildx is absent.
The documented builds pass ``--build-arg TRITON_IMAGE="$(python -m stylize_k8s.pin ref gpu)"``, so an unpinned base
fails the build command before Docker runs. ``check`` is the release gate: every base image has a digest, and every
``image:`` the given kustomizations render (default: k8s/overlays/*) carries one (kustomize ``images:`` entries
with ``digest: sha256:...``; a tag alone is refused).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from stylize_k8s import K8S, ROOT, kubectl

LOCK = K8S / "image" / "base-images.json"
DOCKERFILE = K8S / "image" / "Dockerfile"
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


class Unpinned(Exception):
    pass


def load(path: Path = LOCK) -> dict:
    return json.loads(path.read_text())


def ref(key: str, path: Path = LOCK) -> str:
    """``image@digest`` of a recorded base image; raises :class:`Unpinned` where no digest is recorded."""
    entry = load(path).get(key)
    if entry is None:
        raise Unpinned(f"{path.name} has no entry {key!r}")
    if not entry.get("image"):
        raise Unpinned(f"{key}: no image recorded (python -m stylize_k8s.pin record {key} REGISTRY/NAME:TAG)")
    if not (entry.get("digest") and DIGEST.match(entry["digest"])):
        raise Unpinned(f"{key}: {entry['image']} has no digest recorded (python -m stylize_k8s.pin record {key})")
    return f"{entry['image']}@{entry['digest']}"


def registry_digest(image: str) -> str:
    """The digest the registry serves for ``image`` (a tag), asked through Docker."""
    docker = shutil.which("docker")
    if docker is None:
        raise RuntimeError("docker is not installed")
    out = subprocess.run(
        [docker, "buildx", "imagetools", "inspect", image, "--format", "{{json .Manifest}}"],
        capture_output=True,
        text=True,
    )
    if out.returncode == 0:
        digest = json.loads(out.stdout)["digest"]
    else:  # no buildx: pull, then read the repository digest
        pull = subprocess.run([docker, "pull", image], capture_output=True, text=True)
        if pull.returncode != 0:
            raise RuntimeError(f"docker pull {image} failed: {(pull.stderr or out.stderr).strip()}")
        ins = subprocess.run(
            [docker, "inspect", "--format", "{{json .RepoDigests}}", image], capture_output=True, text=True, check=True
        )
        repo = image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image
        digest = next(d.split("@", 1)[1] for d in json.loads(ins.stdout) if d.split("@", 1)[0] == repo)
    if not DIGEST.match(digest):
        raise RuntimeError(f"unexpected digest {digest!r} for {image}")
    return digest


def record(key: str, image: str | None, path: Path = LOCK) -> str:
    data = load(path)
    entry = data.setdefault(key, {})
    image = image or entry.get("image")
    if not image:
        raise SystemExit(f"{key}: name the image: python -m stylize_k8s.pin record {key} REGISTRY/NAME:TAG")
    entry.update(image=image, digest=registry_digest(image))
    path.write_text(json.dumps(data, indent=1) + "\n")
    return f"{image}@{entry['digest']}"


def rendered_images(kustomization: Path) -> list[str]:
    out = subprocess.run([kubectl(), "kustomize", str(kustomization)], capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {kustomization}: {out.stderr}")
    return sorted(set(re.findall(r"^\s*-?\s*image:\s*[\"']?([^\s\"']+)", out.stdout, re.M)))


def problems(kustomizations: list[Path], path: Path = LOCK) -> list[str]:
    out = []
    for key in load(path):
        try:
            ref(key, path)
        except Unpinned as e:
            out.append(f"base image {e}")
    for k in kustomizations:
        for image in rendered_images(k):
            if not re.search(r"@sha256:[0-9a-f]{64}$", image):
                out.append(
                    f"{k.relative_to(ROOT) if k.is_relative_to(ROOT) else k}: image {image} is not pinned by "
                    "digest (kustomize images: digest: sha256:...)"
                )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record", help="record a base image's digest from its registry")
    r.add_argument("key", choices=["gpu", "cpu"])
    r.add_argument("image", nargs="?")
    f = sub.add_parser("ref", help="print image@digest of a base image (exit 1 if unpinned)")
    f.add_argument("key")
    c = sub.add_parser("check", help="the release gate: exit 1 on any unpinned image")
    c.add_argument("kustomizations", nargs="*", type=Path)
    args = ap.parse_args(argv)
    if args.cmd == "record":
        try:
            print(record(args.key, args.image))
        except RuntimeError as e:
            print(f"not recorded: {e}", file=sys.stderr)
            return 2
        return 0
    if args.cmd == "ref":
        try:
            print(ref(args.key))
        except Unpinned as e:
            print(f"refused: {e}", file=sys.stderr)
            return 1
        return 0
    kustomizations = args.kustomizations or sorted(p for p in (K8S / "overlays").iterdir() if p.is_dir())
    bad = problems([k.resolve() for k in kustomizations])
    for line in bad:
        print(f"refused: {line}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
