"""The test bed's pure parts: guard rules, iptables sweeps, containerd/CNI/kubelet/kube-proxy/CoreDNS."""

from __future__ import annotations

import tomllib
from pathlib import Path

from stoa_devenv import netbed
from stoa_devenv.containerd import ContainerdPaths, cni_conflist, containerd_config, proxy_env
from stoa_devenv.node import corefile, dns_objects, kube_proxy_config, kubelet_config

LISTING = """-P INPUT ACCEPT
-P FORWARD ACCEPT
-N DOCKER-USER
-N KUBE-FORWARD
-N STOA-FORWARD
-A FORWARD -j STOA-FORWARD
-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
-A FORWARD -j DOCKER-USER
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
-A STOA-FORWARD -d 10.96.0.0/24 -j REJECT
"""


def test_guards_reject_leaving_and_unrouted_service_traffic() -> None:
    chains = netbed.guard_chains()
    forward = [rule.args for rule in chains["STOA-FORWARD"]]
    assert forward[0] == ("-d", netbed.SERVICE_CIDR, "-j", "REJECT")
    assert ("-i", netbed.BRIDGE, "!", "-o", netbed.BRIDGE, "-j", "REJECT") in forward
    assert ("!", "-i", netbed.BRIDGE, "-o", netbed.BRIDGE, "-j", "REJECT") in forward
    assert forward[-1] == ("-i", netbed.BRIDGE, "-o", netbed.BRIDGE, "-j", "ACCEPT")
    assert [rule.args for rule in chains["STOA-OUTPUT"]] == [("-d", netbed.SERVICE_CIDR, "-j", "REJECT")]
    assert not any("MASQUERADE" in rule.args for rules in chains.values() for rule in rules)


def test_sweep_removes_only_our_jumps_and_chains() -> None:
    assert netbed.jumps_to_delete(LISTING) == [
        ["-D", "FORWARD", "-j", "STOA-FORWARD"],
        [
            "-D",
            "FORWARD",
            "-m",
            "comment",
            "--comment",
            '"kubernetes',
            "forwarding",
            'rules"',
            "-j",
            "KUBE-FORWARD",
        ],
    ]
    assert netbed.chains_to_delete(LISTING) == ["KUBE-FORWARD", "STOA-FORWARD"]


def _paths(tmp_path: Path) -> ContainerdPaths:
    return ContainerdPaths(tmp_path / "root", tmp_path / "state", tmp_path / "net.d", tmp_path / "ipam")


def test_containerd_config_is_valid_toml_with_the_settings_this_machine_needs(tmp_path: Path) -> None:
    config = tomllib.loads(containerd_config(_paths(tmp_path), "stoa.local/pause:1"))
    cri = config["plugins"]["io.containerd.grpc.v1.cri"]
    assert config["root"] == str(tmp_path / "root")
    assert config["grpc"]["address"] == str(tmp_path / "state" / "containerd.sock")
    assert cri["restrict_oom_score_adj"] is True
    assert cri["netns_mounts_under_state_dir"] is True
    assert cri["sandbox_image"] == "stoa.local/pause:1"
    assert cri["cni"]["conf_dir"] == str(tmp_path / "net.d")
    assert cri["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is False
    assert set(proxy_env().values()) <= {"http://127.0.0.1:9", ""}


def test_cni_uses_the_bridge_without_masquerade(tmp_path: Path) -> None:
    bridge = cni_conflist(tmp_path)["plugins"][0]  # type: ignore[index]
    assert bridge["bridge"] == netbed.BRIDGE
    assert bridge["ipMasq"] is False
    assert bridge["ipam"]["ranges"] == [[{"subnet": netbed.POD_CIDR, "gateway": netbed.NODE_IP}]]


def test_kubelet_and_kube_proxy_stay_inside_the_test_bed(tmp_path: Path) -> None:
    kubelet = kubelet_config(tmp_path, tmp_path / "c.sock", 12345, tmp_path / "ca.crt")
    assert kubelet["cgroupDriver"] == "cgroupfs"
    assert kubelet["failCgroupV1"] is False
    assert kubelet["authentication"]["anonymous"]["enabled"] is False
    assert kubelet["authorization"]["mode"] == "Webhook"
    assert kubelet["podLogsDir"].startswith(str(tmp_path))
    assert kubelet["resolvConf"].startswith(str(tmp_path))
    assert kubelet["makeIPTablesUtilChains"] is False
    proxy = kube_proxy_config(tmp_path / "k", 1, 2)
    assert proxy["mode"] == "iptables"
    assert proxy["nodePortAddresses"] == [f"{netbed.NODE_IP}/32"]
    assert proxy["conntrack"]["maxPerCore"] == 0
    assert proxy["iptables"]["localhostNodePorts"] is False


def test_cluster_dns_answers_cluster_names_only(tmp_path: Path) -> None:
    text = corefile(tmp_path / "k", 5353)
    assert "forward" not in text
    assert "kubernetes cluster.local" in text
    assert "rcode NXDOMAIN" in text
    service = next(o for o in dns_objects() if o["kind"] == "Service")
    assert service["spec"]["clusterIP"] == netbed.DNS_SERVICE_IP
    assert "selector" not in service["spec"]
