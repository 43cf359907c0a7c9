"""Scaled dot-product attention, softmax(Q Kᵀ / √d) V (Vaswani et al. 2017), laid out for XLA's CPU.

Two kernels compute it: ours (:func:`cpu_dot_product_attention`, below) and XLA's
(``jax.nn.dot_product_attention``). They give the same result to float32 rounding (tested),
and which is faster depends on the shape and on the machine: ours was 1.3–1.7× faster at the
64- and 256-token shapes of the cpu models and 0.9–1.0× at some 32- and 64-token ones on one
machine (``benchmarks/RESULTS.md`` §8), and 1.19× *slower* at U-ViT's paper shape on another.
So :func:`dot_product_attention` lets each shape choose (:func:`kernel_for`):

* on any backend but the CPU, and for sequences shorter than ``MIN_TOKENS`` = 8, XLA's;
* otherwise the first use of a shape on a machine times both, forward + VJP, and takes ours
  only if it is at least ``MARGIN`` faster. The choice is written to a table in the per-user
  cache (``<cache>/attention/<machine>.json``, keyed by CPU, core count, JAX version and
  ``XLA_FLAGS``) and read back by every later process, so a machine keeps its choices and its
  results stay the same from run to run;
* ``$XMODALITY_ATTENTION`` = ``ours`` or ``xla`` fixes the kernel for every shape, nothing
  measured; ``auto`` (the default) chooses as above. ``ours`` is what the shipped models were
  trained with: ours from ``OURS_MIN_TOKENS`` = 32 tokens, XLA's at the conv stages' 8- and
  16-token rows, where ours was slower on the machine they were trained on (it is faster on
  others, so ``auto`` measures from 8). ``make checkpoints`` and the test suite set it, so
  that a retraining reproduces the shipped models bit for bit on that kind of machine.

Our kernel:

* the heads are moved next to the batch axis once ([B, T, heads, d] → [B, heads, T, d]), so
  both products are plain batched GEMMs with no per-call layout changes;
* the softmax (:func:`softmax_last`) takes the scale 1/√d and has its own VJP,
  ∂L/∂s = scale · p ⊙ (g − Σ_j g_j p_j). Its row sum is materialised
  (``optimization_barrier``) so that XLA does not fuse it into the elementwise product and
  recompute it for every element of the row; the scale enters the backward as a runtime
  scalar, since scaling the logits by a constant that the forward and the backward share made
  XLA write a [B, heads, T, T] array of it on every differentiated call (67 MB in the cpu
  ADM's 64² rows). The same arithmetic in the same order as scaling Q Kᵀ: the same bits;
* in the gradient, the two products that contract the [.., T, T] logits or probabilities
  along their rows (∂L/∂k = gᵀ q, ∂L/∂v = pᵀ g) are computed transposed, (qᵀ g)ᵀ, so that the
  large operand is a plain right-hand operand of a library GEMM (:func:`_rows_contracted`;
  heads up to ``ROWS_CONTRACTED_MAX_WIDTH`` wide): the same sums, bit-identical at the cpu
  models' shapes on the machine measured, the kernel 1.2–1.7× faster forward + VJP there;
* a call that is not differentiated (sampling) normalises after the second product,
  (Σ_s e_ts v_s) / Σ_s e_ts, dividing [.., T, d] instead of writing the [.., T, T]
  probabilities: 1.5–1.6× faster alone, ~1.1× on a cpu ADM forward. Under ``grad`` the
  probabilities are kept for the backward, as before (the same bits in training).

The transformer blocks (U-ViT, DiT) call :func:`dot_product_attention`. The conv stages' row
attention (ADM, U-ViT) calls :func:`fused_qkv_attention`, which also owns the q/k/v
projections: a call that is not differentiated runs :func:`tokens_last_forward` where
:func:`tokens_last_for` chose it (1.3–1.4× faster at the cpu ADM's 64-token rows), and every
gradient runs the projections around the chosen kernel.
``softmax_last`` is a ``jax.custom_vjp``: reverse mode works, forward mode (``jvp``) through
our kernel does not.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import os
import platform
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Literal, get_args

import jax
import jax.numpy as jnp
import numpy as np

MIN_TOKENS = 8  # shorter sequences: XLA's attention, unmeasured
OURS_MIN_TOKENS = 32  # $XMODALITY_ATTENTION=ours: XLA's below, as the shipped models were trained
ROWS_CONTRACTED_MAX_WIDTH = 16  # wider heads: XLA's own gradient products (rows_contracted_for)
KERNELS_VERSION = 3  # 2: row-contracted gradient products (_rows_contracted); 3: to d = 16
MARGIN = 1.05  # ours is chosen only where it is at least 5 % faster than XLA's
ENV_VAR = "XMODALITY_ATTENTION"
MODES = ("auto", "ours", "xla")
Kernel = Literal["ours", "xla"]
_CHOSEN: dict[str, str] = {}  # this process's choices, by table key
_FIXED: contextvars.ContextVar[Kernel | None] = contextvars.ContextVar("attention_kernel",
                                                                      default=None)


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def softmax_last(logits: jax.Array, scale: float = 1.0) -> jax.Array:
    """softmax(logits · scale) over the last axis of float32 logits."""
    return jax.nn.softmax(logits * scale if scale != 1.0 else logits, axis=-1)


def _softmax_last_fwd(logits, scale):
    p = softmax_last(logits, scale)
    return p, p


def _softmax_last_bwd(scale, p, g):
    row = jax.lax.optimization_barrier(jnp.sum(g * p, axis=-1, keepdims=True))
    ds = p * (g - row)
    if scale == 1.0:
        return (ds,)
    # behind a barrier the scale is a value XLA broadcasts inside the product's kernel, not a
    # constant whose [.., T, T] broadcast it would share with the forward and materialise
    return (ds * jax.lax.optimization_barrier(jnp.asarray(scale, ds.dtype)),)


softmax_last.defvjp(_softmax_last_fwd, _softmax_last_bwd)


def _rows_contracted(a: jax.Array, m: jax.Array) -> jax.Array:
    """Σ_t a[.., t, h] m[.., t, s] → [.., s, h], as (aᵀ m)ᵀ: the gradient products of attention
    whose large operand m [.., T, T] is contracted along its rows.

    XLA writes them as a batched product with m on the left, transposed (its own dot: the CPU
    library YNNPACK takes no transposed left operand), which ran at ~7 GFLOP/s at the ADM's 64²
    rows. Behind optimisation barriers, which keep XLA from folding the transposes back, the
    small a [.., T, d] is transposed once, m stays a plain right operand and the [.., d, T]
    result is transposed back: the same sums, YNNPACK's products.
    """
    a_t = jax.lax.optimization_barrier(jnp.swapaxes(a, -1, -2))
    return jnp.swapaxes(jax.lax.optimization_barrier(jnp.einsum("bnht,bnts->bnhs", a_t, m)),
                        -1, -2)


@jax.custom_vjp
def _scores(q: jax.Array, k: jax.Array) -> jax.Array:
    """The logits q kᵀ [B, heads, T, T] of float32 heads-first q, k [B, heads, T, d]; in the
    VJP, ∂L/∂k = gᵀ q by :func:`_rows_contracted`."""
    return jnp.einsum("bnth,bnsh->bnts", q, k)


def _scores_fwd(q, k):
    return _scores(q, k), (q, k)


def _scores_bwd(res, g):
    q, k = res
    return jnp.einsum("bnts,bnsh->bnth", g, k), _rows_contracted(q, g)


_scores.defvjp(_scores_fwd, _scores_bwd)


@jax.custom_vjp
def _mixed(p: jax.Array, v: jax.Array) -> jax.Array:
    """The values mixed by the probabilities, p v [B, heads, T, d] (float32); in the VJP,
    ∂L/∂v = pᵀ g by :func:`_rows_contracted`."""
    return jnp.einsum("bnts,bnsh->bnth", p, v)


def _mixed_fwd(p, v):
    return _mixed(p, v), (p, v)


def _mixed_bwd(res, g):
    p, v = res
    return jnp.einsum("bnth,bnsh->bnts", g, v), _rows_contracted(g, p)


_mixed.defvjp(_mixed_fwd, _mixed_bwd)


def rows_contracted_for(shape: tuple[int, ...], dtype) -> bool:
    """Whether the gradient of our kernel at heads-first ``shape`` [B, heads, T, d] computes its
    row-contracted products by :func:`_rows_contracted`: float32 on the CPU, heads at most
    ``ROWS_CONTRACTED_MAX_WIDTH`` wide. Our whole kernel, forward + VJP, on an Intel Xeon
    (RESULTS §8 has each cpu-model shape): 1.2× faster at the ADM's 64² rows (d = 4), 1.3–1.7×
    at its 16- and 32-token rows, 1.1–1.3× at d = 16; at the DiT's 256 tokens of width 32
    0.93–1.04× and at d = 64 (DiT-L/16) 0.85×, so XLA's form stays there."""
    return (jax.default_backend() == "cpu" and jnp.dtype(dtype) == jnp.float32
            and shape[-1] <= ROWS_CONTRACTED_MAX_WIDTH)


def _normalised_first(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """softmax(q kᵀ/√d) v for heads-first [B, heads, T, d]: the probabilities, then the product."""
    if rows_contracted_for(q.shape, q.dtype):
        return _mixed(softmax_last(_scores(q, k), q.shape[-1] ** -0.5), v)
    logits = jnp.einsum("bnth,bnsh->bnts", q, k, preferred_element_type=jnp.float32)
    probs = softmax_last(logits, q.shape[-1] ** -0.5).astype(v.dtype)
    return jnp.einsum("bnts,bnsh->bnth", probs, v)


@jax.custom_vjp
def _heads_first_attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """The same, normalised after the product: (Σ_s e_ts v_s) / Σ_s e_ts with
    e = exp(scale · (logits − row max)). The division touches [.., T, d] instead of [.., T, T],
    one pass less over the largest array: 1.5–1.6× faster at the ADM's 64² rows and the DiT's
    256 tokens. Used when the call is not differentiated (sampling); under ``grad``/``vjp`` the
    forward and its gradient are :func:`_normalised_first`'s (stores the probabilities for the
    backward, and keeps train steps' bits as they were)."""
    logits = jnp.einsum("bnth,bnsh->bnts", q, k, preferred_element_type=jnp.float32)
    e = jnp.exp((logits - logits.max(-1, keepdims=True)) * q.shape[-1] ** -0.5)
    out = jnp.einsum("bnts,bnsh->bnth", e.astype(v.dtype), v, preferred_element_type=jnp.float32)
    return (out / e.sum(-1, keepdims=True)).astype(v.dtype)


def _heads_first_attention_fwd(q, k, v):
    return jax.vjp(_normalised_first, q, k, v)  # (output, its VJP as the residual)


def _heads_first_attention_bwd(vjp, g):
    return vjp(g)


_heads_first_attention.defvjp(_heads_first_attention_fwd, _heads_first_attention_bwd)


def cpu_dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """Our kernel: heads next to the batch, two batched GEMMs with the softmax between."""
    q, k, v = (jnp.swapaxes(t, 1, 2) for t in (q, k, v))  # [B, heads, T, d]
    return jnp.swapaxes(_heads_first_attention(q, k, v), 1, 2)


def _fused_qkv(y: jax.Array, qkv_kernel: jax.Array, qkv_bias: jax.Array, out_kernel: jax.Array,
               out_bias: jax.Array, attend) -> jax.Array:
    """Projections around ``attend`` as the models have always computed them: q, k, v of the
    tokens [R, T, C] in one einsum, ``attend`` on [R, T, heads, d], the output projection."""
    q, k, v = jnp.einsum("rwc,cknd->krwnd", y, qkv_kernel) + qkv_bias[:, None, None]
    return jnp.einsum("rwnd,ndc->rwc", attend(q, k, v), out_kernel) + out_bias


def _fused_qkv_ours(*args):
    return _fused_qkv(*args, cpu_dot_product_attention)


def _fused_qkv_xla(*args):
    return _fused_qkv(*args, jax.nn.dot_product_attention)


FUSED_QKV = {"ours": _fused_qkv_ours, "xla": _fused_qkv_xla}


def tokens_last_forward(y: jax.Array, qkv_kernel: jax.Array, qkv_bias: jax.Array,
                        out_kernel: jax.Array, out_bias: jax.Array) -> jax.Array:
    """:func:`_fused_qkv` laid out with the tokens last (the forward alone).

    The projections write q and v as [R, heads, d, T] and k as [R, heads, T, d], so the logits
    come out transposed, lᵀ = k qᵀ [R, heads, T_key, T_query]: the softmax's max and sum run
    across rows, vectorised along the T queries, and oᵀ = v e [R, heads, d, T] has the short
    head width d as its rows. Normalised after the product, as :func:`_heads_first_attention`.
    With [.., T, d] operands and logits reduced along their last axis the same work ran
    1.3–1.4× slower at the cpu ADM's 64-token rows (head width 4). The 1/√d scale multiplies
    q, T·d numbers, instead of the T² logits: bit-identical where d is a power of 4 (the 64²
    rows' d = 4), float32 rounding elsewhere; 5–10 % of the layer's time at the 64² rows.
    """
    dtype = y.dtype
    wq, wk, wv = (qkv_kernel[:, i] for i in range(3))  # each [C, heads, d]
    scale = qkv_kernel.shape[-1] ** -0.5  # on the T·d queries, not the T² logits
    q = (jnp.einsum("rtc,cnd->rndt", y, wq) + qkv_bias[0][None, :, :, None]) * scale
    k = jnp.einsum("rtc,cnd->rntd", y, wk) + qkv_bias[1][None, :, None, :]
    v = jnp.einsum("rtc,cnd->rndt", y, wv) + qkv_bias[2][None, :, :, None]
    logits = jnp.einsum("rnsd,rndt->rnst", k, q, preferred_element_type=jnp.float32)
    e = jnp.exp(logits - logits.max(2, keepdims=True))
    o = jnp.einsum("rnds,rnst->rndt", v, e.astype(dtype), preferred_element_type=jnp.float32)
    o = (o / e.sum(2, keepdims=True)).astype(dtype)
    return jnp.einsum("rndt,ndc->rtc", o, out_kernel) + out_bias


@partial(jax.custom_vjp, nondiff_argnums=(0,))
def _tokens_last_attention(replaced, *args) -> jax.Array:
    """:func:`tokens_last_forward` when not differentiated; under ``grad``/``vjp`` the forward
    and its gradient are ``replaced``'s (``FUSED_QKV[kernel]``), so training keeps its bits."""
    return tokens_last_forward(*args)


def _tokens_last_attention_fwd(replaced, *args):
    return jax.vjp(replaced, *args)


def _tokens_last_attention_bwd(replaced, vjp, g):
    return vjp(g)


_tokens_last_attention.defvjp(_tokens_last_attention_fwd, _tokens_last_attention_bwd)


def fused_qkv_attention(y: jax.Array, qkv_kernel: jax.Array, qkv_bias: jax.Array,
                        out_kernel: jax.Array, out_bias: jax.Array) -> jax.Array:
    """Multi-head self-attention of tokens y [R, T, C] with the q/k/v projections stacked:
    ``qkv_kernel`` [C, 3, heads, d], ``qkv_bias`` [3, heads, d], ``out_kernel`` [heads, d, C],
    ``out_bias`` [C] → [R, T, C]. The conv stages' row attention (ADM, U-ViT).

    The projections around the kernel :func:`kernel_for` chooses at [R, T, heads, d]; where
    :func:`tokens_last_for` says so, a call that is not differentiated (sampling) runs
    :func:`tokens_last_forward` instead, and its gradient is still the chosen kernel's.
    """
    shape = (y.shape[0], y.shape[1], *qkv_kernel.shape[2:])
    replaced = FUSED_QKV[kernel_for(shape, y.dtype)]
    args = (y, qkv_kernel, qkv_bias, out_kernel, out_bias)
    if tokens_last_for(shape, y.dtype):
        return _tokens_last_attention(replaced, *args)
    return replaced(*args)


def attention_mode() -> str:
    """``$XMODALITY_ATTENTION``: ``auto`` (default), ``ours`` or ``xla``."""
    mode = os.environ.get(ENV_VAR, "").strip().lower() or "auto"
    if mode not in MODES:
        raise ValueError(f"{ENV_VAR}={mode!r}: expected one of {', '.join(MODES)}")
    return mode


def machine_id() -> str:
    """What a timing depends on: the CPU model, its core count, JAX's version, XLA_FLAGS and
    ``KERNELS_VERSION`` (a table measured against an older form of our kernel is not read)."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    from jax import version as jax_version

    parts = [cpu, str(os.cpu_count()), jax_version.__version__, os.environ.get("XLA_FLAGS", ""),
             f"kernels {KERNELS_VERSION}"]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def table_path() -> Path:
    """The machine's table of measured choices, in the per-user cache."""
    from xmodality_lite.config import user_cache_dir

    return user_cache_dir() / "attention" / f"{machine_id()}.json"


def _key(shape: tuple[int, ...], dtype) -> str:
    return "x".join(map(str, shape)) + f":{jnp.dtype(dtype).name}"


def measure_attention(shape: tuple[int, ...], dtype=jnp.float32, repeats: int = 5
                      ) -> dict[str, float]:
    """Seconds of one forward + VJP of each kernel at ``shape`` [B, T, heads, d] (the fastest of
    ``repeats`` runs, alternating the two, after a compiling call). Safe inside a trace."""
    with jax.ensure_compile_time_eval():  # run now, even while a model is being traced
        rng = np.random.default_rng(0)
        q, k, v, g = (jnp.asarray(rng.standard_normal(shape, np.float32), dtype) for _ in range(4))
        fns = {name: jax.jit(lambda q, k, v, g, f=f: jax.vjp(f, q, k, v)[1](g))
               for name, f in (("ours", cpu_dot_product_attention),
                               ("xla", jax.nn.dot_product_attention))}
        return _fastest(fns, (q, k, v, g), repeats)


def measure_tokens_last(shape: tuple[int, ...], dtype=jnp.float32, repeats: int = 5
                        ) -> dict[str, float]:
    """Seconds of one forward of :func:`tokens_last_forward` (``"tokens_last"``) and of the path
    it replaces at ``shape`` [R, T, heads, d] (``"replaced"``: the projections around the kernel
    :func:`kernel_for` chose), the fastest of ``repeats`` alternating runs. Safe inside a trace."""
    replaced = FUSED_QKV[kernel_for(shape, dtype)]
    with jax.ensure_compile_time_eval():
        fns = {"tokens_last": jax.jit(tokens_last_forward), "replaced": jax.jit(replaced)}
        return _fastest(fns, row_attention_inputs(shape, dtype), repeats)


def row_attention_inputs(shape: tuple[int, ...], dtype=jnp.float32, seed: int = 0
                         ) -> tuple[jax.Array, ...]:
    """Random arguments of :func:`fused_qkv_attention` for ``shape`` [R, T, heads, d]: tokens
    y [R, T, C] ~ N(0, 1) and, scaled by 1/√C, the stacked q/k/v kernel [C, 3, heads, d] and bias
    [3, heads, d], the output kernel [heads, d, C] and bias [C] (C = heads·d). From ``seed``."""
    r, t, heads, d = shape
    c = heads * d
    rng = np.random.default_rng(seed)
    shapes = ((r, t, c), (c, 3, heads, d), (3, heads, d), (heads, d, c), (c,))
    return tuple(jnp.asarray(rng.standard_normal(s, np.float32) * (1.0 if i == 0 else c ** -0.5),
                             dtype) for i, s in enumerate(shapes))


def _fastest(fns: dict, args, repeats: int) -> dict[str, float]:
    best = dict.fromkeys(fns, float("inf"))
    for fn in fns.values():
        jax.block_until_ready(fn(*args))
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn(*args))
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def choose(timings: dict[str, float], new: str = "ours", replaced: str = "xla") -> str:
    """``new`` (our kernel) only if ``replaced`` (XLA's) takes at least ``MARGIN`` times as long."""
    return new if timings[replaced] >= MARGIN * timings[new] else replaced


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock beside ``path`` (POSIX), so that processes measure a shape once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: no lock; at worst two processes measure the same shape
        yield
        return
    with open(path.with_suffix(".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # absent, or unreadable: measure again
        return {}


@contextlib.contextmanager
def fixed_kernel(kernel: Kernel) -> Iterator[None]:
    """Attention traced inside this block runs ``kernel`` (``ours`` from ``OURS_MIN_TOKENS``
    tokens), nothing measured: what ``$XMODALITY_ATTENTION`` does for a whole process, for one
    block of code (and it takes precedence over it). ``models.model_flops`` counts with XLA's
    kernel this way."""
    if kernel not in get_args(Kernel):
        raise ValueError(f"kernel must be 'ours' or 'xla'; got {kernel!r}")
    token = _FIXED.set(kernel)
    try:
        yield
    finally:
        _FIXED.reset(token)


def _unmeasured(shape: tuple[int, ...]) -> Kernel | None:
    """The kernel at ``shape`` where no measurement decides: XLA's off the CPU and below
    ``MIN_TOKENS``; with a kernel fixed (:func:`fixed_kernel`, ``$XMODALITY_ATTENTION``), ours
    from ``OURS_MIN_TOKENS`` tokens if it is ours, else XLA's. ``None``: auto, measure."""
    if jax.default_backend() != "cpu" or shape[1] < MIN_TOKENS:
        return "xla"
    fixed = _FIXED.get()
    mode = fixed if fixed is not None else attention_mode()
    if mode == "auto":
        return None
    return "ours" if mode == "ours" and shape[1] >= OURS_MIN_TOKENS else "xla"


def kernel_for(shape: tuple[int, ...], dtype=jnp.float32) -> Kernel:
    """Which kernel :func:`dot_product_attention` runs at ``shape`` [B, T, heads, d] (see above)."""
    if (kernel := _unmeasured(shape)) is not None:
        return kernel
    key = _key(shape, dtype)
    if key not in _CHOSEN:
        _CHOSEN[key] = _from_table(key, lambda: measure_attention(shape, dtype), ("ours", "xla"))
    return _CHOSEN[key]


def tokens_last_for(shape: tuple[int, ...], dtype=jnp.float32) -> bool:
    """Whether an undifferentiated :func:`fused_qkv_attention` at ``shape`` [R, T, heads, d]
    runs :func:`tokens_last_forward`: as :func:`kernel_for` decides for ours — never off the
    CPU, below ``MIN_TOKENS`` or with XLA's kernel fixed; with ours fixed from
    ``OURS_MIN_TOKENS`` tokens; otherwise
    measured once per shape on this machine against the path it replaces (forward alone, at
    least ``MARGIN`` faster) and kept in the same table, under ``tokens_last/<shape>``."""
    if (kernel := _unmeasured(shape)) is not None:
        return kernel == "ours"
    key = "tokens_last/" + _key(shape, dtype)
    if key not in _CHOSEN:
        _CHOSEN[key] = _from_table(key, lambda: measure_tokens_last(shape, dtype),
                                   ("tokens_last", "replaced"))
    return _CHOSEN[key] == "tokens_last"


def _from_table(key: str, measure, names: tuple[str, str]) -> str:
    """The machine table's choice for ``key`` between ``names`` (the new path, the one it
    replaces), measured first (``measure()``: seconds of each, by name) and written if the table
    has none."""
    from xmodality_lite.io import atomic_write_text

    path, timings = table_path(), None
    try:
        with _locked(path):
            table = _read(path)
            if key not in table:
                timings = measure()
                table[key] = {"kernel": choose(timings, *names),
                              **{f"{name}_s": timings[name] for name in names},
                              "measured": time.strftime("%Y-%m-%dT%H:%M:%S")}
                atomic_write_text(path, json.dumps(table, indent=1, sort_keys=True))
            return table[key]["kernel"]
    except OSError:  # a cache that cannot be written: this process's own measurement
        return choose(timings or measure(), *names)


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """softmax(q kᵀ / √d) v for q, k, v [B, T, heads, d] → [B, T, heads, d] (no mask, no bias).

    :func:`cpu_dot_product_attention` or ``jax.nn.dot_product_attention``, as
    :func:`kernel_for` chooses for this shape on this machine.
    """
    if not (q.ndim == k.ndim == v.ndim == 4) or q.shape != k.shape or k.shape != v.shape:
        raise ValueError("q, k, v must share one shape [B, T, heads, d]; got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if kernel_for(tuple(q.shape), q.dtype) == "ours":
        return cpu_dot_product_attention(q, k, v)
    return jax.nn.dot_product_attention(q, k, v)
