"""A persistent JAX compilation cache: a program is compiled once per machine, not once per process.

``import xmodality_lite`` turns it on (:func:`enable_compilation_cache`), so every lesson, CLI
command, test process and rerun of a cell that builds the same program (same shapes, dtypes,
model, JAX version and flags) loads the compiled executable from disk instead of compiling it
again: a first train step at the ``cpu`` profile costs seconds of XLA compilation otherwise.

Where (``XMODALITY_JAX_CACHE``):

- unset, or ``1``/``on``/``true``/``yes``: ``<user cache>/jax``, the user cache being
  ``$XMODALITY_CACHE`` or the platform's per-user folder (:func:`xmodality_lite.config.user_cache_dir`);
  if ``JAX_COMPILATION_CACHE_DIR`` is already set (by you, or inherited from a parent process
  that enabled the cache), JAX's own setting is kept;
- a folder: that folder;
- ``0``/``off``/``false``/``no``: off (also clears an inherited ``JAX_COMPILATION_CACHE_DIR``).

Every compiled program is written, however short its compilation (JAX's default keeps only
those that took ≥ 1 s; at the ``smoke`` and ``cpu`` profiles most take less, and reading one
back is still faster than compiling it). The folder grows with each new program and is never
pruned by JAX: delete it at will (``make clean`` removes the checkout's). A folder that cannot
be written turns the cache off with a warning; enabling it never fails an import. Settings are
passed to JAX through its environment variables while JAX is not yet imported (so the import
stays instant, and child processes inherit the same cache) and through ``jax.config`` once it is.

Entries are written whole or not at all. JAX writes an entry in place, so a process killed
while writing one (SIGKILL, the OOM killer) would leave a truncated file that every later
process fails to read (a warning, and the program compiled again) and that JAX never replaces;
here each entry goes to a temporary file that is then renamed (:func:`write_entries_atomically`,
installed as JAX's cache module loads).

The cache is trusted code (JAX's warning): keep it in a folder only you can write. Compiled
CPU code targets the machine that compiled it: where one home folder is shared by machines with
different CPUs (a cluster), point ``XMODALITY_JAX_CACHE`` at a machine-local folder.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.util
import os
import sys
import tempfile
import warnings
from pathlib import Path

from xmodality_lite.config import user_cache_dir

ENV_VAR = "XMODALITY_JAX_CACHE"
OFF_VALUES = frozenset({"0", "off", "false", "no"})
ON_VALUES = frozenset({"", "1", "on", "true", "yes"})
MIN_COMPILE_TIME_SECS = 0.0  # write every compiled program (JAX's default: only those ≥ 1 s)
MIN_ENTRY_SIZE_BYTES = -1  # no size floor, and JAX may not raise it

# JAX option -> the environment variable JAX reads it from when it is imported
_JAX_ENV = {
    "jax_compilation_cache_dir": "JAX_COMPILATION_CACHE_DIR",
    "jax_persistent_cache_min_compile_time_secs": "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS",
    "jax_persistent_cache_min_entry_size_bytes": "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES",
}


def _setting() -> str:
    return os.environ.get(ENV_VAR, "").strip()


def is_turned_off() -> bool:
    """Whether ``$XMODALITY_JAX_CACHE`` turns the cache off (``0``, ``off``, ``false``, ``no``)."""
    return _setting().lower() in OFF_VALUES


def default_compilation_cache_dir() -> Path | None:
    """The folder ``$XMODALITY_JAX_CACHE`` names, else ``<user cache>/jax``; None when turned off."""
    value = _setting()
    if value.lower() in OFF_VALUES:
        return None
    if value.lower() in ON_VALUES:
        return user_cache_dir() / "jax"
    return Path(value).expanduser()


_LRU_CACHE = "jax._src.lru_cache"  # the module of JAX's file cache (LRUCache.put writes entries)


def _atomic_put(put, suffix: str):
    """``LRUCache.put`` writing the entry to a temporary file in the cache folder and renaming
    it (``os.replace`` is atomic on one file system): a reader sees the whole entry or none. JAX's
    own ``put`` still handles what this does not: the size-bounded cache (its lock and access
    times) and non-local paths."""

    @functools.wraps(put)
    def atomic_put(self, key: str, value: bytes) -> None:
        folder = str(self.path)  # an etils path; a local one is a plain folder name
        if not key or self.eviction_enabled or "://" in folder:
            return put(self, key, value)
        path = Path(folder) / f"{key}{suffix}"
        if path.exists():  # JAX's rule: an existing entry is kept
            return
        from xmodality_lite.io import atomic_write_bytes  # JAX is loaded by now: no import cost

        atomic_write_bytes(path, value)  # a temporary file of its own name, then a rename

    atomic_put.writes_atomically = True
    return atomic_put


def write_entries_atomically() -> bool:
    """Make JAX's persistent cache write each entry whole (see the module docstring); at once if
    JAX's cache module is loaded, else as soon as it is. True once installed; idempotent."""
    module = sys.modules.get(_LRU_CACHE)
    if module is None:
        if not any(isinstance(f, _PatchOnImport) for f in sys.meta_path):
            sys.meta_path.insert(0, _PatchOnImport())
        return False
    cache = getattr(module, "LRUCache", None)
    if cache is None or not callable(getattr(cache, "put", None)):
        return False  # another JAX: its own writes
    if not getattr(cache.put, "writes_atomically", False):
        cache.put = _atomic_put(cache.put, getattr(module, "_CACHE_SUFFIX", "-cache"))
    return True


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Runs :func:`write_entries_atomically` right after JAX's cache module is first imported
    (``import xmodality_lite`` does not import JAX), then steps aside."""

    def find_spec(self, name, path=None, target=None):
        if name != _LRU_CACHE:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            exec_module = spec.loader.exec_module

            def exec_and_patch(module):
                exec_module(module)
                try:
                    write_entries_atomically()
                except Exception:  # noqa: BLE001 - never break JAX's import
                    pass

            spec.loader.exec_module = exec_and_patch
        return spec


def _jax_loaded() -> bool:
    return "jax" in sys.modules


def _apply(settings: dict[str, object]) -> None:
    """Settings into the environment (for a JAX imported later and child processes) and, if JAX
    is loaded, into ``jax.config``, resetting JAX's cache so the next compilation sees them."""
    for name, value in settings.items():
        if value is None:
            os.environ.pop(_JAX_ENV[name], None)
        else:
            os.environ[_JAX_ENV[name]] = str(value)
    if _jax_loaded():
        import jax
        from jax.experimental.compilation_cache import compilation_cache as jax_cc

        for name, value in settings.items():
            jax.config.update(name, value)
        jax_cc.reset_cache()


def _check_writable(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
        pass


def enable_compilation_cache(path: str | os.PathLike | None = None) -> Path | None:
    """Turn JAX's persistent compilation cache on in ``path`` and return the folder.

    ``path`` None: the folder of :func:`default_compilation_cache_dir`, and nothing is done
    (None returned) when ``$XMODALITY_JAX_CACHE`` turns the cache off. A folder that cannot be
    created or written: a warning, the cache off, None returned.
    """
    folder = Path(path).expanduser() if path is not None else default_compilation_cache_dir()
    if folder is None:
        return None
    folder = folder.absolute()
    try:
        _check_writable(folder)
    except OSError as err:
        warnings.warn(f"JAX compilation cache off: cannot write to {folder} ({err}); set "
                      f"{ENV_VAR} to a writable folder, or to 0 to silence this",
                      RuntimeWarning, stacklevel=2)
        disable_compilation_cache()
        return None
    write_entries_atomically()
    _apply({"jax_compilation_cache_dir": str(folder),
            "jax_persistent_cache_min_compile_time_secs": MIN_COMPILE_TIME_SECS,
            "jax_persistent_cache_min_entry_size_bytes": MIN_ENTRY_SIZE_BYTES})
    return folder


def disable_compilation_cache() -> None:
    """Turn the persistent compilation cache off in this process and the children it starts."""
    _apply({"jax_compilation_cache_dir": None})


def compilation_cache_dir() -> Path | None:
    """The folder JAX caches compiled programs in now (None: the persistent cache is off)."""
    if _jax_loaded():
        import jax

        value = jax.config.jax_compilation_cache_dir
    else:
        value = os.environ.get(_JAX_ENV["jax_compilation_cache_dir"])
    return Path(value) if value else None


def configure_from_environment() -> Path | None:
    """What ``import xmodality_lite`` runs: the cache as ``$XMODALITY_JAX_CACHE`` says; never raises.

    Unset, it keeps a cache folder JAX already has (``JAX_COMPILATION_CACHE_DIR`` or
    ``jax.config``) and otherwise enables ``<user cache>/jax``. Returns the folder in use.
    """
    try:
        if is_turned_off():
            disable_compilation_cache()
            return None
        if not _setting() and compilation_cache_dir() is not None:
            return compilation_cache_dir()
        return enable_compilation_cache()
    except Exception as err:  # noqa: BLE001 - a cache must never break the import
        warnings.warn(f"JAX compilation cache off: {type(err).__name__}: {err}", RuntimeWarning,
                      stacklevel=2)
        return None


__all__ = ["ENV_VAR", "compilation_cache_dir", "configure_from_environment",
           "default_compilation_cache_dir", "disable_compilation_cache",
           "enable_compilation_cache", "is_turned_off", "write_entries_atomically"]
