"""Table 1 of the paper on the phantom: slice metrics of trained checkpoints on fixed test crops,
for a sweep of sampling steps (paper §4.1–4.2, Fig. 4).

The test crops are drawn once from a fixed seed (§4.1: "we fix one random seed and perform
evaluation of the test set of the corresponding fixed random crops"), so every model and every
step count sees the same slices.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xmodality_lite.checkpoint import load_model, read_metadata
from xmodality_lite.config import get_profile
from xmodality_lite.io import atomic_path, atomic_write_text
from xmodality_lite.metrics import evaluate_slices, format_table
from xmodality_lite.translation import translate_slices

METRICS = ("mse", "mae", "psnr", "ssim", "fd")


def fixed_test_crops(profile=None, *, n: int | None = None, seed: int = 0):
    """(tof, cta) [n, S, S, 1] in [−1, 1]: fixed random crops of the phantom test split."""
    from xmodality_lite.preprocessing import BatchIterator, phantom_dataset

    profile = get_profile(profile)
    test = phantom_dataset(profile, progress=False)["test"]
    n = len(test) if n is None else n
    return BatchIterator(test, n, seed, profile.image_size).batch_at(0)


def evaluate(checkpoints: Sequence[str | os.PathLike], profile=None, *,
             steps: Sequence[int] | None = None, sampler: str | None = None,
             n_slices: int | None = 32, seed: int = 0, extractor: str | None = "auto",
             data: tuple[np.ndarray, np.ndarray] | None = None,
             out_dir: str | os.PathLike | None = None, progress: bool = True) -> list[dict[str, Any]]:
    """One Table-1 row per (checkpoint, step count); the U-Net gets a single row.

    ``data`` is (tof, cta) [N, S, S, 1] (default: :func:`fixed_test_crops` of the profile). With
    ``out_dir``: ``results.csv``, ``results.md`` and ``steps_sweep.png`` are written there.
    """
    profile = get_profile(profile)
    steps = [profile.sample.steps] if steps is None else sorted(set(map(int, steps)))
    sampler = profile.sample.sampler if sampler is None else sampler
    tof, cta = fixed_test_crops(profile, n=n_slices, seed=seed) if data is None else data
    rows = []
    for path in checkpoints:
        meta, model = read_metadata(path), load_model(path)
        sweep = steps if model.kind == "diffusion" else [None]
        for n in sweep:
            pred = translate_slices(model, tof, sampler=sampler, steps=n, seed=seed,
                                    progress=progress, profile=profile)
            m = evaluate_slices(pred, cta, extractor=extractor)
            rows.append({"model": meta["model"], "sampler": sampler if n else "N/A",
                         "steps": n, **{k: m.get(k) for k in METRICS},
                         "fd_extractor": m.get("fd_extractor")})
    if out_dir is not None:
        write_results(rows, out_dir)
    return rows


def write_results(rows: list[dict[str, Any]], out_dir: str | os.PathLike) -> dict[str, Path]:
    """``results.csv``, ``results.md`` and ``steps_sweep.png`` in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_text, md_text = format_table(rows)
    paths = {"csv": atomic_write_text(out / "results.csv", csv_text),
             "md": atomic_write_text(out / "results.md", md_text),
             "plot": out / "steps_sweep.png"}
    fig = plot_steps_sweep(rows)
    with atomic_path(paths["plot"]) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
    return paths


def plot_steps_sweep(rows: list[dict[str, Any]], metrics: Sequence[str] = ("psnr", "ssim", "fd")):
    """Metric against sampling steps per model (paper Fig. 4); the U-Net as a dashed line.

    Returns a ``matplotlib.figure.Figure`` (no pyplot state, so it works headless)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4 * len(metrics), 3))
    axes = fig.subplots(1, len(metrics), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for model in dict.fromkeys(r["model"] for r in rows):
            mine = [r for r in rows if r["model"] == model and r.get(metric) is not None]
            if not mine:
                continue
            if mine[0]["steps"] is None:
                ax.axhline(mine[0][metric], ls="--", color="grey", label=model)
            else:
                ax.plot([r["steps"] for r in mine], [r[metric] for r in mine], "o-", label=model)
        ax.set(xlabel="sampling steps", ylabel=metric.upper(), xscale="log")
    axes[0, 0].legend()
    fig.tight_layout()
    return fig


def plot_samples(tof: np.ndarray, pred: np.ndarray, cta: np.ndarray, *, title: str = ""):
    """Rows of TOF | synthetic CTA | CTA (slices [N, H, W, 1] in [−1, 1]) shown in HU."""
    from matplotlib.figure import Figure

    from xmodality_lite.data.slices import unwindow_hu

    n = len(tof)
    fig = Figure(figsize=(6, 2 * n))
    axes = fig.subplots(n, 3, squeeze=False)
    for i in range(n):
        for j, (img, name) in enumerate(((tof, "TOF-MRA"), (pred, "synthetic CTA"), (cta, "CTA"))):
            hu = img[i, ..., 0] if j == 0 else unwindow_hu(img[i, ..., 0])
            lo, hi = (-1, 1) if j == 0 else (-50, 350)
            axes[i, j].imshow(hu, cmap="gray", vmin=lo, vmax=hi)
            axes[i, j].set_axis_off()
            if i == 0:
                axes[i, j].set_title(name if j == 0 else f"{name} [−50, 350] HU", fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------- shipped reference
REFERENCE_SEED = 1000  # a phantom patient outside the training seeds
REFERENCE_FILE = "reference_metrics.json"


def reference_volume_metrics(checkpoint: str | os.PathLike, *, steps: int = 4,
                             seed: int = REFERENCE_SEED) -> dict[str, float]:
    """Table-3 metrics (HU) of one shipped model on a fixed phantom volume (paper §3.6, §4.2).

    The phantom TOF is put on its CTA grid through the known misalignment, translated with
    DDIM (``steps``, fixed key) or one U-Net pass, and compared with the phantom CTA. The same
    checkpoint, seed and package give the same numbers, so a fresh environment can check that
    it loads the shipped weights exactly as they were recorded.
    """
    import nibabel as nib

    from xmodality_lite.data.dataset import resample_with_known_transform
    from xmodality_lite.data.phantom import make_pair
    from xmodality_lite.metrics import volume_metrics
    from xmodality_lite.reconstruction import translate_volume

    meta = read_metadata(checkpoint)
    pair = make_pair(seed, meta["profile"]["name"])
    tof = nib.Nifti1Image(resample_with_known_transform(pair), pair.cta.affine)
    model = load_model(checkpoint)
    synthetic = translate_volume(model, tof, sampler="ddim", steps=steps, seed=0,
                                 progress=False, profile=meta["profile"]["name"])
    return volume_metrics(synthetic.get_fdata(dtype=np.float32),
                          np.asarray(pair.cta.dataobj, np.float32))


def record_reference_metrics(checkpoint_dir: str | os.PathLike, *, steps: int = 4) -> Path:
    """Write ``reference_metrics.json`` beside the shipped checkpoints (``make checkpoints``)."""
    import json

    folder = Path(checkpoint_dir)
    rows = {path.stem: reference_volume_metrics(path, steps=steps)
            for path in sorted(folder.glob("*.safetensors"))}
    record = {"phantom_seed": REFERENCE_SEED, "sampler": "ddim", "steps": steps,
              "metrics": rows}
    return atomic_write_text(folder / REFERENCE_FILE, json.dumps(record, indent=1, sort_keys=True))
