"""deploy/: the Kubernetes manifests and the Dockerfile agree with the code (no Docker engine or
cluster here: the files are parsed, and the Dockerfile's install steps run in a fresh venv)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

import agentstream
from agentstream.cli.worker import STOP_MARGIN_S
from agentstream.config import Settings
from agentstream.streams import topology

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"


def manifests() -> dict[str, dict[str, Any]]:
    """Every Kubernetes object under deploy/k8s by kind (one of each kind)."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document and "kind" in document and document["kind"] != "Kustomization":
                assert document["kind"] not in found, f"two {document['kind']} objects"
                found[document["kind"]] = document
    return found


@pytest.fixture(scope="module")
def k8s() -> dict[str, dict[str, Any]]:
    return manifests()


@pytest.fixture(scope="module")
def config(k8s: dict[str, dict[str, Any]]) -> Settings:
    """The settings a worker gets from the ConfigMap (and nothing else)."""
    data: dict[str, str] = k8s["ConfigMap"]["data"]
    saved = dict(os.environ)
    try:
        for key in [k for k in os.environ if k.startswith("AGENTSTREAM_")]:
            del os.environ[key]
        os.environ.update(data)
        return Settings(_env_file=None)  # type: ignore[call-arg]
    finally:
        os.environ.clear()
        os.environ.update(saved)


def container(k8s: dict[str, dict[str, Any]]) -> dict[str, Any]:
    containers = k8s["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: dict[str, Any] = containers[0]
    return result


def test_kustomization_lists_every_manifest_but_the_secret_example() -> None:
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present - {"secret.example.yaml"}


def test_probes_hit_the_health_endpoints_on_the_metrics_port(
    k8s: dict[str, dict[str, Any]], config: Settings
) -> None:
    worker = container(k8s)
    ports = {p["name"]: p["containerPort"] for p in worker["ports"]}
    assert ports == {"metrics": config.metrics_port}
    assert worker["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "metrics"}
    assert worker["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    annotations = k8s["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(config.metrics_port)
    assert annotations["prometheus.io/path"] == "/metrics"
    service_port = k8s["Service"]["spec"]["ports"][0]
    assert (service_port["port"], service_port["targetPort"]) == (config.metrics_port, "metrics")


def test_grace_period_covers_the_drain(k8s: dict[str, dict[str, Any]], config: Settings) -> None:
    spec = k8s["Deployment"]["spec"]["template"]["spec"]
    drain = config.timeouts.shutdown_grace_s
    assert spec["terminationGracePeriodSeconds"] == drain + STOP_MARGIN_S


def test_config_and_secret_references_resources_and_security(
    k8s: dict[str, dict[str, Any]], config: Settings
) -> None:
    worker = container(k8s)
    refs = {next(iter(ref)): next(iter(ref.values()))["name"] for ref in worker["envFrom"]}
    assert refs == {
        "configMapRef": k8s["ConfigMap"]["metadata"]["name"],
        "secretRef": k8s["Secret"]["metadata"]["name"],
    }
    assert "REDIS_URL" not in " ".join(k8s["ConfigMap"]["data"])  # it may hold a password
    assert "AGENTSTREAM_REDIS_URL" in k8s["Secret"]["stringData"]
    assert set(worker["resources"]) == {"requests", "limits"}
    pod = k8s["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert worker["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"] for m in worker["volumeMounts"]}
    assert any(str(config.run_dir).startswith(m) for m in mounts), "run_dir must be writable"
    assert worker["image"].endswith(f":{agentstream.__version__}")
    assert config.env == "production"


def test_pdb_and_selectors_match_the_pods(k8s: dict[str, dict[str, Any]]) -> None:
    labels = k8s["Deployment"]["spec"]["template"]["metadata"]["labels"]
    for kind in ("PodDisruptionBudget",):
        selector = k8s[kind]["spec"]["selector"]["matchLabels"]
        assert selector.items() <= labels.items()
    assert k8s["Service"]["spec"]["selector"].items() <= labels.items()
    assert k8s["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1


def test_keda_scales_on_the_lag_of_the_topics_where_model_calls_queue(
    k8s: dict[str, dict[str, Any]], config: Settings
) -> None:
    scaled = k8s["ScaledObject"]["spec"]
    assert scaled["scaleTargetRef"]["name"] == k8s["Deployment"]["metadata"]["name"]
    # the first model turn runs under the request's offset (local hand-over), later turns
    # under the generation topic's
    topics = [t["metadata"]["topic"] for t in scaled["triggers"]]
    assert topics == [
        topology.stage("validation").topic(config),
        topology.stage("generation").topic(config),
    ]
    for trigger in scaled["triggers"]:
        assert trigger["type"] == "kafka"
        meta = trigger["metadata"]
        assert meta["consumerGroup"] == config.consumer_group
        assert meta["bootstrapServers"] == config.kafka_bootstrap_servers
    # more workers than partitions would sit without an assignment (and never be ready)
    assert scaled["maxReplicaCount"] <= config.topics.partitions
    assert 1 <= scaled["minReplicaCount"] <= scaled["maxReplicaCount"]


# --- Dockerfile --------------------------------------------------------------------------------


def stages() -> list[tuple[str, list[tuple[str, str]]]]:
    """``[(stage name, [(INSTRUCTION, arguments)])]`` with continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result: list[tuple[str, list[tuple[str, str]]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, args = line.partition(" ")
        if instruction.upper() == "FROM":
            result.append((args.split(" AS ")[-1].strip(), []))
        elif result:
            result[-1][1].append((instruction.upper(), args.strip()))
    return result


def test_dockerfile_is_multi_stage_non_root_without_build_tools_at_the_end() -> None:
    (build_name, build), (final_name, final) = stages()
    assert (build_name, final_name) == ("build", "runtime")
    final_text = " ".join(args for _, args in final)
    assert not re.search(r"build-essential|gcc|apt-get install", final_text)
    assert ("COPY", "--from=build /opt/agentstream /opt/agentstream") in final
    users = [args for instruction, args in final if instruction == "USER"]
    assert users
    assert users[-1].split(":")[0] not in {"0", "root"}
    env = " ".join(args for instruction, args in final if instruction == "ENV")
    assert "AGENTSTREAM_METRICS_PORT=9100" in env
    assert ("EXPOSE", "9100") in final
    assert any(i == "HEALTHCHECK" and "/readyz" in a for i, a in final)
    assert ("CMD", '["worker"]') in final
    assert any(i == "RUN" and "build-essential" in a for i, a in build)


@pytest.mark.slow
def test_dockerfile_install_steps_in_a_fresh_venv(tmp_path: Path) -> None:
    """SLOW (a minute or more: installs the package and its dependencies from PyPI, through pip's
    cache): the build stage's COPY and RUN steps, in a scratch directory instead of /src and a
    venv there instead of /opt/agentstream; then the installed command runs."""
    (_, build), _ = stages()
    context, venv = tmp_path / "src", tmp_path / "venv"
    context.mkdir()
    env = {**os.environ, "VENV": str(venv), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    for instruction, args in build:
        if instruction == "COPY":
            *sources, _dest = shlex.split(args)
            for source in sources:
                target = context / source
                if (ROOT / source).is_dir():
                    shutil.copytree(
                        ROOT / source, target, ignore=shutil.ignore_patterns("__pycache__")
                    )
                else:
                    shutil.copy2(ROOT / source, target)
        elif instruction == "RUN" and "apt-get" not in args:
            # pip's cache keeps this test reasonable; the image build uses --no-cache-dir
            command = args.replace("--no-cache-dir ", "").replace(
                "python -m venv", f"{sys.executable} -m venv"
            )
            subprocess.run(["sh", "-c", command], cwd=context, env=env, check=True, timeout=900)
    installed = subprocess.run(
        [str(venv / "bin" / "agentstream"), "--help"], capture_output=True, text=True, check=True
    )
    for command in ("worker", "health", "status", "top"):
        assert command in installed.stdout
    located = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import agentstream; print(agentstream.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    assert located.stdout.startswith(str(venv)), "installed into the venv, not editable"
