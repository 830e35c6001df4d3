"""A real Prometheus for tests: Debian's ``prometheus`` package (server and ``promtool``).

``PrometheusServer`` scrapes static loopback targets (every second by default) and evaluates rule files
every second, so rules and alerts can be watched firing within a test; ``promtool()`` runs
``promtool check|test rules``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from stoa_devenv.errors import ComponentFailedError, ComponentMissingError
from stoa_devenv.procs import apt_install, free_port, log_tail, port_open, stop_group, wait_until


def prometheus_binaries() -> tuple[Path, Path]:
    """(prometheus, promtool), installing Debian's package when missing and root."""
    for _ in range(2):
        server, tool = shutil.which("prometheus"), shutil.which("promtool")
        if server and tool:
            return Path(server), Path(tool)
        apt_install(["prometheus"], "Prometheus and promtool for the alert-rule tests")
    raise ComponentMissingError("prometheus/promtool not found even after installing the prometheus package")


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    _, tool = prometheus_binaries()
    return subprocess.run(
        [str(tool), *args], capture_output=True, text=True, check=False, cwd=cwd, timeout=120
    )


@dataclass(frozen=True)
class Target:
    """One scrape target: ``host:port`` with extra labels (e.g. namespace, as Kubernetes discovery adds)."""

    job: str
    address: str
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class PrometheusServer:
    base: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="stoa-prometheus-")))
    port: int = field(default_factory=free_port)
    interval: str = "1s"  # scrape interval (and timeout); rules are evaluated every second
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.base / "prometheus.log"

    def write_config(self, targets: list[Target], rule_files: list[Path]) -> Path:
        jobs: dict[str, list[dict[str, Any]]] = {}
        for t in targets:
            jobs.setdefault(t.job, []).append({"targets": [t.address], "labels": dict(t.labels)})
        config = {
            "global": {
                "scrape_interval": self.interval,
                "scrape_timeout": self.interval,
                "evaluation_interval": "1s",
            },
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": [
                {"job_name": job, "scrape_interval": self.interval, "static_configs": static}
                for job, static in jobs.items()
            ],
        }
        path = self.base / "prometheus.yml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def start(self, targets: list[Target], rule_files: list[Path], timeout: float = 60.0) -> PrometheusServer:
        server, _ = prometheus_binaries()
        config = self.write_config(targets, rule_files)
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    str(server),
                    f"--config.file={config}",
                    f"--storage.tsdb.path={self.base / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--storage.tsdb.retention.time=1h",
                    "--web.enable-lifecycle",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        wait_until(lambda: self._exited() or self._ready(), timeout, "Prometheus", self.log)
        if self._exited():
            raise ComponentFailedError(f"Prometheus exited at start{log_tail(self.log)}")
        return self

    def _exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def _ready(self) -> bool:
        if not port_open(self.port):
            return False
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:  # noqa: S310
                return bool(response.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        stop_group(self.proc.pid, grace=15)
        self.proc.wait(timeout=10)  # already reaped: records the exit code

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    # ---- HTTP API -----------------------------------------------------------------------------------

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        url = f"{self.url}/api/v1/{path}" + (f"?{query}" if query else "")
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (loopback URL we built)
            body = json.loads(response.read())
        if body.get("status") != "success":
            raise ComponentFailedError(f"Prometheus {path}: {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return list(self.api("query", query=expr)["result"])

    def alerts(self) -> list[dict[str, Any]]:
        return list(self.api("alerts")["alerts"])

    def metric_names(self) -> set[str]:
        return set(self.api("label/__name__/values"))

    def targets_up(self) -> dict[str, str]:
        data = self.api("targets")
        return {t["scrapeUrl"]: t["health"] for t in data["activeTargets"]}


def main() -> int:
    """Install (as root, when missing) or locate Prometheus and promtool and print their paths."""
    server, tool = prometheus_binaries()
    print(f"{'prometheus':24} {server}\n{'promtool':24} {tool}")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
