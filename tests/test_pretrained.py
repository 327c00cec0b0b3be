"""Pretrained CLIPs by name (`openai:ViT-B/16`): download once into the cache, SHA-256 checked, against a local
HTTP server started here (no internet); the published checksums against OpenAI CLIP's own table."""

import hashlib
import http.server
import importlib.util
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from flyp_jax import demo_model, models, pretrained


class _Server:
  """Serves `files` {url path: bytes} on localhost and counts the requests per path."""

  def __init__(self):
    self.files, self.requests = {}, []
    outer = self

    class Handler(http.server.BaseHTTPRequestHandler):
      def do_GET(self):
        outer.requests.append(self.path)
        body = outer.files.get(self.path)
        if body is None:
          self.send_error(404)
          return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

      def log_message(self, *args):
        pass

    self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/clip/models"
    self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
    self.thread.start()

  def close(self):
    self.httpd.shutdown()
    self.httpd.server_close()


@pytest.fixture
def server(tmp_path, monkeypatch):
  s = _Server()
  monkeypatch.setenv("FLYP_JAX_OPENAI_URL", s.url)
  monkeypatch.setenv("FLYP_JAX_CACHE", str(tmp_path / "cache"))
  yield s
  s.close()


def _publish(server, monkeypatch, name, body, filename="tiny.npz", served=None):
  """Adds `name` to the table with the SHA-256 of `body`, served (as `served`, default body) by the server."""
  sha = hashlib.sha256(body).hexdigest()
  monkeypatch.setitem(pretrained.OPENAI, name, (sha, filename))
  server.files[f"/clip/models/{sha}/{filename}"] = body if served is None else served
  return sha


def test_downloads_once_checks_and_loads(server, monkeypatch, tmp_path):
  body = Path(demo_model.PATH).read_bytes()
  _publish(server, monkeypatch, "ViT-T/8-test", body)
  model, params = models.load_pretrained("openai:ViT-T/8-test")  # through the safe reader, like a local file
  _, reference = models.load_pretrained(demo_model.PATH)
  np.testing.assert_array_equal(params["logit_scale"], reference["logit_scale"])
  assert model.config.image_size == 32 and len(server.requests) == 1
  cached = tmp_path / "cache" / "tiny.npz"
  assert cached.read_bytes() == body and os.listdir(tmp_path / "cache") == ["tiny.npz"]  # no partial files
  assert pretrained.fetch("ViT-T/8-test") == str(cached) and len(server.requests) == 1  # from the cache


def test_a_damaged_cached_file_is_downloaded_again(server, monkeypatch, tmp_path):
  body = b"released bytes" * 100
  _publish(server, monkeypatch, "X", body, filename="x.pt")
  (tmp_path / "cache").mkdir()
  (tmp_path / "cache" / "x.pt").write_bytes(body[:50])  # an interrupted copy
  assert Path(pretrained.fetch("X")).read_bytes() == body and len(server.requests) == 1


def test_a_download_with_the_wrong_checksum_is_refused_and_not_kept(server, monkeypatch, tmp_path):
  sha = _publish(server, monkeypatch, "X", b"released bytes", filename="x.pt", served=b"something else")
  with pytest.raises(ValueError, match=f"not the published {sha}: it was not kept"):
    pretrained.fetch("X")
  assert os.listdir(tmp_path / "cache") == []


def test_offline_says_where_to_put_the_file(server, monkeypatch, tmp_path):
  sha = _publish(server, monkeypatch, "X", b"released bytes", filename="x.pt")
  server.close()  # nothing listens any more: as offline
  with pytest.raises(FileNotFoundError) as e:
    pretrained.fetch("X")
  message = str(e.value)
  assert str(tmp_path / "cache" / "x.pt") in message and sha in message and "--config.model.path" in message
  assert "\n" not in message and os.listdir(tmp_path / "cache") == []


def test_unknown_name_and_missing_file_say_what_exists(tmp_path):
  with pytest.raises(ValueError, match="openai:ViT-B/16"):
    models.load_pretrained("openai:ViT-B/17")
  with pytest.raises(FileNotFoundError) as e:
    models.load_pretrained(str(tmp_path / "ViT-B-16.pt"))
  assert "openai:ViT-B/16" in str(e.value) and "clip/clip.py" in str(e.value)


def test_published_checksums_match_openai_clip():
  """The table is OpenAI CLIP's `_MODELS` (clip/clip.py in the openai-clip package), ViTs only."""
  spec = importlib.util.find_spec("clip")
  source = Path(spec.submodule_search_locations[0], "clip.py").read_text()
  namespace = {}
  start = source.index("_MODELS = {")
  exec(source[start:source.index("}", start) + 1], namespace)  # the literal dict only, not the module
  vits = {name: url for name, url in namespace["_MODELS"].items() if name.startswith("ViT")}
  assert set(vits) == set(pretrained.OPENAI)
  for name, url in vits.items():
    sha, filename = pretrained.OPENAI[name]
    assert url == f"{pretrained.OPENAI_URL}/{sha}/{filename}", name
