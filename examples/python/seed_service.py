# The seed README's minimal DEALER service ("Writing a new service"), verbatim
# except the connect line, which reads SMARTSHOP_ENDPOINT so tests can point it
# at a test port (default: the seed's tcp://127.0.0.1:5555).
import os
import zmq
from core.message import build_message, loads, dumps

context = zmq.Context.instance()
socket = context.socket(zmq.DEALER)
socket.identity = b"your-service-name"
socket.connect(os.environ.get("SMARTSHOP_ENDPOINT", "tcp://127.0.0.1:5555"))

reg = build_message("register", "your-service-name", "broker", "register")
socket.send(dumps(reg))

while True:
    frames = socket.recv_multipart()
    msg = loads(frames[-1])
    print("Got:", msg)
