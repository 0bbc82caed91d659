"""Image and text features -> logits: the one formula of DESIGN 1, for training and serving.

logit = (exp(logit_scale) / T) * <f(x), t_c>, with both features L2-normalised by their towers
and T the temperature fitted after training (1 when uncalibrated). Dividing each sample's
logits by T, before the softmax, means entropy and mutual information are computed on the
calibrated samples. The three methods are the same formula in the three layouts callers hold
their text features in; they are computed in fp32 outside autocast (at a logit scale near 100,
bf16 logits would be off by ~0.2).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Scorer:
    factor: torch.Tensor  # scalar: exp(logit_scale) / temperature

    @classmethod
    def create(cls, logit_scale: torch.Tensor, temperature: float = 1.0) -> Scorer:
        """logit_scale is the model's raw parameter (CLIP stores its log)."""
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        return cls(logit_scale.detach().float().exp() / float(temperature))

    def grouped(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """image [B, D] x text [G, M, C, D] -> [B, M, C]; G is 1 (shared prompts) or B (per image)."""
        image, text = image.float(), text.float()
        with torch.autocast(image.device.type, enabled=False):
            if text.shape[0] == 1:
                return self.factor * torch.einsum("bd,mcd->bmc", image, text[0])
            return self.factor * torch.einsum("bd,bmcd->bmc", image, text)

    def shared(self, image: torch.Tensor, text_t: torch.Tensor) -> torch.Tensor:
        """image [B, D] x text_t [D, M, C] (a cache's matmul-friendly layout) -> [B, M, C]."""
        image = image.float()
        with torch.autocast(image.device.type, enabled=False):
            every = image @ text_t.reshape(text_t.shape[0], -1)
        return self.factor * every.reshape(len(image), *text_t.shape[1:])

    def rows(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Paired rows: image [N, D] . text [N, D] -> [N]."""
        with torch.autocast(image.device.type, enabled=False):
            return self.factor * (text.float() * image.float()).sum(dim=-1)
