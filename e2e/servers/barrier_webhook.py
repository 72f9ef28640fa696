#!/usr/bin/env python3
"""A validating admission webhook that allows everything, but holds the first two reviews that add
an approval decision until both have arrived (at most 10 s): two writes that reach it are then in flight on the same version
of an object at once, and the API server must commit one and make the other fail or retry.
Later reviews pass at once. GET /held says how many reviews met at the barrier.

    python3 e2e/servers/barrier_webhook.py PORT CERT KEY
"""

import json
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Condition()
ARRIVED = 0
MET = 0


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        with LOCK:
            body = json.dumps({"met": MET, "arrived": ARRIVED}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        global ARRIVED, MET
        review = json.loads(self.rfile.read(int(self.headers.get("content-length", "0"))))
        deciding = bool(((review["request"].get("object") or {}).get("status") or {}).get("decisions"))
        with LOCK:
            ARRIVED += deciding
            if deciding and ARRIVED <= 2:
                LOCK.notify_all()
                if LOCK.wait_for(lambda: ARRIVED >= 2, timeout=10):
                    MET += 1
        answer = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                  "response": {"uid": review["request"]["uid"], "allowed": True}}
        body = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main() -> None:
    port, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    print("listening", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
