"""Run the benchmark sections and render ``benchmarks/RESULTS.md`` from their JSON results.

    python -m benchmarks.run_all                      # models, sampler, volume, registration, compilation
    python -m benchmarks.run_all --only sampler,volume --quick
    python -m benchmarks.run_all --only notebooks     # opt-in: executes the whole book
    python -m benchmarks.run_all --render             # only re-render RESULTS.md

RESULTS.md shows every section that has a result file, each with its own date and commit, so
sections run at different times can be told apart.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
from pathlib import Path

from benchmarks.common import (
    git_commit,
    latest_result,
    log,
    machine,
    other_machines,
    versions,
)

HERE = Path(__file__).resolve().parent
DEFAULT = ("models", "sampler", "volume", "registration", "compilation")
SECTIONS = ("models", "sampler", "volume", "registration", "notebooks", "compilation",
            "teaching", "cpu_profile", "xla_flags", "checkpoints", "test_suite",
            "model_build", "dit_ceiling", "sampler_sweep", "suite_census",
            "flat_adam")  # RESULTS order


def _f(x, digits: int = 2) -> str:
    return "–" if x is None else f"{x:,.{digits}f}"


def _ratio(ours, ref) -> str:
    return "–" if ours is None else f"{ours / ref:.2f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(r) + " |" for r in rows), ""]


def _models(r: dict) -> list[str]:
    from benchmarks.bench_models import MODELS, PAPER_TABLE2, REFERENCE

    out = ["## 1. Models (beside the paper's Table 2)", "",
           "Float32, jitted; forward = the pure function `diffusion.functional(model)` under "
           "`jax.jit`; train step = `training.make_train_step` (value_and_grad of v/Min-SNR-5 or "
           "MSE for the U-Net, Adam 1e-4 update, whole state donated). Median of 3 "
           "calls after a first call (compilation included, shown separately); "
           "CPU s = this process's CPU time per call (all threads; less sensitive to a busy "
           "machine than wall time). Ratio = ours / reference (facts §14, second measurement, "
           "same machine kind): < 1 is faster. GFLOPs: XLA `cost_analysis()` of a batch-1 "
           "forward (≈ 2 × MACs), as the reference's `estimate_gflops.py`; the paper's printed "
           "column is given as printed (it does not match that script's numbers for any model).",
           ""]
    cores = (r.get("machine") or {}).get("cores") or 2
    for profile in ("paper", "cpu", "smoke"):
        rows = sorted((x for x in r["rows"] if x.get("profile") == profile),
                      key=lambda x: MODELS.index(x["model"]) if x["model"] in MODELS else 99)
        if not rows:
            continue
        bf, bt = r["batch"][profile]
        size = rows[0].get("image_size", "?")
        out += [f"### `{profile}` profile: {size}², forward batch {bf}, train batch {bt}", ""]
        head = ["model", "params (exact)", "GFLOPs b=1", "fwd median s", "fwd first s",
                "fwd CPU s", "train median s", "train first s", "train CPU s", "peak RSS GiB",
                "measured (UTC), load"]
        if profile == "paper":  # paper's Table 2 and the reference's timings beside ours
            head[2:2] = ["paper params", "paper GFLOPs"]
            head[8:8] = ["ref fwd s", "fwd ratio (wall)", "fwd ratio (CPU ÷ cores)"]
            head[14:14] = ["ref train s", "train ratio (wall)", "train ratio (CPU ÷ cores)"]
        body = []
        for x in rows:
            if "error" in x:
                body.append([x["model"], f"error: {x['error'][-120:]}"] + [""] * (len(head) - 2))
                continue
            fwd, tr = x.get("forward", {}), x.get("train", {})
            line = [x["model"], f"{x['params']:,}", _f(x["gflops_b1"], 1 if x["gflops_b1"] > 10 else 3),
                    _f(fwd.get("median_s"), 3), _f(fwd.get("first_s"), 1),
                    _f(fwd.get("cpu_median_s"), 3), _f(tr.get("median_s"), 2),
                    _f(tr.get("first_s"), 1), _f(tr.get("cpu_median_s"), 2),
                    _f(x["peak_rss_mib"] / 1024, 2),
                    f"{(x.get('date') or '?')[5:16] or '?'}, {(x.get('load_after') or ['?'])[0]}"]
            if profile == "paper":
                p_params, _, p_gflops = PAPER_TABLE2[x["model"]]
                ref_fwd, _, ref_train, _ = REFERENCE[x["model"]]
                cpu_f, cpu_t = fwd.get("cpu_median_s"), tr.get("cpu_median_s")
                line[2:2] = [p_params, str(p_gflops)]
                line[8:8] = [_f(ref_fwd, 3), _ratio(fwd.get("median_s"), ref_fwd),
                             _ratio(cpu_f and cpu_f / cores, ref_fwd)]
                line[14:14] = [_f(ref_train, 2), _ratio(tr.get("median_s"), ref_train),
                               _ratio(cpu_t and cpu_t / cores, ref_train)]
            body.append(line)
        out += _table(head, body)
        out += [f"- {x['model']}: {x['note']}" for x in rows if x.get("note")]
        out += [""] if any(x.get("note") for x in rows) else []
        if profile == "paper":
            out += _throughput(r.get("kernels"), rows)
    return out


def _throughput(k: dict | None, rows: list[dict]) -> list[str]:
    """What this CPU can do, what each forward achieves, and what the reference's figures imply."""
    from benchmarks.bench_models import REFERENCE

    if not k or "error" in k:
        return []
    gemm, conv = k.get("gemm_best_gflops", k.get("gemm_4096_gflops")), k["conv3x3_256_gflops"]
    shapes = ", ".join(f"{s} {v:.0f}" for s, v in (k.get("gemm_gflops") or {}).items())
    out = ["#### Throughput: this CPU, our forwards, the reference's", "",
           f"Measured in one process just before the models ({k.get('date', '?')[:16]}, load "
           f"{(k.get('load_after') or ['?'])[0]}; fastest of 5 runs): float32 GEMM **{gemm:.0f} "
           f"GFLOP/s** (best of [M×K×N] {shapes}), 3×3 convolution 256²·128→128 (batch 1) "
           f"**{conv:.0f} GFLOP/s** — the ceilings every forward here runs against. Achieved = "
           "XLA GFLOPs ÷ forward median. The "
           "reference's implied rate (its GFLOPs ÷ its forward time) above this machine's GEMM "
           "ceiling means its figures came from a faster CPU than the one measured here, and no "
           "implementation of the same FLOPs can match them on it.", ""]
    body = []
    for x in rows:
        fwd = (x.get("forward") or {}).get("median_s")
        if fwd is None or x["model"] not in REFERENCE:
            continue
        ours, ref = x["gflops_b1"] / fwd, x["gflops_b1"] / REFERENCE[x["model"]][0]
        body.append([x["model"], f"{x['gflops_b1']:.1f}", f"{ours:.0f}", f"{ours / gemm:.2f}",
                     f"{ref:.0f}", f"{ref / gemm:.2f}"])
    out += _table(["model", "GFLOPs b=1", "ours GFLOP/s", "ours ÷ GEMM", "reference GFLOP/s",
                   "reference ÷ this GEMM"], body)
    out += ["The two kernels the package replaces on the CPU (`models.convolution`, "
            "`models.attention`), each against the XLA/JAX operation it replaces, same process:", ""]
    out += _table(["convolution kernel gradient [B, H, W, C_in → C_out]", "XLA s", "ours s",
                   "XLA GFLOP/s", "ours GFLOP/s", "speed-up"],
                  [["×".join(map(str, g["shape"][:3])) + f", {g['shape'][3]}→{g['shape'][4]}",
                    f"{g['xla_s']:.3f}", f"{g['ours_s']:.3f}", f"{g['xla_gflops']:.0f}",
                    f"{g['ours_gflops']:.0f}", f"{g['xla_s'] / g['ours_s']:.1f}×"]
                   for g in k["conv_kernel_grad"]])
    out += _table(["attention", "[B, T, heads, d]", "jax.nn fwd s", "ours fwd s", "jax.nn fwd+vjp s",
                   "ours fwd+vjp s", "speed-up (fwd+vjp)"],
                  [[a["where"], str(a["shape"]), f"{a['jax_fwd_s']:.4f}", f"{a['ours_fwd_s']:.4f}",
                    f"{a['jax_vjp_s']:.4f}", f"{a['ours_vjp_s']:.4f}",
                    f"{a['jax_vjp_s'] / a['ours_vjp_s']:.2f}×"] for a in k["attention"]])
    return out


def _sampler(r: dict) -> list[str]:
    out = ["## 2. Sampler efficiency", "",
           "Efficiency = sampling time ÷ (steps × one forward at the same batch); 1.00 means "
           f"the driver costs nothing beyond the network. Target ≤ {r['target']}. `cpu`-profile "
           f"models, random weights, batch {r['batch']}, 64²; median of {r['repeats']} after a "
           "warm-up. `sample` = `diffusion.sample` on the batch; `translate_slices` = one "
           "vmapped chain per slice, as the volume pipeline runs it.", ""]
    body = []
    for row in r["rows"]:
        if "error" in row:
            body.append([row["model"], "error", row["error"][-120:], "", "", "", "", ""])
            continue
        fwd = row["forward"]["median_s"]
        for x in row["runs"]:
            body.append([row["model"], x["sampler"], str(x["steps"]), x["path"],
                         _f(fwd, 4), _f(x["median_s"], 3), _f(x["efficiency"], 3),
                         _f(x["cpu_efficiency"], 3)])
    return out + _table(["model", "sampler", "steps", "path", "forward s", "sampling s",
                         "efficiency (wall)", "efficiency (CPU)"], body)


def _volume(r: dict) -> list[str]:
    x = r["row"]
    out = ["## 3. Volume translation", ""]
    if "error" in x:
        return out + [f"error: {x['error']}", ""]
    out += ["`reconstruction.translate_volume` on a phantom TOF volume, `cpu`-profile "
            f"{x['model']} ({'random weights' if x['weights'] == 'random' else x['weights']}), "
            f"{x['sampler'].upper()} {x['steps']} steps; the time includes the one compilation. "
            f"Target < {r['target_s']:.0f} s.", ""]
    return out + _table(
        ["volume", "slices translated", "seconds", "CPU s", "s / slice", "peak RSS GiB",
         "< target"],
        [["×".join(map(str, x["shape"])), str(x["slices_translated"]), _f(x["seconds"], 1),
          _f(x.get("cpu_s"), 1),
          _f(x["per_slice_s"], 3), _f(x["peak_rss_mib"] / 1024, 2),
          "yes" if x["seconds"] < r["target_s"] else "**no**"]])


def _registration(r: dict) -> list[str]:
    x = r["row"]
    out = ["## 4. Registration", ""]
    if "error" in x:
        return out + [f"error: {x['error']}", ""]
    out += ["`registration.register_tof_to_cta` (ANTs SyN, deterministic single-thread "
            f"subprocess) on the `{x['profile']}` phantom pair (seed {x['seed']}); error from "
            f"`registration_error` against the known misalignment ({x['landmarks']} landmarks).",
            ""]
    return out + _table(
        ["TOF grid", "CTA grid", "seconds", "CPU s", "landmark mm before", "after", "vessel Dice before",
         "after", "peak RSS GiB"],
        [["×".join(map(str, x["tof_shape"])), "×".join(map(str, x["cta_shape"])),
          _f(x["register_s"], 1), _f(x.get("cpu_s"), 1), _f(x["landmark_mm_before"]), _f(x["landmark_mm_after"]),
          _f(x["dice_before"], 3), _f(x["dice_after"], 3), _f(x["peak_rss_mib"] / 1024, 2)]])


def _notebooks(r: dict) -> list[str]:
    out = ["## 5. Notebooks", "",
           f"Each notebook executed by nbclient in a fresh process at the `{r['profile']}` "
           f"profile. Budget: whole book ≤ {r['budget_s'] / 60:.0f} min, peak ≤ "
           f"{r['budget_rss_mib'] / 1024:.0f} GiB per notebook. Total "
           f"{r['total_s'] / 60:.1f} min, max peak {r['max_peak_rss_mib'] / 1024:.2f} GiB: "
           f"{'within budget' if r['within_budget'] else '**over budget or failing**'}.", ""]
    body = [[x["notebook"], _f(x.get("seconds"), 1), _f(x.get("peak_rss_mib", 0) / 1024, 2),
             "placeholder" if x.get("placeholder") else "lesson",
             (x.get("error") or "ok").replace("|", "/")] for x in r["rows"]]
    return out + _table(["notebook", "seconds", "peak RSS GiB", "state", "result"], body)


def _compilation(r: dict) -> list[str]:
    out = ["## 6. Compilation: the persistent JAX compilation cache", "",
           f"`{r['profile']}`-profile train step (`training.make_train_step`, float32), each run a "
           "fresh process: **off** = `XMODALITY_JAX_CACHE=0` (every process compiles), **cold** = "
           "an empty cache folder (compile and write), **warm** = the same folder again (a second "
           "run of a lesson or of the tests). First = the first call, compilation or cache load "
           f"included; steady = median of the {r['repeats']} calls after it; overhead = first − "
           "steady; process = the whole worker (interpreter, imports, model initialisation, all "
           "calls). Hits / writes: JAX's `jax.monitoring` cache events in the whole process (the "
           "step's own in brackets); files, MB: the cache folder after the run.", ""]
    body = []
    for x in r["rows"]:
        if "error" in x:
            body.append([x["model"], f"error: {x['error'][-120:]}"] + [""] * 9)
            continue
        off, cold, warm = x["off"], x["cold"], x["warm"]
        body.append([
            x["model"], f"{off['image_size']}², {off['batch']}",
            " / ".join(_f(m["first_s"], 2) for m in (off, cold, warm)),
            _f(off["median_s"], 3),
            " / ".join(_f(m["overhead_s"], 2) for m in (off, cold, warm)),
            f"{off['overhead_s'] / max(warm['overhead_s'], 1e-3):.0f}×",
            " / ".join(_f(m["process_s"], 1) for m in (off, cold, warm)),
            f"{warm['hits']} ({warm['step_hits']}) / {warm['writes']} ({warm['step_writes']})",
            f"{cold['writes']} ({cold['step_writes']})",
            f"{cold['files']}, {cold['bytes'] / 2**20:.1f}"])
    return out + _table(["model", "size, batch", "first s off / cold / warm", "steady s",
                         "overhead s off / cold / warm", "overhead off ÷ warm",
                         "process s off / cold / warm", "warm hits / writes", "cold writes",
                         "files, MB"], body)


def _teaching(r: dict) -> list[str]:
    out = ["## 7. Teaching models: a recipe for a CPU budget", "",
           "`benchmarks/bench_teaching.py`: one model trained from its seed per row on the `cpu` "
           "profile's data (whole slices resampled to 64², 11 training patients), DDIM samples of "
           "held-out test slices scored on [0, 1] of the [−50, 350] HU window (Table 1's metrics). "
           "The paper's recipe (Adam 1e-4, constant) is the baseline the issue measured: 500 steps "
           "left the diffusion models at noise (slice SSIM 0.05–0.09). A 10× higher peak with "
           "warm-up and cosine decay, an EMA, and a DiT patch of 4 (the paper's 16 × 16 tokens) "
           "are what made the samples show the anatomy; the shipped rows are the final models "
           "(`make checkpoints`, steps from `checkpoint.SHIPPED_STEPS`).", ""]
    if r.get("note"):
        out += [f"Note: {r['note']}.", ""]
    body = [[x["model"], x["recipe"], f"{x['steps']:,}", _f(x.get("train_s"), 0),
             _f(x.get("steps_per_s"), 2), str(x.get("n_eval")), str(x.get("sample_steps")),
             _f(x["psnr"], 2), _f(x["ssim"], 3), _f(x["mae"], 3)] for x in r["rows"]]
    return out + _table(["model", "recipe", "steps", "train s", "steps/s", "slices", "DDIM steps",
                         "PSNR dB", "SSIM", "MAE"], body)


def _cpu_profile(r: dict) -> list[str]:
    c = r["ceilings"]
    gemm, conv = max(c["gemm_gflops"].values()), max(c["conv_gflops"].values())
    out = ["## 8. cpu profile: before and after the speed-ups, in one run", "",
           "`benchmarks/bench_cpu_profile.py`: the package at the baseline commit "
           f"`{r['baseline']}` (before) and this checkout (after), each timed in fresh worker "
           f"processes, alternating before/after {r['rounds']}× per model; medians of "
           f"{r['repeats']} calls. Train step: batch {r['train_batch']}, the recipe's Adam and "
           f"EMA; forward: one sampler step at batch {r['sample_batch']}. Speed-up = before ÷ "
           "after (wall; CPU time in brackets; then the ratio of each side's fastest call over "
           "all rounds, the one least affected by the call-to-call variation of these virtual "
           "machines, where measured). "
           "Achieved GFLOP/s = XLA's forward FLOPs (× 3 for "
           f"a train step) ÷ time, against this run's ceilings: float32 GEMM **{gemm:.0f}** "
           f"GFLOP/s, 3×3 convolution **{conv:.0f}** GFLOP/s.", ""]
    body = []
    for x in r["rows"]:
        fastest = {what: (f"; {x[f'{what}_speedup_fastest']:.2f}×"
                          if f"{what}_speedup_fastest" in x else "")
                   for what in ("train", "forward")}
        body.append([x["model"], f"{x['train_before_s']:.3f}", f"{x['train_after_s']:.3f}",
                     f"{x['train_speedup']:.2f}× ({x['train_speedup_cpu']:.2f}×{fastest['train']})",
                     f"{x['forward_before_s']:.3f}", f"{x['forward_after_s']:.3f}",
                     f"{x['forward_speedup']:.2f}× ({x['forward_speedup_cpu']:.2f}×"
                     f"{fastest['forward']})",
                     f"{x['train_gflops_after']:.0f} ({x['train_gflops_after'] / gemm:.2f})",
                     f"{x['forward_gflops_after']:.0f} ({x['forward_gflops_after'] / gemm:.2f})"])
    out += _table(["model", "train s before", "after", "speed-up", "forward s before", "after",
                   "speed-up", "train GFLOP/s (÷ GEMM)", "forward GFLOP/s (÷ GEMM)"], body)
    if all("forward_convolutions" in x for x in r["rows"]):
        out += ["Where the rest of the speed-up would have to come from: each program's "
                "convolutions timed alone (every `conv_general_dilated` in its jaxpr, the train "
                "step's gradient ones included, compiled by itself with the program's XLA "
                "options; fastest of the repeats, summed over occurrences; the fastest round's "
                "sum). Before ÷ that sum is the speed-up the step would reach if everything but "
                "its convolutions took no time; after − it is what the rest takes now.", ""]
        body = []
        for x in r["rows"]:
            cells = [x["model"]]
            for what in ("train", "forward"):
                alone = x[f"{what}_convolutions"]
                cells += [f"{alone['count']} ({alone['distinct']})", f"{alone['s']:.3f}",
                          f"{x[f'{what}_before_s'] / alone['s']:.2f}×" if alone["s"] else "–",
                          f"{x[f'{what}_after_s'] - alone['s']:.3f}"]
                if f"{what}_without_attention_s" in x:
                    cells.append(f"{x[f'{what}_after_s'] - x[f'{what}_without_attention_s']:.3f}")
            body.append(cells)
        attention = all("train_without_attention_s" in x for x in r["rows"])
        extra = ["attention s"] if attention else []
        out += _table(["model", "train: convolutions (distinct)", "alone s",
                       "before ÷ alone", "after − alone s", *extra,
                       "forward: convolutions (distinct)", "alone s", "before ÷ alone",
                       "after − alone s", *extra], body)
        if attention:
            out += ["Attention s = after − the same step with every attention layer replaced by "
                    "the identity (median over the rounds' workers; projections and layout "
                    "changes included): what the attention costs of the rest.", ""]
    others = other_machines("cpu_profile")
    if others:
        out += ["The same comparison, each other machine kind's latest run (wall medians, "
                "before ÷ after; the machine's float32 GEMM ceiling in the same run):", ""]
        out += _table(["machine", "run at", "commit", "GEMM GFLOP/s"]
                      + [f"{x['model']} train / forward" for x in r["rows"]],
                      [[o["machine"]["cpu"], o["date"][:10], f"`{o['commit']}`",
                        f"{max(o['ceilings']['gemm_gflops'].values()):.0f}"]
                       + [next((f"{y['train_speedup']:.2f}× / {y['forward_speedup']:.2f}×"
                                for y in o["rows"] if y["model"] == x["model"]), "–")
                          for x in r["rows"]] for o in others])
    options = [f"{x['model']} {program}: " + ", ".join(f"`{k}={v}`" for k, v in o.items())
               for x in r["rows"] for program, o in x.get("compiler_options", {}).items()
               if o and isinstance(o, dict)]
    if options:
        out += ["After, these programs were compiled with the XLA options their model asks for "
                "(`models.compiler`); all others with XLA's defaults. " + "; ".join(options)
                + ".", ""]
    ops = r["operations"]
    rows = [[f"{list(map(int, b['shape']))}", f"{b['cpu_median_s'] * 1e3:.1f}",
             f"{a['cpu_median_s'] * 1e3:.1f}", f"{b['cpu_median_s'] / a['cpu_median_s']:.0f}×"]
            for b, a in zip(ops["before"]["wavelet"], ops["after"]["wavelet"], strict=True)]
    out += ["The wavelet front end (`dwt2` → 1×1 mix → `idwt2`, forward + backward; CPU ms): a "
            "9×9 depthwise stride-2 convolution before, two small matrix products per axis "
            "after (`models.wavelets`; the same operator, tested equal).", ""]
    out += _table(["[B, H, W, C]", "convolution ms", "matrices ms", "speed-up"], rows)
    min_tokens = c["attention"][0].get("min_tokens", 32) if c["attention"] else 32
    dispatch = ("the kernel `attention.kernel_for` chose for the shape on this machine: XLA's "
                f"below `MIN_TOKENS` = {min_tokens} tokens, from there ours only where its own "
                "measurement found it at least `MARGIN` = 5 % faster"
                if c["attention"] and c["attention"][0].get("dispatch") == "measured" else
                "our kernel from `MIN_TOKENS` = 32 tokens, XLA's below, where ours is slower")
    out += ["Attention at every shape the cpu models use (forward + VJP, wall s, after): XLA's "
            "`jax.nn.dot_product_attention`, our CPU kernel (`models.attention`), and what the "
            f"models run (`dot_product_attention`: {dispatch}).", ""]
    out += _table(["where", "[B, T, heads, d]", "jax.nn s", "our kernel s", "kernel faster by",
                   "dispatched to", "used s"],
                  [[a["where"], str(a["shape"]), f"{a['jax_vjp_s']:.4f}",
                    f"{a.get('kernel_vjp_s', a['ours_vjp_s']):.4f}",
                    f"{a['jax_vjp_s'] / a.get('kernel_vjp_s', a['ours_vjp_s']):.2f}×",
                    a.get("path", "ours"), f"{a['ours_vjp_s']:.4f}"] for a in c["attention"]])
    if all("kernel_xla_products_vjp_s" in a for a in c["attention"]):
        out += ["Our kernel's gradient with its two row-contracted products (∂L/∂k = gᵀ q, "
                "∂L/∂v = pᵀ g) as XLA writes them (its own dot, the large operand a transposed "
                "left) and as `attention._rows_contracted` computes them, (qᵀ g)ᵀ with the large "
                "operand a plain right operand of YNNPACK's GEMM (heads up to "
                f"`ROWS_CONTRACTED_MAX_WIDTH` = {c.get('rows_contracted_max_width', 16)} wide; "
                "forward + VJP, wall s, same run):", ""]
        out += _table(["where", "[B, T, heads, d]", "XLA's products s", "row-contracted s",
                       "faster by"],
                      [[a["where"], str(a["shape"]), f"{a['kernel_xla_products_vjp_s']:.4f}",
                        f"{a['kernel_vjp_s']:.4f}" if a["rows_contracted"] else "(not used)",
                        f"{a['kernel_xla_products_vjp_s'] / a['kernel_vjp_s']:.2f}×"
                        if a["rows_contracted"] else ""] for a in c["attention"]])
    if c.get("row_forward"):
        out += ["The conv stages' row attention when sampling (projections included, "
                "undifferentiated, batch 32, wall s): the path it replaces (the projections "
                "around the kernel above), the tokens-last forward "
                "(`attention.tokens_last_forward`), and what `fused_qkv_attention` runs "
                "(`tokens_last_for`: measured once per shape, chosen only at least `MARGIN` "
                "faster; gradients always take the replaced path).", ""]
        out += _table(["where", "[R, T, heads, d]", "replaced s", "tokens last s",
                       "faster by", "chosen", "used s"],
                      [[a["where"], str(a["shape"]),
                        f"{a['replaced_s']:.4f} ({'ours' if a['kernel'] == 'ours' else 'XLA'})",
                        f"{a['tokens_last_s']:.4f}", f"{a['replaced_s'] / a['tokens_last_s']:.2f}×",
                        "tokens last" if a["tokens_last_chosen"] else "replaced",
                        f"{a['used_s']:.4f}"] for a in c["row_forward"]])
    if r.get("profiles"):
        out += ["Where a train step's time goes (after; XLA's per-operation trace summed by "
                "kind, ms per step; `ynn_fusion` = the GEMM/convolution library's fused "
                "operations). Host = fetching and converting one batch in Python: against a step "
                "of a tenth of a second or more, several steps per compiled call would save "
                "under 1 %, so the loop stays one step per call.", ""]
        prow = []
        for name, p in r["profiles"].items():
            top = ", ".join(f"{k} {v * 1e3:.0f}" for k, v in list(p["kinds"].items())[:6])
            prow.append([name, f"{p['traced_step_s'] * 1e3:.0f}", f"{p['ops_s'] * 1e3:.0f}",
                         f"{p['host_s'] * 1e3:.2f}", top])
        out += _table(["model", "step ms (traced)", "ops ms (both threads)", "host ms",
                       "largest kinds, ms"], prow)
    return out


def _xla_flags(r: dict) -> list[str]:
    out = ["## 9. XLA CPU flags at the cpu profile", "",
           "`benchmarks/bench_xla_flags.py`: this checkout with XLA's defaults and with each "
           "candidate `XLA_FLAGS` (`NAME=value` words: environment variables instead, e.g. "
           "glibc's `MALLOC_*`, read when a process starts), "
           "fresh worker processes alternating default/candidate "
           "per model (rounds), medians of each worker's calls (repeats); the same train step "
           "(batch 16) and forward (batch 32) as §8. Speed-up = default ÷ candidate (wall; CPU "
           "time in brackets); max |Δ output| compares the forward's outputs. Each row is its own "
           "A/B, measured when it says; rows of different runs are not compared with each "
           "other. Rows measured before 12-03 15:00 ran both sides on glibc's allocator; since "
           "then the default runs on the package's (`xmodality_lite.allocator`: TCMalloc where "
           "installed), and a candidate that preloads a library of its own, such as the "
           "`LD_PRELOAD=libtcmalloc_minimal.so.4` rows, is compared with glibc's.", ""]
    body = []
    for x in r["rows"]:
        if "error" in x:
            body.append([f"`{x['flags']}`", x["model"], "–", "–", "–", "–", x["error"],
                         "–", "–"])
            continue
        when = x.get("measured", r["date"])[5:16].replace("T", " ")
        body.append([f"`{x['flags']}`", x["model"], f"{x['train_default_s']:.3f}",
                     f"{x['train_speedup']:.2f}× ({x['train_speedup_cpu']:.2f}×)",
                     f"{x['forward_default_s']:.3f}",
                     f"{x['forward_speedup']:.2f}× ({x['forward_speedup_cpu']:.2f}×)",
                     f"{x['max_output_diff']:.1e}",
                     f"{x.get('rounds', r['rounds'])} × {x.get('repeats', r['repeats'])}", when])
    out += _table(["candidate", "model", "train s (default)", "train speed-up",
                   "forward s (default)", "forward speed-up", "max abs Δ output",
                   "rounds × repeats", "measured (UTC)"], body)
    ok = [x for x in r["rows"] if "error" not in x]
    speedups: dict = {}  # per flag set: every model's train and forward speed-ups
    runs: dict = {}  # the defaults of one model within one run: their spread is the noise
    for x in ok:
        speedups.setdefault(x["flags"], []).extend([x["train_speedup"], x["forward_speedup"]])
        runs.setdefault((x["model"], x.get("run", r["date"])), []).append(x["train_default_s"])
    worst = {f: min(v) for f, v in speedups.items()}
    everywhere = [f"`{f}`" for f, w in worst.items() if w >= 1.0]
    out += ["Worst case of each flag set over the models measured (the smaller of train and "
            "forward): " + "; ".join(f"`{f}` {w:.2f}×" for f, w in worst.items())
            + ". A flag is adopted only if it is faster everywhere: "
            + (", ".join(everywhere) if everywhere else "none is") + ".", ""]
    by_run: dict = {}  # machines drift between runs: each run's spread is stated on its own
    for (m, run), v in runs.items():
        if len(v) > 1:
            by_run.setdefault(run, []).append(f"{m} train {min(v):.3f}–{max(v):.3f} s")
    spread = [f"run of {run[5:16].replace('T', ' ')}: " + ", ".join(v) for run, v in by_run.items()]
    out += [("The defaults alone, run to run within one run (" + "; ".join(spread) + ")"
             + "; a speed-up inside that spread is noise. " if spread else "")
            + "Outputs bitwise equal under a flag mean it did not change which library "
            "computes these layers.", ""]
    return out


def _checkpoints(r: dict) -> list[str]:
    train = r.get("training", {})
    out = ["## 10. `make checkpoints` from a clean clone", "",
           "`benchmarks/bench_checkpoints.py`: `make checkpoints` in a fresh clone of "
           f"`{r['clone_commit']}` (phantom dataset generated from scratch, this checkout's "
           f"environment), timed as a whole: **{r['wall_s'] / 60:.0f} min** on 2 cores, of which "
           "training " + ", ".join(f"{m} {t['train_seconds'] / 60:.0f} min ({t['step']:,} steps)"
                                   for m, t in train.items())
           + (f", and the paper-protocol Table 1 (1000 steps) {r['table1_seconds'] / 60:.0f} min"
              if r.get("table1_seconds") else "") + ".",
           "", "Weights bitwise equal to the shipped ones (every tensor): " + ", ".join(
               f"{m} {'yes' if eq else 'no'}" for m, eq in r["bitwise_equal_weights"].items())
           + ". Recorded slice metrics, shipped → clone; tolerance |ΔPSNR| ≤ "
           f"{r['tolerance']['psnr']} dB, |ΔSSIM| ≤ {r['tolerance']['ssim']}: "
           f"**{'all within' if r['all_within'] else 'NOT all within'}**.", ""]
    body = [[x["model"], x["sampler"], str(x["steps"]),
             f"{x['psnr_shipped']:.2f} → {x['psnr_clone']:.2f}",
             f"{x['ssim_shipped']:.3f} → {x['ssim_clone']:.3f}",
             f"{x['fd_shipped']:.3f} → {x['fd_clone']:.3f}", "yes" if x["within"] else "**no**"]
            for x in r["rows"]]
    return out + _table(["model", "sampler", "steps", "PSNR dB", "SSIM", "FD (stand-in)",
                         "within"], body)


def _test_suite(r: dict) -> list[str]:
    old, new = r["runs"]
    out = ["## 11. `make test`: when issue 17 was filed, and now", "",
           "`benchmarks/bench_test_suite.py`: each commit's own `make test` in a fresh clone "
           "(empty data and compilation caches; this checkout's environment, not counted), one "
           f"after the other on this machine. **{r['ratio']:.2f}×** faster. Each side runs on "
           "the allocator its own Makefile chooses (TCMalloc from `xmodality_lite.allocator` on, "
           "glibc's before), except the book's notebook kernels: both sides start this "
           "environment's Jupyter kernel, on TCMalloc where installed, which favours the older "
           "commit.", ""]
    if not r.get("all_passed", True):
        out += ["**A side failed: its time is not the whole suite's, so the ratio is not a "
                "measurement of the same work.**", ""]
    body = [[f"`{x['rev']}`", f"{x['wall_s'] / 60:.1f}", str(x.get("passed", "–")),
             str(x.get("skipped", 0)), str(x.get("failed", 0)),
             f"{x['wall_s'] / x['passed']:.2f}" if x.get("passed") else "–", x["summary"]]
            for x in (old, new)]
    out += _table(["commit", "wall min", "passed", "skipped", "failed", "wall s per test",
                   "pytest's last line"], body)
    others = other_machines("test_suite")
    if others:
        out += ["Each other machine kind's latest run (the same two sides, one after the other):",
                ""]
        out += _table(["machine", "run at", "before", "min", "after", "min", "passed", "faster by"],
                      [[o["machine"]["cpu"], o["date"][:10], f"`{o['runs'][0]['rev']}`",
                        f"{o['runs'][0]['wall_s'] / 60:.1f}", f"`{o['runs'][1]['rev']}`",
                        f"{o['runs'][1]['wall_s'] / 60:.1f}",
                        f"{o['runs'][0].get('passed', '–')} → {o['runs'][1].get('passed', '–')}",
                        f"{o['ratio']:.2f}×"] for o in others])
    return out


def _model_build(r: dict) -> list[str]:
    out = ["## 12. Building a model in a fresh process", "",
           "`benchmarks/bench_model_build.py`: each model built eagerly in fresh worker "
           "processes with the compilation cache off (a first lesson in Colab, a fresh clone's "
           "first test), alternating four ways of drawing the kernels: flax's initialisers "
           "at every kernel's own shape (flax), the glorot conv kernels drawn as "
           "[k·k, C_in, C_out] and reshaped (rank 3), every glorot kernel drawn as one flat "
           "vector of its own length (flat, the package before), and every kernel the start of a "
           "flat draw of a padded length, one compiled program per length (padded, the package: "
           "`models.layers.draw_flat`, `xmodality_lite.prng`); medians of "
           f"{r['rows'][0]['rounds']} rounds. Every shape drawn is one compiled program, so a "
           "build is mostly compilation.", ""]
    ways = [w for w in ("flax", "rank3", "flat", "padded") if w in r["rows"][0]]
    last = ways[-1]
    body = [[x["model"], x["profile"], *(f"{x[w]['build_s']:.1f}" for w in ways),
             f"{x['flat']['build_s'] / x[last]['build_s']:.2f}×",
             f"{x['flax']['build_s'] / x[last]['build_s']:.2f}×",
             " → ".join(f"{x[w]['compile_s']:.1f}" for w in ways),
             " → ".join(f"{x[w]['compiles']:.0f}" for w in ways),
             "yes" if x["same_params"] else "**no**"]
            for x in r["rows"]]
    names = {"flax": "build s flax", "rank3": "rank 3", "flat": "flat", "padded": "padded"}
    out += _table(["model", "profile", *(names[w] for w in ways), f"{last} vs flat",
                   f"{last} vs flax", "compile s", "programs compiled",
                   "parameters bit for bit equal"], body)
    if not r.get("abstract"):
        return out
    out += ["The same model with shapes only, at the paper size (what `count_params`, "
            "`model_flops` and `load_model` start from): `flax.nnx.eval_shape` against the "
            "package's `models.eval_shape`, which traces the same constructor without building "
            "the origin message of every `tracer.sharding` error that flax's RNG counters raise "
            f"and catch (medians of {r['abstract'][0]['rounds']} fresh processes each).", ""]
    body = [[x["model"], f"{x['params']:,}", f"{x['nnx']:.2f}", f"{x['package']:.2f}",
             f"{x['nnx'] / x['package']:.1f}×", "yes" if x["same_shapes"] else "**no**"]
            for x in r["abstract"]]
    return out + _table(["model", "parameters", "nnx.eval_shape s", "models.eval_shape s",
                         "speed-up", "same paths and shapes"], body)


def _dit_ceiling(r: dict) -> list[str]:
    best, fl = r["gemm_best_gflops"], r["gflops_b1"]
    own = [v for k, v in r["gemm_gflops"].items() if k.startswith("256x")]
    bound = 7 * 4 * r["params"] / (r["triad_gb_s"] * 1e9)  # Adam: read p, g, m, v; write p, m, v
    rows = [("forward, batch 1", r["forward_s"], fl),
            ("gradient alone (value_and_grad), batch 2", r["grad_s"], 3 * 2 * fl),
            ("Adam update alone", r["adam_s"], None),
            ("train step (gradient + Adam), batch 2", r["train_s"], 3 * 2 * fl)]
    body = [[what, f"{t:.3f}", "–" if f is None else f"{f / t:.0f}",
             "–" if f is None else f"{f / t / best:.2f}"] for what, t, f in rows]
    work, in_model = 3 * 2 * fl, fl / r["forward_s"]  # the forward's own rate, in the model
    ideal, real = work / best + bound, work / in_model + bound
    out = ["## 13. DiT-L/16 at the paper size against this CPU's ceilings", "",
           f"`benchmarks/bench_dit_ceiling.py`: one process, float32, medians of {r['repeats']}; "
           f"ceilings measured first in the same process: float32 GEMM **{best:.0f}** GFLOP/s "
           f"(best of DiT-L/16's own shapes; {min(own):.0f}–{max(own):.0f} at batch 1's 256 "
           f"tokens), memory bandwidth **{r['triad_gb_s']:.1f}** GB/s (triad). GFLOP/s = XLA's "
           f"forward FLOPs ({fl:.1f} GFLOP at batch 1, × 3 × 2 for the batch-2 gradient) ÷ time. "
           "The gradient alone returns a fresh 2 GiB gradient each call, where the train step "
           "reuses donated buffers: it can take longer than the whole step.", ""]
    out += _table(["what", "s", "GFLOP/s", "÷ best GEMM"], body)
    others = other_machines("dit_ceiling")
    if others:
        out += ["Each other machine kind's latest run (÷ its own best GEMM):", ""]
        out += _table(["machine", "run at", "commit", "GEMM GFLOP/s", "forward", "gradient",
                       "train step"],
                      [[o["machine"]["cpu"], o["date"][:10], f"`{o['commit']}`",
                        f"{o['gemm_best_gflops']:.0f}"]
                       + [f"{n * o['gflops_b1'] / o[k] / o['gemm_best_gflops']:.2f}"
                          for k, n in (("forward_s", 1), ("grad_s", 6), ("train_s", 6))]
                       for o in others])
    return out + [
        f"The Adam update moves 7 × 4 bytes per parameter ({r['params'] / 1e6:.0f} M): at least "
        f"{bound:.2f} s at this bandwidth ({r['adam_s'] / bound:.1f}× that here). A batch-2 train "
        f"step is therefore at most {work / ideal / best:.2f} of the GEMM ceiling even with every "
        f"GEMM at the ceiling and Adam at its bound ({ideal:.2f} s), and at most "
        f"{work / real / best:.2f} with the gradient at the rate the forward reaches in the model "
        f"({in_model:.0f} GFLOP/s; {real:.2f} s).", ""]


def _sampler_sweep(r: dict) -> list[str]:
    out = ["## 14. A sweep over step counts: one loop program, or a scan per count", "",
           "`benchmarks/bench_sampler_sweep.py`: lesson 7's sweep at the `cpu` profile (random "
           f"weights): `translate_slices` on {r['slices']} slices in batches of {r['batch']}, "
           f"DDPM and DDIM at {', '.join(map(str, r['steps']))} steps, in that order. *scan*: "
           f"the package at `{r['baseline']}`, one `lax.scan` program per step count; *loop*: "
           "this checkout, one `fori_loop` program per (model, shape), the step count and the "
           "sampler arguments (z_1 and the keys drawn by one program per shape, λ by a tiny one "
           "per step count). Fresh processes, compilation cache off, the sides alternating. First "
           "call = compilation + sampling, what a reader waits for; then = the same call again, "
           "sampling alone.", ""]
    body, totals = [], []
    for m in r["models"]:
        for a, b in zip(m["scan"], m["loop"], strict=True):
            body.append([m["model"], a["sampler"], str(a["steps"]), _f(a["first_s"]),
                         _f(b["first_s"]), _f(a["run_s"]), _f(b["run_s"]),
                         "equal" if a["checksum"] == b["checksum"] else
                         f"{abs(a['checksum'] - b['checksum']) / a['checksum']:.0e}"])
        first = [sum(x["first_s"] for x in m[side]) for side in ("scan", "loop")]
        run = [sum(x["run_s"] for x in m[side]) for side in ("scan", "loop")]
        totals.append([m["model"], _f(first[0], 1), _f(first[1], 1), f"{first[0] / first[1]:.2f}×",
                       _f(run[0], 1), _f(run[1], 1), f"{run[1] / run[0]:.2f}"])
    out += _table(["model", "sampler", "steps", "first call s, scan", "loop", "then s, scan",
                   "loop", "Σ|x| equal (or relative difference)"], body)
    out += ["The whole sweep (sums of the rows above):", ""]
    return out + _table(["model", "first calls s, scan", "loop", "speed-up", "sampling alone s, "
                         "scan", "loop", "loop ÷ scan"], totals)


def _suite_census(r: dict) -> list[str]:
    whole = "compile_census" in r  # since session 16: the whole suite, every process
    out = ["## 15. Where the test suite's time goes: compilation", "",
           "`benchmarks/bench_suite_census.py`: `make test`'s suite"
           + ("" if whole else " without the book")
           + " (two workers, whole files, smoke profile, empty data and compilation caches), with "
           "a plugin that sums, per test, the seconds JAX reports in the test's own process for "
           "tracing, lowering and XLA's backend compilation. Seconds of both workers together; "
           "files that start processes (the CLI, fresh interpreters, the book's notebook kernels) "
           f"compile in those, which the plugin does not see. The suite: {r['wall_s']:.0f} s wall "
           f"({r['summary']}).", ""]
    share = r["in_process_backend_s"] / r["in_process_wall_s"]
    out += _table(["tests", "test time s", "XLA backend compile s", "tracing s", "lowering s",
                   "files that start no process: s", "of which compile s"],
                  [[str(r["tests"]), _f(r["test_s"], 0), _f(r["backend_s"], 0),
                    _f(r["trace_s"], 0), _f(r["lower_s"], 0), _f(r["in_process_wall_s"], 0),
                    f"{_f(r['in_process_backend_s'], 0)} ({share:.0%})"]])
    out += _table(["file", "tests", "s", "compile s", "starts processes"],
                  [[f"`{f['file']}`", str(f["tests"]), _f(f["wall_s"], 1),
                    _f(f["backend_s"], 1), "yes" if f["starts_processes"] else ""]
                   for f in r["files"]])
    out += _table(["slowest tests", "s", "compile s"],
                  [[f"`{t['id']}`", _f(t["wall_s"], 1), _f(t["backend_s"], 1)]
                   for t in r["slowest"]])
    if not whole:
        return out
    c = r["compile_census"]
    out += ["**Every process** (`benchmarks/compile_log/sitecustomize.py`: the pytest workers, the "
            "processes the tests start, the notebook kernels; each compilation charged to the "
            "notebook whose kernel made it, else to the running test's file). Seconds to get "
            "each program's executable: compiled, or loaded from the persistent cache another "
            f"process filled. {c['processes']} processes got programs from XLA.", ""]
    out += _table(["", "programs compiled", "compile s", "loaded from the cache", "load s"],
                  [[k, str(c[key]["compiles"]), _f(c[key]["compile_s"], 0),
                    str(c[key]["loads"]), _f(c[key]["load_s"], 0)]
                   for k, key in (("whole suite", "all"), ("the book's notebooks", "book"))])
    out += _table(["who compiles", "programs", "compile s", "loads", "load s"],
                  [[f"`{o['owner']}`", str(o["compiles"]), _f(o["compile_s"], 1),
                    str(o["loads"]), _f(o["load_s"], 1)] for o in c["owners"][:15]])
    out += _table(["notebook", "executed s", "programs compiled", "compile s", "loaded", "load s"],
                  [[n["notebook"], _f(n["executed_s"], 1), str(n["compiles"]),
                    _f(n["compile_s"], 1), str(n["loads"]), _f(n["load_s"], 1)]
                   for n in c["notebooks"]])
    out += _table(["program", "compiled", "compile s", "by how many owners", "loaded"],
                  [[f"`{g['program']}`", str(g["compiles"]), _f(g["compile_s"], 1),
                    str(g["owners"]), str(g["loads"])] for g in c["programs"][:12]])
    if "repeats" not in c:
        return out
    rep = c["repeats"]
    out += [f"**The same program compiled twice** (same text, sha-256 of its StableHLO): "
            f"{rep['programs']} programs, {rep['extra_compiles']} compilations more than needed, "
            f"{_f(rep['extra_s'], 1)} s of the {_f(c['all']['compile_s'], 0)} s above: the rest "
            "are programs compiled once each.", ""]
    return out + _table(["program", "compiled", "extra s", "by"],
                        [[f"`{w['program']}`", str(w["times"]), _f(w["extra_s"], 1),
                          ", ".join(f"`{o}`" for o in w["owners"])] for w in rep["worst"]])


def _flat_adam(r: dict) -> list[str]:
    out = ["## 16. Adam on one flat vector, or per parameter tensor", "",
           "`benchmarks/bench_flat_adam.py`: the train step of `training.make_train_step` (the "
           "profile's batch, Adam schedule and EMA) with the package's Adam, one update per "
           "parameter tensor, and with `optax.flatten` around the same Adam (gradients "
           "concatenated, the moments kept as one vector each, the update split back). Fresh "
           f"processes, compilation cache off, the sides alternating, {r['rounds']} round(s); "
           f"step = median of the {r['steps'] - 1} steps after the first. Max |Δθ|: the weights "
           f"after {r['steps']} steps from the same start (every 97th), against the largest "
           "weight.", ""]
    body = []
    for x in r["rows"]:
        (c0, c1), (s0, s1), (f0, f1) = x["compile_s"], x["step_s"], x["fusions"]
        body.append([x["profile"], x["model"], str(x["tensors"]), f"{f0:,} → {f1:,}",
                     f"{c0:.1f} → {c1:.1f}", f"{c0 / c1:.2f}×", f"{1e3 * s0:.1f} → {1e3 * s1:.1f}",
                     f"{s0 / s1:.2f}×",
                     "equal" if x["bit_equal"] else
                     f"{x['max_weight_diff']:.1e} (of {x['max_weight']:.2f})"])
    out += _table(["profile", "model", "tensors", "kernels", "compile s", "compile speed-up",
                   "step ms", "step speed-up", "max |Δθ|"], body)
    differ = [x for x in r["rows"] if not x["bit_equal"]]
    speedups = [v for x in r["rows"] for v in (x["compile_s"][0] / x["compile_s"][1],
                                              x["step_s"][0] / x["step_s"][1])]
    out += [f"Compile and step speed-ups range from {min(speedups):.2f}× to {max(speedups):.2f}×: "
            + ("faster everywhere" if min(speedups) >= 1.0 else "not faster everywhere") + ". "
            + (f"The weights differ in the last bits in {len(differ)} of {len(r['rows'])} cases "
               "(the same arithmetic in other kernels rounds differently), and `make checkpoints` "
               "reproduces the shipped weights bit for bit (§10): adopting it would mean "
               "retraining and re-recording them. " if differ else
               "The weights are bit for bit the same. ")
            + ("Not adopted." if differ or min(speedups) < 1.0 else ""), ""]
    return out


RENDER = {"flat_adam": _flat_adam, "suite_census": _suite_census, "sampler_sweep": _sampler_sweep, "dit_ceiling": _dit_ceiling, "model_build": _model_build, "test_suite": _test_suite, "xla_flags": _xla_flags, "checkpoints": _checkpoints, "cpu_profile": _cpu_profile, "models": _models, "sampler": _sampler, "volume": _volume,
          "registration": _registration, "notebooks": _notebooks, "compilation": _compilation,
          "teaching": _teaching}


def render() -> Path:
    from xmodality_lite.io import atomic_write_text

    results = {s: latest_result(s) for s in SECTIONS}
    m, v = machine(), versions()
    lines = ["# Benchmark results", "",
             "Generated by `python -m benchmarks.run_all` (see `benchmarks/README.md`). "
             "Timings are measurements on the machines the table below names, never assertions; "
             "the CPU may be "
             "shared, so compare ratios measured within one run and read the load average: where it "
             "exceeds the number of cores, wall times include waiting for a core, and the CPU "
             "time (CPU s) is the better measure of the work done.", "",
             f"- rendered: {datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds')}"
             f" at commit `{git_commit()}`",
             f"- rendered on: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, {m['os']}",
             "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items()), "",
             "Machine kinds differ more than runs on one kind do (§8 shows the same comparison "
             "on two), so each CPU model's latest run of a section is kept "
             "(`results/<section>@<kind>.json`) and listed here; a section's text shows the "
             "latest run of all.", "",
             "| section | machine | run at (UTC) | commit | load avg before → after (1/5/15 min) |",
             "|---|---|---|---|---|"]
    for s, r in results.items():
        for run in ([r] if r is not None else []) + other_machines(s):
            cpu = (run.get("machine") or {}).get("cpu", "?")
            shown = "" if run is r else " (another kind's latest)"
            lines.append(f"| {s}{shown} | {cpu} | {run['date']} | `{run['commit']}` | "
                         f"{run.get('load_before')} → {run.get('load_after')} |")
    lines.append("")
    for s, r in results.items():
        if r is not None:
            lines += RENDER[s](r)
    path = HERE / "RESULTS.md"
    atomic_write_text(path, "\n".join(lines).rstrip() + "\n")
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(DEFAULT),
                        help=f"comma list of sections from {list(SECTIONS)}")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke check")
    parser.add_argument("--render", action="store_true", help="re-render RESULTS.md only")
    args = parser.parse_args(argv)
    if not args.render:
        chosen = [s.strip() for s in args.only.split(",") if s.strip()]
        if unknown := sorted(set(chosen) - set(SECTIONS)):
            raise SystemExit(f"unknown section(s) {unknown}; choose from {list(SECTIONS)}")
        for section in chosen:
            log(f"== {section}")
            module = importlib.import_module(f"benchmarks.bench_{section}")
            module.main(["--quick"] if args.quick else [])
    log(f"wrote {render()}")


if __name__ == "__main__":
    main()
