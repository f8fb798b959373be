"""A TCP proxy a test can switch to "hang" or "reset", to cut a shared server off from one app.

Fault tests never stop the PostgreSQL or Redis other engineers use: the app under test is
pointed at this proxy instead::

    with FaultProxy(upstream=("127.0.0.1", 5432)) as proxy:
        url = f"postgres://postgres@127.0.0.1:{proxy.port}/test_db"
        proxy.hang()          # connections stay open, nothing is forwarded (a SIGSTOPped server)
        proxy.reset()         # open connections are reset, new ones refused (a crashed server)
        proxy.pass_through()  # back to normal

Threads only (stdlib), so it works next to any event loop.
"""

from __future__ import annotations

import select
import socket
import struct
import threading
import time

PASS, HANG, RESET = "pass", "hang", "reset"


class FaultProxy:
    def __init__(self, *, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.mode = PASS
        self.port = 0
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._closed = False

    # --- control ---------------------------------------------------------------------------

    def hang(self) -> None:
        self.mode = HANG

    def reset(self) -> None:
        """Reset every open connection and refuse new ones (the port stops listening)."""
        with self._lock:
            self.mode = RESET
            listener, self._listener = self._listener, None
            doomed, self._sockets = self._sockets, set()
        if listener is not None:
            listener.close()
        for sock in doomed:
            _abort(sock)

    def pass_through(self) -> None:
        with self._lock:
            self.mode = PASS
            if self._listener is None and not self._closed:
                self._listen()

    # --- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> FaultProxy:
        with self._lock:
            self._listen()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._closed = True
            listener, self._listener = self._listener, None
            doomed, self._sockets = self._sockets, set()
        if listener is not None:
            listener.close()
        for sock in doomed:
            _abort(sock)
        for thread in self._threads:
            thread.join(timeout=2)

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._start(self._accept_loop, listener)

    def _start(self, target, *args) -> None:  # type: ignore[no-untyped-def]
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed by reset() or __exit__
            with self._lock:
                if self.mode == RESET or self._closed:
                    _abort(client)
                    continue
                self._sockets.add(client)
            # In "hang" the client is accepted (the kernel would do that for a stopped
            # server too) and its bytes wait: the pump forwards nothing while hanging.
            self._start(self._connect_and_pump, client)

    def _connect_and_pump(self, client: socket.socket) -> None:
        while self.mode == HANG and not self._closed:
            time.sleep(0.05)
        try:
            server = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            _abort(client)
            return
        with self._lock:
            if self.mode == RESET or self._closed or client not in self._sockets:
                _abort(client)
                _abort(server)
                return
            self._sockets.add(server)
        self._start(self._pump, client, server)
        self._pump(server, client)

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        while True:
            if self._closed:
                break
            if self.mode == HANG:
                time.sleep(0.05)
                continue
            try:
                ready = _readable(source, 0.05)
                if ready is None:
                    break  # closed by reset() or __exit__
                if not ready:
                    continue
                data = source.recv(65536)
                if not data:
                    break
                target.sendall(data)
            except OSError:
                break
        for sock in (source, target):
            with self._lock:
                self._sockets.discard(sock)
            _abort(sock)


def _readable(sock: socket.socket, timeout: float) -> bool | None:
    """Whether ``sock`` has data (or EOF) within ``timeout``; None once it is closed."""
    try:
        readable, _, _ = select.select([sock], [], [], timeout)
    except (OSError, ValueError):
        return None
    return bool(readable)


def _abort(sock: socket.socket) -> None:
    """Close with a TCP reset (SO_LINGER 0), as a crashed server's kernel would."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass
