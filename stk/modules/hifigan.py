"""HiFi-GAN pieces (Kong et al., 2020): generator with multi-receptive-field fusion, multi-period and
multi-scale discriminators, and the LSGAN / feature-matching losses.

Shapes: log-mel ``(B, n_mels, T)`` -> waveform ``(B, 1, T * prod(upsample_rates))``; a discriminator
maps ``(B, 1, N)`` to a list of score maps and a list of feature maps (one list per sub-discriminator).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm, weight_norm

LRELU = 0.1


def _pad(kernel: int, dilation: int = 1) -> int:
    return dilation * (kernel - 1) // 2


class ResBlock(nn.Module):
    """HiFi-GAN ResBlock1: per dilation d, x += conv_k,1(lrelu(conv_k,d(lrelu(x)))). (B, C, N) -> (B, C, N)."""

    def __init__(self, channels: int, kernel: int, dilations: tuple[int, ...]) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(weight_norm(nn.Conv1d(channels, channels, kernel, dilation=d, padding=_pad(kernel, d)))
                                    for d in dilations)
        self.convs2 = nn.ModuleList(weight_norm(nn.Conv1d(channels, channels, kernel, padding=_pad(kernel)))
                                    for _ in dilations)
        for c in list(self.convs1) + list(self.convs2):
            nn.init.normal_(c.parametrizations.weight.original1, 0.0, 0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c1, c2 in zip(self.convs1, self.convs2):
            x = x + c2(F.leaky_relu(c1(F.leaky_relu(x, LRELU)), LRELU))
        return x


class Generator(nn.Module):
    """Mel -> waveform: conv_pre, then per upsampling stage a transposed convolution followed by the
    multi-receptive-field fusion (the mean of ResBlocks with different kernels), conv_post, tanh.

    Args:
        n_mels: input bins.
        upsample_rates / upsample_kernels: per stage; the product of the rates is the hop length.
        channels: channels after conv_pre (halved at every stage; V1 512, V2 128).
        resblock_kernels / resblock_dilations: the MRF's ResBlocks.
    """

    def __init__(self, *, n_mels: int = 80, upsample_rates: tuple[int, ...] = (8, 8, 2, 2),
                 upsample_kernels: tuple[int, ...] = (16, 16, 4, 4), channels: int = 128,
                 resblock_kernels: tuple[int, ...] = (3, 7, 11),
                 resblock_dilations: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))) -> None:
        super().__init__()
        if len(upsample_rates) != len(upsample_kernels):
            raise ValueError(f"upsample_rates {upsample_rates} and upsample_kernels {upsample_kernels} differ in length")
        if any(k < r or (k - r) % 2 for r, k in zip(upsample_rates, upsample_kernels)):
            raise ValueError(f"each upsample kernel must be >= its rate and differ from it by an even number "
                             f"(exact x rate lengths), got {upsample_kernels} for {upsample_rates}")
        if len(resblock_kernels) != len(resblock_dilations):
            raise ValueError("resblock_kernels and resblock_dilations differ in length")
        if channels % (2 ** len(upsample_rates)) != 0:
            raise ValueError(f"channels {channels} must be divisible by 2^{len(upsample_rates)} (halved per stage)")
        self.hop = 1
        for r in upsample_rates:
            self.hop *= r
        self.n_mels = n_mels
        self.conv_pre = weight_norm(nn.Conv1d(n_mels, channels, 7, padding=3))
        self.ups = nn.ModuleList()
        self.mrfs = nn.ModuleList()
        ch = channels
        for r, k in zip(upsample_rates, upsample_kernels):
            up = weight_norm(nn.ConvTranspose1d(ch, ch // 2, k, r, padding=(k - r) // 2))
            nn.init.normal_(up.parametrizations.weight.original1, 0.0, 0.01)
            self.ups.append(up)
            ch //= 2
            self.mrfs.append(nn.ModuleList(ResBlock(ch, kr, tuple(d)) for kr, d in zip(resblock_kernels, resblock_dilations)))
        self.conv_post = weight_norm(nn.Conv1d(ch, 1, 7, padding=3))

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, T) -> (B, 1, T * hop) in [-1, 1]."""
        if mel.dim() != 3 or mel.size(1) != self.n_mels:
            raise ValueError(f"generator: expects (B, {self.n_mels}, T) log-mels, got {tuple(mel.shape)} "
                             f"({mel.size(1) if mel.dim() == 3 else '?'} bins vs the vocoder's {self.n_mels})")
        x = self.conv_pre(mel)
        for up, mrf in zip(self.ups, self.mrfs):
            x = up(F.leaky_relu(x, LRELU))
            x = sum(block(x) for block in mrf) / len(mrf)
        return torch.tanh(self.conv_post(F.leaky_relu(x)))


class PeriodDiscriminator(nn.Module):
    """Sub-discriminator of the MPD: the waveform folded into (N/p, p) 2-D frames, (k, 1) convolutions."""

    def __init__(self, period: int, width: int = 32) -> None:
        super().__init__()
        self.period = period
        chans = [1, width, 4 * width, 16 * width, 32 * width, 32 * width]
        self.convs = nn.ModuleList(
            weight_norm(nn.Conv2d(chans[i], chans[i + 1], (5, 1), (3 if i < 4 else 1, 1), padding=(2, 0)))
            for i in range(5))
        self.post = weight_norm(nn.Conv2d(chans[-1], 1, (3, 1), 1, padding=(1, 0)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        b, c, n = x.shape
        if n % self.period:
            x = F.pad(x, (0, self.period - n % self.period), mode="reflect")
        x = x.view(b, c, -1, self.period)
        fmap = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), LRELU)
            fmap.append(x)
        x = self.post(x)
        fmap.append(x)
        return x.flatten(1), fmap


class ScaleDiscriminator(nn.Module):
    """Sub-discriminator of the MSD: strided grouped 1-D convolutions on a (pooled) waveform."""

    def __init__(self, width: int = 32, use_spectral_norm: bool = False) -> None:
        super().__init__()
        if width % 16:
            raise ValueError(f"scale discriminator width must be a multiple of 16 (grouped convs), got {width}")
        norm = spectral_norm if use_spectral_norm else weight_norm
        w = width
        specs = [(1, w, 15, 1, 1, 7), (w, w, 41, 2, 4, 20), (w, 2 * w, 41, 2, 16, 20), (2 * w, 4 * w, 41, 4, 16, 20),
                 (4 * w, 8 * w, 41, 4, 16, 20), (8 * w, 8 * w, 41, 1, 16, 20), (8 * w, 8 * w, 5, 1, 1, 2)]
        self.convs = nn.ModuleList(norm(nn.Conv1d(i, o, k, s, groups=g, padding=p)) for i, o, k, s, g, p in specs)
        self.post = norm(nn.Conv1d(8 * w, 1, 3, 1, padding=1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        fmap = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), LRELU)
            fmap.append(x)
        x = self.post(x)
        fmap.append(x)
        return x.flatten(1), fmap


class MultiDiscriminator(nn.Module):
    """MPD (periods 2, 3, 5, 7, 11) + MSD (raw, x2 and x4 average-pooled; spectral norm on the first)."""

    def __init__(self, *, periods: tuple[int, ...] = (2, 3, 5, 7, 11), mpd_width: int = 32, msd_width: int = 128,
                 num_scales: int = 3) -> None:
        super().__init__()
        self.mpd = nn.ModuleList(PeriodDiscriminator(p, mpd_width) for p in periods)
        self.msd = nn.ModuleList(ScaleDiscriminator(msd_width, use_spectral_norm=i == 0) for i in range(num_scales))
        self.pool = nn.AvgPool1d(4, 2, padding=2)

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
        """(B, 1, N) -> scores and feature maps of every sub-discriminator."""
        outs, fmaps = [], []
        for d in self.mpd:
            o, f = d(x)
            outs.append(o)
            fmaps.append(f)
        y = x
        for i, d in enumerate(self.msd):
            if i > 0:
                y = self.pool(y)
            o, f = d(y)
            outs.append(o)
            fmaps.append(f)
        return outs, fmaps


def discriminator_loss(real: list[torch.Tensor], fake: list[torch.Tensor]) -> torch.Tensor:
    """LSGAN: sum over sub-discriminators of E[(1 - D(x))^2] + E[D(G(s))^2]."""
    return sum(torch.mean((1 - r) ** 2) + torch.mean(f**2) for r, f in zip(real, fake))


def generator_adv_loss(fake: list[torch.Tensor]) -> torch.Tensor:
    """LSGAN: sum over sub-discriminators of E[(1 - D(G(s)))^2]."""
    return sum(torch.mean((1 - f) ** 2) for f in fake)


def feature_matching_loss(real: list[list[torch.Tensor]], fake: list[list[torch.Tensor]]) -> torch.Tensor:
    """Sum over sub-discriminators and layers of the mean L1 distance of feature maps (real detached)."""
    return sum(torch.mean(torch.abs(r.detach() - g)) for rs, gs in zip(real, fake) for r, g in zip(rs, gs))
