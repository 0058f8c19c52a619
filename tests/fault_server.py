"""A fault-injecting chat-completions server on 127.0.0.1 (a test harness, never a product default).

Each request for a model takes the next fault scripted for that model (then "ok"):
  ok            200 with an answer naming the model and seed (streamed as SSE when asked)
  delay:S       wait S seconds, then ok
  429 / 429:S   429, with ``Retry-After: S`` when S is given
  500 502 503   that status with an error body
  hang          never answer (until the server stops)
  cut           stream: send two chunks, then drop the connection; plain: promise a body, send half
  stall         stream: send two chunks, then nothing more (until the server stops)
  malformed     200 with a body that is not JSON (stream: an event whose data is not JSON)
  blank         200 with an empty body (stream: no events at all)
  empty         200 with an answer whose content is empty
  echo-auth     401 whose error message repeats the request's Authorization header
Every request body is kept in ``requests`` (its arrival time, ``time.monotonic()``, in ``arrivals``);
``active``/``peak`` count concurrent requests. ``POST /_script``, ``GET /_stats`` and ``POST /_reset`` do the
same from another process (``python tests/fault_server.py --latency S`` serves in its own process and prints
its URL; the benchmarks use it so that the server does not share the client's interpreter).
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


SSE = "text/event-stream"


class _Server(ThreadingHTTPServer):
    request_queue_size = 256  # the listen backlog (socketserver's default is 5: a burst of connections would be
    # dropped and retried by the client's kernel 1 s later, and counted against the client)


class FaultServer:
    def __init__(self, latency: float = 0.0) -> None:
        self.latency = latency
        self.plan: dict[str, deque[str]] = defaultdict(deque)
        self.requests: list[dict] = []
        self.arrivals: list[float] = []
        self.active = self.peak = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.httpd = _Server(("127.0.0.1", 0), _handler(self))
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def script(self, model: str, *faults: str) -> "FaultServer":
        self.plan[model].extend(faults)
        return self

    def calls_to(self, model: str) -> list[dict]:
        return [r for r in self.requests if r.get("model") == model]

    def __enter__(self) -> "FaultServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def answer_text(body: dict) -> str:
    refs = sum(1 for m in body.get("messages", []) if m.get("role") == "system")
    return f"{body.get('model')} answers (seed {body.get('seed')}, {'with' if refs else 'without'} references)."


def _handler(server: FaultServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"
        _counted = False

        def log_message(self, *args) -> None:
            pass

        def _send(self, status: int, body: bytes, headers: dict | None = None, length: int | None = None,
                  content_type: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body) if length is None else length))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self._leave()
            self.wfile.write(body)

        def _error(self, status: int, message: str, headers: dict | None = None) -> None:
            self._send(status, json.dumps({"error": {"message": message}}).encode(), headers)

        def do_GET(self) -> None:  # GET /_stats: the counters, for a client in another process
            if self.path != "/_stats":
                return self._error(404, "not found")
            with server.lock:
                stats = {"requests": len(server.requests), "peak": server.peak, "active": server.active}
            self._send(200, json.dumps(stats).encode())

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            if self.path == "/_script":  # {"model": ..., "faults": [...]}: script() from another process
                server.script(body["model"], *body["faults"])
                return self._send(200, b"{}")
            if self.path == "/_reset":  # forget the requests and the peak, and any faults still scripted
                with server.lock:
                    server.requests.clear(), server.arrivals.clear(), server.plan.clear()
                    server.peak = server.active
                return self._send(200, b"{}")
            with server.lock:
                server.requests.append(body)
                server.arrivals.append(time.monotonic())
                queue = server.plan.get(body.get("model"))
                fault = queue.popleft() if queue else "ok"
                server.active += 1
                server.peak = max(server.peak, server.active)
            self._counted = True
            try:
                time.sleep(server.latency)
                self._respond(body, fault)
            except (BrokenPipeError, ConnectionResetError):
                pass
            finally:
                self._leave()

        def _leave(self) -> None:
            """Stop counting this request as active: just before its last bytes go out (the client cannot
            start its next request on a finished answer before the count drops), or when it ends otherwise."""
            if self._counted:
                self._counted = False
                with server.lock:
                    server.active -= 1

        def _respond(self, body: dict, fault: str) -> None:
            name, _, arg = fault.partition(":")
            if name == "delay":
                time.sleep(float(arg))
            elif name == "429":
                return self._error(429, "rate limited", {"Retry-After": arg} if arg else None)
            elif name in ("500", "502", "503"):
                return self._error(int(name), f"server error {name}")
            elif name == "hang":
                server.stopping.wait(60)
                return None
            elif name == "malformed" and body.get("stream"):
                return self._send(200, b"data: {this is not json\n\n", content_type=SSE)
            elif name == "malformed":
                return self._send(200, b"this is not json {")
            elif name == "blank":
                return self._send(200, b"", content_type=SSE if body.get("stream") else "application/json")
            elif name == "echo-auth":
                return self._error(401, f"invalid key in header: {self.headers.get('Authorization')}")
            text = "" if name == "empty" else answer_text(body)
            if body.get("stream"):
                return self._stream(body, text, cut=name == "cut", stall=name == "stall")
            payload = json.dumps({
                "id": "x", "object": "chat.completion", "created": 0, "model": body.get("model"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 7, "completion_tokens": len(text.split()), "total_tokens": 7},
            }).encode()
            if name == "cut":
                return self._send(200, payload[: len(payload) // 2], length=len(payload))
            self._send(200, payload)

        def _stream(self, body: dict, text: str, cut: bool, stall: bool) -> None:
            self.send_response(200)
            self.send_header("Content-Type", SSE)
            self.end_headers()
            words = text.split(" ")
            for i, word in enumerate(words):
                if cut and i == 2:
                    self.wfile.flush()
                    self.connection.shutdown(2)
                    return
                if stall and i == 2:
                    server.stopping.wait(60)
                    return
                last = i == len(words) - 1
                delta = {"content": word + ("" if last else " ")}
                chunk = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": body.get("model"),
                         "choices": [{"index": 0, "delta": delta, "finish_reason": "stop" if last else None}]}
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.flush()
            usage = {"prompt_tokens": 7, "completion_tokens": len(words), "total_tokens": 7 + len(words)}
            done = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": body.get("model"),
                    "choices": [], "usage": usage}
            self._leave()
            self.wfile.write(f"data: {json.dumps(done)}\n\ndata: [DONE]\n\n".encode())

    return Handler


if __name__ == "__main__":  # a server in its own process (benchmarks): prints its URL, serves until killed
    import argparse
    import signal

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before every answer")
    args = parser.parse_args()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})  # for sigwait, in every thread
    with FaultServer(latency=args.latency) as fault_server:
        print(fault_server.url, flush=True)
        signal.sigwait({signal.SIGTERM, signal.SIGINT})
