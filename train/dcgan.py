"""Per-class DCGAN augmentation of paper 002 (64×64 images, LeakyReLU in the generator).

"We used the traditional DCGAN architecture [Radford et al.] … We only changed the activation
function from the Generator from ReLu to LeakyReLu to solve convergence issue … the images are
resized to 64*64 pixels before the training … we had to split the data and train a DCGAN for each
class respectively." Layer sizes, Adam(2e-4, β1 = 0.5) and N(0, 0.02) initialisation follow Radford
et al. (2016); ``width`` scales the channel counts (64 in the paper's DCGAN; tiny in tests).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

GAN_SIZE = 64  # paper 002: "resized to 64*64 pixels"


def _init_dcgan(module: nn.Module) -> None:
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class Generator(nn.Module):
    """z (B, nz, 1, 1) → image (B, 3, 64, 64) in [-1, 1]; LeakyReLU(0.2) instead of ReLU (paper 002)."""

    def __init__(self, nz: int = 100, width: int = 64) -> None:
        super().__init__()
        w = width
        self.nz = nz

        def up(cin: int, cout: int, stride: int, pad: int) -> list[nn.Module]:
            return [nn.ConvTranspose2d(cin, cout, 4, stride, pad, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2)]

        self.net = nn.Sequential(
            *up(nz, w * 8, 1, 0),  # 4×4
            *up(w * 8, w * 4, 2, 1),  # 8×8
            *up(w * 4, w * 2, 2, 1),  # 16×16
            *up(w * 2, w, 2, 1),  # 32×32
            nn.ConvTranspose2d(w, 3, 4, 2, 1, bias=False),  # 64×64
            nn.Tanh(),
        )
        self.apply(_init_dcgan)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class Discriminator(nn.Module):
    """image (B, 3, 64, 64) → real/fake logit (B,)."""

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        w = width

        def down(cin: int, cout: int, bn: bool = True) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 4, 2, 1, bias=False)] + ([nn.BatchNorm2d(cout)] if bn else []) + [nn.LeakyReLU(0.2)]

        self.net = nn.Sequential(*down(3, w, bn=False), *down(w, w * 2), *down(w * 2, w * 4), *down(w * 4, w * 8),
                                 nn.Conv2d(w * 8, 1, 4, 1, 0, bias=False))
        self.apply(_init_dcgan)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten()


def to_gan_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) → float (N, 3, 64, 64) in [-1, 1]."""
    x = images.float().div(127.5).sub(1.0)
    return F.interpolate(x, size=(GAN_SIZE, GAN_SIZE), mode="bilinear", antialias=True, align_corners=False)


def train_dcgan(images: torch.Tensor, epochs: int = 100, batch_size: int = 64, lr: float = 2e-4, nz: int = 100,
                width: int = 64, seed: int = 0, device: str | torch.device = "cpu",
                progress: bool = True) -> tuple[Generator, list[dict[str, float]]]:
    """Train one DCGAN on one class's images.

    Args:
        images: (N, 3, H, W) uint8 photos of one class (resized to 64×64 here).
        epochs, batch_size, lr: Adam(lr, betas=(0.5, 0.999)) for both networks.
        nz: latent size; width: channel multiplier.
        seed: makes the run reproducible.

    Returns:
        (the generator in eval mode, per-epoch losses ``{"d_loss", "g_loss"}``).

    Raises:
        ValueError: fewer than 2 images, or images that are not (N, 3, H, W) uint8.
    """
    if images.ndim != 4 or images.shape[1] != 3 or images.dtype != torch.uint8:
        raise ValueError(f"images must be (N, 3, H, W) uint8, got {tuple(images.shape)} {images.dtype}")
    if len(images) < 2:
        raise ValueError(f"a DCGAN needs at least 2 images, got {len(images)}")
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    real_all = to_gan_range(images).to(device)
    gen, disc = Generator(nz, width).to(device), Discriminator(width).to(device)
    opt_g = torch.optim.Adam(gen.parameters(), lr=lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=lr, betas=(0.5, 0.999))
    bce = nn.BCEWithLogitsLoss()
    history = []
    bs = max(2, min(batch_size, len(real_all)))
    for _ in tqdm(range(epochs), desc="DCGAN", disable=not progress, leave=False):
        perm = torch.randperm(len(real_all), generator=g)
        d_sum = g_sum = 0.0
        batches = 0
        for i in range(0, len(perm) - bs + 1, bs):
            real = real_all[perm[i : i + bs].to(real_all.device)]
            z = torch.randn(len(real), nz, 1, 1, device=device)
            fake = gen(z)
            # Discriminator: real → 1, fake → 0.
            opt_d.zero_grad(set_to_none=True)
            d_loss = bce(disc(real), torch.ones(len(real), device=device)) + \
                bce(disc(fake.detach()), torch.zeros(len(real), device=device))
            d_loss.backward()
            opt_d.step()
            # Generator: make the discriminator say 1 on fakes (non-saturating loss).
            opt_g.zero_grad(set_to_none=True)
            g_loss = bce(disc(fake), torch.ones(len(real), device=device))
            g_loss.backward()
            opt_g.step()
            d_sum, g_sum, batches = d_sum + d_loss.item(), g_sum + g_loss.item(), batches + 1
        history.append({"d_loss": d_sum / max(batches, 1), "g_loss": g_sum / max(batches, 1)})
    return gen.eval(), history


@torch.no_grad()
def generate(generator: Generator, n: int, size: int, seed: int = 0, batch_size: int = 64) -> torch.Tensor:
    """``n`` generated photos as (n, 3, size, size) uint8, upsampled from 64×64 to the model's input size."""
    device = next(generator.parameters()).device
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, n, batch_size):
        z = torch.randn(min(batch_size, n - i), generator.nz, 1, 1, generator=g).to(device)
        x = generator(z).add(1.0).mul(127.5)
        if size != GAN_SIZE:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        out.append(x.round().clamp(0, 255).to(torch.uint8).cpu())
    return torch.cat(out) if out else torch.zeros((0, 3, size, size), dtype=torch.uint8)
