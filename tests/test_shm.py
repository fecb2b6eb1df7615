"""tritonrepo.serving.shm and procfs: region prefixes naming their process, and removing only a dead process's."""

from __future__ import annotations

import os
import subprocess
import sys

from tritonrepo.serving import procfs, shm


def _dead_pid_and_start_time() -> tuple[int, int]:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    started = procfs.start_time(child.pid)
    child.kill()
    child.wait()
    assert started is not None and procfs.start_time(child.pid) is None
    return child.pid, started


def test_each_server_of_a_process_gets_its_own_prefix_naming_the_process():
    first, second = shm.new_prefix(), shm.new_prefix()
    mine = f"tritonrepo_{shm.pid_namespace()}_{os.getpid()}_{procfs.start_time(os.getpid())}_"
    assert first != second and first.startswith(mine) and second.startswith(mine)
    assert not second.startswith(first) and not first.startswith(second)  # neither one's removal reaches the other
    assert shm.owner_alive(first + "region")


def test_stale_regions_of_dead_processes_are_removed_and_nothing_else(tmp_path):
    pid, started = _dead_pid_and_start_time()
    ns = shm.pid_namespace()
    dead = [tmp_path / f"tritonrepo_{ns}_{pid}_{started}_1_{n}" for n in ("a", "b")]
    live = tmp_path / f"{shm.new_prefix()}c"
    reused_pid = tmp_path / f"tritonrepo_{ns}_{os.getpid()}_{procfs.start_time(os.getpid()) + 1}_1_d"  # pid reused
    foreign = tmp_path / "triton_python_backend_shm_region_e"  # another program's: never ours to judge
    # a container sharing /dev/shm (--ipc=host): its processes are invisible here, so its regions are never judged
    other_namespace = tmp_path / f"tritonrepo_{ns + 1}_{pid}_{started}_1_f"
    for path in [*dead, live, reused_pid, foreign, other_namespace]:
        path.write_bytes(b"x")
    removed = shm.remove_stale_regions(tmp_path)
    assert sorted(removed) == sorted([*dead, reused_pid])
    assert live.exists() and foreign.exists() and other_namespace.exists()


def test_removing_one_servers_regions_leaves_another_servers(tmp_path):
    prefixes = [f"tritonrepo_1_2_{n}_" for n in (1, 11)]
    for prefix in prefixes:
        (tmp_path / f"{prefix}region").write_bytes(b"x")
    assert shm.remove_regions(prefixes[0], tmp_path) == [tmp_path / f"{prefixes[0]}region"]
    assert shm.regions("tritonrepo_", tmp_path) == [tmp_path / f"{prefixes[1]}region"]
