"""Autoscaling latency of the RunPod provider, on the end-to-end setup of the tests.

The fake RunPod API's pods are this machine (a throwaway local sshd, see
tests/cluster/local_pods.py), so this measures what the project controls: Ray's
autoscaler, the provider and its API calls, SSH/rsync and Ray start-up. RunPod's own
provisioning (machine allocation, image pull, pip installs) comes on top on real pods.

    sudo .venv/bin/python bench/cluster_scaling.py [--cycles 3] [--smoke-test]

One `ray up`, then per cycle: a task asking for one GPU is submitted; we record seconds
until the GPU worker pod joins Ray and until the task starts on it; the worker then idles
and we record seconds until it is terminated through the API (idle_timeout_minutes = 1,
so about 60 s of that is the timeout itself). API calls are counted per phase. Median of
the cycles; a markdown and a JSON report are written under bench/reports/.
"""

from __future__ import annotations

import argparse
import json
import platform
import secrets
import statistics
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "cluster"))
sys.path.insert(0, str(REPO))

from fake_runpod import FakeRunPod  # noqa: E402
from local_pods import (  # noqa: E402
    GPU_PROBE,
    LocalPods,
    LocalPodsUnavailable,
    e2e_cluster_config,
    ray_cli_env,
    run_ray,
    write_config,
)

# What RunPod adds on real pods, not measured here (documented estimate, see report).
REAL_POD_ESTIMATE = (
    "On real RunPod pods add, per new worker: allocation and image pull until RUNNING "
    "(about 0.5-3 min for a runpod/pytorch image, longer when the host has to pull it), "
    "then the setup commands (pip install of Ray and the project: about 1-2 min). "
    "Termination is one DELETE call; billing stops when it returns."
)


def _call_name(method: str, path: str) -> str:
    parts = [p for p in path.split("/") if p]
    if len(parts) == 2:
        return {"GET": "listPods", "POST": "createPod"}.get(method, method)
    if len(parts) == 3:
        return {"GET": "getPod", "PATCH": "updatePod", "DELETE": "deletePod"}.get(method, method)
    return "podAction"


def _calls_between(fake: FakeRunPod, start_monotonic: float, end_monotonic: float) -> dict:
    counts = Counter(_call_name(r.method, r.path) for r in fake.requests
                     if start_monotonic <= r.at <= end_monotonic)
    return dict(sorted(counts.items()))


def run_cycle(pods, fake, env, config_path, gcs_port, index) -> dict:
    address = f"{pods.private_ip}:{gcs_port}"
    (pods.home / "gpu_probe.py").write_text(GPU_PROBE)
    wall0, mono0 = time.time(), time.monotonic()
    result = run_ray(["exec", str(config_path),
                      f"python ~/gpu_probe.py {address} {pods.private_ip} 300"], env, 400)
    mono_done, wall_done = time.monotonic(), time.time()
    if result.returncode != 0:
        raise RuntimeError(f"cycle {index}: GPU probe failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    line = [l for l in result.stdout.splitlines() if l.startswith("GPU_PROBE ")][-1]
    probe = json.loads(line.split(" ", 1)[1])
    if probe["node"] == probe["head"]:
        raise RuntimeError(f"cycle {index}: the GPU task ran on the head")
    to_mono = lambda wall: mono0 + (wall - wall0)  # noqa: E731  (same clock, two origins)
    workers = [p for p in fake.pod_ids() if fake.pod_json(p)["name"].startswith("ray-") and
               "gpu_worker" in fake.pod_json(p)["name"]]
    if len(workers) != 1:
        raise RuntimeError(f"cycle {index}: expected one worker pod, found {workers}")
    worker = workers[0]
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and worker not in fake.deleted:
        time.sleep(0.5)
    if worker not in fake.deleted:
        raise RuntimeError(f"cycle {index}: idle worker {worker} was not terminated")
    deleted_at = [r.at for r in fake.calls("DELETE") if r.path.endswith(worker)][0]
    return {
        "cycle": index,
        "request_to_join_s": probe["joined"] - probe["submitted"],
        "request_to_task_start_s": probe["started"] - probe["submitted"],
        "idle_to_terminated_s": deleted_at - mono_done,
        "scale_up_api_calls": _calls_between(fake, to_mono(probe["submitted"]), to_mono(probe["joined"])),
        "scale_down_api_calls": _calls_between(fake, mono_done, deleted_at),
        "finished_at": datetime.fromtimestamp(wall_done, timezone.utc).isoformat(),
    }


def summarise(cycles: list) -> dict:
    summary = {}
    for key in ("request_to_join_s", "request_to_task_start_s", "idle_to_terminated_s"):
        values = [c[key] for c in cycles]
        summary[key] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
    for key in ("scale_up_api_calls", "scale_down_api_calls"):
        names = sorted({n for c in cycles for n in c[key]})
        summary[key] = {n: statistics.median([c[key].get(n, 0) for c in cycles]) for n in names}
    return summary


def render(report: dict) -> str:
    s = report["summary"]
    lines = [
        f"# Cluster scaling benchmark ({report['date']})",
        "",
        f"Machine: {report['machine']}. Ray {report['ray']}, autoscaler v2, fake RunPod API "
        f"(pods PROVISIONING {report['provision_s']} s, STARTING {report['start_s']} s) whose pods "
        "are this machine over a local sshd. idle_timeout_minutes = 1. "
        f"{len(report['cycles'])} cycles after one `ray up` ({report['ray_up_s']:.1f} s); "
        f"`ray down` took {report['ray_down_s']:.1f} s.",
        "",
        "| measure | median | min | max |",
        "|---|---|---|---|",
    ]
    for key, label in (("request_to_join_s", "GPU request -> worker joined (s)"),
                       ("request_to_task_start_s", "GPU request -> first GPU task running (s)"),
                       ("idle_to_terminated_s", "worker idle -> pod terminated (s)")):
        v = s[key]
        lines.append(f"| {label} | {v['median']:.1f} | {v['min']:.1f} | {v['max']:.1f} |")
    lines += ["", "API calls per scaling event (median over cycles):", ""]
    for key, label in (("scale_up_api_calls", "scale up (request -> joined)"),
                       ("scale_down_api_calls", "scale down (idle -> terminated)")):
        calls = ", ".join(f"{n} {c:g}" for n, c in s[key].items()) or "none"
        lines.append(f"- {label}: {calls}")
    lines += ["", REAL_POD_ESTIMATE, ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=3, help="scale up/down cycles (median over them)")
    parser.add_argument("--smoke-test", action="store_true", help="one cycle, no report written")
    parser.add_argument("--out-dir", default=str(REPO / "bench" / "reports"))
    args = parser.parse_args(argv)
    cycles_wanted = 1 if args.smoke_test else args.cycles

    try:
        pods = LocalPods().start()
    except LocalPodsUnavailable as exc:
        print(f"cannot run: {exc}", file=sys.stderr)
        return 2
    api_key = "rpa_BENCH_" + secrets.token_hex(12)
    fake = FakeRunPod(api_key=api_key, provision_s=1.0, start_s=1.0).start()
    pods.attach(fake)
    down_done = False
    try:
        config = e2e_cluster_config(pods, f"bench-{secrets.token_hex(3)}")
        config_path = pods.root / "cluster.yaml"
        gcs_port = write_config(config, config_path)
        env = ray_cli_env(pods, api_key, fake.url)
        started = time.monotonic()
        up = run_ray(["up", "-y", "--no-config-cache", str(config_path)], env, 400)
        ray_up_s = time.monotonic() - started
        if up.returncode != 0:
            print(up.stdout[-3000:], up.stderr[-3000:], file=sys.stderr)
            return 1
        print(f"ray up: {ray_up_s:.1f} s")
        cycles = []
        for index in range(1, cycles_wanted + 1):
            cycle = run_cycle(pods, fake, env, config_path, gcs_port, index)
            cycles.append(cycle)
            print(f"cycle {index}: join {cycle['request_to_join_s']:.1f} s, task start "
                  f"{cycle['request_to_task_start_s']:.1f} s, idle->terminated "
                  f"{cycle['idle_to_terminated_s']:.1f} s; up calls {cycle['scale_up_api_calls']}; "
                  f"down calls {cycle['scale_down_api_calls']}")
        started = time.monotonic()
        down = run_ray(["down", "-y", str(config_path)], env, 200)
        ray_down_s = time.monotonic() - started
        down_done = down.returncode == 0
        leftover = fake.pod_ids()
        report = {
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores, "
                       f"Python {platform.python_version()}",
            "ray": __import__("ray").__version__,
            "provision_s": fake.provision_s, "start_s": fake.start_s,
            "ray_up_s": ray_up_s, "ray_down_s": ray_down_s,
            "cycles": cycles, "summary": summarise(cycles),
            "pods_left_after_down": leftover,
        }
        text = render(report)
        print()
        print(text)
        if leftover:
            print(f"pods left after ray down: {leftover}", file=sys.stderr)
            return 1
        if not args.smoke_test:
            out = Path(args.out_dir)
            out.mkdir(parents=True, exist_ok=True)
            stem = f"cluster_scaling_{datetime.now(timezone.utc).strftime('%Y%m%d_%H%M')}"
            (out / f"{stem}.md").write_text(text)
            (out / f"{stem}.json").write_text(json.dumps(report, indent=2))
            print(f"report: {out / (stem + '.md')}")
        return 0
    finally:
        if not down_done:
            run_ray(["down", "-y", str(pods.root / "cluster.yaml")], ray_cli_env(pods, api_key, fake.url), 200)
        for pod_id in fake.pod_ids():
            pods.kill_pod(pod_id)
        fake.stop()
        pods.close()


if __name__ == "__main__":
    sys.exit(main())
