"""Training loop (paper §3.5): Adam (constant rate, or warm-up + cosine decay), v-prediction with Min-SNR-γ for the
diffusion models, plain MSE for the U-Net baseline, optional bf16 compute and EMA.

Determinism: the weights are initialised from the seed, step ``s`` draws its noise from
``fold_in(key, s)`` and its batch from ``data.batch_at(s)``. A checkpoint therefore holds the
whole run state (weights, Adam moments, EMA, key, step), and a run resumed after a crash is
bit-identical to one that never stopped.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
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
from xmodality_lite.config import Profile, get_profile, model_kind
from xmodality_lite.diffusion.losses import diffusion_loss, regression_loss
from xmodality_lite.io import atomic_write_text

logger = logging.getLogger(__name__)


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
    return _schedule(cfg.learning_rate, cfg.warmup_steps, cfg.lr_decay, cfg.steps)


@functools.cache
def _schedule(peak: float, warm: int, decay: str, total: int) -> optax.Schedule | float:
    if decay not in ("constant", "cosine"):
        raise ValueError(f"lr_decay must be 'constant' or 'cosine'; got {decay!r}")
    if warm == 0 and decay == "constant":
        return peak

    def schedule(k):
        k = jnp.asarray(k, jnp.float32)
        rate = peak * jnp.minimum(1.0, (k + 1.0) / max(warm, 1))
        if decay == "cosine":
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
    return optax.adam(_schedule(learning_rate, warmup_steps, lr_decay, steps))


def make_optimizer(model: nnx.Module, profile: Profile) -> nnx.Optimizer:
    cfg = profile.train
    return nnx.Optimizer(model, adam(cfg.learning_rate, cfg.warmup_steps, cfg.lr_decay, cfg.steps),
                         wrt=nnx.Param)


def loss_fn(model: nnx.Module, tof: jax.Array, cta: jax.Array, key: jax.Array,
            gamma: float) -> jax.Array:
    """The model's objective, chosen by ``model.kind``: CTA is x0, TOF the condition."""
    if model_kind(model) == "diffusion":
        return diffusion_loss(model, cta, tof, key, gamma=gamma)
    return regression_loss(model, tof, cta)


@functools.lru_cache(maxsize=8)  # same model structure → reuse the compiled step
def make_train_step(graphdef: nnx.GraphDef, *, gamma: float, ema_decay: float,
                    ema_warmup: bool = False) -> Callable:
    """A jitted ``step(state, tof, cta, key) -> (state, loss)`` over ``(model, optimizer, ema)``.

    The NNX objects are split once into a pure pytree (``nnx.split``) so the per-step
    overhead is one ``jax.jit`` call; the state buffers are donated. The EMA, when kept, is
    updated at every step: ema ← ema + (1 − d)(θ − ema) (the reference's option has an
    inverted skip condition and updates on nine steps in ten). With ``ema_warmup`` the decay of
    update k (counting from 0) is min(d, (1 + k)/(10 + k)), so a short run's average is not
    dominated by the initial weights. The step is compiled with the XLA options the model asks
    for (:func:`xmodality_lite.models.compiler.compiler_options`).
    """
    from xmodality_lite.models import compiler

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

    return compiler.jit(step, compiler.compiler_options(graphdef, "train"), donate_argnums=0)


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


# --- a run, in named steps: start → resume → (step → log → checkpoint)* ----------------------
@dataclass
class Run:
    """Everything a training run carries from one step to the next.

    The NNX objects (model, Adam optimizer, EMA copy) for checkpoints and lessons; ``key`` and
    ``step`` (the number of updates made) fix the noise and the batch of every later step;
    ``meta`` is what a checkpoint records about the run.
    """

    model: nnx.Module
    optimizer: nnx.Optimizer
    ema: nnx.Module | None
    key: jax.Array
    step: int
    meta: dict[str, Any]

    @property
    def objects(self) -> tuple:
        return self.model, self.optimizer, self.ema


def start_run(model_name: str, profile: Profile, seed: int, *, variant: str = "published",
              data_seed: int | None = None) -> Run:
    """A fresh run at step 0: the model initialised from ``seed``, Adam, and an EMA copy of the
    weights in buffers of its own when ``profile.train.ema_decay > 0``."""
    model = build(model_name, profile, seed, variant)
    optimizer = make_optimizer(model, profile)
    ema = None
    if profile.train.ema_decay > 0:
        ema = nnx.clone(model)
        nnx.update(ema, jax.tree.map(jnp.copy, nnx.state(ema)))
    # (data_seed, step) is the data position: the batch of step s is data.batch_at(s)
    meta = {"model": model_name, "variant": variant, "profile": profile.to_dict(), "seed": seed,
            "data_seed": seed if data_seed is None else data_seed, "kind": model.kind}
    return Run(model, optimizer, ema, jax.random.key(seed), 0, meta)


def resume_run(run: Run, ckpt_dir: str | os.PathLike, profile: Profile,
               steps: int) -> Path | None:
    """Continue ``run`` from the latest checkpoint in ``ckpt_dir`` (in place); its path, or None.

    Refuses a checkpoint of another run (seed, data seed or variant) or another recipe (the
    profile less its logging cadence), and one already past ``steps``: each would silently
    give weights that are not the run asked for.
    """
    last = latest_checkpoint(ckpt_dir)
    if last is None:
        return None
    ckpt = load_checkpoint(last, run.model, run.optimizer, model_name=run.meta["model"],
                           profile=profile)
    fields = ("seed", "data_seed", "variant")
    got, want = ([m.get(k) for k in fields] for m in (ckpt.meta, run.meta))
    if got != want:
        raise ValueError(f"{last}: was trained with (seed, data seed, variant) {got}, "
                         f"this run uses {want}; pass resume=False or another out_dir")
    if _recipe(ckpt.meta["profile"]) != _recipe(run.meta["profile"]):
        raise ValueError(f"{last}: was trained with another recipe (profile data or training "
                         "settings differ); pass resume=False or another out_dir")
    if ckpt.step > steps:
        raise ValueError(f"{last}: the run is already at step {ckpt.step}, past the {steps} "
                         "steps asked for; pass resume=False or another out_dir")
    if run.ema is not None and ckpt.ema is not None:
        nnx.update(run.ema, ckpt.ema)
    run.key, run.step = ckpt.key, ckpt.step
    logger.info("resuming from %s at step %d", last, ckpt.step)
    return last


def log_metrics(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Append one record (step, loss, steps/s, wall time) to a ``metrics.jsonl`` log."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def save_run(run: Run, ckpt_dir: str | os.PathLike, keep: int = 3) -> Path:
    """Checkpoint ``run`` (weights, Adam moments, EMA, key, step) as
    ``ckpt_dir/step_NNNNNNN.safetensors``, then keep only the latest ``keep``."""
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    path = save_checkpoint(ckpt_dir / checkpoint_name(run.step), run.model, run.optimizer,
                           run.step, run.key, run.meta,
                           ema=None if run.ema is None else nnx.state(run.ema, nnx.Param))
    prune_checkpoints(ckpt_dir, keep)
    return path


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

    The loop is the named steps above: :func:`start_run`, :func:`resume_run`, then per step
    the jitted :func:`make_train_step`, :func:`log_metrics` and :func:`save_run`. Messages go
    to the ``xmodality_lite.training`` logger, progress to a tqdm bar (``progress=False``: neither).
    """
    profile = get_profile(profile)
    cfg = profile.train
    seed = cfg.seed if seed is None else seed
    steps = cfg.steps if steps is None else steps
    if steps < 0:
        raise ValueError(f"steps must be >= 0; got {steps}")
    data = default_data(profile, seed) if data is None else data
    with _announce(progress):
        logger.info("training %r (%s) for %d steps, profile %s", model_name, variant, steps,
                    profile.to_json())
        run = start_run(model_name, profile, seed, variant=variant,
                        data_seed=getattr(data, "seed", seed))
        ckpt_dir = metrics_path = None
        wall_offset = 0.0  # wall time of the run before this invocation (resume)
        if out_dir is not None:
            ckpt_dir, metrics_path = Path(out_dir) / "checkpoints", Path(out_dir) / "metrics.jsonl"
            ckpt_dir.mkdir(parents=True, exist_ok=True)
            if resume:
                resume_run(run, ckpt_dir, profile, steps)
            wall_offset = _truncate_log(metrics_path, run.step)

    # the loop runs on one pure pytree; the NNX objects are refreshed from it to checkpoint
    graphdef, state = nnx.split(run.objects)
    mesh = parallel.data_mesh() if jax.local_device_count() > 1 else None
    if mesh is not None:
        state = parallel.replicate(state, mesh)
    train_step = make_train_step(graphdef, gamma=cfg.min_snr_gamma, ema_decay=cfg.ema_decay,
                                 ema_warmup=cfg.ema_warmup)

    start = run.step
    window, final_loss, saved = [], float("nan"), None
    t0 = t_log = time.perf_counter()
    timed_from, t_timed = start, None
    bar = tqdm(range(start, steps), initial=start, total=steps, desc=model_name,
               disable=not progress, dynamic_ncols=True)
    for step in bar:
        tof, cta = as_pair(data.batch_at(step))
        if mesh is not None:
            tof, cta = parallel.shard_batch((tof, cta), mesh)
        state, loss = train_step(state, tof, cta, jax.random.fold_in(run.key, step))
        window.append(loss)
        run.step = done = step + 1
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
                log_metrics(metrics_path, {"step": done, "loss": final_loss, "steps_per_s": rate,
                                           "wall_s": wall_offset + now - t0})
        if ckpt_dir is not None and (done % cfg.checkpoint_every == 0 or done == steps):
            nnx.update(run.objects, state)
            saved = save_run(run, ckpt_dir, keep_checkpoints)
    bar.close()
    jax.block_until_ready(state)
    nnx.update(run.objects, state)
    n_timed = steps - timed_from
    rate = n_timed / (time.perf_counter() - t_timed) if t_timed and n_timed else float("nan")
    return TrainResult(model=run.model,
                       ema=None if run.ema is None else nnx.state(run.ema, nnx.Param),
                       step=max(steps, start), final_loss=final_loss, steps_per_s=rate,
                       out_dir=None if out_dir is None else Path(out_dir),
                       checkpoint=saved)


@contextlib.contextmanager
def _announce(progress: bool):
    """Show this module's INFO messages on stderr while training with ``progress`` when the
    application configured no logging of its own (a notebook, the CLI); otherwise leave the
    logger alone."""
    handler = None
    if progress and not logging.getLogger().handlers and not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        previous = logger.level
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        if handler is not None:
            logger.removeHandler(handler)
            logger.setLevel(previous)


def params_bytes(model: nnx.Module) -> bytes:
    """All parameter bytes in path order: a bit-exact fingerprint for comparing runs."""
    return b"".join(np.asarray(v.get_value()).tobytes()
                    for _, v in nnx.to_flat_state(nnx.state(model, nnx.Param)))
