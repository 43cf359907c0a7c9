"""Diffusion core in log-SNR form: schedules, v-parametrisation, losses and samplers."""

from xmodality_lite.diffusion.losses import diffusion_loss, min_snr_weight, regression_loss
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
    sample,
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
    "alpha_sigma",
    "ddim_sample",
    "ddim_step",
    "ddpm_posterior",
    "ddpm_sample",
    "ddpm_step",
    "diffusion_loss",
    "eps_from_v",
    "functional",
    "get_schedule",
    "logsnr_cosine",
    "logsnr_shifted_cosine",
    "logsnr_sigmoid",
    "min_snr_weight",
    "q_sample",
    "regression_loss",
    "sample",
    "v_target",
    "x0_from_v",
]
