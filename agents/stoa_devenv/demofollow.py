"""``stoa dev demo``: apply examples/debate/ to a cluster and follow the Conversation until it ends.

Run it again and it debates again: a Conversation of the same name left by an earlier run is deleted first
(its transcript is kept, archived as ``<namespace>/<name>@<uid8>``: docs/operator.md "Conversations and the
deletion policy"). The ModelPolicy points at the bundled model of ``--release-namespace``. Turns are
printed as they are stored, read from the bundled PostgreSQL with ``kubectl exec`` (any cluster where
``make deploy`` installed bundled mode); with your own database only the status is followed. Exits 0 when
the Conversation Succeeds, 1 with its reason when it fails, 2 on timeout.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from stoa_devenv import state
from stoa_devenv.tools import REPO_ROOT, kubectl_binary

EXAMPLES = REPO_ROOT / "examples" / "debate"
MODEL_SERVICE = "stoa-model"  # the chart's bundled model, the examples' ModelPolicy target
HOPELESS = ("InvalidSpec", "RoleConflict")  # Ready reasons no waiting will clear: fail at once
TURNS_QUERY = (
    "SELECT t.seq, t.speaker, replace(t.content, E'\\n', ' ') FROM stoa.turns t "
    "WHERE t.conversation_id = '{uid}' AND t.seq > {after} ORDER BY t.seq"
)


def add_parser(dev_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = dev_sub.add_parser("demo", help="apply examples/debate/ to a cluster and follow the conversation")
    demo.add_argument("--namespace", default="default", help="where the example goes (default: default)")
    demo.add_argument("--release-namespace", default="stoa-system", help="where Stoa is installed")
    demo.add_argument("--timeout", type=float, default=900, help="seconds to wait for the end (default 900)")
    demo.add_argument("--rounds", type=int, help="debate rounds (default: the example's maxRounds)")
    demo.set_defaults(func=run)


class Kubectl:
    def __init__(self) -> None:
        cluster = state.load("cluster")
        self.base = [str(kubectl_binary())]
        if not os.environ.get("KUBECONFIG") and cluster:
            self.base += ["--kubeconfig", str(cluster["kubeconfig"])]

    def __call__(self, *args: str, check: bool = True, stdin: str | None = None) -> str:
        result = subprocess.run([*self.base, *args], input=stdin, capture_output=True, text=True, check=False)
        if check and result.returncode != 0:
            raise SystemExit(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def json(self, *args: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self(*args, "-o", "json"))
        return data


def _postgres_pod(kubectl: Kubectl, namespace: str) -> str | None:
    pods = kubectl.json("get", "pods", "-n", namespace, "-l", "app.kubernetes.io/component=postgres")["items"]
    running = [p["metadata"]["name"] for p in pods if p.get("status", {}).get("phase") == "Running"]
    return running[0] if running else None


def _new_turns(
    kubectl: Kubectl, release_ns: str, pod: str, uid: str, after: int
) -> list[tuple[int, str, str]]:
    env = kubectl.json("get", "pod", pod, "-n", release_ns)["spec"]["containers"][0].get("env", [])
    names = {e["name"]: e.get("value", "") for e in env}
    user, database = names.get("POSTGRES_USER", "stoa"), names.get("POSTGRES_DB", "stoa")
    query = TURNS_QUERY.format(uid=uid, after=after)
    out = kubectl(
        "exec", "-n", release_ns, pod, "--",
        "psql", "-At", "-F", "\t", "-U", user, "-d", database, "-c", query, check=False,
    )  # fmt: skip
    turns = []
    for line in out.splitlines():
        seq, speaker, content = [*line.split("\t", 2), "", ""][:3]
        if seq.isdigit():
            turns.append((int(seq), speaker, content))
    return turns


def example_docs(release_namespace: str, rounds: int | None) -> list[dict[str, Any]]:
    """examples/debate/ as this demo applies it: the model in ``release_namespace``, ``rounds`` if given."""
    docs: list[dict[str, Any]] = []
    for path in sorted(Path(EXAMPLES).glob("*.yaml")):
        text = path.read_text().replace(
            f"{MODEL_SERVICE}.stoa-system.svc", f"{MODEL_SERVICE}.{release_namespace}.svc"
        )
        docs += [d for d in yaml.safe_load_all(text) if d]
    for doc in docs:
        if doc["kind"] == "Conversation" and rounds is not None:
            doc["spec"]["maxRounds"] = rounds
    return docs


def run(args: argparse.Namespace) -> int:
    kubectl = Kubectl()
    docs = example_docs(args.release_namespace, args.rounds)
    name = next(str(d["metadata"]["name"]) for d in docs if d["kind"] == "Conversation")
    earlier = kubectl(
        "get", "conversations.stoa.dev", name, "-n", args.namespace, "--ignore-not-found", "-o", "json"
    )
    if earlier.strip():
        uid = str(json.loads(earlier)["metadata"]["uid"])
        print(f"+ kubectl delete conversation {name} -n {args.namespace}   # the last run's", flush=True)
        kubectl("delete", "conversations.stoa.dev", name, "-n", args.namespace, "--timeout=120s")
        print(f"  its transcript is kept as {args.namespace}/{name}@{uid.replace('-', '')[:8]}", flush=True)
    print(f"+ kubectl apply -n {args.namespace} -f {EXAMPLES.relative_to(REPO_ROOT)}/", flush=True)
    print(
        kubectl("apply", "-n", args.namespace, "-f", "-", stdin=yaml.safe_dump_all(docs)), end="", flush=True
    )
    deadline = time.monotonic() + args.timeout
    shown, last_phase = 0, ("", "")
    pod = _postgres_pod(kubectl, args.release_namespace)
    if pod is None:
        print(f"No bundled PostgreSQL in {args.release_namespace}: following status only", flush=True)
    while time.monotonic() < deadline:
        conversation = kubectl.json("get", "conversations.stoa.dev", name, "-n", args.namespace)
        status = conversation.get("status") or {}
        phase = str(status.get("phase") or "Pending")
        if pod is not None:
            for seq, speaker, content in _new_turns(
                kubectl, args.release_namespace, pod, conversation["metadata"]["uid"], shown
            ):
                print(f"[{seq:>2}] {speaker}: {content}", flush=True)
                shown = seq
        ready_now: dict[str, Any] = next(
            (c for c in status.get("conditions", []) if c["type"] == "Ready"), {}
        )
        why = f"{ready_now.get('reason', '')}: {ready_now.get('message', '')}" if ready_now else ""
        if (phase, why) != last_phase:
            print(
                f"Conversation {args.namespace}/{name}: {phase} (turns {status.get('turns', 0)}) {why}",
                flush=True,
            )
            last_phase = (phase, why)
        if ready_now.get("reason") in HOPELESS:
            print(f"Failed: {why} (kubectl describe conversation {name} -n {args.namespace})")
            return 1
        if phase == "Succeeded":
            ready: dict[str, Any] = next(
                (c for c in status.get("conditions", []) if c["type"] == "Ready"), {}
            )
            print(f"Succeeded after {status.get('turns')} turns: {ready.get('message', '')}")
            return 0
        if phase == "Failed":
            print(f"Failed: {status.get('failureReason') or status.get('conditions')}")
            return 1
        time.sleep(2)
    print(f"Timed out after {args.timeout:.0f}s; kubectl get stoa -n {args.namespace}:")
    print(kubectl("get", "stoa", "-n", args.namespace, check=False))
    return 2
