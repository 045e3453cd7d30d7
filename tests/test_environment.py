"""The environment block names what CPU results depend on: the CPU model, its vector ISA, the
BLAS and parallel backends, and the thread settings (counts and the variables that set them)."""

from __future__ import annotations

import torch

from optbench.train.rundir import environment


def test_environment_records_cpu_model_and_thread_settings(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    env = environment(torch.device("cpu"), 1)
    assert env["cpu_threads"] == torch.get_num_threads()
    assert env["cpu_interop_threads"] == torch.get_num_interop_threads()
    assert isinstance(env["cpu_model"], str) and env["cpu_model"]
    assert env["thread_env"]["OMP_NUM_THREADS"] == "3"
    assert env["thread_env"]["MKL_NUM_THREADS"] is None
    # this CI's torch wheel is built with MKL and OpenMP (parsed from torch.__config__)
    if "BLAS_INFO=mkl" in torch.__config__.show():
        assert env["blas"] == "mkl"
    assert env["parallel_backend"] and env["parallel_backend"] in torch.__config__.parallel_info()


def test_cpu_model_is_read_from_proc_cpuinfo(tmp_path):
    from optbench.train.rundir import cpu_model

    fake = tmp_path / "cpuinfo"
    fake.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Test CPU @ 3.0GHz\n")
    assert cpu_model(fake) == "Test CPU @ 3.0GHz"
    assert cpu_model(tmp_path / "missing")  # no /proc (macOS): platform's processor or machine name
