"""xmodality_lite: diffusion-based TOF-MRA → CTA synthesis (Koch et al. 2024), for teaching.

For teaching and research only; not for clinical use.
"""

from xmodality_lite.config import PROFILES, Profile, get_profile

__version__ = "0.1.0"

__all__ = ["PROFILES", "Profile", "get_profile", "__version__"]
