#!/usr/bin/env python3
"""A stand-in OpenAI-compatible upstream for the examples: answers
GET /v1/models and POST /v1/chat/completions in OpenAI's shapes, and says in
its reply which identity Gatehouse passed on (the x-auth-* headers) and
whether any credential reached it (none should).

    python3 examples/upstream.py [PORT]     # default 9000, as envoy/envoy.yaml expects
"""
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _send(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path.split("?")[0].rstrip("/") == "/v1/models":
            models = [{"id": m, "object": "model", "created": 0, "owned_by": "example"} for m in ("llama-3", "gpt-4o")]
            return self._send(200, {"object": "list", "data": models})
        self._send(404, {"error": {"message": "not found", "type": "invalid_request_error"}})

    def do_POST(self):
        length = int(self.headers.get("content-length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        if self.path.split("?")[0].rstrip("/") != "/v1/chat/completions":
            return self._send(404, {"error": {"message": "not found", "type": "invalid_request_error"}})
        h = {k.lower(): v for k, v in self.headers.items()}
        leaked = "authorization" in h or "x-api-key" in h
        content = (
            f"Hello {h.get('x-auth-email', '?')} (role {h.get('x-auth-role', '-')}, "
            f"by {h.get('x-auth-method', '?')}); credential seen upstream: {'yes' if leaked else 'no'}"
        )
        self._send(
            200,
            {
                "id": "chatcmpl-example",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", ""),
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            },
        )

    def log_message(self, fmt, *args):
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9000
    ThreadingHTTPServer(("127.0.0.1", port), Upstream).serve_forever()
