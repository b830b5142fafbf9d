"""The embedded Redis Cluster forms 3 masters with a replica each and never leaves a node behind."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from redis.asyncio.cluster import RedisCluster

from agentstream.embedded import EmbeddedRedisCluster, EmbeddedStackError
from agentstream.embedded.redis_cluster import server_major_version
from agentstream.state.redis import redis_from_url
from tests.test_embedded import _read_line, _still_alive

pytestmark = pytest.mark.integration


async def test_cluster_forms_with_a_synced_replica_per_master(tmp_path: Path) -> None:
    cluster = EmbeddedRedisCluster(run_dir=tmp_path)
    started = time.monotonic()
    await cluster.start_async()
    start_s = time.monotonic() - started
    pids = list(cluster.pids)
    try:
        assert len(pids) == 6
        roles = cluster.roles()
        assert sorted(roles.values()) == ["master"] * 3 + ["replica"] * 3
        assert cluster.url.startswith("redis+cluster://127.0.0.1:")
        client = redis_from_url(cluster.url)
        assert isinstance(client, RedisCluster)
        try:
            slots = await client.cluster_slots()
            assert sum(hi - lo + 1 for lo, hi in slots) == 16384
            nodes = (await client.cluster_nodes()).values()
            masters = {n["node_id"] for n in nodes if "master" in n["flags"]}
            assert sorted(n["master_id"] for n in nodes if "slave" in n["flags"]) == sorted(masters)
            # keys spread over all three masters
            for i in range(30):
                await client.set(f"k{i}", i)
            assert {client.get_node_from_key(f"k{i}").port for i in range(30)} == {
                port for port, role in roles.items() if role == "master"
            }
        finally:
            await client.aclose()
    finally:
        await cluster.stop_async()
    assert _still_alive(pids) == []
    assert all(path.is_file() for path in cluster.log_paths)
    version = server_major_version(cluster.nodes[0]._binary())
    print(f"cluster formed in {start_s:.2f}s (server major version {version})")


def test_an_exiting_node_is_reported_with_its_log(tmp_path: Path) -> None:
    broken = tmp_path / "redis-server"
    broken.write_text("#!/bin/sh\necho 'no cluster today' >&2\nexit 3\n")
    broken.chmod(0o755)
    with pytest.raises(EmbeddedStackError, match="exited with code 3"):
        EmbeddedRedisCluster(run_dir=tmp_path / "c", binary=broken).start()


_PARENT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from agentstream.embedded import EmbeddedRedisCluster

    cluster = EmbeddedRedisCluster(run_dir=Path(sys.argv[1]))
    cluster.start()
    print(*cluster.pids, flush=True)
    if sys.argv[2] == "exit":
        sys.exit(0)  # without stop(): the atexit hook must clean up
    time.sleep(120)
    """
)


@pytest.mark.parametrize("how", ["kill", "exit"])
def test_nodes_die_with_their_parent(tmp_path: Path, how: str) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT, str(tmp_path), how], stdout=subprocess.PIPE, text=True
    )
    try:
        pids = [int(pid) for pid in _read_line(parent, 60.0).split()]
        assert len(pids) == 6
        if how == "kill":
            assert _still_alive(pids, timeout_s=0) == pids
            parent.send_signal(signal.SIGKILL)
        assert parent.wait(timeout=30) in (0, -signal.SIGKILL)
    finally:
        if parent.poll() is None:
            parent.kill()
    assert _still_alive(pids) == []
