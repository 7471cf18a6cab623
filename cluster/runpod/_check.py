"""`python -m cluster.runpod check FILE`: validate a RunPod launcher file, print its plan.

Checks, in order: YAML syntax; Ray's own schema (`validate_config`); the RunPod node
configs (GPU type, NVIDIA for global networking, image, 22/tcp, CPU next to GPU); the SSH
key files; the Ray pin against the driver's Ray; the start commands' private address.
Starts nothing and calls no API.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import yaml

PROVIDER_MODULE = "cluster.runpod.RunPodNodeProvider"


class ConfigError(ValueError):
    """A bad launcher file; `key_path` names the offending key (dotted)."""

    def __init__(self, key_path: str, message: str) -> None:
        self.key_path = key_path
        super().__init__(f"{key_path}: {message}")


@dataclass
class NodeTypePlan:
    name: str
    role: str  # head | worker
    min_pods: int
    max_pods: int
    gpu: str
    resources: Dict[str, Any]
    cost_per_hour: Optional[float]


@dataclass
class Plan:
    cluster_name: str
    max_pods: int
    idle_timeout_minutes: float
    node_types: List[NodeTypePlan]
    warnings: List[str] = field(default_factory=list)

    @property
    def idle_cost_per_hour(self) -> Optional[float]:
        """What the cluster costs with no work: the head plus min_workers of each type."""
        total = 0.0
        for node in self.node_types:
            pods = 1 if node.role == "head" else node.min_pods
            if pods and node.cost_per_hour is None:
                return None
            total += pods * (node.cost_per_hour or 0.0)
        return total

    @property
    def max_cost_per_hour(self) -> Optional[float]:
        total = 0.0
        for node in self.node_types:
            if node.cost_per_hour is None:
                return None
            total += node.max_pods * node.cost_per_hour
        return total

    def render(self) -> str:
        lines = [f"cluster {self.cluster_name!r}: at most {self.max_pods} pods "
                 f"(head + up to {self.max_pods - 1} workers); idle workers stop after "
                 f"{self.idle_timeout_minutes:g} min", ""]
        header = f"{'node type':<14} {'role':<7} {'pods':<6} {'GPU per pod':<30} {'Ray resources':<28} {'$/h each':>9}"
        lines += [header, "-" * len(header)]
        for node in self.node_types:
            pods = "1" if node.role == "head" else f"{node.min_pods}-{node.max_pods}"
            resources = ", ".join(f"{k}={v}" for k, v in node.resources.items())
            cost = "n/a" if node.cost_per_hour is None else f"{node.cost_per_hour:.2f}"
            lines.append(f"{node.name:<14} {node.role:<7} {pods:<6} {node.gpu:<30} {resources:<28} {cost:>9}")
        idle, most = self.idle_cost_per_hour, self.max_cost_per_hour
        lines.append("")
        lines.append("cost while idle: " + ("n/a (no estimated_cost_per_hour)" if idle is None else f"${idle:.2f}/h"))
        lines.append("cost at most:    " + ("n/a (no estimated_cost_per_hour)" if most is None else f"${most:.2f}/h"))
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def load_config(path: str) -> Dict[str, Any]:
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such cluster file")
    try:
        with open(path) as handle:
            config = yaml.safe_load(handle)
    except yaml.YAMLError as exc:
        raise ConfigError("(file)", f"not valid YAML: {exc}") from None
    if not isinstance(config, dict):
        raise ConfigError("(file)", "must be a mapping of cluster settings")
    return config


def _ray_schema_check(config: Dict[str, Any]) -> None:
    import jsonschema
    from ray.autoscaler._private.util import validate_config

    try:
        validate_config(config)
    except jsonschema.ValidationError as exc:
        path = ".".join(str(p) for p in exc.absolute_path) or "(top level)"
        raise ConfigError(path, exc.message) from None
    except ValueError as exc:
        raise ConfigError("(top level)", str(exc)) from None


def check_config(config: Dict[str, Any], *, config_dir: str = ".") -> Plan:
    """Validate a launcher config (already loaded); returns its plan or raises ConfigError."""
    _ray_schema_check(config)
    provider = config.get("provider") or {}
    if provider.get("type") != "external":
        raise ConfigError("provider.type", f"must be 'external'. Got {provider.get('type')!r}.")
    if provider.get("module") != PROVIDER_MODULE:
        raise ConfigError("provider.module", f"must be {PROVIDER_MODULE!r}. Got {provider.get('module')!r}.")
    warnings: List[str] = []
    node_types = config.get("available_node_types") or {}
    head_type = config.get("head_node_type")
    plans = []
    for name, node in node_types.items():
        where = f"available_node_types.{name}"
        node_config = node.get("node_config") or {}
        _check_node_config(node_config, f"{where}.node_config")
        resources = dict(node.get("resources") or {})
        if resources.get("GPU", 0) and resources.get("CPU", 0) < 1:
            raise ConfigError(f"{where}.resources.CPU",
                              "a GPU node type must also declare CPU >= 1, or Ray cannot place "
                              "default tasks (which ask for 1 CPU) there")
        cost = node_config.get("estimated_cost_per_hour")
        if cost is not None and (not isinstance(cost, (int, float)) or cost < 0):
            raise ConfigError(f"{where}.node_config.estimated_cost_per_hour",
                              f"must be a number >= 0 (USD per hour). Got {cost!r}.")
        gpu = node_config["gpu"]
        role = "head" if name == head_type else "worker"
        plans.append(NodeTypePlan(
            name=name, role=role,
            min_pods=1 if role == "head" else int(node.get("min_workers", 0)),
            max_pods=1 if role == "head" else int(node.get("max_workers", config.get("max_workers", 0))),
            gpu=f"{gpu.get('count', 1)} x {gpu['id']}",
            resources=resources,
            cost_per_hour=None if cost is None else float(cost),
        ))
    _check_keys(config, provider, config_dir)
    _check_commands(config, warnings)
    if not os.environ.get("RUNPOD_API_KEY"):
        warnings.append("RUNPOD_API_KEY is not set in this shell: `ray up` needs it")
    return Plan(
        cluster_name=str(config.get("cluster_name", "default")),
        max_pods=1 + int(config.get("max_workers", 0)),
        idle_timeout_minutes=float(config.get("idle_timeout_minutes", 5)),
        node_types=plans,
        warnings=warnings,
    )


def _check_node_config(node_config: Dict[str, Any], where: str) -> None:
    if node_config.get("cpu") is not None:
        raise ConfigError(f"{where}.cpu", "CPU pods cannot join RunPod's global networking; "
                                          "use a gpu: {id, count} pod")
    gpu = node_config.get("gpu")
    if not isinstance(gpu, dict) or not isinstance(gpu.get("id"), str) or not gpu.get("id"):
        raise ConfigError(f"{where}.gpu.id", "a GPU type id is required, e.g. 'NVIDIA RTX A4000' "
                                             "(see GET /v2/catalog/gpus)")
    if "NVIDIA" not in gpu["id"]:
        raise ConfigError(f"{where}.gpu.id", f"global networking needs an NVIDIA GPU. Got {gpu['id']!r}.")
    count = gpu.get("count", 1)
    if not isinstance(count, int) or count < 1:
        raise ConfigError(f"{where}.gpu.count", f"must be an integer >= 1. Got {count!r}.")
    if not isinstance(node_config.get("image"), str) or not node_config.get("image"):
        raise ConfigError(f"{where}.image", "a container image is required, e.g. "
                                            "runpod/pytorch:1.0.2-cu1281-torch280-ubuntu2404")
    ports = node_config.get("ports")
    if not isinstance(ports, list) or "22/tcp" not in ports:
        raise ConfigError(f"{where}.ports", f"must include '22/tcp' (SSH through the public "
                                            f"port mapping). Got {ports!r}.")
    if node_config.get("globalNetworking") is False:
        raise ConfigError(f"{where}.globalNetworking", "must be true: Ray's pod-to-pod traffic "
                                                       "uses the private global-networking address")
    if "name" in node_config:
        raise ConfigError(f"{where}.name", "is set by the provider (it carries the Ray tags); remove it")
    env = node_config.get("env") or {}
    if "RUNPOD_API_KEY" in env:
        raise ConfigError(f"{where}.env.RUNPOD_API_KEY", "never put the API key in the file; "
                                                         "export RUNPOD_API_KEY instead")


def _check_keys(config: Dict[str, Any], provider: Dict[str, Any], config_dir: str) -> None:
    auth = config.get("auth") or {}
    private = auth.get("ssh_private_key")
    if not private:
        raise ConfigError("auth.ssh_private_key", "a private key path is required")
    full = _resolve(private, config_dir)
    if not os.path.exists(full):
        raise ConfigError("auth.ssh_private_key", f"{private} does not exist. Create a key: "
                                                  f"ssh-keygen -t ed25519 -N '' -f {private}")
    if provider.get("ssh_public_key"):
        return
    public = provider.get("ssh_public_key_path")
    key_path = "provider.ssh_public_key_path"
    if not public:
        public, key_path = f"{private}.pub", "auth.ssh_private_key"
    if not os.path.exists(_resolve(public, config_dir)):
        raise ConfigError(key_path, f"public key {public} does not exist; pods get it as "
                                    f"PUBLIC_KEY. Make it: ssh-keygen -y -f {private} > {public}")


def _resolve(path: str, config_dir: str) -> str:
    expanded = os.path.expanduser(path)
    return expanded if os.path.isabs(expanded) else os.path.join(config_dir, expanded)


# The extras every pod needs: `sweeps` (Ray Tune trials, pyarrow results, DuckDB, Optuna) and
# `cluster` (the node provider the head's autoscaler imports). A bare install has neither.
REQUIRED_EXTRAS = ("sweeps", "cluster")


def _check_project_install(config: Dict[str, Any], warnings: List[str]) -> None:
    """A setup command that pip-installs this project must take the extras the sweep needs.

    No install at all is only a warning: an image may have the project baked in.
    """
    installs = []
    for key in ("setup_commands", "head_setup_commands", "worker_setup_commands"):
        for index, command in enumerate(config.get(key) or []):
            text = str(command)
            if "pip" in text and "install" in text:
                for match in re.finditer(r"psann-sweeps(?:\[([^\]]*)\])?", text):
                    extras = {e.strip() for e in (match.group(1) or "").split(",") if e.strip()}
                    installs.append((f"{key}[{index}]", extras))
    fix = 'python -m pip install -q -e "$HOME/psann-sweeps[sweeps,cluster]"'
    if not installs:
        warnings.append(f"no setup command installs psann-sweeps; unless the image has it, add: {fix}")
    for where, extras in installs:
        missing = [e for e in REQUIRED_EXTRAS if e not in extras]
        if missing:
            raise ConfigError(where, f"installs psann-sweeps without the {', '.join(missing)} extra(s) the "
                                     f"trials and the autoscaler import; use: {fix}")


def _check_commands(config: Dict[str, Any], warnings: List[str]) -> None:
    import ray

    pins = []
    for key in ("setup_commands", "head_setup_commands", "worker_setup_commands"):
        for index, command in enumerate(config.get(key) or []):
            for match in re.finditer(r"ray(?:\[[^\]]*\])?==([0-9][0-9A-Za-z.+-]*)", str(command)):
                pins.append((f"{key}[{index}]", match.group(1)))
    for where, version in pins:
        if version != ray.__version__:
            raise ConfigError(where, f"installs Ray {version} but the driver runs Ray "
                                     f"{ray.__version__}; head, workers and driver need one version")
    if not pins:
        warnings.append(f"no setup command pins Ray (the driver runs {ray.__version__}); "
                        "a different Ray on the pods will fail to join")
    _check_project_install(config, warnings)
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        commands = " ".join(str(c) for c in config.get(key) or [])
        if "ray start" in commands and "--node-ip-address" not in commands:
            raise ConfigError(key, "`ray start` must pass --node-ip-address=$RUNPOD_PRIVATE_IP, "
                                   "or Ray uses an address other pods cannot reach")
