"""Per-model XLA CPU options (``models.compiler``): who asks for them, where they reach the
compiled program, when they are left out, and that results stay equal to float32 rounding.

Reference: the same program compiled with XLA's defaults (``jax.jit`` without options).
"""

import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from xmodality_lite import training
from xmodality_lite.config import get_profile
from xmodality_lite.diffusion import functional, samplers
from xmodality_lite.models import UNet, _apply, _forward, compiler, forward

DOT_REDUCE = (("xla_cpu_experimental_ynn_fusion_type",
               "LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_REDUCE"),)


@pytest.fixture(scope="module")
def models():
    prof = get_profile("smoke")
    return {name: training.build(name, prof, 0) for name in ("unet", "adm", "uvit", "dit")}


def _in_ynn_fusions(hlo: str, op: str) -> int:
    """How many ``op`` instructions the compiled program hands to YNNPACK (in a ``ynn_fusion``)."""
    called = set(re.findall(r"%ynn_fusion[.\d]* = .*?calls=(%[\w.\-]+)", hlo))
    computations = re.split(r"\n(?=\S)", hlo)  # one computation per block, its name first
    return sum(block.count(f" {op}(") for block in computations
               if block.split(" ", 1)[0] in called)


def test_who_asks_for_which_program_and_every_holder_of_a_graph_is_read(models):
    asked = {(name, program): compiler.requested(model, program)
             for name, model in models.items() for program in compiler.PROGRAMS}
    assert asked == {("unet", "train"): DOT_REDUCE, ("unet", "forward"): DOT_REDUCE,
                     ("adm", "train"): DOT_REDUCE, ("adm", "forward"): (),
                     ("uvit", "train"): DOT_REDUCE, ("uvit", "forward"): (),
                     ("dit", "train"): (), ("dit", "forward"): ()}
    graphdef, _ = nnx.split((models["adm"], None, models["adm"]))  # a train step's tuple
    assert compiler.requested(graphdef, "train") == DOT_REDUCE
    assert compiler.requested(functional(models["unet"])[0], "forward") == DOT_REDUCE  # samplers'
    assert compiler.requested(lambda x: x, "train") == ()
    with pytest.raises(ValueError, match="program must be one of train, forward; got 'sample'"):
        compiler.requested(models["unet"], "sample")


def test_options_are_off_by_variable_and_off_the_cpu(models, monkeypatch):
    assert compiler.compiler_options(models["unet"], "forward") == DOT_REDUCE
    for value in ("off", "0", "no"):
        monkeypatch.setenv(compiler.ENV_VAR, value)
        assert compiler.compiler_options(models["unet"], "forward") == ()
    monkeypatch.delenv(compiler.ENV_VAR)
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert compiler.compiler_options(models["unet"], "forward") == ()


def test_an_option_this_xla_rejects_is_dropped_with_a_warning(monkeypatch):
    bogus = (("xla_cpu_no_such_option", "1"),)
    monkeypatch.setattr(UNet, "xla_cpu_options", {"forward": dict(bogus)})
    model = training.build("unet", get_profile("smoke"), 0)
    with pytest.warns(RuntimeWarning, match="xla_cpu_no_such_option"):
        assert compiler.compiler_options(model, "forward") == ()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # checked once per option set: no second warning
        assert compiler.compiler_options(model, "forward") == ()


def test_the_unets_forward_keeps_convolutions_out_of_ynnpack_and_equals_the_default(models):
    """Convolutions run as XLA's own, reductions in YNNPACK (the option is a list of two)."""
    model = models["unet"]
    graphdef, state = nnx.split(model)
    x = jax.random.uniform(jax.random.key(0), (2, 32, 32, 1), minval=-1.0, maxval=1.0)
    default = jax.jit(_apply, static_argnums=0).lower(graphdef, state, x).compile().as_text()
    ours = _forward(DOT_REDUCE).lower(graphdef, state, x).compile().as_text()
    dot_only = _forward((("xla_cpu_experimental_ynn_fusion_type", "LIBRARY_FUSION_TYPE_DOT"),)
                        ).lower(graphdef, state, x).compile().as_text()
    assert _in_ynn_fusions(default, "convolution") > 0  # the check can see one
    assert _in_ynn_fusions(ours, "convolution") == 0
    assert _in_ynn_fusions(ours, "reduce") > 0
    assert _in_ynn_fusions(dot_only, "reduce") == 0  # what the second fusion type adds
    y = forward(model, x)
    ref = jax.jit(_apply, static_argnums=0)(graphdef, state, x)
    np.testing.assert_allclose(y, ref, atol=1e-5 * float(jnp.abs(ref).max()))


def test_train_step_and_sampler_compile_with_the_models_options(models, monkeypatch):
    """The train step and the sampler loop pass the model's options for them to ``jax.jit``."""
    seen = []
    real = compiler.jit

    def spy(fun, options, **kwargs):
        seen.append(options)
        return real(fun, options, **kwargs)

    monkeypatch.setattr(compiler, "jit", spy)
    prof = get_profile("smoke")
    for name in ("unet", "adm", "dit"):
        model = training.build(name, prof, 0)
        optimizer = training.make_optimizer(model, prof)
        graphdef, _ = nnx.split((model, optimizer, None))
        training.make_train_step(graphdef, gamma=5.0, ema_decay=0.0, ema_warmup=True)
    assert seen == [DOT_REDUCE, DOT_REDUCE, ()]
    seen.clear()
    samplers._compiled.cache_clear()  # compiled before by another test: build it again
    cond = jnp.zeros((1, 32, 32, 1))
    for name in ("unet", "adm"):  # the U-Net ignores x_t and λ, but samples like any model
        samplers.sample("ddim", models[name], cond, jax.random.key(0), steps=2)
    assert seen == [DOT_REDUCE, ()]
    samplers._compiled.cache_clear()  # not keep the spy's compilations for later tests
