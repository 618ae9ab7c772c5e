"""The operator's `stophub` command on a real database, and `stophub serve` as a process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from click.testing import CliRunner
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from adapters.sdk import tls_credentials
from hub.cli import main
from hub.crypto.pki import client_tls


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/cli.db"


def run(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_keys_and_institutions(tmp_path: Path, db: str) -> None:
    out = run("keys", "generate", "--out", str(tmp_path / "banka.key"))
    assert "key id" in out
    assert (tmp_path / "banka.key").stat().st_mode & 0o777 == 0o600
    key_id = out.split("key id")[1].split()[0]
    run(
        "institution",
        "add",
        "--code",
        "BANKA",
        "--name",
        "Bank A",
        "--kind",
        "bank",
        "--key",
        str(tmp_path / "banka.pub"),
        "--primary",
        "Wang Li,+86-10-1",
        "--backup",
        "Zhao Min,+86-10-2,zm@example.cn",
        "--db",
        db,
    )
    listing = run("institution", "list", "--db", db)
    assert "BANKA" in listing and key_id in listing
    shown = run("institution", "show", "BANKA", "--db", db)
    assert "Zhao Min" in shown and "active" in shown
    run(
        "keys",
        "generate",
        "--out",
        str(tmp_path / "banka2.key"),
        "--algorithm",
        "ecdsa-p256-sha256",
    )
    assert "added key" in run(
        "keys", "add", "BANKA", "--key", str(tmp_path / "banka2.pub"), "--db", db
    )
    # Codes and key ids in any letter case (issue 19 item 14).
    run("keys", "revoke", "banka", key_id.upper(), "--db", db)
    assert "revoked" in run("institution", "show", "banka", "--db", db)


def test_refusals_are_one_line_errors(tmp_path: Path, db: str) -> None:
    run("keys", "generate", "--out", str(tmp_path / "k.key"))
    result = CliRunner().invoke(
        main,
        [
            "institution",
            "add",
            "--code",
            "BANKA",
            "--name",
            "Bank A",
            "--kind",
            "bank",
            "--key",
            str(tmp_path / "k.pub"),
            "--primary",
            "A,1",
            "--backup",
            "B,2",
            "--db",
            db,
        ],
    )
    assert result.exit_code == 0
    again = CliRunner().invoke(
        main,
        [
            "institution",
            "add",
            "--code",
            "BANKA",
            "--name",
            "Bank A",
            "--kind",
            "bank",
            "--primary",
            "A,1",
            "--backup",
            "B,2",
            "--db",
            db,
        ],
    )
    assert again.exit_code == 1
    assert "ALREADY_EXISTS" in again.output and "Traceback" not in again.output
    existing = CliRunner().invoke(main, ["keys", "generate", "--out", str(tmp_path / "k.key")])
    assert existing.exit_code == 1, "an existing key file is never overwritten"
    missing = CliRunner().invoke(main, ["case", "show", "C-NOPE", "--db", db])
    assert missing.exit_code == 1 and "no case" in missing.output


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("transport", ["mtls", "plaintext"])
def test_serve_answers_health_and_reflection(tmp_path: Path, transport: str) -> None:
    run("keys", "generate", "--out", str(tmp_path / "hub.key"))
    port = free_port()
    pki_dir = tmp_path / "pki"
    if transport == "mtls":
        run("pki", "init", "--dir", str(pki_dir))
        run("pki", "issue", "REG", "--dir", str(pki_dir), "--out-dir", str(tmp_path / "reg"))
        flags = ["--tls-dir", str(pki_dir)]
    else:
        flags = ["--insecure-plaintext"]
    env = {**os.environ, "STOPHUB_DATABASE_URL": f"sqlite:///{tmp_path}/serve.db"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hub.cli",
            "serve",
            "--address",
            f"127.0.0.1:{port}",
            "--hub-key",
            str(tmp_path / "hub.key"),
            *flags,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    if transport == "mtls":
        tls = client_tls(tmp_path / "reg", "REG")
        channel = grpc.secure_channel(f"127.0.0.1:{port}", tls_credentials(tls))
    else:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        with channel:
            grpc.channel_ready_future(channel).result(timeout=30)
            health = health_pb2_grpc.HealthStub(channel)
            for service in ("", "stophub.v1.CaseService", "stophub.v1.DeliveryService"):
                status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
                assert status.status == health_pb2.HealthCheckResponse.SERVING
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            responses = stub.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
            )
            names = {s.name for r in responses for s in r.list_services_response.service}
            assert {
                "stophub.v1.CaseService",
                "stophub.v1.OrderService",
                "stophub.v1.DeliveryService",
                "stophub.v1.InstitutionService",
                "grpc.health.v1.Health",
            } <= names
    finally:
        proc.terminate()
        try:
            out, _ = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert proc.returncode == 0, out.decode()
    if transport == "mtls":
        assert "over mutual TLS" in out.decode()
    else:
        assert "INSECURE: serving PLAIN TEXT" in out.decode(), "a loud warning in the log"


def test_serve_without_a_key_says_how_to_make_one(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["serve", "--hub-key", str(tmp_path / "none.key"), "--db", f"sqlite:///{tmp_path}/x.db"],
    )
    assert result.exit_code == 1
    assert "stophub keys generate" in result.output
    _ = time
