#!/usr/bin/env python3
"""A TCP relay that counts the bytes a server sends to its clients (protocol included), for
measuring what a comparison reads over the network.

    count_proxy.py LISTEN_PORT TARGET_PORT COUNT_FILE

Relays 127.0.0.1:LISTEN_PORT to 127.0.0.1:TARGET_PORT until SIGTERM, then writes the total
number of bytes sent by the server, over all connections, to COUNT_FILE.
"""
import signal
import socket
import sys
import threading

listen_port, target_port, count_file = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
total = 0
lock = threading.Lock()


def pump(src, dst, count):
    global total
    try:
        while True:
            data = src.recv(1 << 16)
            if not data:
                break
            dst.sendall(data)
            if count:
                with lock:
                    total += len(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def finish(*_):
    with open(count_file, "w") as f:
        f.write(str(total))
    sys.exit(0)


signal.signal(signal.SIGTERM, finish)
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", listen_port))
server.listen(64)
while True:
    client, _ = server.accept()
    upstream = socket.create_connection(("127.0.0.1", target_port))
    threading.Thread(target=pump, args=(client, upstream, False), daemon=True).start()
    threading.Thread(target=pump, args=(upstream, client, True), daemon=True).start()
