"""A TCP proxy in front of a server, for tests that take the server away and bring it back."""
import socket

import gevent
from gevent.server import StreamServer


class Proxy:
    def __init__(self, target):
        self.target = target
        self.port = None
        self.server = None
        self.pipes = set()

    def start(self):
        self.server = StreamServer(("127.0.0.1", self.port or 0), self._handle)  # reuses the port
        self.server.start()
        self.port = self.server.server_port
        return self

    def stop(self):
        """Refuse new connections and cut every open one, as a server that died would."""
        self.server.stop(timeout=0)
        gevent.killall(list(self.pipes))
        self.pipes.clear()

    def _handle(self, client, _address):
        try:
            upstream = socket.create_connection(self.target)
        except OSError:
            client.close()
            return
        pair = [gevent.spawn(self._pump, client, upstream),
                gevent.spawn(self._pump, upstream, client)]
        self.pipes.update(pair)
        gevent.joinall(pair, count=1)
        gevent.killall(pair)
        self.pipes.difference_update(pair)
        client.close()
        upstream.close()

    @staticmethod
    def _pump(source, sink):
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    return
                sink.sendall(data)
        except OSError:
            return
