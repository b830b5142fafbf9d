"""Embedded Apache Kafka: clear errors without Java/Maven, and no JVM left behind, ever."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agentstream.embedded import ApacheKafka, EmbeddedStackError
from agentstream.embedded.apache_kafka import new_cluster_id
from agentstream.embedded.kafka_runtime import kafka_classpath
from tests.test_embedded import _env_without_backends, _read_line, _read_until, _still_alive

pytestmark = pytest.mark.integration

_CLI = [sys.executable, "-c", "from agentstream.cli.main import app; app()"]


def test_missing_java_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing in it
    monkeypatch.delenv("JAVA_HOME", raising=False)
    kafka = ApacheKafka(run_dir=tmp_path / "run")
    with pytest.raises(EmbeddedStackError) as caught:
        kafka.start()
    message = str(caught.value)
    assert "\n" not in message
    assert "`java` is not on PATH" in message
    assert "JAVA_HOME" in message
    assert kafka.pids == []


def test_missing_maven_with_an_empty_cache_is_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EmbeddedStackError) as caught:
        kafka_classpath("4.4.0", cache=tmp_path / "cache")
    message = str(caught.value)
    assert "\n" not in message
    assert "`mvn` is not on PATH" in message
    assert str(tmp_path / "cache" / "kafka-4.4.0") in message


def test_a_cached_runtime_needs_no_maven(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if shutil.which("mvn") is None and not (Path.home() / ".cache/agentstream").exists():
        pytest.fail("this test needs Maven (or a resolved runtime) to build the cache once")
    cache = tmp_path / "cache"
    lib = kafka_classpath(cache=cache)  # resolves (Maven; ~/.m2 makes it quick)
    assert any(lib.glob("kafka_2.13-*.jar"))
    monkeypatch.setenv("PATH", str(tmp_path))  # no mvn, no java
    assert kafka_classpath(cache=cache) == lib


_PARENT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from agentstream.embedded import ApacheKafka

    kafka = ApacheKafka(run_dir=Path(sys.argv[1]))
    kafka.start()
    print(*kafka.pids, flush=True)
    if sys.argv[2] == "exit":
        sys.exit(0)  # without stop(): the atexit hook must clean up
    time.sleep(300)
    """
)


@pytest.mark.kafka_matrix("apache", "apache-cluster")
@pytest.mark.parametrize("end", ["kill -9", "exit"])
def test_broker_dies_with_its_parent(tmp_path: Path, end: str) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT, str(tmp_path), "sleep" if end == "kill -9" else "exit"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        pids = [int(pid) for pid in _read_line(parent, 180.0).split()]
        assert len(pids) == 1
        if end == "kill -9":
            assert _still_alive(pids, timeout_s=0) == pids
            parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=60)
    finally:
        if parent.poll() is None:
            parent.kill()
    assert _still_alive(pids, timeout_s=30) == []
    assert (tmp_path / "kafka-1" / "kafka-1.log").is_file()


@pytest.mark.kafka_matrix("apache", "apache-cluster")
def test_dev_command_on_apache_kafka_stops_on_ctrl_c_without_a_jvm_left(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [*_CLI, "dev", "--broker", "apache-kafka"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_env_without_backends(tmp_path),
    )
    try:
        banner = _read_until(proc, "Ctrl-C to stop", timeout_s=180.0)
        assert re.search(r"Kafka\s+127\.0\.0\.1:\d+\s+\(embedded Apache Kafka, pid \d+\)", banner)
        pids = [int(pid) for pid in re.findall(r"pid (\d+)", banner)]
        assert len(pids) == 2, banner
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    assert "Stopped" in output
    assert _still_alive(pids) == []


def test_dev_command_rejects_an_unknown_broker(tmp_path: Path) -> None:
    done = subprocess.run(
        [*_CLI, "dev", "--broker", "kafkaesque"],
        capture_output=True,
        text=True,
        env=_env_without_backends(tmp_path),
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "tansu, apache-kafka" in done.stdout + done.stderr


def test_cluster_ids_never_look_like_an_option() -> None:
    """kafka-storage failed with "--cluster-id: expected one argument" for ids starting with '-'
    (1 start in 64)."""
    ids = [new_cluster_id() for _ in range(3000)]
    assert not [i for i in ids if i.startswith("-")]
    assert all(len(i) == 22 for i in ids)
