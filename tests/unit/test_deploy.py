"""deploy/: the image, Compose, Kubernetes, systemd and Prometheus files say what the hub
really does.

Every manifest parses; the invariants that matter hold (two replicas, non-root, read-only root
filesystem, probes on the health port, the Secrets and mounts the arguments name); every flag
a deployment passes is one `stophub` has; the Kubernetes manifests validate against the
Kubernetes schemas (kubernetes-validate), `docker compose config` accepts compose.yaml and
`systemd-analyze verify` the unit, `promtool` the alert rules and their tests, each where the
tool is installed (skipped, with the reason, where it is not). Building and running the image
needs a Docker engine: see deploy/README.md.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from hub.cli import main
from hub.crypto import pki
from hub.domain.workdays import WeekdaysOnly

yaml = pytest.importorskip("yaml", reason="PyYAML is not installed (dev extra)")

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "compose.yaml"
COMPOSE_TLCP = DEPLOY / "compose.tlcp.yaml"
UNIT = DEPLOY / "systemd" / "stophub.service"
ENV_EXAMPLE = DEPLOY / "systemd" / "stophub.env.example"
DOCKERFILE = DEPLOY / "Dockerfile"

HEALTH_PORT = 8081
NAMESPACED = {"ConfigMap", "Secret", "Deployment", "Job", "Service", "PodDisruptionBudget"}


# ---- helpers ----------------------------------------------------------------------------------


@cache  # read-only: no test changes what it gets
def k8s_docs() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc is not None:
                docs.append((path.name, doc))
    return docs


def k8s(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        d for _, d in k8s_docs() if d["kind"] == kind and name in (None, d["metadata"]["name"])
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


@cache
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def pod_spec(kind: str) -> dict[str, Any]:
    spec: dict[str, Any] = k8s(kind)["spec"]["template"]["spec"]
    return spec


def main_container(kind: str) -> dict[str, Any]:
    containers = pod_spec(kind)["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def unit_settings() -> dict[str, list[str]]:
    """Key -> values (a key may repeat) of the unit, continuation lines joined."""
    settings: dict[str, list[str]] = {}
    text = UNIT.read_text(encoding="utf-8").replace("\\\n", " ")
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def split_command(args: list[str]) -> tuple[list[str], str, list[str]]:
    """`[group options] COMMAND [command options]` of a stophub command line."""
    for i, arg in enumerate(args):
        if not arg.startswith("-") and (i == 0 or not args[i - 1].startswith("--log")):
            return args[:i], arg, args[i + 1 :]
    raise AssertionError(f"no command in {args}")


def flags(args: list[str]) -> list[str]:
    return [a.split("=", 1)[0] for a in args if a.startswith("--")]


def option_value(args: list[str], flag: str) -> str:
    for i, arg in enumerate(args):
        if arg == flag:
            return args[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    raise AssertionError(f"{flag} not in {args}")


def env_example() -> dict[str, str]:
    """The example environment file's settings."""
    settings = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            settings[key] = " ".join(shlex.split(value))
    return settings


def systemd_command(line: str) -> list[str]:
    """The arguments after the binary, ${VAR} taken from the example environment file."""
    env = env_example()
    return shlex.split(re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], line))[1:]


@cache
def tlcp_overlay() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE_TLCP.read_text(encoding="utf-8"))
    return loaded


def command_lines() -> Iterator[tuple[str, list[str]]]:
    """Every stophub command line in deploy/, as (where, arguments after `stophub`)."""
    yield "k8s deployment", main_container("Deployment")["args"]
    yield "k8s migrate job", main_container("Job")["args"]
    services = compose()["services"]
    for name in ("hub", "migrate"):
        yield f"compose {name}", services[name]["command"]
    yield "compose.tlcp hub", tlcp_overlay()["services"]["hub"]["command"]
    settings = unit_settings()
    yield "systemd ExecStart", systemd_command(settings["ExecStart"][0])
    yield "systemd ExecStartPre", systemd_command(settings["ExecStartPre"][0])


_HELP: dict[tuple[str, ...], str] = {}


def help_text(*command: str) -> str:
    if command not in _HELP:
        result = CliRunner().invoke(main, [*command, "--help"])
        assert result.exit_code == 0, result.output
        _HELP[command] = result.output
    return _HELP[command]


def flag_cases() -> list[Any]:
    cases = []
    for where, args in command_lines():
        group, command, rest = split_command(args)
        for flag in flags(group):
            cases.append(pytest.param((), flag, id=f"{where}: stophub {flag}"))
        for flag in flags(rest):
            cases.append(pytest.param((command,), flag, id=f"{where}: stophub {command} {flag}"))
    return cases


# ---- the flags every deployment passes exist ------------------------------------------------


@pytest.mark.parametrize(("command", "flag"), flag_cases())
def test_each_flag_a_deployment_passes_is_one_stophub_has(
    command: tuple[str, ...], flag: str
) -> None:
    present = re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_text(*command))
    assert present, f"`stophub {' '.join(command)}` has no {flag}"


def test_every_deployment_serves_mutual_tls_on_the_agreed_ports_without_migrating() -> None:
    for where, args in command_lines():
        group, command, rest = split_command(args)
        if command != "serve":
            assert command == "migrate", where
            continue
        assert "--insecure-plaintext" not in rest, where
        assert "--no-migrate" in rest, f"{where}: the migration runs before the hub"
        assert option_value(rest, "--health-address").endswith(":8081"), where
        assert option_value(group, "--log-format") == "json", where
        for flag in ("--hub-key", "--tls-dir", "--data-keys", "--list-key"):
            option_value(rest, flag)  # every secret is named, none left to a relative default
    assert option_value(main_container("Deployment")["args"], "--address") == "0.0.0.0:7443"
    assert option_value(compose()["services"]["hub"]["command"], "--address") == "0.0.0.0:7443"


# ---- Kubernetes --------------------------------------------------------------------------------


def test_every_manifest_parses_and_names_its_namespace() -> None:
    docs = k8s_docs()
    assert {d["kind"] for _, d in docs} >= {
        "Namespace",
        "ConfigMap",
        "Secret",
        "Job",
        "Deployment",
        "Service",
    }
    for file, doc in docs:
        assert doc.get("apiVersion") and doc["metadata"].get("name"), file
        if doc["kind"] in NAMESPACED:
            assert doc["metadata"].get("namespace") == "stophub", (file, doc["metadata"]["name"])


def test_two_hub_replicas_spread_over_nodes_and_rolled_one_at_a_time() -> None:
    deployment = k8s("Deployment", "stophub")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    anti = pod_spec("Deployment")["affinity"]["podAntiAffinity"]
    terms = anti.get("preferredDuringSchedulingIgnoredDuringExecution", []) + [
        {"podAffinityTerm": t}
        for t in anti.get("requiredDuringSchedulingIgnoredDuringExecution", [])
    ]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    by_host = [
        t["podAffinityTerm"]
        for t in terms
        if t["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    ]
    assert by_host, "no anti-affinity across nodes"
    for term in by_host:
        assert term["labelSelector"]["matchLabels"].items() <= labels.items()
    pdb = k8s("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


def docker_uid() -> int:
    match = re.search(r"^ARG STOPHUB_UID=(\d+)$", DOCKERFILE.read_text(), re.MULTILINE)
    assert match
    return int(match.group(1))


@pytest.mark.parametrize("kind", ["Deployment", "Job"])
def test_pods_run_as_the_images_non_root_user_with_a_read_only_root(kind: str) -> None:
    spec = pod_spec(kind)
    security = spec["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == security["runAsGroup"] == docker_uid() != 0
    assert security["seccompProfile"]["type"] == "RuntimeDefault"
    assert spec["automountServiceAccountToken"] is False
    # A Service named `stophub` would put STOPHUB_* variables into the hub's environment.
    assert spec["enableServiceLinks"] is False
    for container in spec.get("initContainers", []) + spec["containers"]:
        ctx = container["securityContext"]
        assert ctx["readOnlyRootFilesystem"] is True, container["name"]
        assert ctx["allowPrivilegeEscalation"] is False, container["name"]
        assert ctx["capabilities"]["drop"] == ["ALL"], container["name"]
        assert container["resources"]["requests"], container["name"]
        assert container["resources"]["limits"]["memory"], container["name"]
        assert container["image"] == main_container("Deployment")["image"], container["name"]


def test_probes_ask_grpc_health_on_the_plain_text_health_port() -> None:
    hub = main_container("Deployment")
    ports = {p["name"]: p["containerPort"] for p in hub["ports"]}
    assert ports["health"] == HEALTH_PORT
    assert option_value(hub["args"], "--health-address") == f"0.0.0.0:{HEALTH_PORT}"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert hub[probe]["grpc"]["port"] == HEALTH_PORT, probe
        assert set(hub[probe]) & {"httpGet", "tcpSocket", "exec"} == set(), probe
    # Liveness must outlast a database restart (NOT_SERVING while it is unreachable).
    live = hub["livenessProbe"]
    assert live["periodSeconds"] * live["failureThreshold"] >= 60


def test_the_service_exposes_grpc_and_metrics_of_the_hubs_only() -> None:
    service = k8s("Service", "stophub")
    hub = main_container("Deployment")
    named = {p["name"]: p["containerPort"] for p in hub["ports"]}
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert set(ports) == {"grpc", "metrics"}
    assert named[ports["grpc"]["targetPort"]] == 7443 == ports["grpc"]["port"]
    assert named[ports["metrics"]["targetPort"]] == 9464 == ports["metrics"]["port"]
    assert option_value(hub["args"], "--metrics-address").endswith(":9464")
    selector = service["spec"]["selector"].items()
    assert selector <= k8s("Deployment")["spec"]["template"]["metadata"]["labels"].items()
    assert not selector <= k8s("Job")["spec"]["template"]["metadata"]["labels"].items()


def test_replicas_drain_within_the_grace_before_a_sigkill_and_are_found_by_one_name() -> None:
    """A stopping hub drains for --drain-seconds (docs/failover.md); Kubernetes and Docker
    SIGKILL it after their grace, which must be longer. Members find every ready replica
    under one name."""
    hub = main_container("Deployment")
    drain = float(option_value(hub["args"], "--drain-seconds"))
    assert pod_spec("Deployment")["terminationGracePeriodSeconds"] >= drain + 5
    compose_hub = compose()["services"]["hub"]
    compose_drain = float(option_value(compose_hub["command"], "--drain-seconds"))
    assert int(compose_hub["stop_grace_period"].removesuffix("s")) >= compose_drain + 5
    assert compose_hub["deploy"]["replicas"] == 2
    headless = k8s("Service", "stophub-replicas")["spec"]
    assert headless["clusterIP"] == "None" and headless["publishNotReadyAddresses"] is False
    labels = k8s("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert headless["selector"].items() <= labels.items()
    named = {p["name"]: p["containerPort"] for p in hub["ports"]}
    assert [named[p["targetPort"]] for p in headless["ports"]] == [7443]


def mounted(kind: str, container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """mountPath -> the volume behind it."""
    volumes = {v["name"]: v for v in pod_spec(kind)["volumes"]}
    return {m["mountPath"]: volumes[m["name"]] for m in container.get("volumeMounts", [])}


def secret_keys() -> dict[str, set[str]]:
    return {
        d["metadata"]["name"]: set(d.get("stringData", {})) | set(d.get("data", {}))
        for _, d in k8s_docs()
        if d["kind"] == "Secret"
    }


def test_every_file_the_hub_is_given_is_mounted_from_a_secret_or_config_map() -> None:
    hub = main_container("Deployment")
    args = hub["args"]
    mounts = mounted("Deployment", hub)
    secrets = secret_keys()

    def volume_of(path: str) -> dict[str, Any]:
        assert str(Path(path).parent) in mounts, f"{path} is not on a mounted volume"
        return mounts[str(Path(path).parent)]

    hub_key = option_value(args, "--hub-key")
    assert Path(hub_key).name in secrets[volume_of(hub_key)["secret"]["secretName"]]
    tls = mounts[option_value(args, "--tls-dir")]["secret"]["secretName"]
    assert secrets[tls] == {pki.CA_CERT, pki.HUB_CERT, pki.HUB_KEY}
    policy = option_value(args, "--policy")
    name = volume_of(policy)["configMap"]["name"]
    assert Path(policy).name in k8s("ConfigMap", name)["data"]
    for mount, volume in mounts.items():
        if mount != "/tmp":
            assert next(m for m in hub["volumeMounts"] if m["mountPath"] == mount)["readOnly"]
        if "secret" in volume:
            # The hub's group reads them (fsGroup); nobody else.
            assert volume["secret"]["defaultMode"] == 0o440, mount


@pytest.mark.parametrize("kind", ["Deployment", "Job"])
def test_key_files_the_hub_checks_for_mode_0600_are_copied_by_the_init_container(
    kind: str,
) -> None:
    """The hub refuses a keyring or list key others may read; Secret volumes cannot give a
    non-root user a 0600 file, so an init container copies them into an emptyDir."""
    spec = pod_spec(kind)
    (init,) = spec["initContainers"]
    command = init["command"]
    assert command[:3] == ["install", "-m", "0600"]
    *sources, target = command[3:]
    init_mounts = mounted(kind, init)
    source_dir = str(Path(sources[0]).parent)
    assert all(str(Path(s).parent) == source_dir for s in sources)
    projected = init_mounts[source_dir]
    names = (
        [s["secret"]["name"] for s in projected["projected"]["sources"]]
        if "projected" in projected
        else [projected["secret"]["secretName"]]
    )
    provided = set().union(*(secret_keys()[n] for n in names))
    assert {Path(s).name for s in sources} <= provided
    keys_volume = init_mounts[target.rstrip("/")]
    assert keys_volume["emptyDir"]["medium"] == "Memory"
    hub = main_container(kind)
    assert mounted(kind, hub)[target.rstrip("/")]["name"] == keys_volume["name"]
    env = {e["name"]: e for e in hub.get("env", [])}
    assert env["STOPHUB_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] in secret_keys()
    if kind == "Deployment":
        args = hub["args"]
        copied = {target.rstrip("/") + "/" + Path(s).name for s in sources}
        assert {option_value(args, "--data-keys"), option_value(args, "--list-key")} == copied
        config_env = k8s("ConfigMap", "stophub-env")["data"]
        assert config_env["STOPHUB_DATA_KEYS_FILE"] == option_value(args, "--data-keys")
        assert config_env["STOPHUB_LIST_KEY_FILE"] == option_value(args, "--list-key")
        assert config_env["STOPHUB_TLS_DIR"] == option_value(args, "--tls-dir")
    else:
        assert env["STOPHUB_DATA_KEYS_FILE"]["value"] in {
            target.rstrip("/") + "/" + Path(s).name for s in sources
        }


def test_the_policy_config_map_is_a_policy_the_hub_loads(tmp_path: Path) -> None:
    from hub.system.policy import load_policy

    policy = tmp_path / "policy.toml"
    policy.write_text(k8s("ConfigMap", "stophub-policy")["data"]["policy.toml"])
    assert load_policy(policy)


def test_the_policy_config_map_is_the_shipped_policy() -> None:
    """A year's holiday calendar added to one and not the other would make the cluster's hubs
    count other deadlines than the package's default."""
    from hub.system.policy import DEFAULT_POLICY

    shipped = DEFAULT_POLICY.read_text(encoding="utf-8")
    assert k8s("ConfigMap", "stophub-policy")["data"]["policy.toml"] == shipped


# ---- Prometheus alert rules --------------------------------------------------------------------

ALERTS = DEPLOY / "prometheus" / "alerts.yaml"


def test_every_alert_rule_reads_a_metric_the_hub_exports() -> None:
    from hub.observability.metrics import HubMetrics

    metrics = HubMetrics()
    metrics.watch_calendar(WeekdaysOnly(), lambda: datetime(2026, 12, 1, tzinfo=UTC))
    exported = {m.name for m in metrics.registry.collect()}
    rules = [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]
    assert rules
    for rule in rules:
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        for name in re.findall(r"\bstophub_[a-z_]+", rule["expr"]):
            assert name in exported, (rule["alert"], name)


def test_alert_rules_pass_their_promtool_tests() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian: prometheus)")
    for args in (["check", "rules", str(ALERTS)], ["test", "rules", "alerts.test.yaml"]):
        done = subprocess.run(
            [promtool, *args], cwd=ALERTS.parent, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_the_migration_job_runs_once_to_completion() -> None:
    job = k8s("Job", "stophub-migrate")
    assert main_container("Job")["args"] == ["migrate"]
    assert pod_spec("Job")["restartPolicy"] == "Never"
    assert job["spec"]["backoffLimit"] <= 3


def test_secret_templates_hold_placeholders_only() -> None:
    for _, doc in k8s_docs():
        if doc["kind"] == "Secret":
            assert "data" not in doc, doc["metadata"]["name"]
            for key, value in doc["stringData"].items():
                assert "REPLACE" in value, (doc["metadata"]["name"], key)
                assert "PRIVATE KEY" not in value


@pytest.mark.parametrize("version", ["1.28.0", "latest"])
def test_manifests_validate_against_the_kubernetes_schemas(version: str) -> None:
    kv = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate is not installed (dev extra)"
    )
    if version == "latest":
        version = kv.latest_version()
    for file, doc in k8s_docs():
        try:
            kv.validate(doc, version, strict=True)
        except kv.ValidationError as err:
            pytest.fail(f"{file} {doc['kind']}/{doc['metadata']['name']}: {err.message}")


# ---- Docker Compose ----------------------------------------------------------------------------


def test_compose_migrates_to_completion_before_the_hub_starts() -> None:
    services = compose()["services"]
    assert services["db"]["healthcheck"]["test"]
    assert services["migrate"]["command"] == ["migrate"]
    assert services["migrate"]["depends_on"]["db"]["condition"] == "service_healthy"
    hub = services["hub"]
    assert hub["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert hub["read_only"] is True
    assert hub["cap_drop"] == ["ALL"]
    assert all(v.endswith(":ro") for v in hub["volumes"])
    assert "8081" not in " ".join(str(p) for p in hub["ports"]), "health port is not published"
    assert f"127.0.0.1:{HEALTH_PORT}" in " ".join(hub["healthcheck"]["test"])
    assert services["init"]["profiles"] == ["init"]
    assert services["cli"]["profiles"] == ["admin"]
    for service in services.values():
        if "build" in service:
            assert service["build"]["dockerfile"] == "deploy/Dockerfile"


def compose_init_script() -> str:
    (script,) = compose()["services"]["init"]["command"]
    return str(script).replace("$$", "$")  # Compose's escape for a literal $


def test_compose_init_makes_every_secret_once(tmp_path: Path) -> None:
    """The init service's script, run here with this checkout's `stophub`, twice."""
    (tmp_path / "var").mkdir()
    (tmp_path / "ca").mkdir()
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "STOPHUB_HUB_NAMES": "localhost 127.0.0.1 hub",
    }
    for var in ("STOPHUB_DATA_KEYS", "STOPHUB_DATA_KEYS_FILE", "STOPHUB_TLS_DIR"):
        env.pop(var, None)
    run = [shutil.which("sh") or "/bin/sh", "-ec", compose_init_script()]
    first = subprocess.run(run, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    made = {
        p.relative_to(tmp_path).as_posix(): stat.S_IMODE(p.stat().st_mode)
        for p in tmp_path.rglob("*")
        if p.is_file()
    }
    for secret in (
        "var/hub.key",
        "var/data-keys.json",
        "var/list-key.json",
        "var/pki/hub-tls.key",
        "ca/ca.key",
    ):
        assert made[secret] == 0o600, secret
    assert {"var/pki/ca.pem", "var/pki/hub-tls.pem", "var/hub.pub"} <= set(made)
    assert "var/pki/ca.key" not in made, "the CA key stays out of the hub's volume"
    before = {p: (tmp_path / p).read_bytes() for p in made}
    second = subprocess.run(run, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr
    assert {p: (tmp_path / p).read_bytes() for p in made} == before


def test_the_tlcp_overlay_pins_the_gateway_it_makes_and_keeps_its_key_from_the_hub() -> None:
    """docs/tlcp-gateway.md: the hub's command is compose.yaml's plus the pin; the gateway's
    key lives in a volume the hub never mounts; the certificate the hub pins is the one
    init-gateway copies into the hub's volume."""
    overlay = tlcp_overlay()["services"]
    base = compose()["services"]["hub"]["command"]
    hub = overlay["hub"]["command"]
    assert hub[: len(base)] == base and hub[len(base) :] == [
        "--tls-gateway",
        "var/pki/gateway-tlcp-1-tls.pem",
    ]
    script = overlay["init-gateway"]["command"][0]
    assert "stophub pki issue-gateway tlcp-1 --dir ca --out-dir gateway" in script
    assert "cp gateway/gateway-tlcp-1-tls.pem var/pki/" in script
    gateway_mounts = overlay["tlcp-gateway"]["volumes"]
    assert "gateway:/etc/stophub-gateway:ro" in gateway_mounts
    assert not any(v.startswith("gateway:") for v in compose()["services"]["hub"]["volumes"])
    assert "STOPHUB_TLCP_GATEWAY_IMAGE:?" in overlay["tlcp-gateway"]["image"]


def test_docker_compose_config_accepts_compose_yaml() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker CLI")
    if subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("the docker CLI has no compose plugin")
    env = {**os.environ, "STOPHUB_DB_PASSWORD": "check0nly"}
    result = subprocess.run(
        [docker, "compose", "--profile", "*", "-f", str(COMPOSE), "config", "--quiet"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    missing = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE), "config", "--quiet"],
        env={k: v for k, v in env.items() if k != "STOPHUB_DB_PASSWORD"},
        capture_output=True,
        text=True,
        cwd=DEPLOY.parent,  # not deploy/: a developer's deploy/.env must not satisfy it
    )
    assert missing.returncode != 0 and "STOPHUB_DB_PASSWORD" in missing.stderr


# ---- the image -------------------------------------------------------------------------------


def final_stage() -> str:
    return DOCKERFILE.read_text().split("\nFROM ")[-1]


def test_the_image_runs_stophub_as_a_fixed_non_root_user_with_no_compiler() -> None:
    runtime = final_stage()
    assert re.search(r"^USER \$\{STOPHUB_UID\}:\$\{STOPHUB_UID\}$", runtime, re.MULTILINE)
    assert docker_uid() >= 1000
    assert re.search(r'^ENTRYPOINT \["stophub"\]$', runtime, re.MULTILINE)
    assert not re.search(r"gcc|build-essential|apt-get install", runtime)
    assert "COPY --from=build /opt/stophub /opt/stophub" in runtime
    assert not re.search(r"^(COPY|ADD) (?!--from=build)", runtime, re.MULTILINE)


def packages() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed: list[str] = project["tool"]["setuptools"]["packages"]
    return listed


def test_the_build_context_holds_every_package_the_wheel_is_made_of() -> None:
    dockerfile = DOCKERFILE.read_text()
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignore[[line.startswith("#") for line in ignore].index(False)] == "*"
    for top in sorted({p.split(".")[0] for p in packages()}):
        assert f"COPY {top}/ {top}/" in dockerfile, top
        assert f"!{top}/" in ignore, top
    # What the build reads besides the packages: the wheel's metadata, the C extension's
    # declaration (setup.py), the readme pyproject names.
    assert "COPY pyproject.toml setup.py README.md ./" in dockerfile
    for name in ("pyproject.toml", "setup.py", "README.md"):
        assert f"!{name}" in ignore, name


def test_every_python_package_in_the_tree_is_in_the_wheel() -> None:
    """pyproject lists packages one by one: a package left out is missing from the wheel, and
    so from the image, where `stophub` fails at import."""
    listed = set(packages())
    for top in sorted({p.split(".")[0] for p in listed}):
        for init in (ROOT / top).rglob("__init__.py"):
            package = ".".join(init.parent.relative_to(ROOT).parts)
            if "__pycache__" not in package:
                assert package in listed, f"{package} is not in pyproject's packages"


# ---- systemd ------------------------------------------------------------------------------------


def test_the_unit_is_hardened_and_migrates_before_serving() -> None:
    s = unit_settings()
    assert s["DynamicUser"] == ["yes"] or s.get("User")
    for key, value in {
        "ProtectSystem": "strict",
        "NoNewPrivileges": "yes",
        "Restart": "on-failure",
        "PrivateTmp": "yes",
        "CapabilityBoundingSet": "",
    }.items():
        assert s[key] == [value], key
    assert s["StateDirectory"] == ["stophub"]
    assert systemd_command(s["ExecStartPre"][0]) == ["migrate"]
    serve = systemd_command(s["ExecStart"][0])
    credentials = dict(c.split(":", 1) for c in s["LoadCredential"])
    assert {pki.CA_CERT, pki.HUB_CERT, pki.HUB_KEY} <= set(credentials)
    assert option_value(serve, "--tls-dir") == "%d"
    for flag in ("--hub-key", "--data-keys", "--list-key"):
        value = option_value(serve, flag)
        assert value.startswith("%d/") and value[3:] in credentials, flag
    # Every ${VAR} of the command line is set by the example environment file.
    env = env_example()
    assert set(re.findall(r"\$\{(\w+)\}", s["ExecStart"][0])) <= set(env)
    assert env["STOPHUB_DATABASE_URL"].startswith("postgresql://")


def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    stophub = Path(sys.executable).parent / "stophub"
    if not stophub.exists():
        pytest.skip(f"no stophub script beside {sys.executable}")
    # verify checks that the binaries exist: point the unit at this checkout's stophub.
    unit = tmp_path / "stophub.service"
    unit.write_text(UNIT.read_text().replace("/opt/stophub/bin/stophub", str(stophub)))
    result = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    problems = [line for line in result.stderr.splitlines() if unit.name in line]
    assert result.returncode == 0 and not problems, result.stderr
