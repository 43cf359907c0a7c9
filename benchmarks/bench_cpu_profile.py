"""The `cpu` profile before and after its speed-ups, measured in one run (issue 17).

For each model: a train step (batch 16, ``training.make_train_step``, EMA on as in the recipe)
and a forward at the sampling batch (32, one sampler step), timed in a fresh worker process
for each side — the baseline commit's package (extracted with ``git archive``) and this
checkout's — alternating A, B, A, B so that a machine that slows down mid-run penalises both.
Reported: the median wall and CPU time of each, their ratio (before ÷ after), the ratio of the
fastest calls of each side over all rounds (on these virtual machines the same call's time
varies by up to ~1.6× from call to call, ADM's forward 220–368 ms within one worker; the
fastest call is the one least affected, the median is what one waits), and the achieved
GFLOP/s (3 × forward FLOPs per train step) against the float32 GEMM and 3×3 convolution
ceilings measured in the same run. Also, in the same workers, the two operations the
speed-ups replaced: the wavelet front end and the attention at the shapes the cpu models use;
each step's convolutions timed alone (``_convolutions``): before ÷ their sum bounds the
speed-up of any change that keeps XLA's convolutions; and each step with its attention layers
replaced by the identity (``_without_attention``): what the attention costs.

    python -m benchmarks.bench_cpu_profile                    # baseline: BASELINE below
    python -m benchmarks.bench_cpu_profile --baseline HEAD~3 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
from pathlib import Path

from benchmarks.common import (
    ROOT,
    extract_package,
    fastest_s,
    gemm_gflops,
    load,
    log,
    portable_path,
    run_side,
    time_call,
    write_result,
)
from xmodality_lite.models import MODELS as ARCHITECTURES

MODELS = tuple(ARCHITECTURES)
BASELINE = "a06d35a"  # the last commit before the cpu-profile speed-ups
TRAIN_BATCH, SAMPLE_BATCH = 16, 32


def _recipe_step(training, graphdef, prof):
    """``training.make_train_step`` with the profile's recipe (Min-SNR γ, EMA decay and warm-up),
    from whichever package ``training`` is (this checkout's or the baseline's)."""
    return training.make_train_step(graphdef, gamma=prof.train.min_snr_gamma,
                                    ema_decay=prof.train.ema_decay,
                                    ema_warmup=prof.train.ema_warmup)


def _worker(name: str, repeats: int) -> dict:
    """Train step and forward of ``name`` at the cpu profile, in whatever package is importable."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from xmodality_lite import training
    from xmodality_lite.config import get_profile
    from xmodality_lite.diffusion import functional

    prof = get_profile("cpu")
    size = prof.image_size
    keys = jax.random.split(jax.random.key(1), 3)
    out = {}

    model = training.build(name, prof, 0)
    x, cond = (jax.random.uniform(k, (SAMPLE_BATCH, size, size, 1), minval=-1.0, maxval=1.0)
               for k in keys[:2])
    logsnr = jnp.linspace(-10.0, 10.0, SAMPLE_BATCH)
    pure_fn, weights = functional(model)
    try:  # the model's XLA options, as the samplers compile it (not in the baseline's package)
        from xmodality_lite.models import compiler
    except ImportError:
        forward = jax.jit(pure_fn)
    else:
        options = {program: compiler.compiler_options(model, program)
                   for program in compiler.PROGRAMS}
        forward = compiler.jit(pure_fn, options["forward"])
        out["compiler_options"] = {program: dict(o) for program, o in options.items()}
    out["forward"] = time_call(lambda: forward(weights, x, cond, logsnr), repeats)
    weights = None  # the train step donates the model's buffers

    # built by hand, not with training.start_run: the baseline's package has no start_run
    optimizer = training.make_optimizer(model, prof)
    ema = nnx.clone(model)
    nnx.update(ema, jax.tree.map(jnp.copy, nnx.state(ema)))
    graphdef, state = nnx.split((model, optimizer, ema))
    step = _recipe_step(training, graphdef, prof)
    tof, cta = (jax.random.uniform(k, (TRAIN_BATCH, size, size, 1), minval=-1.0, maxval=1.0)
                for k in keys[1:])
    holder = {"state": state}
    del state

    def one_step():
        holder["state"], loss = step(holder["state"], tof, cta, keys[2])
        return loss

    out["train"] = time_call(one_step, repeats)
    return out


def _convolutions(name: str, repeats: int) -> dict:
    """The convolutions of ``name``'s sampler step (batch 32) and train step (batch 16), each
    timed alone: every ``conv_general_dilated`` in the program's jaxpr (the train step's
    gradient convolutions included), compiled by itself with the program's XLA options and
    timed (fastest of ``repeats``), summed over its occurrences. Their sum is what the step would
    take if everything but its convolutions were free, so before ÷ it bounds the speed-up any
    change that keeps the convolutions can reach."""
    import jax
    import jax.numpy as jnp
    from flax import nnx
    from jax.extend import core

    from xmodality_lite import training
    from xmodality_lite.config import get_profile
    from xmodality_lite.diffusion import functional
    from xmodality_lite.models import compiler

    prof = get_profile("cpu")
    size = prof.image_size
    keys = jax.random.split(jax.random.key(0), 3)
    model = training.build(name, prof, 0)
    x, cond = (jnp.zeros((SAMPLE_BATCH, size, size, 1)) for _ in range(2))
    pure_fn, weights = functional(model)
    optimizer = training.make_optimizer(model, prof)
    graphdef, state = nnx.split((model, optimizer, nnx.clone(model)))
    step = _recipe_step(training, graphdef, prof)
    tof = jnp.zeros((TRAIN_BATCH, size, size, 1))
    programs = {"forward": jax.make_jaxpr(pure_fn)(weights, x, cond, jnp.zeros(SAMPLE_BATCH)),
                "train": step.trace(state, tof, tof, keys[2]).jaxpr}  # a jit with options

    def convolutions(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "conv_general_dilated":
                yield eqn
            for param in eqn.params.values():
                inner = param.jaxpr if isinstance(param, core.ClosedJaxpr) else param
                if isinstance(inner, core.Jaxpr):
                    yield from convolutions(inner)

    out = {}
    for program, closed in programs.items():
        options = compiler.compiler_options(model, program)
        timed: dict[str, tuple[float, float]] = {}
        total = {"count": 0, "gflop": 0.0, "s": 0.0}
        for eqn in convolutions(closed.jaxpr):
            shapes = [v.aval for v in eqn.invars]
            key = repr((shapes, sorted((k, repr(v)) for k, v in eqn.params.items())))
            if key not in timed:
                args = [jnp.ones(a.shape, a.dtype) for a in shapes]
                conv = compiler.jit(lambda *a, eqn=eqn: eqn.primitive.bind(*a, **eqn.params),
                                    options)
                cost = conv.lower(*args).compile().cost_analysis()
                cost = cost[0] if isinstance(cost, list) else cost  # older jaxlibs: a list
                timed[key] = (fastest_s(lambda conv=conv, args=args: conv(*args), repeats),
                              cost.get("flops", 0.0) / 1e9)
            seconds, gflop = timed[key]
            total["count"] += 1
            total["gflop"] += gflop
            total["s"] += seconds
        out[program] = {**total, "distinct": len(timed)}
    return out


def _without_attention(name: str, repeats: int) -> dict:
    """:func:`_worker` with every attention layer (the conv stages' row attention, the
    transformers' self-attention) replaced by the identity: the step's time less what its
    attention costs, projections and layout changes included. Not a model anyone trains; a
    measurement of where the time goes."""
    from xmodality_lite.models import layers

    for module in (layers.RowAttention, layers.MultiHeadSelfAttention):
        module.__call__ = lambda self, x: x
    return _worker(name, repeats)


def _operations(repeats: int) -> dict:
    """The wavelet front end (dwt2 → 1×1 mix → idwt2, forward + backward) at the U-ViT's cpu
    and paper shapes, in whatever package is importable."""
    import jax
    import jax.numpy as jnp

    from xmodality_lite.models.wavelets import dwt2, idwt2

    rows = []
    for shape in [(TRAIN_BATCH, 64, 64, 2), (2, 256, 256, 2)]:
        x = jax.random.normal(jax.random.key(0), shape)
        mix = jax.random.normal(jax.random.key(1), (4 * shape[-1], 4))
        grad = jax.jit(jax.grad(lambda x, w: jnp.sum(idwt2(dwt2(x) @ w) ** 2), argnums=(0, 1)))
        timing = time_call(lambda grad=grad, x=x, mix=mix: grad(x, mix), repeats)
        rows.append({"shape": list(shape), **timing})
    return {"wavelet": rows}


def _profile(name: str, repeats: int) -> dict:
    """Where a cpu-profile train step spends its time: XLA's per-operation trace
    (``jax.profiler``, Perfetto JSON) summed by kind — the fusion or op name less its number —
    and the host's share: fetching and converting one batch (``data.batch_at`` + ``as_pair``)."""
    import collections
    import gzip
    import re
    import time

    import jax
    from flax import nnx

    from xmodality_lite import training
    from xmodality_lite.config import get_profile

    prof = get_profile("cpu")
    data = training.default_data(prof, prof.train.seed)
    t0 = time.perf_counter()
    for k in range(20):
        training.as_pair(data.batch_at(k))
    host_s = (time.perf_counter() - t0) / 20

    run = training.start_run(name, prof, 0)
    graphdef, state = nnx.split(run.objects)
    step = _recipe_step(training, graphdef, prof)
    tof, cta = training.as_pair(data.batch_at(0))
    key = jax.random.key(0)
    for _ in range(2):
        state, loss = step(state, tof, cta, key)
    jax.block_until_ready(loss)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        jax.profiler.start_trace(tmp, create_perfetto_trace=True)
        for _ in range(repeats):
            state, loss = step(state, tof, cta, key)
            jax.block_until_ready(loss)
        jax.profiler.stop_trace()
        traced_s = (time.perf_counter() - t0) / repeats
        trace = next(Path(tmp).rglob("*.trace.json.gz"))
        events = json.load(gzip.open(trace))["traceEvents"]
    kinds = collections.Counter()
    for e in events:
        name_ = e.get("name", "")
        if e.get("ph") != "X" or name_.startswith("$") or "::" in name_ or "(" in name_:
            continue  # python frames, runtime bookkeeping: keep XLA's operations
        kinds[re.sub(r"\.\d+$", "", name_)] += e["dur"] / 1e6 / repeats
    total = sum(kinds.values())
    return {"host_s": host_s, "traced_step_s": traced_s, "ops_s": total,
            "kinds": dict(kinds.most_common(8))}


def _ceilings_and_kernels(repeats: int) -> dict:
    """GEMM and 3×3 convolution GFLOP/s (fastest of the runs), the models' FLOPs, and our
    attention against ``jax.nn.dot_product_attention`` at the cpu models' shapes."""
    import jax
    import jax.numpy as jnp

    from xmodality_lite.config import get_profile
    from xmodality_lite.models import attention, model_flops
    from xmodality_lite.models.attention import dot_product_attention

    kernel = getattr(attention, "cpu_dot_product_attention", dot_product_attention)

    def normal(seed, shape):
        return jax.random.normal(jax.random.key(seed), shape, jnp.float32)

    def conv(x, w):
        return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))

    # square; DiT cpu MLP at batch 16
    out = {"gemm_gflops": gemm_gflops([(2048, 2048, 2048), (4096, 128, 512)], repeats),
           "conv_gflops": {}}
    conv_jit = jax.jit(conv)
    for bsz, size, c in [(16, 64, 64), (1, 256, 128)]:
        x, w = normal(0, (bsz, size, size, c)), normal(1, (3, 3, c, c))
        out["conv_gflops"][f"{bsz}x{size}²x{c}"] = (
            2 * bsz * size**2 * 9 * c * c / fastest_s(lambda x=x, w=w: conv_jit(x, w), repeats) / 1e9)
    prof = get_profile("cpu")
    out["forward_gflop"] = {name: model_flops(name, prof, batch=1) / 1e9 for name in MODELS}

    attn = []  # [B, T, heads, d] of the cpu models' attention at the train batch
    for where, shape in [("ADM/U-ViT rows, 64² stage", (TRAIN_BATCH * 64, 64, 4, 4)),
                         ("ADM/U-ViT rows, 32² stage, d = 4", (TRAIN_BATCH * 32, 32, 4, 4)),
                         ("ADM rows, 32² stage, d = 8", (TRAIN_BATCH * 32, 32, 4, 8)),
                         ("ADM/U-ViT rows, 16² stage, d = 4", (TRAIN_BATCH * 16, 16, 4, 4)),
                         ("ADM/U-ViT rows, 16² stage, d = 8", (TRAIN_BATCH * 16, 16, 4, 8)),
                         ("ADM rows, 16² stage, d = 16", (TRAIN_BATCH * 16, 16, 4, 16)),
                         ("U-ViT rows, 8² stage, d = 8", (TRAIN_BATCH * 8, 8, 4, 8)),
                         ("U-ViT rows, 8² stage, d = 16", (TRAIN_BATCH * 8, 8, 4, 16)),
                         ("U-ViT transformer, 8×8 tokens", (TRAIN_BATCH, 64, 4, 16)),
                         ("DiT, 16×16 tokens", (TRAIN_BATCH, 256, 4, 32))]:
        q, k, v, g = (normal(i, shape) for i in range(4))
        row = {"where": where, "shape": list(shape)}
        if hasattr(attention, "kernel_for"):  # chosen per shape by measuring, on this machine
            row.update(dispatch="measured", min_tokens=attention.MIN_TOKENS,
                       path={"ours": "ours", "xla": "XLA's"}[attention.kernel_for(shape)])
        else:  # the baseline package: ours from MIN_TOKENS tokens
            row.update(dispatch="MIN_TOKENS", path="ours" if shape[1] >= getattr(
                attention, "MIN_TOKENS", 0) else "XLA's")
        for name, fn in [("jax", jax.nn.dot_product_attention), ("ours", dot_product_attention),
                         ("kernel", kernel)]:
            vjp = jax.jit(lambda q, k, v, g, fn=fn: jax.vjp(fn, q, k, v)[1](g))
            timing = time_call(lambda vjp=vjp, args=(q, k, v, g): vjp(*args), repeats)
            row[f"{name}_vjp_s"] = timing["median_s"]
        if hasattr(attention, "ROWS_CONTRACTED_MAX_WIDTH"):  # the kernel, XLA's gradient products
            width, attention.ROWS_CONTRACTED_MAX_WIDTH = attention.ROWS_CONTRACTED_MAX_WIDTH, -1
            try:
                vjp = jax.jit(lambda q, k, v, g: jax.vjp(kernel, q, k, v)[1](g))
                row["kernel_xla_products_vjp_s"] = time_call(
                    lambda vjp=vjp, args=(q, k, v, g): vjp(*args), repeats)["median_s"]
            finally:
                attention.ROWS_CONTRACTED_MAX_WIDTH = width
            row["rows_contracted"] = attention.rows_contracted_for(
                (shape[0], shape[2], shape[1], shape[3]), jnp.float32)
        attn.append(row)
    out["attention"] = attn
    out["rows_contracted_max_width"] = getattr(attention, "ROWS_CONTRACTED_MAX_WIDTH", None)
    if hasattr(attention, "row_attention_inputs"):  # the row attention's sampling path
        out["row_forward"] = [_row_forward(where, shape, repeats) for where, shape in [
            ("ADM/U-ViT rows, 64² stage", (SAMPLE_BATCH * 64, 64, 4, 4)),
            ("ADM/U-ViT rows, 32² stage, d = 4", (SAMPLE_BATCH * 32, 32, 4, 4)),
            ("ADM rows, 32² stage, d = 8", (SAMPLE_BATCH * 32, 32, 4, 8))]]
    return out


def _row_forward(where: str, shape: tuple[int, ...], repeats: int) -> dict:
    """The conv stages' row attention, projections included, undifferentiated at the sampling
    batch: the path the tokens-last layout replaces (the projections around the kernel
    ``kernel_for`` chose), the tokens-last forward, and what ``fused_qkv_attention`` runs."""
    import jax

    from xmodality_lite.models import attention

    args = attention.row_attention_inputs(shape)
    kernel = attention.kernel_for(shape)
    row = {"where": where, "shape": list(shape), "kernel": kernel,
           "tokens_last_chosen": attention.tokens_last_for(shape)}
    for name, fn in [("replaced", attention.FUSED_QKV[kernel]),
                     ("tokens_last", attention.tokens_last_forward),
                     ("used", attention.fused_qkv_attention)]:
        jitted = jax.jit(fn)
        row[f"{name}_s"] = time_call(lambda jitted=jitted: jitted(*args), repeats)["median_s"]
    return row


def _run_side(package_root: Path, *args: str) -> dict:
    return run_side("benchmarks.bench_cpu_profile", package_root, *args)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs="+", metavar="WHAT")
    parser.add_argument("--baseline", default=BASELINE, help=f"git revision (default {BASELINE})")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--rounds", type=int, default=2, help="A/B alternations per model")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    if args.worker:
        what, *rest = args.worker
        repeats = int(rest[-1])
        result = {"model": _worker, "profile": _profile, "convolutions": _convolutions,
                  "without_attention": _without_attention,
                  "operations": lambda r: _operations(r),
                  "ceilings": lambda r: _ceilings_and_kernels(r)}[what]
        per_model = ("model", "profile", "convolutions", "without_attention")
        out = result(rest[0], repeats) if what in per_model else result(repeats)
        import xmodality_lite

        print(json.dumps({**out, "package": portable_path(Path(xmodality_lite.__file__).parent)}))
        return {}

    before = load()
    baseline_rev = subprocess.run(["git", "rev-parse", "--short", args.baseline], cwd=ROOT,
                                  check=True, text=True, capture_output=True).stdout.strip()
    sides = {}
    with tempfile.TemporaryDirectory() as tmp:
        roots = {"before": extract_package(args.baseline, Path(tmp)), "after": ROOT}
        log(f"[cpu_profile] ceilings (after: {ROOT})")
        ceilings = _run_side(ROOT, "ceilings", str(args.repeats))
        operations = {side: _run_side(root, "operations", str(args.repeats))
                      for side, root in roots.items()}
        alone: dict[str, list[dict]] = {}
        no_attention: dict[str, list[dict]] = {}
        for name in args.models.split(","):
            runs = {"before": [], "after": []}
            for r in range(args.rounds):
                order = ("before", "after") if r % 2 == 0 else ("after", "before")
                for side in order:
                    log(f"[cpu_profile] {name} {side} (round {r + 1}/{args.rounds})")
                    runs[side].append(_run_side(roots[side], "model", name, str(args.repeats)))
                # in every round, beside the A/B pair: the machine's state drifts between rounds
                alone.setdefault(name, []).append(
                    _run_side(ROOT, "convolutions", name, str(args.repeats)))
                no_attention.setdefault(name, []).append(
                    _run_side(ROOT, "without_attention", name, str(args.repeats)))
            sides[name] = runs
        profiles = {name: _run_side(ROOT, "profile", name, "3") for name in args.models.split(",")}
    rows = []
    for name, runs in sides.items():
        row = {"model": name, "forward_gflop_b1": ceilings["forward_gflop"][name],
               "compiler_options": runs["after"][0].get("compiler_options", {})}
        for side, rs in runs.items():
            for what in ("train", "forward"):
                row[f"{what}_{side}_s"] = statistics.median(r[what]["median_s"] for r in rs)
                row[f"{what}_{side}_cpu_s"] = statistics.median(r[what]["cpu_median_s"] for r in rs)
                row[f"{what}_{side}_first_s"] = statistics.median(r[what]["first_s"] for r in rs)
                row[f"{what}_{side}_fastest_s"] = min(t for r in rs for t in r[what]["runs_s"])
        flops_b1 = row["forward_gflop_b1"]
        row["train_gflops_after"] = 3 * TRAIN_BATCH * flops_b1 / row["train_after_s"]
        row["forward_gflops_after"] = SAMPLE_BATCH * flops_b1 / row["forward_after_s"]
        for what in ("train", "forward"):
            row[f"{what}_speedup"] = row[f"{what}_before_s"] / row[f"{what}_after_s"]
            row[f"{what}_speedup_cpu"] = row[f"{what}_before_cpu_s"] / row[f"{what}_after_cpu_s"]
            row[f"{what}_speedup_fastest"] = (row[f"{what}_before_fastest_s"]
                                              / row[f"{what}_after_fastest_s"])
            # the convolutions' sum is a bound: the fastest round's; without attention, the
            # median over rounds, as the after side's
            row[f"{what}_convolutions"] = min((a[what] for a in alone[name]),
                                              key=lambda a: a["s"])
            row[f"{what}_without_attention_s"] = statistics.median(
                w[what]["median_s"] for w in no_attention[name])
        rows.append(row)
        log(f"[cpu_profile] {row}")
    payload = {"baseline": baseline_rev, "train_batch": TRAIN_BATCH,
               "sample_batch": SAMPLE_BATCH, "rounds": args.rounds, "repeats": args.repeats,
               "ceilings": ceilings, "operations": operations, "rows": rows,
               "profiles": profiles,
               "load_before": before, "load_after": load()}
    path = write_result("cpu_profile", payload)
    log(f"[cpu_profile] wrote {path}")
    return payload


if __name__ == "__main__":
    main()
