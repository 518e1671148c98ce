"""Entry-point plumbing shared by the commands."""

import platform

from landscape_hpc.cli import tune_allocator


def test_tune_allocator_applies_the_glibc_settings_or_says_it_did_not(monkeypatch):
    monkeypatch.setenv("LANDSCAPE_HPC_MALLOC", "default")
    assert tune_allocator() is False
    monkeypatch.delenv("LANDSCAPE_HPC_MALLOC")
    assert tune_allocator() is (platform.libc_ver()[0] == "glibc")
