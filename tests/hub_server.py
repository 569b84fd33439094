"""A tiny local stand-in for the Hugging Face hub's write API, for tests (127.0.0.1 only).

It answers the calls ``HfApi.create_repo`` + ``HfApi.upload_folder`` make, for model and Space repos alike:

- ``POST /api/repos/create`` (a Space's body carries its ``sdk``), ``POST /api/validate-yaml`` (a card's front
  matter);
- ``POST /api/{models,spaces}/<repo>/preupload/<rev>``: a file is "lfs" when it is binary (a NUL byte or no UTF-8
  in its sample, or a binary suffix: ``.safetensors``, ``.jpg`` …), else "regular" (inline in the commit), as the
  hub decides: the hub refuses binary files in git outside LFS/Xet;
- ``POST /[spaces/]<repo>.git/info/lfs/objects/batch`` (the LFS batch API, "basic" transfer) and the ``PUT`` of
  each object to the href it hands out (checked against its sha256). Xet is not emulated: while the server runs,
  ``HF_HUB_DISABLE_XET`` is set (the environment and ``huggingface_hub.constants``) so that the client takes the
  LFS route, as it does where ``hf_xet`` is not installed;
- ``POST /api/{models,spaces}/<repo>/commit/<rev>`` (NDJSON: inline base64 ``file``\\ s, ``lfsFile`` pointers to
  uploaded objects, ``deletedFile``\\ s);
- ``GET /api/{models,spaces}/<repo>/tree/<rev>`` (``upload_folder(delete_patterns=…)`` lists the repo first);
- ``POST /api/spaces/<repo>/variables`` (``add_space_variable``) and ``POST /api/spaces/<repo>/hardware``
  (``request_space_hardware``);
- and what a download needs: ``GET /api/{models,spaces}/<repo>[/revision/<rev>]`` (repo info: the commit and the
  files with their sizes, ``model_info(files_metadata=True)``) and ``HEAD``/``GET [spaces/]<repo>/resolve/<rev>/<path>``
  (``hf_hub_download`` / ``snapshot_download``) of what ``server.files`` holds (tests may fill it directly).

It records them: ``server.calls`` (method, path, JSON body), ``server.repos`` (created repo ids),
``server.repo_types[repo_id]`` ("model" / "space", and the Space's ``sdk``), ``server.files[repo_id][path] =
bytes``, ``server.inline[repo_id]`` / ``server.lfs[repo_id]`` (the paths that came inline in a commit / as LFS
objects), ``server.variables[repo_id][key] = value``, ``server.hardware[repo_id]`` (the flavour requested).
Anything else gets a 404 and is recorded too; ``server.requested(repo_id)`` lists the (method, path) of every request
that named a repo.

    with HubServer() as hub:
        zoo.push_to_hub(model, "org/name", endpoint=hub.url, token="test")
        assert "model.safetensors" in hub.files["org/name"]
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

_REPO = r"(?P<kind>models|spaces|datasets)/(?P<repo>[^/]+/[^/]+)"
_PREUPLOAD = re.compile(rf"^/api/{_REPO}/preupload/(?P<rev>[^/?]+)")
_COMMIT = re.compile(rf"^/api/{_REPO}/commit/(?P<rev>[^/?]+)")
_TREE = re.compile(rf"^/api/{_REPO}/tree/(?P<rev>[^/?]+)")
_VARIABLES = re.compile(r"^/api/spaces/(?P<repo>[^/]+/[^/]+)/variables$")
_HARDWARE = re.compile(r"^/api/spaces/(?P<repo>[^/]+/[^/]+)/hardware$")
_BATCH = re.compile(r"^/(?:(?:spaces|datasets)/)?(?P<repo>[^/]+/[^/]+)\.git/info/lfs/objects/batch$")
_INFO = re.compile(rf"^/api/{_REPO}(?:/revision/(?P<rev>[^?]+))?$")
_RESOLVE = re.compile(r"^/(?:(?P<kind>spaces|datasets)/)?(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")
_OBJECT = re.compile(r"^/lfs-objects/(?P<oid>[0-9a-f]{64})$")
BINARY_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".npy", ".npz", ".jpg", ".jpeg", ".png", ".gif",
                   ".webp", ".tif", ".tiff", ".bmp", ".ico", ".pdf", ".zip", ".gz", ".onnx")


def is_binary(path: str, sample: bytes) -> bool:
    """Whether the hub would store this file through LFS/Xet (it refuses binary files in git)."""
    if path.lower().endswith(BINARY_SUFFIXES) or b"\0" in sample:
        return True
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError as err:
        return err.start < len(sample) - 4  # a multi-byte character cut at the sample's end is still text
    return False


class _Handler(BaseHTTPRequestHandler):
    server: "HubServer"

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def _reply(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _resolve(self, head: bool) -> bool:
        """A file download (``/<repo>/resolve/<rev>/<path>``), any revision: the repo's current files."""
        match = _RESOLVE.match(unquote(self.path.split("?")[0]))
        if not match:
            return False
        data = self.server.files.get(match["repo"], {}).get(match["file"])
        if data is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound" if match["repo"] in self.server.files
                             else "RepoNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return True
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.send_header("X-Repo-Commit", self.server.commit_of(match["repo"]))
        self.end_headers()
        if not head:
            self.wfile.write(data)
        return True

    def do_HEAD(self) -> None:
        self.server.record("HEAD", self.path, None)
        if not self._resolve(head=True):
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

    def do_GET(self) -> None:
        path = unquote(self.path.split("?")[0])
        hub = self.server
        hub.record("GET", self.path, None)
        if self._resolve(head=False):
            return None
        if (match := _INFO.match(path)) and match["repo"] in hub.files:
            files = hub.files[match["repo"]]
            siblings = [{"rfilename": name, "size": len(data),
                         **({"lfs": {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
                                     "pointerSize": 134}} if is_binary(name, data[:512]) else {})}
                        for name, data in sorted(files.items())]
            return self._reply(200, {"id": match["repo"], "_id": match["repo"], "sha": hub.commit_of(match["repo"]),
                                     "private": False, "siblings": siblings, "tags": [], "downloads": 0,
                                     "likes": 0})
        if match := _TREE.match(path):
            files = hub.files.get(match["repo"])
            if files is None:
                return self._reply(404, {"error": f"repository {match['repo']} not found"})
            return self._reply(200, [{"type": "file", "path": name, "size": len(data),
                                      "oid": hashlib.sha1(data).hexdigest()} for name, data in sorted(files.items())])
        self._reply(404, {"error": f"not served: GET {self.path}"})

    def do_PUT(self) -> None:
        raw = self._body()
        path = self.path.split("?")[0]
        hub = self.server
        hub.record("PUT", path, {"bytes": len(raw)})
        match = _OBJECT.match(path)
        if not match or hashlib.sha256(raw).hexdigest() != match["oid"]:
            return self._reply(400, {"error": "unknown object or sha256 mismatch"})
        hub.objects[match["oid"]] = raw
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self) -> None:
        raw = self._body()
        path = unquote(self.path.split("?")[0])
        hub = self.server
        if path == "/api/repos/create":
            body = json.loads(raw)
            hub.record("POST", path, body)
            repo_id = f"{body['organization']}/{body['name']}" if body.get("organization") else body["name"]
            hub.repos.append(repo_id)
            hub.repo_types[repo_id] = {"type": body.get("type", "model"), "sdk": body.get("sdk")}
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
            files = [{"path": f["path"], "shouldIgnore": False,
                      "uploadMode": "lfs" if is_binary(f["path"], base64.b64decode(f.get("sample", ""))) else "regular"}
                     for f in body["files"]]
            return self._reply(200, {"files": files})
        if match := _BATCH.match(path):
            body = json.loads(raw)
            hub.record("POST", path, body)
            objects = []
            for obj in body.get("objects", []):
                item = {"oid": obj["oid"], "size": obj["size"]}
                if obj["oid"] not in hub.objects:
                    item["actions"] = {"upload": {"href": f"{hub.url}/lfs-objects/{obj['oid']}"}}
                objects.append(item)
            return self._reply(200, {"transfer": "basic", "objects": objects})
        if match := _COMMIT.match(path):
            lines = [json.loads(line) for line in raw.splitlines() if line.strip()]
            hub.record("POST", path, lines)
            repo_id = match["repo"]
            if repo_id not in hub.files:
                return self._reply(404, {"error": f"repository {repo_id} not found"})
            for item in lines:
                value = item.get("value", {})
                if item.get("key") == "file":
                    data = base64.b64decode(value["content"])
                    if is_binary(value["path"], data[:512]):  # the hub refuses binary files outside LFS/Xet
                        return self._reply(400, {"error": f"{value['path']}: binary file outside LFS/Xet"})
                    hub.files[repo_id][value["path"]] = data
                    hub.inline.setdefault(repo_id, set()).add(value["path"])
                elif item.get("key") == "lfsFile":
                    if value["oid"] not in hub.objects:
                        return self._reply(400, {"error": f"{value['path']}: LFS object {value['oid']} not uploaded"})
                    hub.files[repo_id][value["path"]] = hub.objects[value["oid"]]
                    hub.lfs.setdefault(repo_id, set()).add(value["path"])
                elif item.get("key") == "deletedFile":
                    hub.files[repo_id].pop(value["path"], None)
                    hub.inline.get(repo_id, set()).discard(value["path"])
                    hub.lfs.get(repo_id, set()).discard(value["path"])
            oid = f"{len(hub.calls):040x}"
            return self._reply(200, {"commitUrl": f"{hub.url}/{repo_id}/commit/{oid}", "commitOid": oid})
        if match := _VARIABLES.match(path):
            body = json.loads(raw)
            hub.record("POST", path, body)
            variables = hub.variables.setdefault(match["repo"], {})
            variables[body["key"]] = body["value"]
            return self._reply(200, {k: {"value": v} for k, v in variables.items()})
        if match := _HARDWARE.match(path):
            body = json.loads(raw)
            hub.record("POST", path, body)
            hub.hardware[match["repo"]] = body["flavor"]
            return self._reply(200, {"stage": "BUILDING", "hardware": {"current": None, "requested": body["flavor"]}})
        hub.record("POST", path, None)
        return self._reply(404, {"error": f"not served: POST {path}"})


class HubServer(ThreadingHTTPServer):
    """Threaded HTTP server on 127.0.0.1 (a free port) recording hub write calls."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.calls: list[tuple[str, str, object]] = []
        self.repos: list[str] = []
        self.repo_types: dict[str, dict] = {}
        self.files: dict[str, dict[str, bytes]] = {}
        self.inline: dict[str, set[str]] = {}
        self.lfs: dict[str, set[str]] = {}
        self.objects: dict[str, bytes] = {}
        self.variables: dict[str, dict[str, str]] = {}
        self.hardware: dict[str, str] = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    def commit_of(self, repo_id: str) -> str:
        """The repo's "commit": a hash of its current files."""
        digest = hashlib.sha1()
        for name, data in sorted(self.files.get(repo_id, {}).items()):
            digest.update(name.encode() + b"\0" + hashlib.sha1(data).digest())
        return digest.hexdigest()

    def requested(self, repo_id: str) -> list[tuple[str, str]]:
        """(method, path) of every request so far that named this repo."""
        with self._lock:
            calls = list(self.calls)
        pattern = re.compile(rf"(^|/){re.escape(repo_id)}(/|\.git/|$|\?)")
        return [(method, path) for method, path, _ in calls if pattern.search(unquote(path.split("?")[0]))]

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def record(self, method: str, path: str, body: object) -> None:
        with self._lock:
            self.calls.append((method, path, body))

    def __enter__(self) -> "HubServer":
        from huggingface_hub import constants

        self._xet = (os.environ.get("HF_HUB_DISABLE_XET"), constants.HF_HUB_DISABLE_XET)
        os.environ["HF_HUB_DISABLE_XET"] = "1"  # subprocesses started meanwhile upload through LFS too
        constants.HF_HUB_DISABLE_XET = True
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        from huggingface_hub import constants

        self.shutdown()
        self.server_close()
        self._thread.join(timeout=5)
        environ, constants.HF_HUB_DISABLE_XET = self._xet
        if environ is None:
            os.environ.pop("HF_HUB_DISABLE_XET", None)
        else:
            os.environ["HF_HUB_DISABLE_XET"] = environ
