"""Loopback TCP proxies standing in for ClusterIP Services (see :mod:`tests.e2e.nodeagent.services`).

One listening socket on 127.0.0.1 per Service port, kept for the node agent's lifetime (containers were
started with its port in their env). Each accepted connection goes to the next backend host port (round
robin), trying the others when one refuses; with no backend the connection is closed at once, as a
Service without endpoints rejects connections.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterable

from tests.e2e.kube import JSON
from tests.e2e.nodeagent.services import Backend, ServiceKey, backend_ports

CONNECT_TIMEOUT = 2.0
BUFFER = 65536


class TcpProxy:
    def __init__(self, key: ServiceKey) -> None:
        self.key = key
        self.backends: list[int] = []
        self.connections = 0
        self._next = 0
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._closed = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.5)
        self.port = int(self._listener.getsockname()[1])
        self._thread = threading.Thread(target=self._accept_loop, name=f"proxy-{key}", daemon=True)
        self._thread.start()

    def set_backends(self, ports: list[int]) -> None:
        with self._lock:
            self.backends = list(ports)

    def _candidates(self) -> list[int]:
        with self._lock:
            ports = list(self.backends)
            if not ports:
                return []
            start = self._next % len(ports)
            self._next += 1
        return ports[start:] + ports[:start]

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        for port in self._candidates():
            try:
                upstream = socket.create_connection(("127.0.0.1", port), timeout=CONNECT_TIMEOUT)
                break
            except OSError:
                continue
        if upstream is None:
            client.close()
            return
        upstream.settimeout(None)
        with self._lock:
            self.connections += 1
            self._open.update((client, upstream))
        done = threading.Barrier(2, action=lambda: self._forget(client, upstream))
        for source, sink in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(source, sink, done), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, done: threading.Barrier) -> None:
        try:
            while True:
                data = source.recv(BUFFER)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)
            with contextlib.suppress(threading.BrokenBarrierError):
                done.wait()

    def _forget(self, *sockets: socket.socket) -> None:
        with self._lock:
            for sock in sockets:
                self._open.discard(sock)
                sock.close()

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        with self._lock:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._open.clear()
        self._thread.join(timeout=2)


class ServiceProxies:
    """Every Service proxy of one node agent, with the Services it last listed."""

    def __init__(self) -> None:
        self.proxies: dict[ServiceKey, TcpProxy] = {}
        self.services: dict[tuple[str, str], JSON] = {}
        self._lock = threading.Lock()

    def known(self) -> set[tuple[str, str]]:
        with self._lock:
            return set(self.services)

    def port_for(self, key: ServiceKey) -> int:
        """The proxy port of a Service port, started on first use (the Service may not exist yet)."""
        with self._lock:
            proxy = self.proxies.get(key)
            if proxy is None:
                proxy = self.proxies[key] = TcpProxy(key)
            return proxy.port

    def update_services(self, services: Iterable[JSON]) -> None:
        """Take the Services just listed (the ones that exist now)."""
        with self._lock:
            self.services = {(s["metadata"]["namespace"], s["metadata"]["name"]): s for s in services}

    def update_backends(self, backends: list[Backend]) -> None:
        """Point every proxy at the current backends of its Service port (the node's pods)."""
        with self._lock:
            proxies = list(self.proxies.items())
            services = dict(self.services)
        for key, proxy in proxies:
            proxy.set_backends(backend_ports(services.get((key.namespace, key.name)), key.port, backends))

    def describe(self) -> list[str]:
        with self._lock:
            return [
                f"service {key} -> 127.0.0.1:{p.port} backends={p.backends} connections={p.connections}"
                for key, p in sorted(self.proxies.items())
            ]

    def close(self) -> None:
        with self._lock:
            proxies = list(self.proxies.values())
            self.proxies.clear()
        for proxy in proxies:
            proxy.close()
