"""A job's guard (timeout, abort) reaches every session the job opens, a phone followed
into another mode included."""
from __future__ import annotations

import threading

import pytest

from phonewipe.erase.follow import _same_guard
from phonewipe.erase.guard import GuardedPlugin, JobAborted, JobGuard
from phonewipe.erase.model import Endpoint
from phonewipe.erase.plugin import PluginOptions, load_plugins


def test_a_plugin_found_while_following_runs_under_the_same_guard() -> None:
    plugins = load_plugins(PluginOptions(), only=["virtual", "fastboot"])
    abort = threading.Event()
    job_plugin = GuardedPlugin(plugins["fastboot"], JobGuard(float("inf"), abort))
    followed = _same_guard(job_plugin, plugins["virtual"])
    assert isinstance(followed, GuardedPlugin) and followed.name == "virtual"
    abort.set()  # the operator aborts while the phone is being followed
    with pytest.raises(JobAborted):
        followed.open(Endpoint("virtual", "virtual", "virtual:NONE"))


def test_an_unguarded_plugin_follows_unguarded() -> None:
    plugins = load_plugins(PluginOptions(), only=["virtual", "fastboot"])
    assert _same_guard(plugins["fastboot"], plugins["virtual"]) is plugins["virtual"]
