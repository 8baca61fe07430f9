"""Shared-seed relative entropy coding (REC), the second way to send a diffusion step (DESIGN.md section 2).

Encoder and decoder draw the same candidates from the prior p(z_s | z_t) with the shared seed, chunk by
chunk; the encoder sends the index of the candidate the Poisson functional representation picks, so the
decoder's z_s is (close to) a sample of q(z_s | z_t, x). Works for the uniform posterior of UQDM and for a
Gaussian posterior (a Gaussian diffusion step with the same network).
"""

from diffcodec.rec.coder import RecStep, decode_step, encode_step
from diffcodec.rec.family import FAMILIES, StepPrior

__all__ = ["FAMILIES", "RecStep", "StepPrior", "decode_step", "encode_step"]
