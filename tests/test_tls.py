"""TLS for the team cache: `narrator serve --tls-cert/--tls-key` and the CLI over https:// and wss://, checked
against a certificate authority made for the test (trustme); and a token never sent unencrypted to another
machine. Real processes, real sockets on this machine's own addresses."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import trustme
from fake_elevenlabs import FakeElevenLabs
from serve_process import CLI, start_serve

from narrator_cli.store import Store

LINES = ["The first line of the script.", "A second line.", "And the third."]
TOKEN = "team-secret-token-0123456789"


@pytest.fixture
def pki(tmp_path):
    """A CA, the server's certificate for 127.0.0.1 and localhost, and another CA nobody trusts."""
    ca, other = trustme.CA(), trustme.CA()
    folder = tmp_path / "pki"
    folder.mkdir()
    paths = {name: folder / f"{name}.pem" for name in ("ca", "cert", "key", "other_ca", "other_cert", "other_key")}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    other.cert_pem.write_to_path(str(paths["other_ca"]))
    issued = ca.issue_cert("127.0.0.1", "localhost")
    issued.private_key_pem.write_to_path(str(paths["key"]))
    with open(paths["cert"], "wb") as fh:
        for pem in issued.cert_chain_pems:
            fh.write(pem.bytes())
    stranger = other.issue_cert("127.0.0.1", "localhost")
    stranger.private_key_pem.write_to_path(str(paths["other_key"]))
    stranger.cert_chain_pems[0].write_to_path(str(paths["other_cert"]))
    return paths


@pytest.fixture
def serve(tmp_path):
    procs: list[subprocess.Popen] = []

    def start(*args: str) -> str:
        proc, url = start_serve("--audio-path", str(tmp_path / "server-cache"), *args, cwd=tmp_path, drain=True)
        procs.append(proc)
        return url

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(15)


def run(cwd: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("NARRATOR_") and k != "ELEVENLABS_API_KEY"}
    full["XDG_CONFIG_HOME"] = str(cwd / "xdg")
    return subprocess.run([*CLI, *args], cwd=cwd, env={**full, **(env or {})}, capture_output=True, text=True,
                          timeout=60)


def member(root: Path, name: str) -> Path:
    (root / name).mkdir(exist_ok=True)
    return root / name


def rows(result: subprocess.CompletedProcess) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines()]


def one_line_error(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("narrator: error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_serve_tls_listens_on_https_and_the_team_flow_runs_over_it(tmp_path, pki, serve):
    url = serve("--tls-cert", str(pki["cert"]), "--tls-key", str(pki["key"]), "--token", TOKEN)
    assert url.startswith("https://127.0.0.1:")
    trust = {"NARRATOR_CA_FILE": str(pki["ca"]), "NARRATOR_TOKEN": TOKEN}
    wss = "wss://" + url.split("://", 1)[1]
    alice, bob, ci = member(tmp_path, "alice"), member(tmp_path, "bob"), member(tmp_path, "ci")
    with FakeElevenLabs(scripted=("POST",)) as fake:
        voice = {"NARRATOR_PROVIDER": "elevenlabs", "NARRATOR_VOICE": "TestVoiceId000000abc",
                 "ELEVENLABS_API_KEY": fake.api_key, "NARRATOR_ELEVENLABS_BASE_URL": fake.url}
        r = run(alice, "speak", *LINES, "--json", env={**voice, **trust, "NARRATOR_SERVER": url})
        assert r.returncode == 0, r.stderr
        assert [row["status"] for row in rows(r)] == ["generated"] * 3 and len(fake.posts()) == 3
        r = run(bob, "speak", *LINES, "--json", env={**voice, **trust, "NARRATOR_SERVER": wss})
        assert r.returncode == 0, r.stderr
        assert [row["status"] for row in rows(r)] == ["server"] * 3  # downloaded over https
        assert len(fake.posts()) == 3
    a, b = Store(alice / "audio-cache"), Store(bob / "audio-cache")
    keys = [row["cacheKey"] for row in rows(r)]
    assert all(a.read_audio(a.get(k)) == b.read_audio(b.get(k)) for k in keys)
    env = {**trust, "NARRATOR_PROVIDER": "mock"}
    r = run(ci, "check", *sum((["--key", k] for k in keys), []), "--server", url, "--json", env=env)
    assert r.returncode == 0, r.stderr
    assert [(row["local"], row["server"]) for row in rows(r)] == [(False, True)] * 3
    assert run(ci, "speak", "Only on the CI runner.", env=env).returncode == 0
    r = run(ci, "upload", "--all", "--server", url, "--json", env=env)
    assert r.returncode == 0, r.stderr
    assert [row["status"] for row in rows(r)] == ["uploaded"]  # the one line only the runner had
    r = run(member(tmp_path, "dana"), "sync", "--server", wss, "--json", env=env)
    assert r.returncode == 0, r.stderr
    assert len(Store(tmp_path / "dana" / "audio-cache").scan().entries) == 4
    r = run(ci, "stats", "--server", url, "--json", env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["entries"] == 4
    r = run(ci, "cleanup", "--server", url, "--json", env=env)
    assert r.returncode == 0, r.stderr


def test_serve_refuses_bad_certificate_files_with_one_line(tmp_path, pki):
    cases = [("--tls-cert", str(tmp_path / "missing.pem")),
             ("--tls-cert", str(pki["cert"]), "--tls-key", str(pki["other_key"])),  # another certificate's key
             ("--tls-cert", str(pki["ca"]), "--tls-key", str(pki["ca"])),  # a certificate is no key
             ("--tls-key", str(pki["key"]))]
    for args in cases:
        r = run(tmp_path, "serve", "--port", "0", *args)
        assert r.returncode == 2, (args, r.stderr)
        line = one_line_error(r)
        assert "listening" not in r.stderr and ("tls" in line or ".pem" in line), line


@pytest.mark.parametrize("command", [["check", "Hello there."], ["stats"], ["sync"]])
def test_an_untrusted_certificate_is_refused_with_one_line(tmp_path, pki, serve, command):
    url = serve("--tls-cert", str(pki["other_cert"]), "--tls-key", str(pki["other_key"]))
    for env in ({}, {"NARRATOR_CA_FILE": str(pki["ca"])}):  # the system's trust store; the team's (wrong) CA
        r = run(tmp_path, *command, "--server", url, env={**env, "NARRATOR_PROVIDER": "mock"})
        assert r.returncode == 2, r.stderr
        line = one_line_error(r)
        assert f"cannot trust the server at {url}" in line and "certificate" in line, line


def test_speak_stops_at_an_untrusted_certificate_rather_than_paying(tmp_path, pki, serve):
    url = serve("--tls-cert", str(pki["other_cert"]), "--tls-key", str(pki["other_key"]))
    r = run(tmp_path, "speak", "Hello there.", env={"NARRATOR_SERVER": url, "NARRATOR_CA_FILE": str(pki["ca"]),
                                                    "NARRATOR_PROVIDER": "mock"})
    assert r.returncode == 2 and f"cannot trust the server at {url}" in one_line_error(r)
    assert not (tmp_path / "audio-cache").exists() or not list((tmp_path / "audio-cache").iterdir())


def test_a_wrong_hostname_is_refused(tmp_path, pki, serve):
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca2.pem"))
    issued = ca.issue_cert("narrator.example.org")  # valid, trusted, for another name
    issued.private_key_pem.write_to_path(str(tmp_path / "k.pem"))
    issued.cert_chain_pems[0].write_to_path(str(tmp_path / "c.pem"))
    url = serve("--tls-cert", str(tmp_path / "c.pem"), "--tls-key", str(tmp_path / "k.pem"))
    for command in (["check", "Hi."], ["stats"]):
        r = run(tmp_path, *command, "--server", url, env={"NARRATOR_CA_FILE": str(tmp_path / "ca2.pem")})
        assert r.returncode == 2, r.stderr
        line = one_line_error(r)
        assert f"cannot trust the server at {url}" in line and "127.0.0.1" in line, line


def test_a_missing_ca_file_is_one_line(tmp_path, pki, serve):
    url = serve("--tls-cert", str(pki["cert"]), "--tls-key", str(pki["key"]))
    r = run(tmp_path, "check", "Hi.", "--server", url, env={"NARRATOR_CA_FILE": str(tmp_path / "nope.pem")})
    assert r.returncode == 2 and "nope.pem: no such file" in one_line_error(r)
    r = run(tmp_path, "check", "Hi.", "--server", url, env={"NARRATOR_CA_FILE": str(pki["key"])})
    assert r.returncode == 2 and "key.pem" in one_line_error(r)


def test_plain_http_to_a_tls_server_says_so(tmp_path, pki, serve):
    url = serve("--tls-cert", str(pki["cert"]), "--tls-key", str(pki["key"]))
    r = run(tmp_path, "check", "Hi.", "--server", url.replace("https://", "http://"), "--no-server")
    assert r.returncode == 1  # --no-server: the local answer
    r = run(tmp_path, "stats", "--server", url.replace("https://", "http://"))
    assert r.returncode == 2 and "Traceback" not in r.stderr


def _non_loopback_address() -> str | None:
    """The first address of this machine that is not 127.x (``hostname -I``), if it has one."""
    try:
        out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=5).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    return next((a for a in out if ":" not in a and not a.startswith("127.")), None)


class Listener:
    """A plain TCP listener that records every byte that reaches it (and answers nothing)."""

    def __init__(self, host: str) -> None:
        self.sock = socket.create_server((host, 0))
        self.port = self.sock.getsockname()[1]
        self.received = bytearray()
        self.connections = 0
        self._stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        deadline = time.monotonic() + 60
        while not self._stop and time.monotonic() < deadline:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            conn.settimeout(1)
            try:
                while chunk := conn.recv(65536):
                    self.received += chunk
            except OSError:
                pass
            conn.close()

    def close(self) -> None:
        self._stop = True
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def listener():
    host = _non_loopback_address()
    if host is None:
        pytest.skip("this machine has no address besides loopback")
    made = Listener(host)
    yield host, made
    made.close()


@pytest.mark.parametrize("command", [["speak", "Hello there."], ["check", "Hello there."], ["stats"], ["sync"],
                                     ["cleanup"], ["upload", "--all"]])
def test_a_token_is_never_sent_over_plain_http_to_another_machine(tmp_path, listener, command):
    host, seen = listener
    for scheme in ("http", "ws"):
        url = f"{scheme}://{host}:{seen.port}"
        r = run(tmp_path, *command, "--server", url, env={"NARRATOR_TOKEN": TOKEN, "NARRATOR_PROVIDER": "mock"})
        assert r.returncode == 2, r.stderr
        line = one_line_error(r)
        assert "refusing to send the token" in line and host in line and TOKEN not in r.stderr + r.stdout, line
    time.sleep(0.3)  # what was sent, if anything, has arrived
    assert seen.connections == 0 and TOKEN.encode() not in seen.received


def test_insecure_sends_it_anyway(tmp_path, listener):
    """--insecure is a real switch: with it, the same command does reach the listener (which never answers)."""
    host, seen = listener
    r = run(tmp_path, "stats", "--server", f"http://{host}:{seen.port}",
            env={"NARRATOR_TOKEN": TOKEN, "NARRATOR_INSECURE": "1"})
    assert r.returncode == 2 and "refusing" not in r.stderr  # the listener never answers HTTP
    assert TOKEN.encode() in seen.received


def test_a_name_is_not_loopback_by_what_it_resolves_to():
    from narrator_cli.client import Client, is_loopback
    from narrator_cli.errors import UsageError

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.8.0.1")
    assert not is_loopback("narrator.internal") and not is_loopback("10.0.0.1")
    assert Client("http://127.0.0.1:1", TOKEN).token == TOKEN  # loopback: no TLS needed
    assert Client("http://10.0.0.1:1").token is None  # no token: nothing to protect
    with pytest.raises(UsageError, match="refusing to send the token"):
        Client("http://narrator.internal:8790", TOKEN)
    assert Client("http://narrator.internal:8790", TOKEN, insecure=True).insecure


def test_insecure_setting_must_be_a_boolean(tmp_path):
    r = run(tmp_path, "check", "Hi.", env={"NARRATOR_INSECURE": "maybe"})
    assert r.returncode == 2 and "NARRATOR_INSECURE" in one_line_error(r)
