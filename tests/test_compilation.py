"""The persistent JAX compilation cache (xmodality_lite.compilation): off writes nothing, on a
second process reuses what the first wrote, a bad folder never breaks the import.

Each check runs fresh interpreters with a temporary cache folder (and a temporary HOME, so the
user's own cache is never touched); reuse is read from the files written and from JAX's
"Persistent compilation cache hit" log line (JAX_LOG_COMPILES), never from timings.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# jits and runs one small function whose name shows in JAX's log; prints the folder in use
CHILD = textwrap.dedent("""
    import logging, sys
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    import xmodality_lite
    from xmodality_lite.compilation import compilation_cache_dir
    import jax, jax.numpy as jnp

    def xmodality_cache_probe(x):
        return jnp.tanh(x @ x.T).sum()

    print(float(jax.jit(xmodality_cache_probe)(jnp.ones((8, 8)))))
    print(compilation_cache_dir())
    from jax._src import lru_cache
    print(getattr(lru_cache.LRUCache.put, "writes_atomically", False))
""")
HIT = "Persistent compilation cache hit for 'jit_xmodality_cache_probe'"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """This environment without any cache setting, HOME and XDG_CACHE_HOME in ``tmp_path``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("JAX_COMPILATION_CACHE", "JAX_PERSISTENT_CACHE", "XMODALITY_JAX",
                                "XMODALITY_CACHE"))}
    env.update(HOME=str(tmp_path / "home"), XDG_CACHE_HOME=str(tmp_path / "xdg"),
               JAX_PLATFORMS="cpu", JAX_LOG_COMPILES="1", **extra)
    return env


def _run(env: dict[str, str], code: str = CHILD) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines()[0] == "64.0", proc.stdout
    return proc


def _files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()} if folder.exists() else set()


@pytest.mark.parametrize("off", ["0", "off", "False", "no"])
def test_turned_off_nothing_is_written(tmp_path, off):
    """XMODALITY_JAX_CACHE=0 (or off/false/no): no folder, no file, even with a cache folder
    inherited from a parent process through JAX_COMPILATION_CACHE_DIR."""
    inherited = tmp_path / "inherited"
    proc = _run(_env(tmp_path, XMODALITY_JAX_CACHE=off, XMODALITY_CACHE=str(tmp_path / "base"),
                     JAX_COMPILATION_CACHE_DIR=str(inherited)))
    assert proc.stdout.splitlines()[1] == "None"
    assert HIT not in proc.stderr
    assert not (tmp_path / "base").exists() and not inherited.exists()
    assert not (tmp_path / "xdg").exists() and not (tmp_path / "home").exists()


def test_second_process_reuses_the_first_ones_programs(tmp_path):
    """On by default in $XMODALITY_CACHE/jax: the first process writes the compiled programs,
    a second one loads them (JAX logs the hit) and writes nothing new; a child that only
    inherits JAX_COMPILATION_CACHE_DIR (as from an enabled parent) uses the same folder."""
    folder = tmp_path / "base" / "jax"
    env = _env(tmp_path, XMODALITY_CACHE=str(tmp_path / "base"))

    first = _run(env)
    assert first.stdout.splitlines()[1:3] == [str(folder), "True"]  # entries written whole
    written = _files(folder)
    assert not [p for p in written if p.name.endswith(".tmp")]  # each renamed into place
    assert any(p.name.startswith("jit_xmodality_cache_probe-") for p in written), written
    assert HIT not in first.stderr

    second = _run(env)
    assert HIT in second.stderr, second.stderr[-3000:]
    assert _files(folder) == written  # nothing compiled, nothing new written

    child = _run(_env(tmp_path, JAX_COMPILATION_CACHE_DIR=str(folder)))
    assert child.stdout.splitlines()[1] == str(folder) and HIT in child.stderr
    assert _files(folder) == written
    assert not (tmp_path / "xdg").exists()  # the user cache was never the default here


def test_named_folder_and_default_folder(tmp_path, monkeypatch):
    from xmodality_lite.compilation import default_compilation_cache_dir

    monkeypatch.delenv("XMODALITY_JAX_CACHE", raising=False)
    monkeypatch.setenv("XMODALITY_CACHE", str(tmp_path / "base"))
    assert default_compilation_cache_dir() == tmp_path / "base" / "jax"
    for on in ("1", "on", "TRUE", "yes", " "):
        monkeypatch.setenv("XMODALITY_JAX_CACHE", on)
        assert default_compilation_cache_dir() == tmp_path / "base" / "jax"
    monkeypatch.setenv("XMODALITY_JAX_CACHE", str(tmp_path / "mine"))
    assert default_compilation_cache_dir() == tmp_path / "mine"
    for off in ("0", "off", "false", "No"):
        monkeypatch.setenv("XMODALITY_JAX_CACHE", off)
        assert default_compilation_cache_dir() is None


def test_unwritable_folder_warns_and_import_works(tmp_path):
    """A folder that cannot be created (its parent is a file: fails even as root): the import
    succeeds with a warning, JAX computes, the cache is off."""
    (tmp_path / "a_file").write_text("")
    proc = _run(_env(tmp_path, XMODALITY_JAX_CACHE=str(tmp_path / "a_file" / "jax")))
    assert "JAX compilation cache off: cannot write to" in proc.stderr
    assert proc.stdout.splitlines()[1] == "None"


def test_enable_after_jax_is_imported(tmp_path):
    """JAX already imported (this test process): enable/disable go through jax.config and
    take effect for the next compilation."""
    import jax
    import jax.numpy as jnp

    from xmodality_lite.compilation import (
        compilation_cache_dir,
        disable_compilation_cache,
        enable_compilation_cache,
    )

    before = compilation_cache_dir()
    try:
        assert enable_compilation_cache(tmp_path / "jc") == tmp_path / "jc"
        assert compilation_cache_dir() == tmp_path / "jc"
        assert os.environ["JAX_COMPILATION_CACHE_DIR"] == str(tmp_path / "jc")  # for children
        jax.jit(lambda x: jnp.sin(x) * 3.0 + x.shape[0])(jnp.ones(7)).block_until_ready()
        assert _files(tmp_path / "jc")
        disable_compilation_cache()
        assert compilation_cache_dir() is None and "JAX_COMPILATION_CACHE_DIR" not in os.environ
        jax.jit(lambda x: jnp.cos(x) * 5.0 + x.shape[0])(jnp.ones(9)).block_until_ready()
        n = len(_files(tmp_path / "jc"))
        jax.jit(lambda x: jnp.cos(x) * 7.0)(jnp.ones(11)).block_until_ready()
        assert len(_files(tmp_path / "jc")) == n  # off: nothing more written
    finally:
        if before is not None:
            enable_compilation_cache(before)
        else:
            disable_compilation_cache()


def test_an_entry_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    """A process that dies while writing an entry leaves no entry. JAX alone writes in place,
    and a truncated entry would be read by every later process with a warning, compiled again,
    and never replaced (JAX keeps an existing entry)."""
    from jax._src import lru_cache

    from xmodality_lite.compilation import write_entries_atomically

    assert write_entries_atomically() and lru_cache.LRUCache.put.writes_atomically
    cache = lru_cache.LRUCache(str(tmp_path), max_size=-1)
    entry = bytes(range(256)) * 64
    write = Path.write_bytes

    def dies_half_way(path, data):
        write(path, data[: len(data) // 2])
        raise KeyboardInterrupt  # the process stops here

    monkeypatch.setattr(Path, "write_bytes", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        cache.put("probe", entry)
    monkeypatch.undo()
    assert cache.get("probe") is None and not list(tmp_path.iterdir())
    cache.put("probe", entry)
    cache.put("probe", b"another value")  # JAX's rule: an existing entry is kept
    assert cache.get("probe") == entry and [p.name for p in tmp_path.iterdir()] == ["probe-cache"]
    import threading  # threads writing one entry at once: each its own temporary file

    threads = [threading.Thread(target=cache.put, args=("both", entry)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert cache.get("both") == entry
    assert sorted(p.name for p in tmp_path.iterdir()) == ["both-cache", "probe-cache"]
