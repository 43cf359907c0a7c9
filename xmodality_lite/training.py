"""Training loop (paper §3.5): Adam (constant rate, or warm-up + cosine decay), v-prediction with Min-SNR-γ for the
diffusion models, plain MSE for the U-Net baseline, optional bf16 compute and EMA.

Determinism: the weights are initialised from the seed, step ``s`` draws its noise from
``fold_in(key, s)`` and its batch from ``data.batch_at(s)``. A checkpoint therefore holds the
whole run state (weights, Adam moments, EMA, key, step), and a run resumed after a crash is
bit-identical to one that never stopped.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

from xmodality_lite import parallel
from xmodality_lite.checkpoint import (
    checkpoint_name,
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)
from xmodality_lite.config import Profile, get_profile
from xmodality_lite.diffusion.losses import diffusion_loss, regression_loss
from xmodality_lite.io import atomic_write_text

KINDS = ("diffusion", "regression")


@dataclass
class TrainResult:
    """The trained model (raw weights), its EMA weights if kept, and where the run lives."""

    model: nnx.Module
    ema: nnx.State | None
    step: int
    final_loss: float  # mean loss of the last logging window
    steps_per_s: float  # of this invocation, compilation excluded
    out_dir: Path | None
    checkpoint: Path | None


def compute_dtype(profile: Profile):
    """bf16 compute (paper §3.5) or None for float32; parameters always stay float32."""
    return jnp.bfloat16 if profile.train.dtype == "bfloat16" else None


def learning_rate_schedule(cfg) -> optax.Schedule | float:
    """η_k of the recipe ``cfg`` (a :class:`~xmodality_lite.config.TrainConfig`).

    The paper's recipe (§3.5) is a constant η. A CPU budget trains a hundred times fewer steps,
    where a higher peak with a linear warm-up, η_k = η·min(1, (k + 1)/W), and a cosine decay
    to η/100 at ``cfg.steps`` learn far more per step. The horizon is the recipe's ``steps``,
    so stopping a run early (or resuming it) never changes the rate of a given step.
    """
    peak, warm, total = cfg.learning_rate, cfg.warmup_steps, cfg.steps
    if cfg.lr_decay not in ("constant", "cosine"):
        raise ValueError(f"lr_decay must be 'constant' or 'cosine'; got {cfg.lr_decay!r}")
    if warm == 0 and cfg.lr_decay == "constant":
        return peak

    def schedule(k):
        k = jnp.asarray(k, jnp.float32)
        rate = peak * jnp.minimum(1.0, (k + 1.0) / max(warm, 1))
        if cfg.lr_decay == "cosine":
            frac = jnp.clip((k - warm) / max(total - warm, 1), 0.0, 1.0)
            rate = rate * (0.01 + 0.99 * 0.5 * (1.0 + jnp.cos(jnp.pi * frac)))
        return rate

    return schedule


@functools.cache
def adam(learning_rate: float, warmup_steps: int = 0, lr_decay: str = "constant",
         steps: int = 0) -> optax.GradientTransformation:
    """Adam, no clipping (paper §3.5), at the rate of :func:`learning_rate_schedule`.

    Cached, so optimisers of equal models have equal graph definitions and a second
    ``train`` call in the same process reuses the compiled step.
    """
    from types import SimpleNamespace

    cfg = SimpleNamespace(learning_rate=learning_rate, warmup_steps=warmup_steps,
                          lr_decay=lr_decay, steps=steps)
    return optax.adam(learning_rate_schedule(cfg))


def make_optimizer(model: nnx.Module, profile: Profile) -> nnx.Optimizer:
    cfg = profile.train
    return nnx.Optimizer(model, adam(cfg.learning_rate, cfg.warmup_steps, cfg.lr_decay, cfg.steps),
                         wrt=nnx.Param)


def loss_fn(model: nnx.Module, tof: jax.Array, cta: jax.Array, key: jax.Array,
            gamma: float) -> jax.Array:
    """The model's objective, chosen by ``model.kind``: CTA is x0, TOF the condition."""
    kind = getattr(model, "kind", None)
    if kind == "diffusion":
        return diffusion_loss(model, cta, tof, key, gamma=gamma)
    if kind == "regression":
        return regression_loss(model, tof, cta)
    raise ValueError(f"model {type(model).__name__} has kind {kind!r}; expected one of {KINDS}")


@functools.lru_cache(maxsize=8)  # same model structure → reuse the compiled step
def make_train_step(graphdef: nnx.GraphDef, *, gamma: float, ema_decay: float,
                    ema_warmup: bool = False) -> Callable:
    """A jitted ``step(state, tof, cta, key) -> (state, loss)`` over ``(model, optimizer, ema)``.

    The NNX objects are split once into a pure pytree (``nnx.split``) so the per-step
    overhead is one ``jax.jit`` call; the state buffers are donated. The EMA, when kept, is
    updated at every step: ema ← ema + (1 − d)(θ − ema) (the reference's option has an
    inverted skip condition and updates on nine steps in ten). With ``ema_warmup`` the decay of
    update k (counting from 0) is min(d, (1 + k)/(10 + k)), so a short run's average is not
    dominated by the initial weights.
    """

    def step(state, tof, cta, key):
        model, optimizer, ema = nnx.merge(graphdef, state)
        loss, grads = nnx.value_and_grad(loss_fn)(model, tof, cta, key, gamma)
        k = optimizer.step.get_value().astype(jnp.float32)  # updates made before this one
        optimizer.update(model, grads)
        if ema is not None:
            decay = jnp.minimum(ema_decay, (1.0 + k) / (10.0 + k)) if ema_warmup else ema_decay
            params = nnx.state(model, nnx.Param)
            new = optax.incremental_update(params, nnx.state(ema, nnx.Param), 1.0 - decay)
            nnx.update(ema, new)
        return nnx.split((model, optimizer, ema))[1], loss

    return jax.jit(step, donate_argnums=0)


def build(model_name: str, profile: Profile, seed: int, variant: str = "published") -> nnx.Module:
    """The named model, initialised from ``seed``, computing in the profile's dtype."""
    from xmodality_lite.models import build_model

    return build_model(model_name, profile, rngs=nnx.Rngs(seed), variant=variant,
                       dtype=compute_dtype(profile))


def default_data(profile: Profile, seed: int, *, data_dir: str | os.PathLike | None = None):
    """Random crops of the training split, resumable by step: TopCoW from ``data_dir`` or
    ``$XMODALITY_DATA`` when given, else the phantom (:func:`~xmodality_lite.preprocessing.default_dataset`)."""
    from xmodality_lite.preprocessing import BatchIterator, default_dataset

    return BatchIterator(default_dataset(profile, data=data_dir)["train"], profile.train.batch_size,
                         seed, profile.image_size)


def as_pair(batch) -> tuple[jax.Array, jax.Array]:
    """(tof, cta) from a batch given as a pair or a mapping with "tof"/"cta"."""
    tof, cta = (batch["tof"], batch["cta"]) if isinstance(batch, dict) else batch
    return jnp.asarray(tof, jnp.float32), jnp.asarray(cta, jnp.float32)


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Records of a ``metrics.jsonl`` log."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such metrics log")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _truncate_log(path: Path, step: int) -> float:
    """Drop records past ``step`` (logged by a run that crashed after its last checkpoint);
    return the wall time of the last record kept."""
    if not path.is_file():
        return 0.0
    kept = [r for r in read_metrics(path) if r["step"] <= step]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
    return kept[-1]["wall_s"] if kept else 0.0


def plot_loss(log: str | os.PathLike | Iterable[dict], ax=None):
    """Loss against step (log scale) from a metrics log path or its records; returns the axes."""
    import matplotlib.pyplot as plt

    records = read_metrics(log) if isinstance(log, (str, os.PathLike)) else list(log)
    if ax is None:
        ax = plt.subplots(figsize=(5, 3))[1]
    ax.plot([r["step"] for r in records], [r["loss"] for r in records])
    ax.set(xlabel="step", ylabel="training loss", yscale="log")
    return ax


def _recipe(profile: dict) -> dict:
    """What a resumed run must share with its checkpoint: the profile less its logging cadence."""
    recipe = json.loads(json.dumps(profile))
    for key in ("log_every", "checkpoint_every"):
        recipe["train"].pop(key, None)
    return recipe


def train(model_name: str, profile: Profile | str | None = None, *, data=None,
          steps: int | None = None, out_dir: str | os.PathLike | None = None,
          resume: bool = True, seed: int | None = None, progress: bool = True,
          variant: str = "published", keep_checkpoints: int = 3) -> TrainResult:
    """Train ``model_name`` for ``steps`` total steps (default ``profile.train.steps``).

    ``data`` has ``batch_at(step) -> (tof, cta)`` ([B, H, W, 1] in [-1, 1]); by default the
    training split of :func:`default_data` (TopCoW when ``$XMODALITY_DATA`` is set, else the
    phantom). With ``out_dir``, metrics go to ``out_dir/metrics.jsonl`` and
    checkpoints to ``out_dir/checkpoints/`` every ``profile.train.checkpoint_every`` steps and
    at the end (the last ``keep_checkpoints`` are kept); with ``resume`` the latest checkpoint
    there is continued bit-identically.
    With several local devices the batch is split over them (see :mod:`parallel`).
    """
    profile = get_profile(profile)
    cfg = profile.train
    seed = cfg.seed if seed is None else seed
    steps = cfg.steps if steps is None else steps
    if steps < 0:
        raise ValueError(f"steps must be >= 0; got {steps}")
    data = default_data(profile, seed) if data is None else data
    log = (lambda *a: print(*a, file=sys.stderr)) if progress else (lambda *a: None)
    log(f"training {model_name!r} ({variant}) for {steps} steps, profile {profile.to_json()}")

    model = build(model_name, profile, seed, variant)
    optimizer = make_optimizer(model, profile)
    ema = None
    if cfg.ema_decay > 0:  # the EMA weights travel as a model, in their own buffers
        ema = nnx.clone(model)
        nnx.update(ema, jax.tree.map(jnp.copy, nnx.state(ema)))
    key, start = jax.random.key(seed), 0
    # (data_seed, step) is the data position: the batch of step s is data.batch_at(s)
    meta = {"model": model_name, "variant": variant, "profile": profile.to_dict(), "seed": seed,
            "data_seed": getattr(data, "seed", seed), "kind": model.kind}

    ckpt_dir = metrics_path = None
    wall_offset = 0.0  # wall time of the run before this invocation (resume)
    if out_dir is not None:
        ckpt_dir, metrics_path = Path(out_dir) / "checkpoints", Path(out_dir) / "metrics.jsonl"
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        last = latest_checkpoint(ckpt_dir) if resume else None
        if last is not None:
            ckpt = load_checkpoint(last, model, optimizer, model_name=model_name, profile=profile)
            run = ("seed", "data_seed", "variant")
            got, want = ([m.get(k) for k in run] for m in (ckpt.meta, meta))
            if got != want:
                raise ValueError(f"{last}: was trained with (seed, data seed, variant) {got}, "
                                 f"this run uses {want}; pass resume=False or another out_dir")
            if _recipe(ckpt.meta["profile"]) != _recipe(profile.to_dict()):
                raise ValueError(f"{last}: was trained with another recipe (profile data or "
                                 "training settings differ); pass resume=False or another "
                                 "out_dir")
            if ema is not None and ckpt.ema is not None:
                nnx.update(ema, ckpt.ema)
            key, start = ckpt.key, ckpt.step
            if start > steps:
                raise ValueError(f"{last}: the run is already at step {start}, past the "
                                 f"{steps} steps asked for; pass resume=False or another out_dir")
            log(f"resuming from {last} at step {start}")
        wall_offset = _truncate_log(metrics_path, start)

    graphdef, state = nnx.split((model, optimizer, ema))
    mesh = parallel.data_mesh() if jax.local_device_count() > 1 else None
    if mesh is not None:
        state = parallel.replicate(state, mesh)
    train_step = make_train_step(graphdef, gamma=cfg.min_snr_gamma, ema_decay=cfg.ema_decay,
                                 ema_warmup=cfg.ema_warmup)

    def save(step: int) -> Path | None:
        if ckpt_dir is None:
            return None
        nnx.update((model, optimizer, ema), state)
        path = save_checkpoint(ckpt_dir / checkpoint_name(step), model, optimizer, step, key,
                               meta, ema=None if ema is None else nnx.state(ema, nnx.Param))
        prune_checkpoints(ckpt_dir, keep_checkpoints)
        return path

    window, final_loss, saved = [], float("nan"), None
    t0 = t_log = time.perf_counter()
    timed_from, t_timed = start, None
    bar = tqdm(range(start, steps), initial=start, total=steps, desc=model_name,
               disable=not progress, dynamic_ncols=True)
    for step in bar:
        tof, cta = as_pair(data.batch_at(step))
        if mesh is not None:
            tof, cta = parallel.shard_batch((tof, cta), mesh)
        state, loss = train_step(state, tof, cta, jax.random.fold_in(key, step))
        window.append(loss)
        done = step + 1
        if done == start + 1:  # exclude compilation from the rate
            jax.block_until_ready(loss)
            t_timed, timed_from = time.perf_counter(), done
        if done % cfg.log_every == 0 or done == steps:
            final_loss = float(jnp.mean(jnp.stack(window)))
            now = time.perf_counter()
            rate = len(window) / max(now - t_log, 1e-9)
            window, t_log = [], now
            bar.set_postfix(loss=f"{final_loss:.4f}", steps_s=f"{rate:.2f}")
            if metrics_path is not None:
                with open(metrics_path, "a") as f:
                    f.write(json.dumps({"step": done, "loss": final_loss, "steps_per_s": rate,
                                        "wall_s": wall_offset + now - t0}) + "\n")
        if done % cfg.checkpoint_every == 0 or done == steps:
            saved = save(done)
    bar.close()
    jax.block_until_ready(state)
    nnx.update((model, optimizer, ema), state)
    n_timed = steps - timed_from
    rate = n_timed / (time.perf_counter() - t_timed) if t_timed and n_timed else float("nan")
    return TrainResult(model=model, ema=None if ema is None else nnx.state(ema, nnx.Param),
                       step=max(steps, start), final_loss=final_loss, steps_per_s=rate,
                       out_dir=None if out_dir is None else Path(out_dir),
                       checkpoint=saved)


def params_bytes(model: nnx.Module) -> bytes:
    """All parameter bytes in path order: a bit-exact fingerprint for comparing runs."""
    return b"".join(np.asarray(v.get_value()).tobytes()
                    for _, v in nnx.to_flat_state(nnx.state(model, nnx.Param)))
