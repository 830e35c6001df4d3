"""Readiness, liveness and startup probes (httpGet / tcpSocket / exec against the pod's host ports)."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
from collections.abc import Mapping

from tests.e2e.nodeagent import spec
from tests.e2e.nodeagent.runs import Container, PodRun, Prober


def reset_probers(container: Container, now: float) -> None:
    """A (re)started container begins every probe from scratch after its initial delay."""
    container.ready = False
    container.started = container.startup is None
    for prober in (container.readiness, container.liveness, container.startup):
        if prober is not None:
            prober.successes = prober.failures = 0
            prober.passed = False
            prober.next_at = now + spec.probe_timing(prober.probe)[0]


def probe_all(run: PodRun, container: Container, now: float, programs: Mapping[str, list[str]]) -> None:
    """Run due probes of a running container; a failed liveness probe starts a graceful kill."""
    if container.startup is not None and not container.started:
        if probe_once(run, container, container.startup, now, programs):
            container.started = container.startup.passed
        return
    if container.liveness is not None:
        probe_once(run, container, container.liveness, now, programs)
        failure_threshold = spec.probe_timing(container.liveness.probe)[4]
        if container.liveness.failures >= failure_threshold and container.kill_at is None:
            assert container.proc is not None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(container.proc.pid, signal.SIGTERM)
            container.kill_at = now + float(run.pod["spec"].get("terminationGracePeriodSeconds", 30))
    if container.readiness is None:
        container.ready = True
    else:
        probe_once(run, container, container.readiness, now, programs)
        container.ready = container.readiness.passed


def probe_once(
    run: PodRun, container: Container, prober: Prober, now: float, programs: Mapping[str, list[str]]
) -> bool:
    """Run the probe when due; updates counters. Returns whether it ran."""
    if now < prober.next_at:
        return False
    _, period, timeout, success_threshold, failure_threshold = spec.probe_timing(prober.probe)
    prober.next_at = now + period
    try:
        target = spec.probe_target(prober.probe, container.spec, run.ports)
        ok = True if target is None else check(target, timeout, container, programs)
    except spec.MissingReferenceError:
        ok = False
    if ok:
        prober.successes, prober.failures = prober.successes + 1, 0
        if prober.successes >= success_threshold:
            prober.passed = True
    else:
        prober.successes, prober.failures = 0, prober.failures + 1
        if prober.failures >= failure_threshold:
            prober.passed = False
    return True


def check(
    target: spec.ProbeTarget, timeout: float, container: Container, programs: Mapping[str, list[str]]
) -> bool:
    if target.kind == "http":
        conn = http.client.HTTPConnection(spec.POD_IP, target.port, timeout=timeout)
        try:
            conn.request("GET", target.path, headers={"User-Agent": "kube-probe/1.33"})
            return 200 <= conn.getresponse().status < 400
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()
    if target.kind == "tcp":
        try:
            with socket.create_connection((spec.POD_IP, target.port), timeout=timeout):
                return True
        except OSError:
            return False
    argv = spec.command_argv(
        {"name": "probe", "command": list(target.command)}, container.env, {}, [], programs
    )
    try:
        result = subprocess.run(argv, env=container.env, capture_output=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0
