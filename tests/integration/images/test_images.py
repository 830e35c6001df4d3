"""The test bed's images, really built (or taken from ~/.cache/stoa/images) and run once each.

Every server image runs under exactly what charts/stoa renders for it (env with the Secret's passwords,
emptyDirs, security contexts, limits: ``podrun``), in a network namespace of its own (``--network none``: no
port on the host, nothing leaves the machine). Clients run in the Stoa image inside that namespace
(``--network container:<server>``), so they reach the server on 127.0.0.1 with the chart's own connection
URLs and exercise the Stoa image's aio-pika and asyncpg too.
"""

from __future__ import annotations

import copy
import json
import secrets
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stoa_devenv.docker import Docker, PrivateDocker, docker_client
from stoa_devenv.imageload import load_into_containerd, present_image_ids
from stoa_devenv.images import ImageRef, ensure_images
from stoa_devenv.imagespec import chart_image_values
from stoa_devenv.procs import wait_until
from tests.integration.images.podrun import docker_run_args, secret_data
from tests.unit.chart.helm import find, render

# A cold cache builds the bases and images first (~10 min on 2 cores); warm runs take them from the cache.
pytestmark = pytest.mark.timeout(2400)

RABBIT_PASSWORD = "r-" + secrets.token_urlsafe(12)
PG_PASSWORD = "p-" + secrets.token_urlsafe(12)


@pytest.fixture(scope="module")
def images() -> dict[str, ImageRef]:
    return ensure_images(["stoa", "stoa-model", "rabbitmq", "postgres", "pause"])


@pytest.fixture(scope="module")
def docker(images: dict[str, ImageRef]) -> Iterator[Docker]:
    with PrivateDocker() as engine:
        yield engine


def _loaded(docker: Docker, image: ImageRef) -> str:
    if docker.image_id(image.ref) != image.image_id:
        docker.load(image.archive)
    return image.ref


@pytest.fixture(scope="module")
def chart(images: dict[str, ImageRef]) -> list[dict[str, Any]]:
    """The chart rendered in bundled mode with these images (the values the e2e installs it with)."""
    values = chart_image_values({name: ref.ref for name, ref in images.items()})
    return render(
        "bundled.enabled=true",
        f"bundled.rabbitmq.password={RABBIT_PASSWORD}",
        f"bundled.postgres.password={PG_PASSWORD}",
        *(f"{key}={value}" for key, value in values.items()),
    )


def _deployment(objects: list[dict[str, Any]], component: str) -> dict[str, Any]:
    (found,) = [
        d
        for d in find(objects, "Deployment")
        if d["metadata"]["labels"].get("app.kubernetes.io/component") == component
    ]
    return found


def _connection(objects: list[dict[str, Any]], key: str) -> str:
    """A URL of the chart's connection Secret, with the Service's host name replaced by 127.0.0.1."""
    (secret,) = [
        s for s in find(objects, "Secret", "stoa-connections") if s["metadata"]["namespace"] == "stoa-system"
    ]
    url: str = secret["stringData"][key]
    at = url.index("@") + 1
    return url[:at] + "127.0.0.1" + url[url.index(":", at) :]


class Containers:
    """Containers of one test, removed at the end whatever happens."""

    def __init__(self, docker: Docker, stoa_ref: str) -> None:
        self.docker = docker
        self.stoa_ref = stoa_ref
        self.names: list[str] = []

    def start(self, run_args: list[str]) -> str:
        name = f"stoa-test-{uuid.uuid4().hex[:10]}"
        self.names.append(name)
        self.docker.run("run", "--detach", "--name", name, "--network", "none", *run_args)
        return name

    def logs(self, name: str) -> str:
        result = self.docker.run("logs", name, check=False)
        return result.stdout + result.stderr

    def running(self, name: str) -> bool:
        state = self.docker.run("inspect", "--format", "{{.State.Running}}", name, check=False)
        return state.stdout.strip() == "true"

    def client(self, server: str, script: str, *argv: str, timeout: float = 180) -> dict[str, Any]:
        """Run a Python script in the Stoa image inside the server's network namespace; its JSON output.
        Fails at once, with the server's log, if the server exits meanwhile."""
        cmd = [
            *("run", "--rm", "--network", f"container:{server}", "--read-only", "--cap-drop", "ALL"),
            *("--security-opt", "no-new-privileges", "--entrypoint", "python", self.stoa_ref, "-c", script),
            *argv,
        ]
        proc = subprocess.Popen(
            [docker_client(), *cmd],
            env=self.docker.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + timeout
        while proc.poll() is None and self.running(server) and time.monotonic() < deadline:
            time.sleep(0.5)
        if proc.poll() is None:
            proc.kill()
        out, err = proc.communicate()
        assert proc.returncode == 0, (
            f"client failed: {err[-3000:]}\n--- server log ---\n{self.logs(server)[-4000:]}"
        )
        parsed: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return parsed

    def stop(self, name: str, timeout: int = 30) -> int:
        self.docker.run("stop", "--time", str(timeout), name, timeout=timeout + 30)
        return int(self.docker.run("wait", name).stdout.strip())

    def remove_all(self) -> None:
        if self.names:
            self.docker.run("rm", "--force", *self.names, check=False)


@pytest.fixture
def containers(docker: Docker, images: dict[str, ImageRef]) -> Iterator[Containers]:
    made = Containers(docker, _loaded(docker, images["stoa"]))
    yield made
    made.remove_all()


@pytest.fixture(scope="module")
def servers(
    docker: Docker,
    images: dict[str, ImageRef],
    chart: list[dict[str, Any]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Containers, dict[str, str]]]:
    """RabbitMQ, PostgreSQL and the model, each started as the chart runs it, all at once (they boot side by
    side while the first test waits for its own)."""
    made = Containers(docker, _loaded(docker, images["stoa"]))
    names = {}
    for component, image in (("rabbitmq", "rabbitmq"), ("postgres", "postgres"), ("model", "stoa-model")):
        _loaded(docker, images[image])
        deployment = _deployment(chart, component)
        volumes = tmp_path_factory.mktemp(component)
        names[component] = made.start(docker_run_args(deployment, secret_data(chart), volumes))
    yield made, names
    made.remove_all()


# ---- Stoa -----------------------------------------------------------------------------------------------
def test_stoa_image_runs_as_uid_10001_with_a_read_only_root(
    docker: Docker, images: dict[str, ImageRef], chart: list[dict[str, Any]], tmp_path: Path
) -> None:
    ref = _loaded(docker, images["stoa"])
    who = docker.run("run", "--rm", "--network", "none", "--read-only", "--entrypoint", "id", ref)
    assert who.stdout.split()[:2] == ["uid=10001(stoa)", "gid=10001(stoa)"]
    # `stoa --help` under the operator pod's own security context and env (read-only root, ALL dropped).
    operator = copy.deepcopy(_deployment(chart, "operator"))
    operator["spec"]["template"]["spec"]["containers"][0]["args"] = ["--help"]
    run_args = docker_run_args(operator, secret_data(chart), tmp_path)
    assert "--read-only" in run_args
    assert run_args[run_args.index("--user") + 1] == "10001:10001"
    result = docker.run("run", "--rm", "--network", "none", *run_args)
    assert result.stdout.startswith("usage: stoa")
    for command in ("operator", "agent", "gateway", "model-server"):
        assert command in result.stdout


# ---- RabbitMQ -----------------------------------------------------------------------------------------
AMQP_CLIENT = """
import asyncio, json, sys, time
import aio_pika

async def connect(url, deadline):
    while True:
        try:
            return await aio_pika.connect(url, timeout=5)
        except aio_pika.exceptions.ProbableAuthenticationError:
            raise
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)

async def main(url, bad_url):
    started = time.monotonic()
    connection = await connect(url, started + 120)
    ready = time.monotonic() - started
    channel = await connection.channel(publisher_confirms=True)
    queue = await channel.declare_queue("stoa-image-test", durable=True, arguments={"x-queue-type": "quorum"})
    message = aio_pika.Message(b"turn-1", delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
    await channel.default_exchange.publish(message, routing_key=queue.name)
    message = await queue.get(timeout=10)
    await message.ack()
    await connection.close()
    try:
        await (await aio_pika.connect(bad_url, timeout=5)).close()
        refused = False
    except aio_pika.exceptions.ProbableAuthenticationError:
        refused = True
    print(json.dumps({"body": message.body.decode(), "refused": refused, "ready_s": round(ready, 1)}))

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def test_rabbitmq_image_serves_amqp_with_the_charts_user_and_password(
    servers: tuple[Containers, dict[str, str]], images: dict[str, ImageRef], chart: list[dict[str, Any]]
) -> None:
    containers, names = servers
    assert (
        _deployment(chart, "rabbitmq")["spec"]["template"]["spec"]["containers"][0]["image"]
        == images["rabbitmq"].ref
    )
    url = _connection(chart, "rabbitmqUrl")
    assert RABBIT_PASSWORD in url
    result = containers.client(names["rabbitmq"], AMQP_CLIENT, url, url.replace(RABBIT_PASSWORD, "wrong"))
    assert result["body"] == "turn-1"
    assert result["refused"], "a wrong password must be refused"
    assert "Server startup complete" in containers.logs(names["rabbitmq"])  # logs go to stdout (kubectl logs)
    assert containers.stop(names["rabbitmq"]) == 0  # SIGTERM: a clean broker shutdown (rabbitmqctl stop)


# ---- PostgreSQL ---------------------------------------------------------------------------------------
PG_CLIENT = """
import asyncio, json, sys, time
import asyncpg

async def main(dsn, bad_dsn):
    connection = await asyncpg.connect(dsn, timeout=10)
    who = await connection.fetchrow("SELECT current_user AS user, current_database() AS db")
    await connection.execute("CREATE TABLE turns (seq int PRIMARY KEY, body text NOT NULL)")
    await connection.execute("INSERT INTO turns VALUES (1, 'hello')")
    body = await connection.fetchval("SELECT body FROM turns WHERE seq = 1")
    await connection.close()
    try:
        await (await asyncpg.connect(bad_dsn, timeout=10)).close()
        refused = False
    except asyncpg.InvalidPasswordError:
        refused = True
    print(json.dumps({"user": who["user"], "db": who["db"], "body": body, "refused": refused}))

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def test_postgres_image_accepts_the_charts_user_password_and_database(
    servers: tuple[Containers, dict[str, str]], chart: list[dict[str, Any]]
) -> None:
    containers, names = servers
    container = _deployment(chart, "postgres")["spec"]["template"]["spec"]["containers"][0]
    probe = container["readinessProbe"]["exec"]["command"]  # the chart's own probe: pg_isready on PATH

    def ready() -> bool:
        return containers.docker.run("exec", names["postgres"], *probe, check=False).returncode == 0

    wait_until(ready, 90, f"PostgreSQL image readiness probe ({' '.join(probe)})")
    dsn = _connection(chart, "postgresDsn")
    result = containers.client(names["postgres"], PG_CLIENT, dsn, dsn.replace(PG_PASSWORD, "wrong"))
    assert result == {"user": "stoa", "db": "stoa", "body": "hello", "refused": True}
    assert containers.stop(names["postgres"]) == 0  # SIGINT (the image's STOPSIGNAL): a fast, clean shutdown


# ---- the model ------------------------------------------------------------------------------------------
MODEL_CLIENT = """
import json, sys, time, urllib.request

base = "http://127.0.0.1:" + sys.argv[1]
deadline = time.monotonic() + 120
while True:
    try:
        with urllib.request.urlopen(base + "/v1/models", timeout=5) as response:
            models = [m["id"] for m in json.load(response)["data"]]
            break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.5)
request = urllib.request.Request(
    base + "/v1/chat/completions",
    data=json.dumps({"model": "smollm2-135m", "max_tokens": 12, "temperature": 0,
                     "messages": [{"role": "user", "content": "Say hello."}]}).encode(),
    headers={"Content-Type": "application/json"},
)
with urllib.request.urlopen(request, timeout=120) as response:
    body = json.load(response)
print(json.dumps({"models": models, "content": body["choices"][0]["message"]["content"],
                  "completion_tokens": body["usage"]["completion_tokens"]}))
"""


def test_model_image_answers_a_chat_completion(
    servers: tuple[Containers, dict[str, str]], chart: list[dict[str, Any]]
) -> None:
    containers, names = servers
    port = _deployment(chart, "model")["spec"]["template"]["spec"]["containers"][0]["ports"][0][
        "containerPort"
    ]
    result = containers.client(names["model"], MODEL_CLIENT, str(port))
    assert result["models"] == ["smollm2-135m"]
    assert result["content"].strip()
    assert result["completion_tokens"] > 0


# ---- the node's pause image ---------------------------------------------------------------------------
@pytest.mark.parametrize("signal", ["TERM", "INT"])
def test_pause_image_exits_0_on_sigterm_and_sigint(
    containers: Containers, images: dict[str, ImageRef], signal: str
) -> None:
    ref = _loaded(containers.docker, images["pause"])
    config = json.loads(containers.docker.run("image", "inspect", ref).stdout)[0]["Config"]
    assert config["Entrypoint"] == ["/pause"]
    assert config["User"] == "65535:65535"
    assert images["pause"].size < 2_000_000  # one static binary FROM scratch
    name = containers.start(["--read-only", "--cap-drop", "ALL", ref])
    started = time.monotonic()
    containers.docker.run("kill", "--signal", signal, name)
    assert int(containers.docker.run("wait", name).stdout.strip()) == 0
    assert time.monotonic() - started < 5


# ---- loading into a containerd ------------------------------------------------------------------------
def _ctr(socket: Path, *args: str) -> str:
    return subprocess.run(
        ["ctr", "--address", str(socket), "-n", "k8s.io", *args], capture_output=True, text=True, check=True
    ).stdout


def test_load_into_containerd_imports_once_and_repairs_a_changed_tag(
    containerd: Path, images: dict[str, ImageRef]
) -> None:
    pause = images["pause"]
    assert load_into_containerd(containerd, [pause], aliases={"pause": ["registry.k8s.io/pause:3.10"]}) == [
        pause.ref
    ]
    listed = _ctr(containerd, "images", "ls")
    assert pause.ref in listed
    assert "registry.k8s.io/pause:3.10" in listed
    assert load_into_containerd(containerd, [pause]) == []  # same image id: nothing to do
    # The tag now names another image: loading puts the right one back.
    other = ensure_images(["debian-base"])["debian-base"]
    load_into_containerd(containerd, [other])
    _ctr(containerd, "images", "tag", "--force", other.ref, pause.ref)
    assert load_into_containerd(containerd, [pause]) == [pause.ref]
    assert present_image_ids(str(containerd))[pause.ref] == pause.image_id
