"""A small Flask app that tests put behind httpbus bridge (internal/webapp)."""
import hashlib
import json
import threading
import time

from flask import Flask, Response, request

app = Flask(__name__)
_gates = {}
_gates_lock = threading.Lock()


def _gate(name):
    with _gates_lock:
        return _gates.setdefault(name, threading.Event())


@app.route("/ping")
def ping():
    return "pong\n"


@app.route("/echo", methods=["GET", "POST", "PUT", "DELETE", "PATCH", "NOTIFY"])
@app.route("/echo/<path:rest>", methods=["GET", "POST", "PUT", "DELETE", "PATCH", "NOTIFY"])
def echo(rest=""):
    body = request.get_data()
    out = {
        "method": request.method,
        "path": request.path,
        "query": request.query_string.decode(),
        "host": request.host,
        "headers": {k: v for k, v in request.headers.items()},
        "body_len": len(body),
        "body_sha256": hashlib.sha256(body).hexdigest(),
        "json": request.get_json(silent=True),
    }
    return Response(json.dumps(out), mimetype="application/json")


@app.route("/status/<int:code>")
def status(code):
    return Response("status %d\n" % code, status=code, mimetype="text/plain")


@app.route("/sleep")
def sleep():
    time.sleep(int(request.args.get("ms", "1000")) / 1000.0)
    return "slept\n"


@app.route("/bytes")
def nbytes():
    n = int(request.args.get("n", "0"))
    pattern = bytes(range(256))
    data = (pattern * (n // 256 + 1))[:n]
    return Response(data, mimetype="application/octet-stream")


@app.route("/release/<name>", methods=["POST"])
def release(name):
    _gate(name).set()
    return "released\n"


@app.route("/events/<name>")
def events(name):
    """Sends event 0, waits (up to 10 s) for POST /release/<name>, sends event 1."""
    def gen():
        yield "data: 0\n\n"
        _gate(name).wait(10)
        yield "data: 1\n\n"
    return Response(gen(), mimetype="text/event-stream", headers={"Cache-Control": "no-cache"})


@app.route("/hold/<name>", methods=["GET", "POST"])
def hold(name):
    """Marks NAME arrived, waits (up to 20 s) for POST /release/<name>."""
    _gate("arrived-" + name).set()
    if _gate(name).wait(20):
        return "released\n"
    return Response("not released\n", status=500)


@app.route("/arrived/<name>")
def arrived(name):
    """Waits (up to 10 s) until a request to /hold/<name> has arrived."""
    if _gate("arrived-" + name).wait(10):
        return "arrived\n"
    return Response("not arrived\n", status=504)
