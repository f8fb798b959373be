"""The supervisor's choices that need no running server (voiceapp/serve.py)."""

from __future__ import annotations

from pathlib import Path

from voiceapp import serve


def test_a_cgroup_v2_cpu_quota_caps_the_default_worker_count(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # docker --cpus 1.5
    assert serve.cgroup_cpu_quota(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert serve.cgroup_cpu_quota(tmp_path) is None


def test_a_cgroup_v1_cpu_quota_is_read_and_no_quota_means_none(tmp_path: Path) -> None:
    assert serve.cgroup_cpu_quota(tmp_path) is None
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("200000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert serve.cgroup_cpu_quota(tmp_path) == 2.0
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert serve.cgroup_cpu_quota(tmp_path) is None


def test_uvicorn_workers_keep_websocket_keepalive_and_the_lifespan() -> None:
    command = serve.worker_command("uvicorn", 3, proxy_headers=True)
    assert command[command.index("--ws-ping-interval") + 1] != "0"
    assert command[command.index("--lifespan") + 1] == "on"
    assert "--proxy-headers" in command and command[command.index("--fd") + 1] == "3"
    assert serve.worker_command("daphne", 3, proxy_headers=False)[-1] == serve.APPLICATION
