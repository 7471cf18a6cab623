"""`ray up cluster/runpod.yaml` end to end on one machine.

The fake RunPod API creates "pods" that are this machine, reached through a throwaway
sshd (see local_pods.py). Real Ray 2.60 CLI and autoscaler, real provider, real SSH and
rsync: ray up starts the head; a task asking for one GPU makes the autoscaler create a
GPU worker pod that joins and runs it; a sweep run with --address puts its smoke trial on
the head's CPU and its GPU trial on that worker; the idle worker is terminated through
the API after idle_timeout_minutes (1); ray down leaves no pod and no process behind.

The tests run in order on one cluster (module scope); about 3 minutes.
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path

import pytest
from fake_runpod import FakeRunPod
from local_pods import GPU_PROBE, e2e_cluster_config, ray_cli_env, run_ray, write_config

from cluster.runpod import decode_pod_name

REPO = Path(__file__).resolve().parents[2]
from cluster.runpod._check import check_config

pytestmark = pytest.mark.cluster


class Cluster:
    """State shared by the ordered tests of this module."""

    def __init__(self, pods, fake, api_key, config_path, gcs_port, env):
        self.pods, self.fake, self.api_key = pods, fake, api_key
        self.config_path, self.gcs_port, self.env = config_path, gcs_port, env
        self.outputs = []
        self.probe = None
        self.down = False

    def ray(self, *args, timeout_s=300):
        result = run_ray(list(args), self.env, timeout_s)
        self.outputs.append(result.stdout + result.stderr)
        return result

    def tags(self, pod_id):
        return decode_pod_name(self.fake.pod_json(pod_id)["name"])[0]


@pytest.fixture(scope="module")
def cluster(local_pods):
    api_key = "rpa_SECRET_" + secrets.token_hex(12)
    fake = FakeRunPod(api_key=api_key, provision_s=1.0, start_s=1.0).start()
    local_pods.attach(fake)
    config = e2e_cluster_config(local_pods, f"e2e-{secrets.token_hex(3)}")
    # the test file is itself a valid RunPod cluster file
    check_config({k: v for k, v in config.items() if k != "_gcs_port"})
    path = local_pods.root / "cluster.yaml"
    gcs_port = write_config(config, path)
    state = Cluster(local_pods, fake, api_key, path, gcs_port,
                    ray_cli_env(local_pods, api_key, fake.url))
    try:
        yield state
    finally:
        if not state.down:
            state.ray("down", "-y", str(path), timeout_s=120)
        for pod_id in fake.pod_ids():  # never leave a "pod" running
            local_pods.kill_pod(pod_id)
        fake.stop()


def test_ray_up_starts_the_head_through_the_api(cluster):
    started = time.monotonic()
    result = cluster.ray("up", "-y", "--no-config-cache", str(cluster.config_path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert time.monotonic() - started < 180
    [head] = cluster.fake.pod_ids()
    tags = cluster.tags(head)
    assert tags["ray-node-type"] == "head" and tags["ray-node-status"] == "up-to-date"
    create = cluster.fake.calls("POST")[0].body
    assert create["gpu"]["id"] == "NVIDIA RTX A4000" and "22/tcp" in create["ports"]
    assert create["env"]["PUBLIC_KEY"].startswith("ssh-ed25519 ")
    assert cluster.fake.pod_json(head)["status"] == "RUNNING"


def test_a_gpu_task_makes_the_autoscaler_add_a_worker_that_runs_it(cluster):
    (cluster.pods.home / "gpu_probe.py").write_text(GPU_PROBE)
    address = f"{cluster.pods.private_ip}:{cluster.gcs_port}"
    result = cluster.ray("exec", str(cluster.config_path),
                         f"python ~/gpu_probe.py {address} {cluster.pods.private_ip} 150")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    line = [l for l in result.stdout.splitlines() if l.startswith("GPU_PROBE ")][-1]
    probe = json.loads(line.split(" ", 1)[1])
    cluster.probe = probe
    assert probe["node"] != probe["head"], "the GPU task ran on the head"
    assert probe["gpus"] == ["0"]
    creates = cluster.fake.calls("POST", "/v2/pods")
    assert len(creates) == 2
    worker = [p for p in cluster.fake.pod_ids() if cluster.tags(p)["ray-node-type"] == "worker"]
    assert len(worker) == 1
    assert cluster.tags(worker[0])["ray-user-node-type"] == "gpu_worker"
    assert creates[1].body["gpu"]["id"] == "NVIDIA GeForce RTX 4090"
    assert "RUNPOD_API_KEY" not in creates[1].body["env"]
    cluster.worker = worker[0]


MINI_SWEEP = """
name: cluster_e2e
base_config: {base}
seed: 1
hang_timeout_s: 300
search_space:
  estimator.params.lr: {{choice: [0.001]}}
stages:
  - name: smoke
    resources: {{cpu: 1, gpu: 0}}
    num_samples: 1
    epochs: 1
    overrides: {overrides}
    scheduler: none
    max_concurrent_trials: 1
    pass_rule: {{min_success_fraction: 1.0}}
  - name: hisso
    resources: {{cpu: 1, gpu: 1}}
    num_samples: 1
    epochs: 2
    overrides: {overrides}
    scheduler: none
    max_concurrent_trials: 1
    pass_rule: {{min_success_fraction: 1.0}}
"""


def _last_result(trial_dir: Path) -> dict:
    lines = (trial_dir / "result.json").read_text().splitlines()
    return json.loads(lines[-1])


def test_a_sweep_with_address_runs_smoke_then_puts_the_gpu_stage_on_the_worker(cluster):
    if not (REPO / "sweeps" / "hisso_wave.py").exists():
        pytest.skip("sweeps/hisso_wave.py is not there yet")
    overrides = ("{hisso.mixed_precision: false, data.kwargs.steps: 400, "
                 "estimator.params.hidden_units: 16, estimator.params.depth: 1}")
    sweep_file = cluster.pods.root / "mini_sweep.yaml"
    sweep_file.write_text(MINI_SWEEP.format(
        base=REPO / "configs" / "hisso" / "wave_resnet_small.yaml", overrides=overrides))
    storage = cluster.pods.root / "sweeps"
    address = f"{cluster.pods.private_ip}:{cluster.gcs_port}"
    result = cluster.ray("exec", str(cluster.config_path),
                         f"cd {REPO} && python sweeps/hisso_wave.py --sweep {sweep_file} "
                         f"--address {address} --storage {storage} --name e2e --profile none")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    [smoke] = [p for p in (storage / "e2e" / "smoke").iterdir() if (p / "result.json").exists()]
    [gpu] = [p for p in (storage / "e2e" / "hisso").iterdir() if (p / "result.json").exists()]
    assert (smoke / "metrics.json").exists() and (gpu / "metrics.json").exists()
    # A CPU-only smoke trial may run on any node with a free CPU (the GPU worker declares CPU 1
    # too, and Ray's scheduler picks by load), so only the GPU trial's node is fixed.
    assert _last_result(smoke)["node_id"] in (cluster.probe["head"], cluster.probe["node"])
    assert _last_result(gpu)["node_id"] == cluster.probe["node"]  # the autoscaled GPU worker
    assert len(cluster.fake.calls("POST", "/v2/pods")) == 2  # the running worker was reused


def test_the_idle_worker_is_terminated_through_the_api(cluster):
    worker = cluster.worker
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and worker not in cluster.fake.deleted:
        time.sleep(2)
    assert worker in cluster.fake.deleted, "idle worker was not terminated"
    assert any(r.path == f"/v2/pods/{worker}" for r in cluster.fake.calls("DELETE"))
    assert len(cluster.fake.pod_ids()) == 1  # the head stays
    assert cluster.pods.processes(worker) == []


def test_ray_down_leaves_no_pod_and_no_process(cluster):
    result = cluster.ray("down", "-y", str(cluster.config_path), timeout_s=120)
    cluster.down = True
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert cluster.fake.pod_ids() == []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and cluster.pods.processes():
        time.sleep(0.5)
    assert cluster.pods.processes() == []


def test_the_api_key_is_in_no_output_log_or_file(cluster):
    for output in cluster.outputs:
        assert cluster.api_key not in output
    # .pod_env is the fake's stand-in for the head pod's container environment.
    roots = (cluster.pods.home, cluster.pods.ray_tmp, cluster.pods.root / "launcher-tmp",
             cluster.pods.root / "sweeps")
    files = [p for root in roots
             for p in Path(root).rglob("*") if p.is_file() and p.name != ".pod_env"]
    assert any(p.name == "ray_bootstrap_config.yaml" for p in files)
    assert any(p.name.startswith("monitor") for p in files)
    for path in files:
        assert cluster.api_key.encode() not in path.read_bytes(), path
