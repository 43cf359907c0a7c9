"""Command line: ``python -m xmodality_lite <command> --help``.

Every command takes ``--profile`` (default ``$XMODALITY_PROFILE``, else ``cpu``). Errors are
printed as one line on stderr with a non-zero exit status, never as a traceback. The choices of
``model``, ``--sampler`` and ``--extractor`` are the keys of the package's registries
(:func:`registries`), so a model added to ``models.MODELS`` is a CLI choice with no edit here;
``python -m xmodality_lite info`` lists them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from xmodality_lite.config import ENV_VAR, PROFILES, get_profile

EXIT_ERROR = 2


def registries() -> dict[str, list[str]]:
    """Every choice made by name, from the registry that holds it: models, samplers, schedules,
    loss weightings, FD extractors and profiles (imported here, not at module import, so
    ``import xmodality_lite.cli`` stays free of JAX)."""
    from xmodality_lite.diffusion import SAMPLERS, SCHEDULES, WEIGHTINGS
    from xmodality_lite.features import EXTRACTORS
    from xmodality_lite.models import MODELS

    return {"models": list(MODELS), "samplers": list(SAMPLERS), "schedules": list(SCHEDULES),
            "weightings": list(WEIGHTINGS), "extractors": list(EXTRACTORS),
            "profiles": list(PROFILES)}


# ---------------------------------------------------------------------------------- commands
def checkpoint_profile(args, checkpoint):
    """``--profile`` if given, else the profile the checkpoint was trained at (its image size
    and sampling defaults), so a model is applied at the scale it was trained on."""
    from xmodality_lite.checkpoint import profile_from_dict, read_metadata

    if args.profile is not None:
        return get_profile(args.profile)
    return profile_from_dict(read_metadata(checkpoint)["profile"])


def cmd_phantom(args) -> None:
    from xmodality_lite.data.layout import write_topcow_layout

    paths = write_topcow_layout(args.out, args.n, args.seed, edition=args.edition,
                                profile=get_profile(args.profile))
    print(f"wrote {len(paths)} files under {args.out}")


def cmd_register(args) -> None:
    import numpy as np

    from xmodality_lite.io import load_nifti, save_nifti
    from xmodality_lite.registration import register_tof_to_cta

    res = register_tof_to_cta(load_nifti(args.tof), load_nifti(args.cta),
                              type_of_transform=args.transform, seed=args.seed)
    save_nifti(res.warped.get_fdata(dtype=np.float32), args.out, like=res.warped)
    print(f"wrote {args.out} (registration {res.seconds:.1f} s)")


def data_folder(args) -> str | None:
    """``--data``, else ``$XMODALITY_DATA``, else None (the phantom)."""
    from xmodality_lite.data.topcow import DATA_ENV_VAR

    return args.data or os.environ.get(DATA_ENV_VAR) or None


def cmd_preprocess(args) -> None:
    from xmodality_lite.preprocessing import phantom_dataset

    root = data_folder(args)
    if root is None:
        splits = phantom_dataset(args.profile, register=args.register, cache_dir=args.cache_dir)
    else:  # TopCoW: every pair is registered (paper §3.1), unless given as an _Warped TOF
        from xmodality_lite.data.topcow import topcow_dataset

        splits = topcow_dataset(root, args.profile, cache_dir=args.cache_dir)
    for name, s in splits.items():
        patients = sorted(set(s.subject.tolist()))
        n = len(patients)
        print(f"{name}: {len(s)} slices from {n} patient{'s' * (n != 1)} ({', '.join(patients)})")


def cmd_train(args) -> None:
    from xmodality_lite.training import default_data, train

    data = None
    if args.data is not None:  # else train's default: $XMODALITY_DATA, or the phantom
        profile = get_profile(args.profile)
        seed = profile.train.seed if args.seed is None else args.seed
        data = default_data(profile, seed, data_dir=args.data)
    res = train(args.model, args.profile, data=data, steps=args.steps, out_dir=args.out,
                resume=not args.no_resume, seed=args.seed, variant=args.variant)
    print(f"{args.model}: step {res.step}, loss {res.final_loss:.4f}, "
          f"{res.steps_per_s:.2f} steps/s, checkpoint {res.checkpoint}")


def cmd_sample(args) -> None:
    from xmodality_lite.checkpoint import load_model
    from xmodality_lite.evaluation import fixed_test_crops, plot_samples
    from xmodality_lite.io import atomic_path
    from xmodality_lite.translation import translate_slices

    profile = checkpoint_profile(args, args.checkpoint)
    model = load_model(args.checkpoint)
    seed = profile.sample.seed if args.seed is None else args.seed
    tof, cta = fixed_test_crops(profile, n=args.n, seed=seed, data_dir=args.data)
    pred = translate_slices(model, tof, sampler=args.sampler, steps=args.steps, seed=seed,
                            profile=profile)
    with atomic_path(args.out) as tmp:
        plot_samples(tof, pred, cta, title=Path(args.checkpoint).name).savefig(tmp, dpi=100)
    print(f"wrote {args.out}")


def default_translate_model() -> str:
    """What ``translate`` uses without ``--checkpoint``: the best shipped diffusion model by the
    recorded metrics (:func:`xmodality_lite.findings.record_findings`), a generative model
    whose samples look like CTA (the U-Net scores better on intensity metrics but blurs)."""
    from xmodality_lite.findings import record_findings

    return record_findings().best_diffusion


def default_translate_checkpoint() -> Path:
    """The shipped :func:`default_translate_model`, announced on stderr (stdout stays clean)."""
    from xmodality_lite.checkpoint import (
        SHIPPED_DIR,
        SHIPPED_PROFILE,
        read_metadata,
        shipped_checkpoint,
    )

    name = default_translate_model()
    path = shipped_checkpoint(name, SHIPPED_PROFILE)
    if path is None:
        raise FileNotFoundError(f"{SHIPPED_DIR}: no shipped {name} model in this installation; "
                                "pass --checkpoint")
    meta = read_metadata(path)
    print(f"no --checkpoint: using the shipped {name} model "
          f"({meta['profile']['name']} profile, {meta['step']} training steps on the phantom) "
          f"from {path}", file=sys.stderr)
    return path


def cmd_translate(args) -> None:
    from xmodality_lite.checkpoint import load_model
    from xmodality_lite.reconstruction import translate_file

    if not Path(args.tof).is_file():  # fail before loading the model
        raise FileNotFoundError(f"{args.tof}: no such file")
    # said in the CLI's words here; translate_file checks the rest of OUT before sampling
    if Path(args.out).exists() and not args.overwrite:
        raise FileExistsError(f"{args.out} already exists; add --overwrite to replace it")
    t0 = time.perf_counter()
    checkpoint = args.checkpoint or default_translate_checkpoint()
    profile = checkpoint_profile(args, checkpoint)
    translate_file(load_model(checkpoint), args.tof, args.out, overwrite=args.overwrite,
                   sampler=args.sampler, steps=args.steps, batch_size=args.batch_size,
                   image_size=args.image_size, seed=args.seed, profile=profile)
    print(f"wrote {args.out} in {time.perf_counter() - t0:.1f} s")


def cmd_evaluate(args) -> None:
    from xmodality_lite.evaluation import evaluate

    for path in args.checkpoints:
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: no such checkpoint")
    profile = checkpoint_profile(args, args.checkpoints[0])
    data = None
    if args.data is not None:  # else fixed_test_crops' default: $XMODALITY_DATA, or the phantom
        from xmodality_lite.evaluation import fixed_test_crops

        data = fixed_test_crops(profile, n=args.n_slices, seed=args.seed, data_dir=args.data)
    if args.volumes is None:  # the volume tables need the phantom's labels and landmarks
        args.volumes = 0 if data_folder(args) else 3
    rows = evaluate(args.checkpoints, profile, steps=args.steps, sampler=args.sampler,
                    n_slices=args.n_slices, seed=args.seed, extractor=args.extractor,
                    data=data, out_dir=args.out)
    from xmodality_lite.metrics import format_table

    print(format_table(rows)[1], end="")
    print(f"wrote {args.out}/results.csv, results.md, steps_sweep.png")
    if args.volumes > 0:  # whole volumes: head, CoW and vessel metrics with intervals
        from xmodality_lite.evaluation import evaluate_volumes, format_volume_tables

        report = evaluate_volumes(args.checkpoints, profile, seeds=args.volumes,
                                  sampler=args.sampler, steps=max(args.steps or [0]) or None,
                                  seed=args.seed, n_boot=args.n_boot, out_dir=args.out)
        print(format_volume_tables(report), end="")
        print(f"wrote {args.out}/volumes.csv, volume_summary.csv, volume_paired.csv, "
              "volumes.json, volumes.md, figures/")


def cmd_info(args) -> None:
    import flax
    import jax

    from xmodality_lite import __version__, allocator
    from xmodality_lite.models import MODELS, count_params

    profile = get_profile(args.profile)
    print(f"xmodality_lite {__version__}  python {platform.python_version()}  "
          f"jax {jax.__version__}  flax {flax.__version__}")
    print(f"devices: {', '.join(str(d) for d in jax.devices())}")
    print(f"memory allocator: {allocator.in_use()} (xmodality_lite.allocator)")
    print(f"profile {profile.name}: {profile.to_json()}")
    for name in MODELS:
        print(f"  {name:5s} {count_params(name, profile):>13,d} parameters")
    print("registries (choices by name):")
    for registry, names in registries().items():
        print(f"  {registry:10s} {', '.join(names)}")


def cmd_train_shipped(args) -> None:
    """Train the four models at the profile (default cpu) and ship their final weights.

    Each model trains ``SHIPPED_STEPS[name]`` steps (``--steps`` overrides), resumably in
    ``<runs>/<name>``; the snapshot model also ships its weights at ``SNAPSHOT_STEPS``.
    """
    import dataclasses

    import jax

    from xmodality_lite.checkpoint import (
        SHIPPED_DIR,
        SHIPPED_STEPS,
        SNAPSHOT_MODEL,
        SNAPSHOT_STEPS,
        ema_only,
        save_checkpoint,
        sidecar_path,
        snapshot_name,
    )
    from xmodality_lite.data.dataset import default_cache_dir
    from xmodality_lite.data.topcow import DATA_ENV_VAR
    from xmodality_lite.io import atomic_write_bytes, file_sha256
    from xmodality_lite.training import read_metrics, train

    base = get_profile(args.profile)  # `make checkpoints` sets XMODALITY_PROFILE=cpu
    if os.environ.pop(DATA_ENV_VAR, None):  # shipped weights must never learn from TopCoW,
        print(f"train-shipped trains on the phantom; ${DATA_ENV_VAR} ignored",  # which may
              file=sys.stderr)  # not be redistributed
    out = Path(args.out) if args.out is not None else SHIPPED_DIR
    runs = Path(args.runs) if args.runs is not None else default_cache_dir() / "runs"
    out.mkdir(parents=True, exist_ok=True)
    for name in args.models:
        total = args.steps or SHIPPED_STEPS.get(name, base.train.steps)
        # the step count is part of the recipe (the cosine decay ends there), so the
        # checkpoint's profile records it
        profile = base.replace(train=dataclasses.replace(base.train, steps=total))
        stops = [s for s in SNAPSHOT_STEPS if s < total] if name == SNAPSHOT_MODEL else []
        # a resumed run cannot go back: keep the snapshots an earlier invocation already wrote
        stops = [s for s in stops if not (out / "snapshots" / snapshot_name(name, s)).is_file()]
        for stop in [*stops, total]:  # resuming is bit-identical, so stopping costs nothing
            res = train(name, profile, steps=stop, out_dir=runs / name)
            records = read_metrics(runs / name / "metrics.jsonl")  # wall time across resumes
            meta = {"model": name, "variant": "published", "profile": profile, "data_seed":
                    profile.train.seed, "kind": res.model.kind, "final_loss": res.final_loss,
                    "train_seconds": round(records[-1]["wall_s"], 1) if records else None,
                    "steps_per_s": res.steps_per_s}
            target = (out / f"{name}.safetensors" if stop == total
                      else out / "snapshots" / snapshot_name(name, stop))
            target.parent.mkdir(parents=True, exist_ok=True)
            path = ema_only(save_checkpoint(target, res.model, None, res.step,
                                            jax.random.key(profile.train.seed), meta, ema=res.ema))
            side = json.loads(sidecar_path(path).read_text())
            assert side["sha256"] == file_sha256(path)
        # ship the loss history too (the run folder is git-ignored), for the training lesson
        history = runs / name / "metrics.jsonl"
        if history.is_file():
            atomic_write_bytes(out / f"{name}.metrics.jsonl", history.read_bytes())
        print(f"{path}: loss {res.final_loss:.4f}, sha256 {side['sha256'][:12]}…, "
              f"commit {side['git_commit']}")
    from xmodality_lite.evaluation import record_reference_metrics

    print(f"wrote {record_reference_metrics(out)} (checked by tests/test_shipped.py)")


# ---------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    choices = registries()
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--profile", choices=sorted(choices["profiles"]), default=None,
                        help=f"run profile (default: a checkpoint's own, else ${ENV_VAR}, "
                             "else cpu)")
    parser = argparse.ArgumentParser(
        prog="python -m xmodality_lite",
        description="TOF-MRA → CTA synthesis with diffusion models (Koch et al. 2024). "
                    "Teaching and research only; not for clinical use.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")

    def add(name, func, help):
        p = sub.add_parser(name, parents=[common], help=help, description=help)
        p.set_defaults(func=func)
        return p

    def data_option(p):
        p.add_argument("--data", default=None, metavar="DIR",
                       help="TopCoW folder, either edition (default: $XMODALITY_DATA; neither: "
                            "the phantom)")

    def sampling(p):
        p.add_argument("--sampler", choices=choices["samplers"], default=None,
                       help="diffusion sampler (default: the profile's)")
        p.add_argument("--steps", type=int, default=None, help="sampling steps")
        p.add_argument("--seed", type=int, default=None, help="sampling seed")

    p = add("phantom", cmd_phantom, "write phantom TOF/CTA pairs in the TopCoW folder layout")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--n", type=int, default=3, help="number of patients")
    p.add_argument("--seed", type=int, default=0, help="phantom seed of the first patient")
    p.add_argument("--edition", choices=["2023", "2024"], default="2023")

    p = add("register", cmd_register, "register a TOF-MRA to its CTA (ANTs SyN, paper §3.1)")
    p.add_argument("tof", help="TOF-MRA NIfTI (moving)")
    p.add_argument("cta", help="CTA NIfTI (fixed)")
    p.add_argument("--out", required=True, help="registered TOF NIfTI on the CTA grid")
    p.add_argument("--transform", default="SyN", help="antspyx transform preset")
    p.add_argument("--seed", type=int, default=42)

    p = add("preprocess", cmd_preprocess, "build the cached slice dataset: TopCoW (--data or "
            "$XMODALITY_DATA; every TOF registered onto its CTA) or the phantom")
    data_option(p)
    p.add_argument("--register", action="store_true",
                   help="phantom: register with ANTs instead of the known transform (slow); "
                        "TopCoW pairs are always registered")
    p.add_argument("--cache-dir", default=None,
                   help="dataset cache (default: $XMODALITY_CACHE, else the user cache)")

    p = add("train", cmd_train, "train one model on the cached slices (TopCoW or the phantom)")
    p.add_argument("model", choices=choices["models"])
    data_option(p)
    p.add_argument("--out", required=True, help="run folder (checkpoints/, metrics.jsonl)")
    p.add_argument("--steps", type=int, default=None, help="total steps (default: profile's)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--variant", choices=["published", "corrected"], default="published")
    p.add_argument("--no-resume", action="store_true", help="ignore checkpoints in --out")

    p = add("sample", cmd_sample, "translate a few test slices; PNG grid TOF | synthetic | CTA")
    p.add_argument("checkpoint")
    p.add_argument("--out", default="samples.png")
    p.add_argument("--n", type=int, default=4, help="number of slices")
    data_option(p)
    sampling(p)

    p = add("translate", cmd_translate, "translate a TOF-MRA NIfTI volume into a CTA NIfTI (HU)")
    p.add_argument("tof", help="input TOF-MRA NIfTI")
    p.add_argument("out", help="output CTA NIfTI (.nii or .nii.gz)")
    p.add_argument("--checkpoint", default=None,
                   help="model weights (default: the best shipped diffusion model by its "
                        "recorded metrics)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--image-size", type=int, default=None,
                   help="in-plane size the slices are resampled to (default: profile's)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    sampling(p)

    p = add("evaluate", cmd_evaluate, "Table 1 metrics + steps sweep, and volume tables (head, "
            "CoW region, vessels, intervals, paired vs the U-Net) for checkpoints")
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--out", required=True,
                   help="folder for results.csv/.md, steps_sweep.png, volumes.* and figures/")
    p.add_argument("--steps", type=int, nargs="+", default=None, help="sampling step counts")
    p.add_argument("--sampler", choices=choices["samplers"], default=None)
    p.add_argument("--n-slices", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--extractor", choices=choices["extractors"], default="auto")
    data_option(p)
    p.add_argument("--volumes", type=int, default=None,
                   help="unseen phantom patients translated as whole volumes for the head, "
                        "CoW-region and vessel tables with intervals (default 3, or 0 with "
                        "TopCoW data; 0: skip; diffusion models use the largest --steps)")
    p.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples")

    add("info", cmd_info, "versions, devices, profile, model sizes and the registries (models, "
        "samplers, schedules, weightings, extractors, profiles)")

    p = add("train-shipped", cmd_train_shipped,
            "train the four models (cpu profile) and write <out>/<model>.safetensors")
    p.add_argument("--out", default=None,
                   help="where the shipped weights go (default: the package's checkpoints/, "
                        "package data that the lessons load)")
    p.add_argument("--runs", default=None,
                   help="run folders (resumable checkpoints, metrics.jsonl; default: "
                        "<cache>/runs, the cache being $XMODALITY_CACHE or the user cache)")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--models", nargs="+", choices=choices["models"],
                   default=list(choices["models"]))
    return parser


# Bad input and file-system failures are the user's to fix: one line, no traceback.
KNOWN_ERRORS = (ValueError, OSError)


def main(argv: list[str] | None = None) -> int:
    """The program (``argv`` None: the command line, restarted under TCMalloc where installed,
    :mod:`xmodality_lite.allocator`), or the same commands called in this process."""
    if argv is None:
        from xmodality_lite import allocator

        allocator.reexec()
    args = build_parser().parse_args(argv)
    try:
        get_profile(args.profile)  # an invalid $XMODALITY_PROFILE fails here, in one line
        args.func(args)
    except KNOWN_ERRORS as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0
