"""The persistent compilation cache: on by default, steered by IMCASCADE_JAX_CACHE, switchable."""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import pytest

import imcascade_jax
from imcascade_jax import _config

# The cache is configured when the core is first imported (``import imcascade_jax`` alone imports
# no JAX, so that the command line's --help stays fast).
_PRINT_DIR = ("import jax, imcascade_jax.fit; "
              "print(jax.config.jax_compilation_cache_dir, jax.config.jax_enable_compilation_cache)")


def _import_and_report(env_changes: dict[str, str | None]) -> str:
    env = dict(os.environ)
    for key, value in env_changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    out = subprocess.run([sys.executable, "-c", _PRINT_DIR], env=env, capture_output=True,
                         text=True, check=True)
    return out.stdout.strip()


def test_import_uses_the_folder_named_by_the_environment(tmp_path):
    where = tmp_path / "xla"
    out = _import_and_report({"IMCASCADE_JAX_CACHE": str(where),
                              "JAX_COMPILATION_CACHE_DIR": None})
    assert out == f"{where} True"
    assert where.is_dir()


@pytest.fixture
def jax_cache_config():
    """Restore JAX's cache settings after a test that changes them."""
    saved = (jax.config.jax_compilation_cache_dir, jax.config.jax_enable_compilation_cache)
    yield
    jax.config.update("jax_compilation_cache_dir", saved[0])
    jax.config.update("jax_enable_compilation_cache", saved[1])
    _config.reset_jax_cache()


def test_default_folder_is_in_the_user_cache(tmp_path, monkeypatch, jax_cache_config):
    monkeypatch.delenv("IMCASCADE_JAX_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    jax.config.update("jax_compilation_cache_dir", None)
    _config.enable_at_import()
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "imcascade_jax" / "xla")


@pytest.mark.parametrize("off", ["0", "off", "False"])
def test_environment_switches_it_off(off, tmp_path, monkeypatch, jax_cache_config):
    monkeypatch.setenv("IMCASCADE_JAX_CACHE", off)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    jax.config.update("jax_compilation_cache_dir", None)
    _config.enable_at_import()
    assert jax.config.jax_compilation_cache_dir is None
    assert not (tmp_path / "imcascade_jax").exists()


def test_a_folder_chosen_through_jax_is_kept(tmp_path, monkeypatch, jax_cache_config):
    monkeypatch.delenv("IMCASCADE_JAX_CACHE", raising=False)
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "mine"))
    _config.enable_at_import()
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "mine")


def test_enable_and_disable_at_run_time(tmp_path, jax_cache_config):
    path = imcascade_jax.enable_compilation_cache(str(tmp_path / "here"))
    assert path == str(tmp_path / "here") and os.path.isdir(path)
    assert _config.compilation_cache_dir() == path
    imcascade_jax.disable_compilation_cache()
    assert _config.compilation_cache_dir() is None
