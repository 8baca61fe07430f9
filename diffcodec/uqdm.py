"""The universally quantized diffusion model: q and p of each step, p(x | z_0), the NELBO.

Every function below is one equation of DESIGN.md section 1 and carries its variable names.
Data x lives in [-1, 1]; pixels are the integers 0..255 with x = 2 (pixel + 1/2) / 256 - 1.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .nn import UNet, UNetConfig
from .schedule import LinearSchedule, alpha, sigma, time_grid

LN2 = math.log(2.0)
SOFTPLUS_ONE = math.log(math.e - 1.0)  # softplus(SOFTPLUS_ONE) = 1: s_hat starts near 1


def to_unit(pixels: Tensor) -> Tensor:
    """x = 2 (pixel + 1/2) / 256 - 1."""
    return 2.0 * (pixels.float() + 0.5) / 256.0 - 1.0


def to_pixel_units(x: Tensor) -> Tensor:
    """pixel = (x + 1) * 128 - 1/2 (continuous; the inverse of to_unit)."""
    return (x + 1.0) * 128.0 - 0.5


def logistic_scale(std: Tensor) -> Tensor:
    """A logistic with std sigma has scale b = sigma * sqrt(3) / pi."""
    return std * (math.sqrt(3.0) / math.pi)


def log_interval_mass(v: Tensor, half_width: Tensor, b: Tensor) -> Tensor:
    """log[G(v + h) - G(v - h)] for a logistic CDF G of scale b, in a stable form:
    sigmoid(a) - sigmoid(c) = sigmoid(a) sigmoid(-c) (1 - e^(c - a))."""
    a, c = (v + half_width) / b, (v - half_width) / b
    return F.logsigmoid(a) + F.logsigmoid(-c) + torch.log(-torch.expm1(c - a))


def posterior_width(gamma_t: Tensor, gamma_s: Tensor) -> Tensor:
    """delta = sqrt(12) sigma_q with sigma_q = sigma_s sqrt(c), c = -expm1(gamma_s - gamma_t)."""
    return math.sqrt(12.0) * sigma(gamma_s) * (-torch.expm1(gamma_s - gamma_t)).sqrt()


def posterior(z_t: Tensor, x: Tensor, gamma_t: Tensor, gamma_s: Tensor) -> tuple[Tensor, Tensor]:
    """q(z_s | z_t, x) = U(mu_q - delta/2, mu_q + delta/2) with
    c = -expm1(gamma_s - gamma_t), mu_q = alpha_s ((1 - c) / alpha_t z_t + c x)."""
    c = -torch.expm1(gamma_s - gamma_t)
    mu_q = alpha(gamma_s) * ((1 - c) / alpha(gamma_t) * z_t + c * x)
    return mu_q, posterior_width(gamma_t, gamma_s)


def prior(z_t: Tensor, eps_hat: Tensor, s_hat: Tensor, gamma_t: Tensor, gamma_s: Tensor) -> tuple[Tensor, Tensor]:
    """p(z_s | z_t) = g * U(-delta/2, delta/2), g of mean mu_p = alpha_s / alpha_t (z_t - sigma_t c eps_hat)
    and std sigma_p = sigma_t sqrt(c) s_hat."""
    c = -torch.expm1(gamma_s - gamma_t)
    mu_p = alpha(gamma_s) / alpha(gamma_t) * (z_t - sigma(gamma_t) * c * eps_hat)
    sigma_p = sigma(gamma_t) * c.sqrt() * s_hat
    return mu_p, sigma_p


def step_bits(z_s: Tensor, mu_p: Tensor, sigma_p: Tensor, delta: Tensor) -> Tensor:
    """-log2 p(z_s | z_t) - log2 delta = -log2[G(z_s - mu_p + delta/2) - G(z_s - mu_p - delta/2)], per element."""
    return -log_interval_mass(z_s - mu_p, delta / 2, logistic_scale(sigma_p)) / LN2


def denoise(z: Tensor, eps_hat: Tensor, gamma: Tensor) -> Tensor:
    """x_hat = (z - sigma eps_hat) / alpha."""
    return (z - sigma(gamma) * eps_hat) / alpha(gamma)


def pixel_prior(z_0: Tensor, eps_hat: Tensor, s_hat: Tensor, gamma_0: Tensor) -> tuple[Tensor, Tensor]:
    """p(x | z_0): a logistic over pixel values with mean m = pixel(x_hat(z_0)) and
    scale b = logistic_scale(s_hat sigma_0 / alpha_0), in pixel units (128 per unit of x)."""
    m = to_pixel_units(denoise(z_0, eps_hat, gamma_0))
    b = logistic_scale(s_hat * sigma(gamma_0) / alpha(gamma_0) * 128.0)
    return m, b


def pixel_bits(pixels: Tensor, m: Tensor, b: Tensor) -> Tensor:
    """-log2 P(pixel | z_0), P(k) = G(k + 1/2) - G(k - 1/2) with the tails folded into 0 and 255."""
    k = pixels.float()
    inner = log_interval_mass(k - m, torch.full_like(k, 0.5), b)
    low = F.logsigmoid((0.5 - m) / b)  # log G(1/2)
    high = F.logsigmoid((m - 254.5) / b)  # log(1 - G(254.5))
    log_p = torch.where(pixels == 0, low, torch.where(pixels == 255, high, inner))
    return -log_p / LN2


def top_bits(x: Tensor, gamma_1: Tensor) -> Tensor:
    """KL(q(z_1 | x) || N(0, 1)) = 1/2 (alpha^2 x^2 + sigma^2 - 1 - log sigma^2), in bits per element."""
    a2, s2 = torch.sigmoid(-gamma_1), torch.sigmoid(gamma_1)
    return 0.5 * (a2 * x.square() + s2 - 1.0 - torch.log(s2)) / LN2


def forward_chain(x: Tensor, gammas: Tensor, generator: torch.Generator | None = None) -> list[Tensor]:
    """[z_{t_0}, ..., z_{t_T}]: z_1 ~ q(z_1 | x) = N(alpha_1 x, sigma_1^2), then z_s ~ q(z_s | z_t, x) for each
    step (no network)."""
    z = alpha(gammas[0]) * x + sigma(gammas[0]) * torch.randn(x.shape, generator=generator, device=x.device)
    chain = [z]
    for i in range(len(gammas) - 1):
        mu_q, delta = posterior(z, x, gammas[i], gammas[i + 1])
        z = mu_q + delta * (torch.rand(x.shape, generator=generator, device=x.device) - 0.5)
        chain.append(z)
    return chain


@dataclass(frozen=True)
class ModelConfig:
    """Everything that defines a model besides its weights."""

    unet: UNetConfig = field(default_factory=UNetConfig)
    steps: int = 8
    gamma_min: float = -12.0
    gamma_max: float = 6.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        unet = UNetConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in d["unet"].items()})
        return cls(unet=unet, **{k: v for k, v in d.items() if k != "unet"})


class UQDM(nn.Module):
    """Schedule + U-Net + a fixed grid of T steps."""

    def __init__(self, config: ModelConfig = ModelConfig()) -> None:
        super().__init__()
        self.config = config
        self.schedule = LinearSchedule(config.gamma_min, config.gamma_max)
        self.net = UNet(config.unet)

    @property
    def steps(self) -> int:
        return self.config.steps

    def gammas(self, steps: int | None = None) -> Tensor:
        """gamma(t_i) for i = 0..T: the first T + 1 times (default: all) of the model's grid of `self.steps` steps
        (t_0 = 1; t_T = 0 when T = self.steps, else the chain ends early and p(x | z_T) codes the pixels)."""
        return self.schedule(time_grid(steps or self.steps, self.steps).to(self.schedule.gamma_min.device))

    def predict(self, z: Tensor, gamma: Tensor) -> tuple[Tensor, Tensor]:
        """(eps_hat, s_hat) for z of any H x W: replicate-pad to the U-Net's multiple, then crop."""
        h, w = z.shape[-2:]
        m = self.net.config.multiple
        ph, pw = (-h) % m, (-w) % m
        zp = F.pad(z, (0, pw, 0, ph), mode="replicate") if ph or pw else z
        eps_hat, s_raw = self.net(zp, gamma)
        s_hat = F.softplus(s_raw + SOFTPLUS_ONE)
        return eps_hat[..., :h, :w], s_hat[..., :h, :w]

    def nelbo_terms(self, pixels: Tensor, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Monte-Carlo NELBO of a batch of uint8 images (B, 3, H, W), one random term per image.

        NELBO = KL(q(z_1|x) || N(0,1)) + sum_i [-log p(z_s|z_t) - log delta] - log p(x | z_0); each image draws
        one term i in {0..T} (T = the pixel term) and weights it by T + 1. Returns bits per dimension:
        'bpd' (the loss), 'top', and 'term' / 'index' per image for logging.
        """
        x = to_unit(pixels)
        B, D = x.shape[0], x[0].numel()
        T = self.steps
        gam = self.gammas()
        dev = x.device
        chain = forward_chain(x, gam, generator)
        index = torch.randint(0, T + 1, (B,), generator=generator, device=dev)
        z_t = torch.stack(chain)[index, torch.arange(B, device=dev)]
        gamma_t = gam[index]
        eps_hat, s_hat = self.predict(z_t, gamma_t)

        terms = torch.zeros(B, device=dev)
        is_step = index < T
        if is_step.any():
            i = index[is_step]
            g_t, g_s = gam[i].view(-1, 1, 1, 1), gam[i + 1].view(-1, 1, 1, 1)
            z_s = torch.stack(chain)[i + 1, is_step.nonzero().squeeze(1)]
            _, delta = posterior(z_t[is_step], x[is_step], g_t, g_s)
            mu_p, sigma_p = prior(z_t[is_step], eps_hat[is_step], s_hat[is_step], g_t, g_s)
            terms[is_step] = step_bits(z_s, mu_p, sigma_p, delta).flatten(1).sum(1)
        if (~is_step).any():
            m, b = pixel_prior(z_t[~is_step], eps_hat[~is_step], s_hat[~is_step], gam[T])
            terms[~is_step] = pixel_bits(pixels[~is_step], m, b).flatten(1).sum(1)
        top = top_bits(x, gam[0]).flatten(1).sum(1)
        bpd = (top + (T + 1) * terms) / D
        return {"bpd": bpd.mean(), "top": top / D, "term": terms / D, "index": index}
