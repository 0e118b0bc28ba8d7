"""The in-namespace half of tests/podemu.py: becomes a container's PID 1, or holds a pod's network.

Run by podemu.py, never by pytest (stdlib only, no project imports):

  unshare --net -- python podemu_container.py pause
      brings loopback up in the fresh network namespace (the pod network), prints "ready" and
      holds the namespace until its stdin closes.

  nsenter --net=/proc/PAUSE/ns/net -- unshare --mount --pid --propagation private -- \
      python podemu_container.py run SPEC.json
      forks the container's PID 1 into the fresh PID namespace. The child builds the container's
      root (an overlay of the host's root, remounted read-only when readOnlyRootFilesystem is set),
      bind-mounts the volumes at their mountPaths (read-only where the volumeMount says so), puts
      the image stand-in's binaries on PATH, chroots, drops to runAsUser/runAsGroup and execs the
      command. The parent writes the child's host PID, waits for it, and writes its exit status:
      signals reach PID 1 with the kernel's PID-1 rules (a signal with no handler is ignored),
      exactly as the kubelet's stop signal does.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import select
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
from pathlib import Path

PR_SET_PDEATHSIG = 1
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


def _write_atomically(path: str, text: str) -> None:
    tmp = f"{path}.tmp"
    Path(tmp).write_text(text)
    os.rename(tmp, path)


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


def pause() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(s, SIOCGIFFLAGS, ifreq))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | IFF_UP))
    print("ready", flush=True)
    sys.stdin.read()  # until podemu closes it (or dies: the pipe closes with it)
    return 0


def build_root_and_exec(spec: dict, parent_alive: int) -> None:
    root = spec["root"]
    scratch = spec["scratch"]
    # the overlay's upper layer lives on a tmpfs private to this mount namespace
    _mount("-t", "tmpfs", "-o", "mode=0755", "podemu-scratch", scratch)
    os.makedirs(f"{scratch}/upper")
    os.makedirs(f"{scratch}/work")
    _mount("-t", "overlay", "overlay", "-o", f"lowerdir=/,upperdir={scratch}/upper,workdir={scratch}/work", root)

    # the image stand-in: its /bin/sh, and PATH = only its binaries (busybox applets + the tool)
    if spec.get("shell"):
        sh = f"{root}{spec['sh_path']}"
        os.remove(sh)
        os.symlink(spec["shell"], sh)
    os.makedirs(f"{root}/.standin/bin")
    _mount("--bind", "-o", "ro", spec["standin_bin"], f"{root}/.standin/bin")
    _mount("-o", "remount,bind,ro", f"{root}/.standin/bin")

    for path, source in spec.get("files", {}).items():  # files the image has (e.g. /git-sync)
        shutil.copy2(source, f"{root}{path}")
    # the image's /tmp is empty (and read-only unless a volume is mounted there)
    _mount("-t", "tmpfs", "-o", "ro,mode=1777", "podemu-tmp", f"{root}/tmp")
    for mount in spec["mounts"]:
        target = f"{root}{mount['path']}"
        os.makedirs(target, exist_ok=True)
        _mount("--bind", mount["source"], target)
        if mount["readOnly"]:
            _mount("-o", "remount,bind,ro", target)
    _mount("-t", "proc", "proc", f"{root}/proc")
    _mount("--rbind", "/dev", f"{root}/dev")
    os.makedirs(f"{root}{spec.get('workingDir') or '/'}", exist_ok=True)  # the image's WORKDIR exists
    if spec["readOnlyRootFilesystem"]:
        _mount("-o", "remount,ro", root)

    os.chroot(root)
    os.chdir(spec.get("workingDir") or "/")
    # runc's fixStdioPermissions: stdio belongs to the container's user, so a non-root process
    # can reopen /dev/stdout (nginx's access_log /dev/stdout does)
    for fd in (0, 1, 2):
        if not stat.S_ISCHR(os.fstat(fd).st_mode):
            os.fchown(fd, spec["uid"], spec["gid"])
    os.setgroups([])
    os.setgid(spec["gid"])
    os.setuid(spec["uid"])
    # after setuid, which clears it: die with the helper (exec keeps it for these non-setuid binaries)
    _die_with_parent()
    if select.select([parent_alive], [], [], 0)[0]:  # EOF: the helper is already gone
        os._exit(1)
    os.close(parent_alive)
    argv = spec["argv"]
    os.execvpe(argv[0], argv, spec["env"])


def run(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    parent_alive, keep_open = os.pipe()  # the child sees EOF on it once this helper is gone
    child = os.fork()
    if child == 0:
        try:
            os.close(keep_open)
            _die_with_parent()  # (its parent is outside its PID namespace: getppid() says 0)
            build_root_and_exec(spec, parent_alive)
        except BaseException as exc:
            print(f"podemu: container {spec['name']} did not start: {exc!r}", file=sys.stderr, flush=True)
        os._exit(127)
    os.close(parent_alive)
    _write_atomically(spec["pidfile"], str(child))
    while True:
        try:
            _, status = os.waitpid(child, 0)
            break
        except InterruptedError:
            continue
    _write_atomically(spec["statusfile"], str(os.waitstatus_to_exitcode(status)))
    return 0


if __name__ == "__main__":
    if sys.argv[1] == "pause":
        sys.exit(pause())
    sys.exit(run(sys.argv[2]))
