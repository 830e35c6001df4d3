"""Pure parts of the local environment: version pin, go.mod consumer pattern, free ports."""

from __future__ import annotations

import re
import socket

from stoa_devenv.procs import free_port
from stoa_devenv.tools import K8S_BINS_MODULE, kubernetes_version

STAGING = [
    "api",
    "apiextensions-apiserver",
    "apimachinery",
    "apiserver",
    "cli-runtime",
    "client-go",
    "cloud-provider",
    "cluster-bootstrap",
    "code-generator",
    "component-base",
    "component-helpers",
    "controller-manager",
    "cri-api",
    "cri-client",
    "csi-translation-lib",
    "dynamic-resource-allocation",
    "endpointslice",
    "externaljwt",
    "kms",
    "kube-aggregator",
    "kube-controller-manager",
    "kube-proxy",
    "kube-scheduler",
    "kubectl",
    "kubelet",
    "metrics",
    "mount-utils",
    "pod-security-admission",
    "sample-apiserver",
    "sample-cli-plugin",
    "sample-controller",
]


def test_kubernetes_version_is_a_v1_release() -> None:
    assert re.fullmatch(r"v1\.\d+\.\d+", kubernetes_version())


def test_every_staging_module_is_replaced_with_the_matching_v0_version() -> None:
    gomod = (K8S_BINS_MODULE / "go.mod").read_text()
    minor_patch = kubernetes_version().removeprefix("v1.")
    replaced = dict(re.findall(r"^\s+k8s\.io/(\S+) => k8s\.io/\S+ (v\S+)$", gomod, re.MULTILINE))
    assert sorted(replaced) == sorted(STAGING)
    assert set(replaced.values()) == {f"v0.{minor_patch}"}


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
