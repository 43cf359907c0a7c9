"""Table 1 of the paper on the phantom: slice metrics of trained checkpoints on fixed test crops,
for a sweep of sampling steps (paper §4.1–4.2, Fig. 4); and whole volumes of unseen phantom
patients scored as a radiologist would ask: inside the head and the Circle-of-Willis region,
by vessel agreement, with bootstrap intervals and paired comparisons (:func:`evaluate_volumes`).

The test crops are drawn once from a fixed seed (§4.1: "we fix one random seed and perform
evaluation of the test set of the corresponding fixed random crops"), so every model and every
step count sees the same slices.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xmodality_lite.checkpoint import load_model, read_metadata
from xmodality_lite.config import HU_WINDOW, HU_WINDOW_TEXT, get_profile
from xmodality_lite.diffusion import SAMPLERS
from xmodality_lite.findings import PAPER_STEPS
from xmodality_lite.io import atomic_path, atomic_write_text
from xmodality_lite.metrics import evaluate_slices, format_table
from xmodality_lite.translation import translate_slices
from xmodality_lite.vessels import VESSEL_HU

METRICS = ("mse", "mae", "psnr", "ssim", "fd")


def fixed_test_crops(profile=None, *, n: int | None = None, seed: int = 0,
                     data_dir: str | os.PathLike | None = None):
    """(tof, cta) [n, S, S, 1] in [−1, 1]: fixed random crops of the test split (TopCoW from
    ``data_dir`` or ``$XMODALITY_DATA`` when given, else the phantom). Only the test patients
    are made or registered when the whole dataset is not cached yet."""
    from xmodality_lite.preprocessing import BatchIterator, default_dataset

    profile = get_profile(profile)
    test = default_dataset(profile, data=data_dir, progress=False, splits=("test",))["test"]
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
            lo, hi = (-1, 1) if j == 0 else HU_WINDOW
            axes[i, j].imshow(hu, cmap="gray", vmin=lo, vmax=hi)
            axes[i, j].set_axis_off()
            if i == 0:
                axes[i, j].set_title(name if j == 0 else f"{name} {HU_WINDOW_TEXT}", fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------- shipped reference
REFERENCE_SEED = 1000  # a phantom patient outside the training seeds
REFERENCE_FILE = "reference_metrics.json"


def phantom_volume(seed: int, profile=None):
    """A phantom patient and its TOF put on the CTA grid through the known misalignment.

    Returns (``PhantomPair``, TOF ``Nifti1Image`` on the CTA grid and affine).
    """
    import nibabel as nib

    from xmodality_lite.data.dataset import resample_with_known_transform
    from xmodality_lite.data.phantom import make_pair

    pair = make_pair(seed, profile)
    return pair, nib.Nifti1Image(resample_with_known_transform(pair), pair.cta.affine)


def reference_volume_metrics(checkpoint: str | os.PathLike, *, steps: int = 4,
                             seed: int = REFERENCE_SEED) -> dict[str, float]:
    """Table-3 metrics (HU) of one shipped model on a fixed phantom volume (paper §3.6, §4.2).

    The phantom TOF is put on its CTA grid through the known misalignment, translated with
    DDIM (``steps``, fixed key) or one U-Net pass, and compared with the phantom CTA. The same
    checkpoint, seed and package give the same numbers, so a fresh environment can check that
    it loads the shipped weights exactly as they were recorded.
    """
    from xmodality_lite.metrics import volume_metrics
    from xmodality_lite.reconstruction import translate_volume

    meta = read_metadata(checkpoint)
    pair, tof = phantom_volume(seed, meta["profile"]["name"])
    model = load_model(checkpoint)
    synthetic = translate_volume(model, tof, sampler="ddim", steps=steps, seed=0,
                                 progress=False, profile=meta["profile"]["name"])
    return volume_metrics(synthetic.get_fdata(dtype=np.float32),
                          np.asarray(pair.cta.dataobj, np.float32))


def paper_table1(checkpoints: Sequence[str | os.PathLike], profile=None, *,
                 steps: int = PAPER_STEPS, n_slices: int | None = 64, seed: int = 0,
                 extractor: str | None = "standin", progress: bool = False) -> list[dict[str, Any]]:
    """Table 1 as the paper ran it (§4.1): every diffusion model with DDPM and with DDIM,
    ``steps`` sampling steps each (the paper's 1000), the U-Net once, on the fixed test crops."""
    rows = []
    for i, sampler in enumerate(SAMPLERS):  # DDPM first, as in the paper's table
        rows += [r for r in evaluate(checkpoints, profile, steps=[steps], sampler=sampler,
                                     n_slices=n_slices, seed=seed, extractor=extractor,
                                     progress=progress)
                 if i == 0 or r["sampler"] != "N/A"]  # the U-Net (no sampler) once
    return rows


def record_reference_metrics(checkpoint_dir: str | os.PathLike, *, steps: int = 4,
                             slice_steps: int = 32, n_slices: int = 64,
                             paper_steps: int | None = PAPER_STEPS, volume_seeds: int = 8,
                             volume_steps: int = 8, progress: bool = False) -> Path:
    """Write ``reference_metrics.json`` beside the shipped checkpoints (``make checkpoints``).

    Four records, all deterministic from their seeds: ``metrics`` — Table-3 volume metrics
    of one fixed phantom patient (:func:`reference_volume_metrics`, recomputed exactly by the
    tests); ``table1`` — :func:`paper_table1` on ``n_slices`` held-out test slices with the
    paper's ``paper_steps`` (None: skipped); ``slices`` — the same slices with DDIM
    ``slice_steps``, what the lessons sample with; FD on the stand-in features; ``volumes`` —
    :func:`evaluate_volumes` on ``volume_seeds`` unseen patients (regions, vessels, intervals,
    paired differences with the U-Net; with 8 patients the exact paired sign-flip test can
    reach p = 2/2⁸ ≈ 0.008, with 3 never below 0.25). The README's and the lessons' statements about the
    shipped models are computed from it (:mod:`xmodality_lite.findings`).
    """
    import json

    folder = Path(checkpoint_dir)
    paths = sorted(folder.glob("*.safetensors"))
    rows = {path.stem: reference_volume_metrics(path, steps=steps) for path in paths}
    profile = read_metadata(paths[0])["profile"]["name"]
    table1 = evaluate(paths, profile, steps=[slice_steps], sampler="ddim", n_slices=n_slices,
                      seed=0, extractor="standin", progress=progress)
    started = time.perf_counter()
    paper = (None if paper_steps is None else
             paper_table1(paths, profile, steps=paper_steps, n_slices=n_slices, progress=progress))
    paper_seconds = round(time.perf_counter() - started, 1)
    volumes = evaluate_volumes(paths, profile, seeds=volume_seeds, sampler="ddim",
                               steps=volume_steps, figures=0, progress=progress)
    record = {"phantom_seed": REFERENCE_SEED, "sampler": "ddim", "steps": steps,
              "metrics": rows,
              "slices": {"n": n_slices, "sampler": "ddim", "steps": slice_steps, "seed": 0,
                         "metrics": {r["model"]: {k: r[k] for k in (*METRICS, "fd_extractor")}
                                     for r in table1}},
              "volumes": {k: volumes[k] for k in ("settings", "summary", "paired")},
              **({} if paper is None else {"table1": {
                  "n": n_slices, "steps": paper_steps, "seed": 0, "seconds": paper_seconds,
                  "rows": [{k: r[k] for k in ("model", "sampler", *METRICS, "fd_extractor")}
                           for r in paper]}}),
              "training": {path.stem: {k: read_metadata(path).get(k) for k in
                                       ("step", "train_seconds", "steps_per_s", "final_loss")}
                           for path in paths}}
    text = json.dumps(_finite_or_none(record), indent=1, sort_keys=True)
    return atomic_write_text(folder / REFERENCE_FILE, text)


# --------------------------------------------------------------------- volumes: regions, vessels
REGIONS = {"whole": "Whole volume (paper Table 3)", "head": "Head mask (as SynthRAD)",
           "cow": "Circle-of-Willis region (TopCoW ROI size)"}
REGION_METRICS = ("mse", "mae", "psnr", "ssim")
VESSEL_METRICS = ("vessel_dice", "vessel_cldice", "label_dice", "label_cldice")
VOLUME_METRICS = (*(f"{r}_{m}" for r in REGIONS for m in REGION_METRICS), *VESSEL_METRICS)


def unseen_seeds(n: int, profile=None) -> list[int]:
    """``n`` phantom patients no model of the profile has seen: seeds from ``REFERENCE_SEED``
    on, checked to lie outside the dataset's seeds (``data.seed`` + 0 … ``n_subjects`` − 1)."""
    d = get_profile(profile).data
    seeds = list(range(REFERENCE_SEED, REFERENCE_SEED + n))
    if seeds and seeds[0] < d.seed + d.n_subjects and d.seed <= seeds[-1]:
        raise ValueError(f"phantom seeds {seeds[0]}…{seeds[-1]} overlap the dataset's "
                         f"{d.seed}…{d.seed + d.n_subjects - 1}")
    return seeds


def volume_masks(pair) -> dict[str, np.ndarray]:
    """Where one phantom patient is scored, all from its real CTA (the same for every model):
    head, CoW box, intracranial space, real vessels (≥ 150 HU inside it) and the phantom's
    labelled CoW arteries (TopCoW ids > 0) inside the CoW box."""
    from xmodality_lite.regions import cow_region, head_mask, intracranial_mask
    from xmodality_lite.vessels import vessel_mask

    cta = np.asarray(pair.cta.dataobj, np.float32)
    brain = intracranial_mask(cta, pair.cta.header.get_zooms()[:3])
    cow = cow_region(cta.shape, pair.cta.affine, pair.landmarks)
    return {"head": head_mask(cta), "cow": cow, "brain": brain,
            "vessels": vessel_mask(cta, within=brain),
            "labels": (np.asarray(pair.labels.dataobj) > 0) & cow}


def score_volume(synthetic_hu: np.ndarray, cta_hu: np.ndarray,
                 masks: dict[str, np.ndarray]) -> dict[str, float]:
    """Every column of ``VOLUME_METRICS`` for one synthetic CTA [X, Y, Z] against the real one.

    ``whole_*``: the paper's Table-3 metrics; ``head_*``/``cow_*``: the same inside a mask;
    ``vessel_*``: thresholded vessels, synthetic vs real, intracranial; ``label_*``: synthetic
    vessels vs the phantom's labelled arteries in the CoW box (the known ground truth).
    """
    from xmodality_lite.metrics import masked_metrics, volume_metrics
    from xmodality_lite.vessels import cldice, dice, vessel_mask

    row = {f"whole_{k}": v for k, v in volume_metrics(synthetic_hu, cta_hu).items()}
    for region in ("head", "cow"):
        m = masked_metrics(synthetic_hu, cta_hu, masks[region])
        row.update({f"{region}_{k}": v for k, v in m.items()})
    synthetic = vessel_mask(synthetic_hu, within=masks["brain"])
    in_cow = synthetic & masks["cow"]
    row.update(vessel_dice=dice(synthetic, masks["vessels"]),
               vessel_cldice=cldice(synthetic, masks["vessels"]),
               label_dice=dice(in_cow, masks["labels"]),
               label_cldice=cldice(in_cow, masks["labels"]))
    return row


def _labels(checkpoints) -> list[str]:
    """Each checkpoint's model name, with the file name added where two share one."""
    names = [read_metadata(p)["model"] for p in checkpoints]
    return [n if names.count(n) == 1 else f"{n}:{Path(p).stem}"
            for n, p in zip(names, checkpoints, strict=True)]


def evaluate_volumes(checkpoints: Sequence[str | os.PathLike], profile=None, *,
                     seeds: Sequence[int] | int = 3, sampler: str | None = None,
                     steps: int | None = None, seed: int = 0, reference: str | None = None,
                     n_boot: int = 2000, level: float = 0.95, figures: int = 1,
                     out_dir: str | os.PathLike | None = None,
                     progress: bool = True) -> dict[str, Any]:
    """Whole-volume, head, CoW and vessel metrics of each model on unseen phantom patients,
    with bootstrap intervals over patients and paired comparisons with a reference model.

    Each patient's TOF is put on its CTA grid (:func:`phantom_volume`) and translated with
    ``translate_volume`` (``sampler``/``steps`` default to the profile's). ``seeds``: phantom
    seeds, or a number of :func:`unseen_seeds`; ``reference``: default the first regression
    model (the U-Net).
    Returns ``{"settings", "rows", "summary", "paired"}``; with ``out_dir`` the tables and
    figures of the first ``figures`` patients are written there (:func:`write_volume_report`).
    """
    from xmodality_lite.bootstrap import bootstrap_ci, paired_bootstrap
    from xmodality_lite.reconstruction import translate_volume

    profile = get_profile(profile)
    seeds = unseen_seeds(seeds, profile) if isinstance(seeds, int) else [int(s) for s in seeds]
    if not seeds:
        raise ValueError("evaluate_volumes: no phantom patients to evaluate (seeds is empty)")
    labels = _labels(checkpoints)
    if reference is not None and reference not in labels:
        raise ValueError(f"unknown reference model {reference!r}; choose one of {labels}")
    items = [(f"phantom{s:04d}", *phantom_volume(s, profile)) for s in seeds]
    masks = {item: volume_masks(pair) for item, pair, _ in items}
    rows, shown = [], {}
    for label, path in zip(labels, checkpoints, strict=True):
        model = load_model(path)
        if reference is None and model.kind == "regression":
            reference = label
        for k, (item, pair, tof) in enumerate(items):
            synthetic = translate_volume(model, tof, sampler=sampler, steps=steps, seed=seed,
                                         progress=progress, profile=profile)
            synthetic = synthetic.get_fdata(dtype=np.float32)
            cta = np.asarray(pair.cta.dataobj, np.float32)
            rows.append({"model": label, "item": item, **score_volume(synthetic, cta, masks[item])})
            if k < figures:
                shown[label, item] = synthetic
    by_model = {m: {r["item"]: r for r in rows if r["model"] == m} for m in labels}
    order = [item for item, _, _ in items]
    summary = [{"model": m, "metric": c, "n": len(order),
                **bootstrap_ci([by_model[m][i][c] for i in order], n_boot=n_boot, level=level,
                               seed=seed)._asdict()} for m in labels for c in VOLUME_METRICS]
    paired = [{"model": m, "reference": reference, "metric": c, "n": len(order),
               **paired_bootstrap([by_model[m][i][c] for i in order],
                                  [by_model[reference][i][c] for i in order],
                                  n_boot=n_boot, level=level, seed=seed)._asdict()}
              for m in labels if reference is not None and m != reference for c in VOLUME_METRICS]
    sample = profile.sample
    settings = {"profile": profile.name, "items": order, "models": labels, "reference": reference,
                "sampler": sampler or sample.sampler, "steps": steps or sample.steps,
                "seed": seed, "n_boot": n_boot, "level": level}
    report = {"settings": settings, "rows": rows, "summary": summary, "paired": paired}
    if out_dir is not None:
        write_volume_report(report, out_dir)
        (Path(out_dir) / "figures").mkdir(exist_ok=True)
        pairs = {item: pair for item, pair, _ in items}
        for (label, item), synthetic in shown.items():
            fig = plot_volume_comparison(pairs[item], synthetic, masks[item],
                                         title=f"{label}, {item}")
            name = f"{label.replace(':', '-')}_{item}.png"
            with atomic_path(Path(out_dir) / "figures" / name) as tmp:
                fig.savefig(tmp, dpi=100, bbox_inches="tight")
    return report


_HEADS = {"mse": "MSE (HU²)", "mae": "MAE (HU)", "psnr": "PSNR (dB)", "ssim": "SSIM",
          "vessel_dice": "vessel Dice", "vessel_cldice": "vessel clDice",
          "label_dice": "Dice vs labels (CoW)", "label_cldice": "clDice vs labels (CoW)"}


def _fmt(v) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4g}"


def format_volume_tables(report: dict[str, Any]) -> str:
    """Markdown: one table per region and one for vessels (mean [CI] per model), then the
    paired differences with the reference model (Δ [CI], p)."""
    s = report["settings"]
    ci = {(r["model"], r["metric"]): r for r in report["summary"]}
    pct = f"{100 * s['level']:g} %"
    groups = [(f"{title}, {HU_WINDOW_TEXT}", [f"{r}_{m}" for m in REGION_METRICS])
              for r, title in REGIONS.items()]
    groups.append((f"Vessels (≥ {VESSEL_HU:g} HU, intracranial)", list(VESSEL_METRICS)))
    out = [f"Items: {len(s['items'])} phantom patients ({', '.join(s['items'])}); mean "
           f"[{pct} percentile-bootstrap interval over patients].\n"]
    for title, cols in groups:
        heads = [_HEADS[c.split("_", 1)[1] if c.split("_", 1)[0] in REGIONS else c] for c in cols]
        out += [f"### {title}", "", "| Model | " + " | ".join(heads) + " |",
                "|:---|" + "---:|" * len(cols)]
        for m in s["models"]:
            out.append(f"| {m} | " + " | ".join(
                f"{_fmt(ci[m, c]['estimate'])} [{_fmt(ci[m, c]['low'])}, {_fmt(ci[m, c]['high'])}]"
                for c in cols) + " |")
        out.append("")
    if report["paired"]:
        others = list(dict.fromkeys(r["model"] for r in report["paired"]))
        pd = {(r["model"], r["metric"]): r for r in report["paired"]}
        out += [f"### Paired differences: model − {s['reference']} (Δ [{pct} CI], p)", "",
                "| Metric | " + " | ".join(others) + " |", "|:---|" + "---:|" * len(others)]
        for c in VOLUME_METRICS:
            out.append(f"| {c} | " + " | ".join(
                f"{_fmt(pd[m, c]['difference'])} [{_fmt(pd[m, c]['low'])}, "
                f"{_fmt(pd[m, c]['high'])}], p {_fmt(pd[m, c]['p_value'])}" for m in others) + " |")
        out.append("")
    return "\n".join(out)


def _csv(rows: list[dict[str, Any]]) -> str:
    import csv
    import io

    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return buf.getvalue()


def _finite_or_none(x):
    """JSON has no NaN or ∞: they are written as null."""
    if isinstance(x, dict):
        return {k: _finite_or_none(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite_or_none(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    return None if isinstance(x, float) and not math.isfinite(x) else x


def write_volume_report(report: dict[str, Any], out_dir: str | os.PathLike) -> dict[str, Path]:
    """``volumes.csv`` (a row per model and patient), ``volume_summary.csv`` (intervals),
    ``volume_paired.csv``, ``volumes.json`` (all of it; NaN/∞ as null) and ``volumes.md``."""
    import json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return {"rows": atomic_write_text(out / "volumes.csv", _csv(report["rows"])),
            "summary": atomic_write_text(out / "volume_summary.csv", _csv(report["summary"])),
            "paired": atomic_write_text(out / "volume_paired.csv", _csv(report["paired"])),
            "json": atomic_write_text(out / "volumes.json",
                                      json.dumps(_finite_or_none(report), indent=1)),
            "md": atomic_write_text(out / "volumes.md", format_volume_tables(report))}


def plot_volume_comparison(pair, synthetic_hu: np.ndarray, masks: dict[str, np.ndarray], *,
                           title: str = "", error_window: float = 200.0):
    """Real vs synthetic CTA of one patient, rows: bone-removed MIPs of the CTA and of the
    synthetic CTA ([−50, 350] HU), the error synthetic − CTA (HU) in three planes through the
    CoW, and the vessel masks projected (green real only, magenta synthetic only, white both)."""
    import nibabel as nib
    from matplotlib.figure import Figure

    from xmodality_lite.data.views import mask_overlay_mips, orthogonal_views, three_plane_mips
    from xmodality_lite.vessels import vessel_mask

    cta = np.clip(np.asarray(pair.cta.dataobj, np.float32), *HU_WINDOW)
    synthetic = np.clip(np.asarray(synthetic_hu, np.float32), *HU_WINDOW)
    image = lambda x: nib.Nifti1Image(np.asarray(x, np.float32), pair.cta.affine)  # noqa: E731
    brain = masks["brain"]
    fig = Figure(figsize=(10, 13), layout="constrained")
    axes = fig.subplots(4, 3)
    three_plane_mips(axes[0], image(np.where(brain, cta, HU_WINDOW[0])), window=HU_WINDOW,
                     name="CTA, bone removed,")
    three_plane_mips(axes[1], image(np.where(brain, synthetic, HU_WINDOW[0])),
                     window=HU_WINDOW, name="synthetic,")
    cow = np.mean([pair.landmarks[k] for k in ("R-ICA-terminus", "L-ICA-terminus", "BA-tip")], 0)
    orthogonal_views(axes[2], image(synthetic - cta), window=(-error_window, error_window),
                     centre_mm=cow, name="error", cmap="RdBu_r")
    fig.colorbar(axes[2, 2].images[0], ax=axes[2].tolist(), label="synthetic − CTA (HU)",
                 shrink=0.8)
    mask_overlay_mips(axes[3], image(masks["vessels"]),
                      image(vessel_mask(synthetic_hu, within=brain)), name="vessels")
    if title:
        fig.suptitle(title)
    return fig
