"""A fault-injecting chat-completions server on 127.0.0.1 (a test harness, never a product default).

It speaks HTTP/1.1 with keep-alive, as real servers do: a client reuses its connections, and streams come in
chunked transfer encoding. Each request for a model takes the next fault scripted for that model (then "ok"):
  ok            200 with an answer naming the model and seed (streamed as SSE when asked)
  delay:S       wait S seconds, then ok
  429 / 429:S   429, with ``Retry-After: S`` (seconds) when S is given
  429-date:S    429, with ``Retry-After`` as an HTTP date S seconds ahead
  NNN           that HTTP status (500, 502, 503, 400, ...) with an error body
  hang          never answer (until the server stops)
  cut           stream: send two chunks, then drop the connection; plain: promise a body, send half, drop it
  stall         stream: send two chunks, then nothing more (until the server stops)
  ping          stream: keep-alive comments (``: ping``) every 0.1 s and never a token; plain: a space every
                0.1 s and never the body (some servers keep a connection busy while they queue a request)
  ping-mid      stream: two chunks, then comments and chunks without text every 0.1 s, never another token
  trickle:S     the whole answer, one byte every S seconds (default 0.02): no gap is long, the wait is
  stream-error:C  stream: an error event ``{"error": {"message": ..., "code": C}}`` before any text (C: 503)
  malformed     200 with a body that is not JSON (stream: an event whose data is not JSON)
  blank         200 with an empty body (stream: no events at all)
  empty         200 with an answer whose content is empty
  surrogate     ok, but the answer ends with a lone surrogate (a JSON ``\\ud83d`` escape: half an emoji)
  echo-auth     401 whose error message repeats the request's Authorization header
  say:TEXT      ok, but the answer is TEXT (a selector's "2", a ranking, a vote's "The answer is 42")
  tokens:N      ok, but its usage reports N completion tokens (a server whose tokenizer counts more than a bound)
Every request body is kept in ``requests`` (its headers in ``headers``, its arrival time, ``time.monotonic()``,
in ``arrivals``); ``active``/``peak`` count concurrent requests. ``POST /_script``, ``GET /_stats`` and
``POST /_reset`` do the same from another process (``python tests/fault_server.py --latency S`` serves in its
own process and prints its URL; the benchmarks use it so that the server does not share the client's interpreter).
"""

from __future__ import annotations

import email.utils
import json
import socket
import sys
import threading
import time
from collections import defaultdict, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SSE = "text/event-stream"
PING_EVERY = 0.1


class _Server(ThreadingHTTPServer):
    request_queue_size = 256  # the listen backlog (socketserver's default is 5: a burst of connections would be
    # dropped and retried by the client's kernel 1 s later, and counted against the client)

    def handle_error(self, request, client_address) -> None:
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            return  # a client that died mid-request (a killed worker): nothing to report
        super().handle_error(request, client_address)


class FaultServer:
    def __init__(self, latency: float = 0.0) -> None:
        self.latency = latency
        self.plan: dict[str, deque[str]] = defaultdict(deque)
        self.requests: list[dict] = []
        self.headers: list[dict[str, str]] = []
        self.arrivals: list[float] = []
        self.active = self.peak = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.connections: set[socket.socket] = set()
        self.httpd = _Server(("127.0.0.1", 0), _handler(self))
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def script(self, model: str, *faults: str) -> FaultServer:
        self.plan[model].extend(faults)
        return self

    def calls_to(self, model: str) -> list[dict]:
        return [r for r in self.requests if r.get("model") == model]

    def authorizations(self) -> list[str | None]:
        """The Authorization header of every request, in order (None: none was sent)."""
        return [h.get("authorization") for h in self.headers]

    def __enter__(self) -> FaultServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        with self.lock:  # keep-alive connections: closed here, so no handler thread waits on them
            for conn in list(self.connections):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def answer_text(body: dict) -> str:
    refs = sum(1 for m in body.get("messages", []) if m.get("role") == "system")
    return f"{body.get('model')} answers (seed {body.get('seed')}, {'with' if refs else 'without'} references)."


def _chunk_event(body: dict, delta: dict, finish: str | None = None) -> bytes:
    chunk = {
        "id": "x",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": body.get("model"),
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(chunk)}\n\n".encode()


def _handler(server: FaultServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        _counted = False

        def setup(self) -> None:
            super().setup()
            # As real servers do: no Nagle delay between the headers and the body written after them (on a
            # kept-alive connection the body would wait for the client's delayed ACK, up to 40 ms).
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with server.lock:
                server.connections.add(self.connection)

        def finish(self) -> None:
            with server.lock:
                server.connections.discard(self.connection)
            try:
                super().finish()
            except OSError:
                pass

        def log_message(self, *args) -> None:
            pass

        def _send(
            self,
            status: int,
            body: bytes,
            headers: dict | None = None,
            length: int | None = None,
            content_type: str = "application/json",
        ) -> None:
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

        def _start_chunked(self, content_type: str = SSE) -> None:
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()

        def _chunk(self, data: bytes) -> None:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

        def _end_chunked(self) -> None:
            self._leave()
            self.wfile.write(b"0\r\n\r\n")

        def _drop(self) -> None:
            """Close the connection now, without finishing the response."""
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)

        def _wait_for_stop(self, seconds: float = 60.0, every: float | None = None, beat=None) -> None:
            """Until the server stops (at most ``seconds``), calling ``beat()`` every ``every`` seconds."""
            self.close_connection = True
            end = time.monotonic() + seconds
            while not server.stopping.wait(every if every else seconds) and time.monotonic() < end:
                if beat is not None:
                    beat()

        def do_GET(self) -> None:  # GET /_stats: the counters, for a client in another process
            if self.path != "/_stats":
                return self._error(404, "not found")
            with server.lock:
                stats = {"requests": len(server.requests), "peak": server.peak, "active": server.active}
            self._send(200, json.dumps(stats).encode())

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if len(raw) == length and raw else None
            except ValueError:
                body = None
            if self.path == "/_reset" and not raw:
                body = {}
            if not isinstance(body, dict):  # the client died mid-send (or sent no JSON object): nothing is recorded
                self.close_connection = True
                return self._error(400, "the body did not arrive whole, or is not a JSON object")
            if self.path == "/_script":  # {"model": ..., "faults": [...]}: script() from another process
                server.script(body["model"], *body["faults"])
                return self._send(200, b"{}")
            if self.path == "/_reset":  # forget the requests and the peak, and any faults still scripted
                with server.lock:
                    server.requests.clear(), server.headers.clear(), server.arrivals.clear(), server.plan.clear()
                    server.peak = server.active
                return self._send(200, b"{}")
            with server.lock:
                server.requests.append(body)
                server.headers.append({k.lower(): v for k, v in self.headers.items()})
                server.arrivals.append(time.monotonic())
                queue = server.plan.get(body.get("model"))
                fault = queue.popleft() if queue else "ok"
                server.active += 1
                server.peak = max(server.peak, server.active)
            self._counted = True
            try:
                time.sleep(server.latency)
                self._respond(body, fault)
            except (BrokenPipeError, ConnectionResetError, OSError):
                self.close_connection = True
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
            stream = bool(body.get("stream"))
            if name == "delay":
                time.sleep(float(arg))
            elif name == "429":
                return self._error(429, "rate limited", {"Retry-After": arg} if arg else None)
            elif name == "429-date":
                when = email.utils.formatdate(time.time() + float(arg), usegmt=True)
                return self._error(429, "rate limited", {"Retry-After": when})
            elif name.isdigit():
                return self._error(int(name), f"server error {name}")
            elif name == "hang":
                return self._wait_for_stop()
            elif name == "ping" and stream:
                self._start_chunked()
                return self._wait_for_stop(every=PING_EVERY, beat=lambda: self._chunk(b": ping\n\n"))
            elif name == "ping":
                self._start_chunked("application/json")
                return self._wait_for_stop(every=PING_EVERY, beat=lambda: self._chunk(b" "))
            elif name == "stream-error" and stream:
                error = {
                    "error": {
                        "message": "the model is overloaded, try again",
                        "type": "server_error",
                        "code": int(arg or 503),
                    }
                }
                self._start_chunked()
                self._chunk(f"data: {json.dumps(error)}\n\n".encode())
                return self._end_chunked()
            elif name == "malformed" and stream:
                return self._send(200, b"data: {this is not json\n\n", content_type=SSE)
            elif name == "malformed":
                return self._send(200, b"this is not json {")
            elif name == "blank":
                return self._send(200, b"", content_type=SSE if stream else "application/json")
            elif name == "echo-auth":
                return self._error(401, f"invalid key in header: {self.headers.get('Authorization')}")
            text = "" if name == "empty" else answer_text(body) + (" \ud83d" if name == "surrogate" else "")
            text = arg if name == "say" else text
            counted = int(arg) if name == "tokens" else len(text.split())
            if stream:
                return self._stream(body, text, name, float(arg) if name == "trickle" and arg else 0.02, counted)
            payload = json.dumps(
                {
                    "id": "x",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body.get("model"),
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                    ],
                    "usage": {"prompt_tokens": 7, "completion_tokens": counted, "total_tokens": 7 + counted},
                }
            ).encode()
            if name == "cut":
                self._send(200, payload[: len(payload) // 2], length=len(payload))
                return self._drop()
            if name == "trickle":
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                return self._trickle(payload, float(arg or 0.02), self.wfile.write)
            self._send(200, payload)

        def _trickle(self, data: bytes, every: float, write) -> None:
            for i in range(len(data)):
                if server.stopping.wait(every):
                    return self._drop()
                if i == len(data) - 1:
                    self._leave()
                write(data[i : i + 1])

        def _stream(self, body: dict, text: str, fault: str, every: float, counted: int) -> None:
            words = text.split(" ")
            events = [_chunk_event(body, {"role": "assistant", "content": ""})]
            events += [
                _chunk_event(
                    body, {"content": w + ("" if i == len(words) - 1 else " ")}, "stop" if i == len(words) - 1 else None
                )
                for i, w in enumerate(words)
            ]
            usage = {"prompt_tokens": 7, "completion_tokens": counted, "total_tokens": 7 + counted}
            done = {
                "id": "x",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": body.get("model"),
                "choices": [],
                "usage": usage,
            }
            events.append(f"data: {json.dumps(done)}\n\ndata: [DONE]\n\n".encode())
            self._start_chunked()
            if fault == "trickle":
                self._trickle(b"".join(events), every, self._chunk)
                return self.wfile.write(b"0\r\n\r\n")
            for i, event in enumerate(events):
                if i == 3 and fault == "cut":  # the role chunk and two words have gone out
                    return self._drop()
                if i == 3 and fault == "stall":
                    return self._wait_for_stop()
                if i == 3 and fault == "ping-mid":
                    beats = iter(range(10**9))
                    return self._wait_for_stop(
                        every=PING_EVERY,
                        beat=lambda beats=beats: self._chunk(
                            b": ping\n\n" if next(beats) % 2 else _chunk_event(body, {"content": ""})
                        ),
                    )
                if i == len(events) - 1:
                    return self._end_chunked_with(event)
                self._chunk(event)

        def _end_chunked_with(self, event: bytes) -> None:
            self._leave()
            self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(event), event))

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
