"""SSH command runner that knows RunPod's port mapping.

Ray's SSHCommandRunner has no port setting. From outside the cluster a pod's sshd is
reached on the public IP at the *mapped* port of its 22/tcp (not 22); from inside (the
head's autoscaler, use_internal_ip=True) on the private global-networking address at
port 22. The mapped port only exists once the pod runs, so it is looked up lazily,
right after the runner has waited for the pod's IP.
"""

from __future__ import annotations

import os
from shlex import quote
from typing import Any

from ray.autoscaler._private.command_runner import SSHCommandRunner, SSHOptions


class RunPodCommandRunner(SSHCommandRunner):
    """SSHCommandRunner plus `-o Port=<port>` and two pod facts in every command's env:
    RUNPOD_POD_ID and RUNPOD_PRIVATE_IP (head start commands pass the latter to
    `ray start --node-ip-address`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # `ray_bootstrap_key.pem` is given as "~/...": ssh would expand "~" from the
        # account database, Python (like the rest of Ray) from $HOME; use $HOME.
        if self.ssh_private_key:
            self.ssh_private_key = os.path.expanduser(self.ssh_private_key)
            self.ssh_options.ssh_key = self.ssh_private_key

    def _set_ssh_ip_if_required(self) -> None:
        super()._set_ssh_ip_if_required()
        if "Port" not in self.ssh_options.arg_dict:
            self.ssh_options.arg_dict["Port"] = self._ssh_port()

    def _ssh_port(self) -> int:
        if self.use_internal_ip:
            return int(self.provider.internal_ssh_port)
        port = self.provider.external_ssh_port(self.node_id)
        if port is None:
            raise RuntimeError(
                f"RunPod pod {self.node_id} has a public IP but no public port mapped to "
                "22/tcp: add '22/tcp' to node_config.ports (a public-IP pod is needed "
                "for rsync/scp)."
            )
        return int(port)

    def run(self, cmd: Any = None, *args: Any, ssh_options_override_ssh_key: str = "", **kwargs: Any):
        self._get_ssh_target()  # resolves IP and port before any command line is built
        if ssh_options_override_ssh_key and ssh_options_override_ssh_key != self.ssh_private_key:
            options = SSHOptions(ssh_options_override_ssh_key, self.ssh_control_path,
                                 ProxyCommand=self.ssh_proxy_command,
                                 Port=self.ssh_options.arg_dict["Port"])
            saved, self.ssh_options = self.ssh_options, options
            try:
                return super().run(cmd, *args, **kwargs)
            finally:
                self.ssh_options = saved
        if cmd:
            facts = {"RUNPOD_POD_ID": self.node_id}
            private_ip = self.provider.internal_ip(self.node_id)
            if private_ip:
                facts["RUNPOD_PRIVATE_IP"] = private_ip
            cmd = "".join(f"export {k}={quote(v)}; " for k, v in facts.items()) + cmd
        return super().run(cmd, *args, **kwargs)
