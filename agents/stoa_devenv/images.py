"""Build-or-cache the test bed's container images without an image registry.

``ensure_images(["stoa", "rabbitmq"])`` returns an :class:`ImageRef` per name. Each image is keyed by a hash
of its inputs (``imagespec.input_key``) and kept as a ``docker save`` tarball under ``~/.cache/stoa/images``:
a warm run reads the cache and starts nothing. A cold one starts the private dockerd (``docker.py``), builds
what is missing (bases from Debian packages first), saves it and stops the engine. Progress (what is built,
how long it took, how big it is) goes to stderr.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from stoa_devenv import dockerignore, llamawheel
from stoa_devenv.certs import host_extra_ca_certs
from stoa_devenv.docker import DOCKER_CACHE, RESET_MARKER, Docker, PrivateDocker
from stoa_devenv.errors import ComponentFailedError
from stoa_devenv.imagespec import (
    SPECS,
    BaseSpec,
    DockerfileSpec,
    FileDigest,
    Spec,
    build_levels,
    image_ref,
    input_key,
)
from stoa_devenv.procs import apt_install, log_tail
from stoa_devenv.tools import CACHE, REPO_ROOT

IMAGE_CACHE = CACHE / "images"
KEEP_PER_IMAGE = 2  # archives kept per image name: the current one and the one before
PARALLEL_BUILDS = 3

Progress = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class ImageRef:
    """A built image: its local reference, its id (the config digest) and its ``docker save`` tarball."""

    name: str
    ref: str
    image_id: str
    archive: Path
    size: int  # bytes, unpacked (docker's image size)
    build_seconds: float | None = None  # None when it came from the cache

    @property
    def repository(self) -> str:
        return self.ref.rsplit(":", 1)[0]

    @property
    def tag(self) -> str:
        return self.ref.rsplit(":", 1)[1]


def _mb(size: int) -> str:
    return f"{size / 1e6:.0f} MB"


# ---- inputs ---------------------------------------------------------------------------------------------
def context_digests(spec: DockerfileSpec, root: Path = REPO_ROOT) -> list[FileDigest]:
    """Digest of every file ``docker build`` sends for ``spec`` (its .dockerignore applied)."""
    context = root / spec.context
    ignore = context / ".dockerignore"
    rules = dockerignore.parse(ignore.read_text()) if ignore.exists() else []
    digests = []
    for rel in dockerignore.context_files(context, rules):
        path = context / rel
        digests.append(
            FileDigest(rel, hashlib.sha256(path.read_bytes()).hexdigest(), os.access(path, os.X_OK))
        )
    return digests


def _dockerfile_declares(text: str, arg: str) -> bool:
    return any(line.strip().startswith(f"ARG {arg}") for line in text.splitlines())


# ---- the cache --------------------------------------------------------------------------------------------
def _paths(name: str, key: str, cache: Path) -> tuple[Path, Path]:
    stem = f"{name}-{image_ref(name, key).rsplit(':', 1)[1]}"
    return cache / f"{stem}.tar", cache / f"{stem}.json"


def cached_image(name: str, key: str, cache: Path = IMAGE_CACHE) -> ImageRef | None:
    archive, meta = _paths(name, key, cache)
    if not (archive.exists() and meta.exists()):
        return None
    data = json.loads(meta.read_text())
    if data.get("key") != key:
        return None
    return ImageRef(name, data["ref"], data["image_id"], archive, int(data["size"]))


def _record(ref: ImageRef, key: str, cache: Path) -> None:
    _, meta = _paths(ref.name, key, cache)
    data = {**asdict(ref), "archive": str(ref.archive), "key": key, "built_at": time.time()}
    tmp = meta.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(meta)


def stale_archives(name: str, cache: Path = IMAGE_CACHE, keep: int = KEEP_PER_IMAGE) -> list[Path]:
    """This image's older archives beyond the ``keep`` newest."""
    mine = [m for m in cache.glob(f"{name}-*.json") if json.loads(m.read_text()).get("name") == name]
    return sorted(mine, key=lambda p: p.stat().st_mtime, reverse=True)[keep:]


def _prune(name: str, docker: Docker, cache: Path) -> None:
    for meta in stale_archives(name, cache):
        data = json.loads(meta.read_text())
        docker.remove_images([data["ref"]])
        Path(data["archive"]).unlink(missing_ok=True)
        meta.unlink(missing_ok=True)


# ---- building -------------------------------------------------------------------------------------------
class _Builder:
    """Builds what a cold cache lacks; starts the private dockerd on first need, stops it at the end."""

    def __init__(self, cache: Path, progress: Progress) -> None:
        self.cache = cache
        self.progress = progress
        self._engine = PrivateDocker()
        self._docker: Docker | None = None
        self._stack = contextlib.ExitStack()
        self._mutex = threading.Lock()
        # Builds of one Dockerfile (stoa and stoa-model) run one after the other: BuildKit 0.8 can lose
        # snapshots when two similar builds share steps concurrently; the second then reuses the first's.
        self._dockerfile_locks: dict[str, threading.Lock] = {}

    def __enter__(self) -> _Builder:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self._docker is not None:
                self._tidy(self._docker)
        finally:
            self._stack.close()

    def _tidy(self, docker: Docker) -> None:
        """Keep the engine's data root bounded; a broken BuildKit cache (moby/buildkit#3599: "snapshot ...
        not found", seen with 20.10) cannot be pruned, so the next engine starts from an empty one."""
        error = docker.tidy()
        if error is not None:
            self.progress(
                f"The private dockerd's build cache cannot be pruned ({error}); it is reset next time"
            )
            (DOCKER_CACHE / RESET_MARKER).write_text(error + "\n")

    @property
    def docker(self) -> Docker:
        with self._mutex:
            if self._docker is None:
                self._docker = self._stack.enter_context(self._engine)
            return self._docker

    def _ensure_loaded(self, base: ImageRef) -> None:
        if self.docker.image_id(base.ref) != base.image_id:
            self.docker.load(base.archive)

    def ensure(self, spec: Spec, refs: dict[str, ImageRef], *, rebuild: bool) -> ImageRef:
        wheel = (
            llamawheel.find_llama_wheel() if isinstance(spec, DockerfileSpec) and spec.llama_wheel else None
        )
        key = _key(spec, refs, wheel)
        cached = None if rebuild else cached_image(spec.name, key, self.cache)
        if cached is None:
            self.docker  # noqa: B018 - waits for the machine-wide engine lock: someone may have built it meanwhile
            cached = None if rebuild else cached_image(spec.name, key, self.cache)
        if cached is not None:
            self.progress(f"Image {spec.name}: cached {cached.ref} ({_mb(cached.size)})")
            return cached
        log = self.cache / "logs" / f"{spec.name}-{image_ref(spec.name, key).rsplit(':', 1)[1]}.log"
        self.progress(
            f"Image {spec.name}: building {image_ref(spec.name, key)} {_describe(spec, wheel)} (log {log})"
        )
        built = self.build(spec, key, refs, wheel, log)
        self.progress(f"Image {spec.name}: built in {built.build_seconds:.0f}s, {_mb(built.size)}")
        return built

    def build(
        self, spec: Spec, key: str, bases: dict[str, ImageRef], wheel: Path | None, log: Path
    ) -> ImageRef:
        ref = image_ref(spec.name, key)
        started = time.monotonic()
        if isinstance(spec, BaseSpec):
            self._build_base(spec, ref, log)
        else:
            self._build_dockerfile(spec, ref, bases, wheel, log)
        seconds = time.monotonic() - started
        archive, _ = _paths(spec.name, key, self.cache)
        image_id = self.docker.image_id(ref)
        if image_id is None:
            raise ComponentFailedError(f"image {ref} missing after its build{log_tail(log)}")
        built = ImageRef(spec.name, ref, image_id, archive, self.docker.image_size(ref), round(seconds, 1))
        self.docker.save(ref, archive)
        _record(built, key, self.cache)
        _prune(spec.name, self.docker, self.cache)
        return built

    def _build_base(self, spec: BaseSpec, ref: str, log: Path) -> None:
        if shutil.which("mmdebstrap") is None:
            apt_install(["mmdebstrap"], "building base images from Debian packages")
        self.docker.import_rootfs(
            ["nice", "-n", "10", *spec.mmdebstrap_args()], spec.import_changes(), ref, log
        )

    def _build_dockerfile(
        self, spec: DockerfileSpec, ref: str, bases: dict[str, ImageRef], wheel: Path | None, log: Path
    ) -> None:
        with self._mutex:
            serial = self._dockerfile_locks.setdefault(spec.dockerfile, threading.Lock())
        with serial:
            self._build_dockerfile_now(spec, ref, bases, wheel, log)

    def _build_dockerfile_now(
        self, spec: DockerfileSpec, ref: str, bases: dict[str, ImageRef], wheel: Path | None, log: Path
    ) -> None:
        dockerfile = REPO_ROOT / spec.dockerfile
        text = dockerfile.read_text()
        args = dict(spec.args)
        for arg, base in spec.bases.items():
            self._ensure_loaded(bases[base])
            args[arg] = bases[base].ref
        extra_ca = host_extra_ca_certs()
        if extra_ca and _dockerfile_declares(text, "EXTRA_CA_CERTS"):
            args["EXTRA_CA_CERTS"] = extra_ca
        with contextlib.ExitStack() as stack:
            if wheel is not None:
                args["LLAMA_WHEELS"] = stack.enter_context(llamawheel.serve_directory(wheel.parent))
            self.docker.build(
                REPO_ROOT / spec.context, dockerfile, ref, target=spec.target, args=args, log=log
            )


def _describe(spec: Spec, wheel: Path | None) -> str:
    if isinstance(spec, BaseSpec):
        return f"from Debian {spec.suite} packages: {', '.join(spec.packages) or 'minbase'}"
    what = f"{spec.dockerfile}" + (f" target {spec.target}" if spec.target else "")
    if spec.llama_wheel:
        what += f", reusing {wheel.name}" if wheel else ", compiling llama.cpp (no reusable wheel, ~6 min)"
    return what


def ensure_images(
    names: Iterable[str],
    *,
    rebuild: Iterable[str] = (),
    progress: Progress = _stderr,
    cache: Path = IMAGE_CACHE,
    specs: Mapping[str, Spec] = SPECS,
) -> dict[str, ImageRef]:
    """Each image of ``names`` (and the bases they need) from the cache, building what is missing.

    ``rebuild`` names images to build again even when cached (e.g. a base, to pick up Debian updates).
    Paths in ``specs`` are relative to the repository (absolute ones are taken as they are).
    """
    wanted = list(names)
    again = set(rebuild)
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "logs").mkdir(exist_ok=True)
    refs: dict[str, ImageRef] = {}
    with _Builder(cache, progress) as builder:
        for level in build_levels(wanted, specs):
            # Images of one level need only earlier levels: build them side by side (downloads overlap).
            with ThreadPoolExecutor(max_workers=PARALLEL_BUILDS, thread_name_prefix="image") as pool:
                done = {
                    n: pool.submit(builder.ensure, specs[n], dict(refs), rebuild=n in again) for n in level
                }
            for future in done.values():
                error = future.exception()
                if error is not None:
                    raise error  # the others of this level finished (and are cached) meanwhile
            refs.update({name: future.result() for name, future in done.items()})
    return {name: refs[name] for name in wanted}


def _key(spec: Spec, refs: dict[str, ImageRef], wheel: Path | None) -> str:
    if isinstance(spec, BaseSpec):
        return input_key(spec)
    return input_key(
        spec,
        (REPO_ROOT / spec.dockerfile).read_bytes(),
        context_digests(spec),
        {arg: refs[base].image_id for arg, base in spec.bases.items()},
        llamawheel.sha256_file(wheel) if wheel else None,
    )
