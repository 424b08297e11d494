"""Masked autoencoder (He et al. 2022, arXiv 2111.06377): hide a random ``mask_ratio`` of a ViT's patches, encode
only the visible ones, and let a light transformer decoder (``decoder_depth`` blocks, ``decoder_dim`` wide, fixed
sine-cosine positions, a learnt mask token) predict the pixels of the hidden patches; the loss is the mean squared
error over hidden patches, against per-patch standardised pixels with ``norm_pix_loss`` (MAE's default, better
features). Needs a ViT backbone (``backbone=vit_tiny|vit_small``, or ``backbone=timm`` with a timm
VisionTransformer such as ``deit_tiny_patch16_224``; the method's default is ``vit_tiny``).

Scaled for small images and short runs: decoder 128 wide, 2 blocks, 4 heads (MAE: 512, 8, 16). One view, crop
(20-100% of the area) and flip only, as MAE. Its linear probe is weak by nature (the features are not linearly
separable until fine-tuned): report ``sslrun finetune mode=full`` beside it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sslrun.backbones.vit import position_embeddings, transformer_block
from sslrun.config import OPEN_UNIT, POSITIVE, MethodConfig, checked
from sslrun.data.views import single_view
from sslrun.losses import masked_patches, patchify, unpatchify
from sslrun.methods import METHODS
from sslrun.methods.base import Inputs, SSLMethod


@METHODS.register("mae")
class MAE(SSLMethod):
    """masked autoencoder (ViT backbones)"""

    views = single_view(scale=(0.2, 1.0))
    backbones = ("vit_tiny", "vit_small", "timm")  # timm: a VisionTransformer (vit_*, deit_*)

    def build(self, config: MAE.Config, inputs: Inputs) -> None:
        self.channels = inputs.shape[0]
        if hasattr(self.backbone, "vit"):
            self.backbone.vit()  # one line when the timm model is not a ViT
        self.patch = self.backbone.patch_size
        self.patches = self.backbone.grid**2
        self.visible = max(1, round(self.patches * (1 - config.mask_ratio)))
        d = config.decoder_dim
        self.decoder_embed = nn.Linear(self.backbone.feature_dim, d)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, d))
        nn.init.normal_(self.mask_token, std=0.02)
        self.register_buffer("decoder_pos", position_embeddings(d, self.backbone.grid), persistent=False)
        self.decoder_blocks = nn.ModuleList(
            transformer_block(d, config.decoder_heads) for _ in range(config.decoder_depth)
        )
        self.decoder_norm = nn.LayerNorm(d)
        self.decoder_pred = nn.Linear(d, self.patch * self.patch * self.channels)

    def random_masking(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N) patch order (a random permutation per image; the first ``visible`` are kept) and (B, N) mask, 1
        where hidden."""
        noise = self.draw(n, lambda m, g: torch.rand((m, self.patches), generator=g, device=self.device))
        order = noise.argsort(dim=1)
        mask = torch.ones(n, self.patches, device=self.device)
        mask[:, : self.visible] = 0
        return order, mask.gather(1, order.argsort(dim=1))

    def predict(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, S, S) -> predicted patches (B, N, p^2 C) and the (B, N) mask."""
        n = len(images)
        order, mask = self.random_masking(n)
        tokens = self.backbone.embed(images)
        keep = order[:, : self.visible, None]
        latent = self.backbone.encode(tokens.gather(1, keep.expand(-1, -1, tokens.shape[2])))
        x = self.decoder_embed(latent)
        hidden = self.mask_token.to(x.dtype).expand(n, self.patches - self.visible, -1)
        shuffled = torch.cat([x[:, 1:], hidden], dim=1)
        restore = order.argsort(dim=1)[:, :, None].expand(-1, -1, x.shape[2])
        x = torch.cat([x[:, :1], shuffled.gather(1, restore)], dim=1) + self.decoder_pos
        for block in self.decoder_blocks:
            x = block(x)
        return self.decoder_pred(self.decoder_norm(x)[:, 1:]), mask

    def ssl_step(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        images = views[0]
        prediction, mask = self.predict(images)
        loss = masked_patches(prediction, patchify(images, self.patch), mask, self.config.norm_pix_loss)
        with torch.no_grad():  # the online probe watches whole images, as evaluation sees them
            feats = self.backbone(images)
        return loss, feats

    def image_grids(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Rows: input, visible patches (hidden ones at the mean), reconstruction with the visible patches pasted in
        (with ``norm_pix_loss`` the predictions are mapped back with each true patch's mean and std, as MAE's demo)."""
        prediction, mask = self.predict(images)
        target = patchify(images, self.patch).float()
        if self.config.norm_pix_loss:
            prediction = prediction.float() * (target.var(-1, keepdim=True) + 1e-6).sqrt() + target.mean(-1, True)
        m = mask[:, :, None]
        masked = unpatchify(target * (1 - m), self.patch, self.channels)
        pasted = unpatchify(prediction.float() * m + target * (1 - m), self.patch, self.channels)
        return {"reconstruction": torch.cat([images.float(), masked, pasted])}

    @dataclass
    class Config(MethodConfig):
        mask_ratio: float = checked(0.75, OPEN_UNIT)
        decoder_dim: int = checked(128, POSITIVE)
        decoder_depth: int = checked(2, POSITIVE)
        decoder_heads: int = checked(4, POSITIVE)
        norm_pix_loss: bool = True
