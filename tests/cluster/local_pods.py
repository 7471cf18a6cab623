"""This machine playing every RunPod pod: a throwaway sshd and login, and a `ray` shim.

- sshd listens on 127.0.0.1:<public port> (the pods' "public" SSH mapping) and on
  127.0.0.2:<private port> (the global-networking address), with its own host key, only
  for one throwaway login whose home is a temp folder. The login is an alias of root
  (uid 0, like RunPod's pods) because the project's Python lives under /root; it
  accepts only the test's keys, only on loopback, and is deleted afterwards.
- Every process started through that login carries RPF_CLUSTER=<temp folder> in its
  environment, which is how this module finds (and finally kills) only its own processes.
- The fake API's create hook plays RunPod's image start script: the pod's PUBLIC_KEY is
  authorised for SSH and its RUNPOD_* variables are exported to login shells.
- A `ray` shim on that login's PATH gives each pod its own Ray: `ray start` gets a
  per-pod --temp-dir and working folder and marks its processes (RPF_POD=<pod id> in
  their environment); `ray stop` stops only that pod's processes (found by the marker,
  the working folder, and descent from them, since Ray's setproctitle can overwrite the
  environment block that /proc shows). Deleting a pod through
  the API kills that pod's processes, as destroying a container would.
- `python` on that PATH is the project's virtualenv, as if the image had it installed.

Everything is removed on close(): processes, sshd and its sessions, the login, the files.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

VENV_BIN = Path(sys.executable).parent


class LocalPodsUnavailable(RuntimeError):
    """sshd cannot be started here (the reason is the message)."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def ensure_sshd() -> str:
    """Path of sshd; installs openssh-server and rsync from Debian when root and missing."""
    sshd = shutil.which("sshd") or ("/usr/sbin/sshd" if os.path.exists("/usr/sbin/sshd") else None)
    if sshd and shutil.which("rsync") and shutil.which("ssh"):
        return sshd
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise LocalPodsUnavailable("sshd/rsync missing and cannot install them (needs root and apt-get)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for command in (["apt-get", "update", "-qq"],
                    ["apt-get", "install", "-y", "-qq", "openssh-server", "openssh-client", "rsync"]):
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            raise LocalPodsUnavailable(f"{' '.join(command)} failed: {result.stderr[-500:]}")
    return "/usr/sbin/sshd"


_SHIM = '''#!{python}
"""`ray` for one fake pod: start gets a per-pod temp dir, stop stops only this pod."""
import os, signal, sys, time

BASE, REAL = {base!r}, {real!r}
pod = os.environ.get("RUNPOD_POD_ID") or os.environ.get("RAY_CLOUD_INSTANCE_ID") or "nopod"
marker = ("RPF_POD=" + pod).encode()


def marked():
    return pod_processes(marker, BASE + "/" + pod)


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


{finder}

if sys.argv[1:2] == ["stop"]:
    pids = marked()
    count = len(pids)
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 3.0)):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.time() + grace
        while pids and time.time() < deadline:
            time.sleep(0.2)
            pids = [p for p in pids if alive(p)]
        if not pids:
            break
    print("ray shim: stopped %d processes of pod %s" % (count, pod))
    sys.exit(0)
args = sys.argv[1:]
env = dict(os.environ, RPF_POD=pod)
if args[:1] == ["start"]:
    # The pod's processes are found again by their cwd (and their environment, which
    # Ray's setproctitle may overwrite), so start them inside the pod's own folder.
    os.makedirs("%s/%s" % (BASE, pod), exist_ok=True)
    os.chdir("%s/%s" % (BASE, pod))
    args.append("--temp-dir=%s/%s" % (BASE, pod))
os.execve(REAL, [REAL] + args, env)
'''


_FINDER = """def pod_processes(marker, cwd_prefix):
    # Processes whose environment holds `marker` or whose cwd is under `cwd_prefix`,
    # plus all their descendants (Ray's agents and workers); never zombies or ourselves.
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            with open("/proc/%d/stat" % pid) as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z":
            continue
        marked = False
        try:
            with open("/proc/%d/environ" % pid, "rb") as handle:
                marked = marker in handle.read().split(b"\\0")
        except OSError:
            pass
        if not marked:
            try:
                marked = (os.readlink("/proc/%d/cwd" % pid) + "/").startswith(cwd_prefix + "/")
            except OSError:
                pass
        table[pid] = (int(fields[1]), marked)
    found = {pid for pid, (_, marked) in table.items() if marked}
    grew = True
    while grew:
        grew = False
        for pid, (parent, _) in table.items():
            if pid not in found and parent in found:
                found.add(pid)
                grew = True
    found.discard(os.getpid())
    return sorted(found)
"""
exec(_FINDER)


def render_shim(python: str, base: str, real: str) -> str:
    return (_SHIM.replace("{python}", python).replace("{base!r}", repr(base))
            .replace("{real!r}", repr(real)).replace("{finder}", _FINDER))


class LocalPods:
    """Start with start(); close() undoes everything. Needs root."""

    def __init__(self, keep_files: bool = False) -> None:
        self.keep_files = keep_files
        self.sshd_path = ensure_sshd()
        if os.geteuid() != 0:
            raise LocalPodsUnavailable("the fake pods need root (a throwaway login and sshd)")
        self.user = "rpf" + secrets.token_hex(3)
        self.root = Path(tempfile.mkdtemp(prefix="rpf-"))  # short: Ray's socket paths
        self.home = self.root / "home"
        self.ray_tmp = self.root / "t"
        self.etc = self.root / "etc"
        self.public_ip, self.private_ip = "127.0.0.1", "127.0.0.2"
        self.public_port = free_port(self.public_ip)
        self.private_port = 22 if _port_free(self.private_ip, 22) else free_port(self.private_ip)
        self.key_path = self.etc / "id_ed25519"  # the launching user's key (root)
        self.authorized_keys = self.etc / "authorized_keys"
        self._sshd: Optional[subprocess.Popen] = None
        self._user_created = False

    # -- setup ------------------------------------------------------------------------

    def start(self) -> "LocalPods":
        try:
            self._make_user()
            self._write_files()
            self._start_sshd()
        except Exception:
            self.close()
            raise
        return self

    def _make_user(self) -> None:
        self.home.mkdir(parents=True)
        subprocess.run(["useradd", "-o", "-u", "0", "-g", "0", "-M", "-d", str(self.home),
                        "-s", "/bin/bash", self.user], check=True, capture_output=True)
        self._user_created = True
        # "*" (not "!"): no password login, but the account is not locked for keys.
        subprocess.run(["usermod", "-p", "*", self.user], check=True, capture_output=True)
        assert pwd.getpwnam(self.user).pw_dir == str(self.home)

    def _write_files(self) -> None:
        self.etc.mkdir()
        self.ray_tmp.mkdir()
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key_path)],
                       check=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                        str(self.etc / "host_key")], check=True)
        self.authorized_keys.write_text("")
        bin_dir = self.home / "bin"
        bin_dir.mkdir()
        shim = bin_dir / "ray"
        shim.write_text(render_shim(sys.executable, str(self.ray_tmp), str(VENV_BIN / "ray")))
        shim.chmod(0o755)
        python = bin_dir / "python"  # a wrapper, not a link: the venv is found from its path
        python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
        python.chmod(0o755)
        (self.home / ".bashrc").write_text(
            f'export PATH="{bin_dir}:$PATH"\n'
            f'export RPF_CLUSTER="{self.root}"\n'
            "export RAY_USAGE_STATS_ENABLED=0\n"
            '[ -f "$HOME/.pod_env" ] && . "$HOME/.pod_env"\n'
        )
        (self.home / ".bash_profile").write_text('. "$HOME/.bashrc"\n')
        (self.etc / "sshd_config").write_text("\n".join([
            f"ListenAddress {self.public_ip}:{self.public_port}",
            f"ListenAddress {self.private_ip}:{self.private_port}",
            f"HostKey {self.etc / 'host_key'}",
            f"PidFile {self.etc / 'sshd.pid'}",
            f"AuthorizedKeysFile {self.authorized_keys}",
            f"AllowUsers {self.user}",
            "StrictModes no",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            "UsePAM no",
            "X11Forwarding no",
            "AllowTcpForwarding yes",
            "MaxStartups 100:30:200",
            "MaxSessions 100",
            "LogLevel ERROR",
            "Subsystem sftp internal-sftp",
            "",
        ]))

    def _start_sshd(self) -> None:
        os.makedirs("/run/sshd", exist_ok=True)  # privilege separation directory
        self._sshd = subprocess.Popen(
            [self.sshd_path, "-D", "-e", "-f", str(self.etc / "sshd_config")],
            stdout=subprocess.DEVNULL, stderr=open(self.etc / "sshd.log", "w"),
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._sshd.poll() is not None:
                raise LocalPodsUnavailable("sshd exited: " + (self.etc / "sshd.log").read_text()[-500:])
            if not _port_free(self.public_ip, self.public_port):
                return
            time.sleep(0.1)
        raise LocalPodsUnavailable("sshd did not start listening within 10 s")

    # -- hooks for the fake API --------------------------------------------------------

    def attach(self, fake) -> None:
        """Make the fake API's pods this machine."""
        fake.public_ip, fake.private_ip, fake.ssh_port = self.public_ip, self.private_ip, self.public_port
        fake.on_create.append(self._pod_created)
        fake.on_delete.append(self.kill_pod)

    def _pod_created(self, pod_id: str, body: Dict) -> None:
        env = body.get("env") or {}
        key = env.get("PUBLIC_KEY", "").strip()
        if key and key not in self.authorized_keys.read_text():
            with open(self.authorized_keys, "a") as handle:
                handle.write(key + "\n")
        exports = {k: v for k, v in env.items() if k.startswith("RUNPOD_")}
        if exports:
            pod_env = self.home / ".pod_env"
            pod_env.write_text("".join(f"export {k}='{v}'\n" for k, v in exports.items()))
            pod_env.chmod(0o600)

    def processes(self, pod_id: Optional[str] = None) -> List[int]:
        """PIDs of processes started through the fake pods (one pod's when pod_id is given)."""
        if pod_id:
            return pod_processes(f"RPF_POD={pod_id}".encode(), str(self.ray_tmp / pod_id))
        return pod_processes(f"RPF_CLUSTER={self.root}".encode(), str(self.root))  # noqa: F821

    def kill_pod(self, pod_id: str) -> None:
        """Kill every process of the pod, as destroying its container would.

        A process the pod forks while the first ones are dying (a raylet restarting a worker)
        is caught by scanning again until a scan finds none."""
        for _ in range(5):
            pids = self.processes(pod_id)
            if not pids:
                return
            self._kill(pids)

    @staticmethod
    def _kill(pids: List[int]) -> None:
        for sig, grace in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except OSError:
                    pass
            deadline = time.monotonic() + grace
            while pids and time.monotonic() < deadline:
                time.sleep(0.1)
                pids = [p for p in pids if _alive(p)]
            if not pids:
                return

    # -- teardown ---------------------------------------------------------------------

    def close(self) -> None:
        if self._user_created:
            self._kill(self.processes())
        if self._sshd is not None and self._sshd.poll() is None:
            sessions = _descendants(self._sshd.pid)  # `sshd: user@notty` of open connections
            self._sshd.terminate()
            self._kill(sessions)
            try:
                self._sshd.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._sshd.kill()
                self._sshd.wait()
        if self._user_created:
            # -f: the alias shares uid 0 with running processes; only its entry goes.
            subprocess.run(["userdel", "-f", self.user], capture_output=True)
            self._user_created = False
        if not self.keep_files:
            shutil.rmtree(self.root, ignore_errors=True)


def _descendants(root_pid: int) -> List[int]:
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    parents[int(entry)] = int(handle.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                pass
    found, grew = {root_pid}, True
    while grew:
        grew = False
        for pid, parent in parents.items():
            if parent in found and pid not in found:
                found.add(pid)
                grew = True
    found.discard(root_pid)
    return sorted(found)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split()[2] != "Z"
    except OSError:
        return False


REPO = Path(__file__).resolve().parents[2]

GPU_PROBE = '''
import json, sys, time
import ray

address, node_ip = sys.argv[1], sys.argv[2]
submitted = time.time()
ray.init(address=address, _node_ip_address=node_ip, logging_level="WARNING")
head = ray.get_runtime_context().get_node_id()


@ray.remote(num_gpus=1, num_cpus=1)
def gpu_work():
    import ray, time
    started = time.time()
    return {"started": started, "node": ray.get_runtime_context().get_node_id(),
            "gpus": [str(g) for g in ray.get_gpu_ids()]}


ref = gpu_work.remote()
joined = None
deadline = time.time() + float(sys.argv[3])
while time.time() < deadline:
    done, _ = ray.wait([ref], timeout=0.5)
    if joined is None and sum(1 for n in ray.nodes() if n["Alive"]) >= 2:
        joined = time.time()
    if done:
        break
result = ray.get(ref, timeout=1)
if joined is None:
    joined = time.time()
print("GPU_PROBE " + json.dumps(dict(result, submitted=submitted, joined=joined, head=head)))
'''


def e2e_cluster_config(pods: "LocalPods", cluster_name: str) -> Dict:
    """cluster/runpod.yaml adapted to the local pods: same provider, node types and
    commands, with small resources, local ports, no setup (the venv is shared) and a
    one-minute idle timeout."""
    import yaml

    config = yaml.safe_load((REPO / "cluster" / "runpod.yaml").read_text())
    gcs, dashboard = free_port(), free_port()
    head_agent, worker_agent = free_port(), free_port()
    config["cluster_name"] = cluster_name
    config["max_workers"] = 1
    config["idle_timeout_minutes"] = 1
    config["provider"].update({
        "internal_ssh_port": pods.private_port,
        "pod_start_timeout_s": 120,
        "cache_refresh_s": 0.5,
    })
    config["auth"] = {"ssh_user": pods.user, "ssh_private_key": str(pods.key_path)}
    head = config["available_node_types"]["head"]
    worker = config["available_node_types"]["gpu_worker"]
    head["resources"] = {"CPU": 1, "GPU": 0}
    worker["resources"] = {"CPU": 1, "GPU": 1}
    worker["max_workers"] = 1
    config["file_mounts"] = {}
    config["setup_commands"] = []
    common = "--node-ip-address=$RUNPOD_PRIVATE_IP --disable-usage-stats"
    config["head_start_ray_commands"] = [
        "ray stop",
        f"ray start --head {common} --port={gcs} --num-cpus=1 --num-gpus=0"
        f" --include-dashboard=false --dashboard-host=127.0.0.1 --dashboard-port={dashboard}"
        f" --dashboard-agent-listen-port={head_agent}"
        " --autoscaling-config=~/ray_bootstrap_config.yaml",
    ]
    config["worker_start_ray_commands"] = [
        "ray stop",
        f"ray start --address=$RAY_HEAD_IP:{gcs} {common} --num-cpus=1 --num-gpus=1"
        f" --dashboard-agent-listen-port={worker_agent}",
    ]
    config["_gcs_port"] = gcs  # removed before writing; read by the tests
    return config


def write_config(config: Dict, path: Path) -> int:
    """Writes the launcher file (without private keys); returns the GCS port."""
    import yaml

    config = dict(config)
    gcs = config.pop("_gcs_port")
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return gcs


def ray_cli_env(pods: "LocalPods", api_key: str, api_url: str) -> Dict[str, str]:
    env = dict(os.environ)
    env.update({
        "RUNPOD_API_KEY": api_key,
        "RUNPOD_API_URL": api_url,
        "RAY_UP_enable_autoscaler_v2": "1",
        "RAY_USAGE_STATS_ENABLED": "0",
        "TMPDIR": str(pods.root / "launcher-tmp"),
        "PATH": f"{VENV_BIN}:{env.get('PATH', '')}",
    })
    (pods.root / "launcher-tmp").mkdir(exist_ok=True)
    return env


def run_ray(args: List[str], env: Dict[str, str], timeout_s: float) -> subprocess.CompletedProcess:
    return subprocess.run([str(VENV_BIN / "ray")] + args, env=env, cwd=str(REPO),
                          capture_output=True, text=True, timeout=timeout_s)
