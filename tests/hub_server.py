"""A tiny local stand-in for the Hugging Face hub's upload API, for tests (127.0.0.1 only).

It answers the calls ``HfApi.create_repo`` + ``HfApi.upload_folder`` make for small files —
``POST /api/repos/create``, ``POST /api/validate-yaml`` (the model card's front matter),
``POST /api/models/<repo>/preupload/<rev>`` (every file "regular",
i.e. inline in the commit) and ``POST /api/models/<repo>/commit/<rev>`` (NDJSON, base64 files) —
and records them: ``server.calls`` (method, path, JSON body), ``server.repos`` (created repo ids),
``server.files[repo_id][path] = bytes``. Anything else gets a 404 and is recorded too.

    with HubServer() as hub:
        zoo.push_to_hub(model, "org/name", endpoint=hub.url, token="test")
        assert "model.safetensors" in hub.files["org/name"]
"""
from __future__ import annotations

import base64
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_PREUPLOAD = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/preupload/(?P<rev>[^/?]+)")
_COMMIT = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/commit/(?P<rev>[^/?]+)")


class _Handler(BaseHTTPRequestHandler):
    server: "HubServer"

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_GET(self) -> None:
        self.server.record("GET", self.path, None)
        self._reply(404, {"error": f"not served: GET {self.path}"})

    def do_POST(self) -> None:
        raw = self._body()
        path = self.path.split("?")[0]
        hub = self.server
        if path == "/api/repos/create":
            body = json.loads(raw)
            hub.record("POST", path, body)
            repo_id = f"{body['organization']}/{body['name']}" if body.get("organization") else body["name"]
            hub.repos.append(repo_id)
            hub.files.setdefault(repo_id, {})
            return self._reply(200, {"url": f"{hub.url}/{repo_id}", "name": repo_id})
        if path == "/api/validate-yaml":  # upload_folder checks a README's front matter first
            body = json.loads(raw)
            hub.record("POST", path, body)
            ok = body.get("content", "").startswith("---\n")
            return self._reply(200 if ok else 400, {"errors": [] if ok else [{"message": "no YAML front matter"}],
                                                    "warnings": []})
        if match := _PREUPLOAD.match(path):
            body = json.loads(raw)
            hub.record("POST", path, body)
            files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in body["files"]]
            return self._reply(200, {"files": files})
        if match := _COMMIT.match(path):
            lines = [json.loads(line) for line in raw.splitlines() if line.strip()]
            hub.record("POST", path, lines)
            repo_id = match["repo"]
            if repo_id not in hub.files:
                return self._reply(404, {"error": f"repository {repo_id} not found"})
            for item in lines:
                if item.get("key") == "file":
                    value = item["value"]
                    hub.files[repo_id][value["path"]] = base64.b64decode(value["content"])
            oid = f"{len(hub.calls):040x}"
            return self._reply(200, {"commitUrl": f"{hub.url}/{repo_id}/commit/{oid}", "commitOid": oid})
        hub.record("POST", path, None)
        return self._reply(404, {"error": f"not served: POST {path}"})


class HubServer(ThreadingHTTPServer):
    """Threaded HTTP server on 127.0.0.1 (a free port) recording hub upload calls."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.calls: list[tuple[str, str, object]] = []
        self.repos: list[str] = []
        self.files: dict[str, dict[str, bytes]] = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def record(self, method: str, path: str, body: object) -> None:
        with self._lock:
            self.calls.append((method, path, body))

    def __enter__(self) -> "HubServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(timeout=5)
