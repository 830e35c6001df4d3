"""The test bed's network: one bridge for pods and the node, and firewall rules that keep every packet on
this machine.

Addresses are fixed (one node per machine, guarded by a lock): pods get 10.244.0.0/24 on the bridge
``stoa0``, whose address 10.244.0.1 is the node's InternalIP and where the API server and cluster DNS
listen; Services get 10.96.0.0/24. Only our own chains (``STOA-*``) are created; kube-proxy's ``KUBE-*``
chains are removed with ``kube-proxy --cleanup`` and a sweep of what is left (see ``sweep_kube_chains``).

Guards (inserted before any ClusterIP exists, so nothing can leak while kube-proxy starts):
- forward: a packet from the bridge to any other interface, or from another interface into the bridge,
  is rejected; a packet to the Service CIDR that kube-proxy did not DNAT is rejected;
- output: the host's packets to a Service address that was not DNATed are rejected;
- the Service CIDR is routed to the bridge, so even an unmatched ClusterIP never reaches the default route;
- forwarding is enabled for the bridge only (``net.ipv4.conf.stoa0.forwarding``), never host-wide, and no
  masquerading to the outside is configured (the CNI bridge has ``ipMasq: false``).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from stoa_devenv.errors import ComponentFailedError, ComponentMissingError

BRIDGE = "stoa0"
POD_CIDR = "10.244.0.0/24"
NODE_IP = "10.244.0.1"
SERVICE_CIDR = "10.96.0.0/24"
API_SERVICE_IP = "10.96.0.1"
DNS_SERVICE_IP = "10.96.0.10"
CHAIN_PREFIXES = ("STOA-", "KUBE-")
IPTABLES_TABLES = ("filter", "nat", "mangle")


@dataclass(frozen=True)
class Rule:
    """``iptables -t <table> -A <chain> <args>``."""

    table: str
    chain: str
    args: tuple[str, ...]


def guard_chains() -> dict[str, list[Rule]]:
    """Our chains (name -> rules, in order), all in the filter table (pure)."""
    forward = "STOA-FORWARD"
    output = "STOA-OUTPUT"
    return {
        forward: [
            Rule("filter", forward, ("-d", SERVICE_CIDR, "-j", "REJECT")),
            Rule("filter", forward, ("-i", BRIDGE, "!", "-o", BRIDGE, "-j", "REJECT")),
            Rule("filter", forward, ("!", "-i", BRIDGE, "-o", BRIDGE, "-j", "REJECT")),
            # Hosts whose FORWARD policy is DROP (Docker sets it) still route pod -> Service -> pod.
            Rule("filter", forward, ("-i", BRIDGE, "-o", BRIDGE, "-j", "ACCEPT")),
        ],
        output: [Rule("filter", output, ("-d", SERVICE_CIDR, "-j", "REJECT"))],
    }


GUARD_JUMPS = (
    Rule("filter", "FORWARD", ("-j", "STOA-FORWARD")),
    Rule("filter", "OUTPUT", ("-j", "STOA-OUTPUT")),
)


def jumps_to_delete(listing: str, prefixes: tuple[str, ...] = CHAIN_PREFIXES) -> list[list[str]]:
    """From ``iptables -S`` output: the ``-D`` argument lists of rules in built-in chains that jump to one
    of our chains (pure)."""
    deletes = []
    for line in listing.splitlines():
        parts = line.split()
        if len(parts) < 2 or parts[0] != "-A" or parts[1].startswith(prefixes):
            continue
        if "-j" in parts and parts[parts.index("-j") + 1].startswith(prefixes):
            deletes.append(["-D", *parts[1:]])
    return deletes


def chains_to_delete(listing: str, prefixes: tuple[str, ...] = CHAIN_PREFIXES) -> list[str]:
    """From ``iptables -S`` output: the user chains of ours (pure)."""
    return [
        line.split()[1]
        for line in listing.splitlines()
        if line.startswith("-N ") and line.split()[1].startswith(prefixes)
    ]


def _run(cmd: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise ComponentFailedError(
            f"{' '.join(cmd)} failed: {result.stderr.strip() or result.stdout.strip()}"
        )
    return result


def _iptables_binaries() -> list[str]:
    return [b for b in ("iptables", "ip6tables") if shutil.which(b)]


def require_tools() -> None:
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            raise ComponentMissingError(f"{tool} not found: apt-get install -y iproute2 iptables")


def bridge_exists() -> bool:
    return Path(f"/sys/class/net/{BRIDGE}").exists()


def up() -> None:
    """Create the bridge, its routes and the guard chains (idempotent)."""
    require_tools()
    install_guards()
    if not bridge_exists():
        _run(["ip", "link", "add", BRIDGE, "type", "bridge"])
    prefix = POD_CIDR.split("/")[1]
    addrs = _run(["ip", "-4", "-o", "addr", "show", "dev", BRIDGE]).stdout
    if f"{NODE_IP}/{prefix}" not in addrs:
        _run(["ip", "addr", "add", f"{NODE_IP}/{prefix}", "dev", BRIDGE])
    _write_sysctl(f"/proc/sys/net/ipv6/conf/{BRIDGE}/disable_ipv6", "1")
    _run(["ip", "link", "set", BRIDGE, "up"])
    _write_sysctl(f"/proc/sys/net/ipv4/conf/{BRIDGE}/forwarding", "1")
    _run(["ip", "route", "replace", SERVICE_CIDR, "dev", BRIDGE, "src", NODE_IP])


def _write_sysctl(path: str, value: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        Path(path).write_text(value)


def install_guards() -> None:
    """Our chains with their rules, and a jump to each at the top of its built-in chain (re-run after
    kube-proxy has inserted its own jumps, so ours stay first)."""
    for chain, rules in guard_chains().items():
        if _run(["iptables", "-t", "filter", "-n", "-L", chain], check=False).returncode != 0:
            _run(["iptables", "-t", "filter", "-N", chain])
        _run(["iptables", "-t", "filter", "-F", chain])
        for rule in rules:
            _run(["iptables", "-t", rule.table, "-A", rule.chain, *rule.args])
    for jump in GUARD_JUMPS:
        while _run(["iptables", "-t", jump.table, "-D", jump.chain, *jump.args], check=False).returncode == 0:
            pass
        _run(["iptables", "-t", jump.table, "-I", jump.chain, "1", *jump.args])


def sweep_chains(prefixes: tuple[str, ...] = CHAIN_PREFIXES) -> None:
    """Remove every jump to, and every chain named with, one of ``prefixes`` in iptables and ip6tables.
    Only test-bed chains carry these names (``up`` refuses to run beside another kube-proxy)."""
    for binary in _iptables_binaries():
        for table in IPTABLES_TABLES:
            listing = _run([binary, "-t", table, "-S"], check=False).stdout
            for delete in jumps_to_delete(listing, prefixes):
                _run([binary, "-t", table, *delete], check=False)
            chains = chains_to_delete(listing, prefixes)
            for chain in chains:
                _run([binary, "-t", table, "-F", chain], check=False)
            for chain in chains:
                _run([binary, "-t", table, "-X", chain], check=False)


def leftover_rules() -> int:
    """How many rules or chains of the test bed are still installed (0 after ``down``)."""
    count = 0
    for binary in _iptables_binaries():
        for table in IPTABLES_TABLES:
            listing = _run([binary, "-t", table, "-S"], check=False).stdout
            count += sum(1 for line in listing.splitlines() if any(p in line for p in CHAIN_PREFIXES))
    return count


def down() -> None:
    """Remove the guard chains, any KUBE-* chain left behind, and the bridge (with its route)."""
    sweep_chains()
    if bridge_exists():
        _run(["ip", "link", "delete", BRIDGE], check=False)
