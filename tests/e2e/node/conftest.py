"""The real node for e2e tests: one test bed per session (control plane + kubelet/containerd + kube-proxy
+ CoreDNS), with the images the chart needs built (or taken from the cache) and loaded into the node.

A test that fails dumps pod logs, events and ``kubectl get stoa -A`` of the namespaces it used
(``bed_namespace`` registers them).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Generator, Iterator

import pytest

from stoa_devenv.imageload import load_into_containerd
from stoa_devenv.images import ensure_images
from stoa_devenv.imagespec import NODE_IMAGES
from stoa_devenv.node import SANDBOX_IMAGE
from stoa_devenv.testbed import TestBed
from tests.e2e.node.bed import Bed

# A test session waits this long for another session's test bed on the same machine.
LOCK_WAIT_SECONDS = 1800


@pytest.fixture(scope="session")
def bed() -> Iterator[Bed]:
    refs = ensure_images(NODE_IMAGES)
    testbed = TestBed().start(wait_lock=LOCK_WAIT_SECONDS)
    try:
        load_into_containerd(testbed.containerd_socket, refs.values(), aliases={"pause": [SANDBOX_IMAGE]})
        yield Bed(testbed, {name: ref.ref for name, ref in refs.items()})
    finally:
        testbed.stop()


FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call":
        item.stash[FAILED] = report.failed
    return report


@pytest.fixture
def bed_namespace(bed: Bed, request: pytest.FixtureRequest) -> Iterator[Callable[[str], str]]:
    """``new("debate")`` creates a namespace ``debate-<suffix>``; all are dumped if the test fails and
    deleted afterwards."""
    made: list[str] = []

    def new(prefix: str) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:6]}"
        bed.kubectl("create", "namespace", name)
        made.append(name)
        return name

    yield new
    if request.node.stash.get(FAILED, False):
        bed.dump(made)
    for name in made:
        bed.kubectl("delete", "namespace", name, "--wait=false", check=False)
