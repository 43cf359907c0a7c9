"""Diffusion core in log-SNR form: schedules, v-parametrisation, losses and samplers."""

from xmodality_lite.diffusion.losses import (
    WEIGHTINGS,
    diffusion_loss,
    min_snr_weight,
    regression_loss,
)
from xmodality_lite.diffusion.parametrisation import (
    alpha_sigma,
    eps_from_v,
    q_sample,
    v_target,
    x0_from_v,
)
from xmodality_lite.diffusion.samplers import (
    SAMPLERS,
    Trajectory,
    ddim_sample,
    ddim_step,
    ddpm_posterior,
    ddpm_sample,
    ddpm_step,
    functional,
    get_sampler,
    sample,
    sample_slices,
)
from xmodality_lite.diffusion.schedules import (
    SCHEDULES,
    get_schedule,
    logsnr_cosine,
    logsnr_shifted_cosine,
    logsnr_sigmoid,
)

__all__ = [
    "SAMPLERS",
    "SCHEDULES",
    "Trajectory",
    "WEIGHTINGS",
    "alpha_sigma",
    "ddim_sample",
    "ddim_step",
    "ddpm_posterior",
    "ddpm_sample",
    "ddpm_step",
    "diffusion_loss",
    "eps_from_v",
    "functional",
    "get_sampler",
    "get_schedule",
    "logsnr_cosine",
    "logsnr_shifted_cosine",
    "logsnr_sigmoid",
    "min_snr_weight",
    "q_sample",
    "regression_loss",
    "sample",
    "sample_slices",
    "v_target",
    "x0_from_v",
]
