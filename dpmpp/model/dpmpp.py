"""The DPM++ model: CLIP image encoder, identity prototypes, dynamic prototype mask, saliency head."""

from __future__ import annotations

from dataclasses import dataclass

import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from dpmpp.config import ModelCfg
from dpmpp.model.backbone import ImageEncoder, create_clip
from dpmpp.model.heads import BNNeck, MaskGenerator, SaliencyHead, cosine_logits, masked_cosine_logits
from dpmpp.model.omz_encoder import OMZ_BACKBONES, create_omz_encoder
from dpmpp.model.osnet_encoder import create_osnet_encoder
from dpmpp.model.text import PromptLearner, TextEncoder


@dataclass
class DPMPPOutput:
    """One output type for training and inference; fields that were not computed are None."""

    feat: torch.Tensor  # [B, W] CLS feature x
    proj: torch.Tensor  # [B, E] projected feature p (prototype space), after the BN neck when enabled
    proj_raw: torch.Tensor | None = None  # [B, E] p before the BN neck (what the triplet loss sees)
    mask: torch.Tensor | None = None  # [B, E] dynamic prototype mask in (0, 1)
    logits: torch.Tensor | None = None  # [B, C] unmasked cosine to the prototypes
    masked_logits: torch.Tensor | None = None  # [B, C] masked cosine to the prototypes
    text_logits: torch.Tensor | None = None  # [B, C] p against the frozen text prototypes (raw dot products)
    saliency: torch.Tensor | None = None  # [B, h, w] per-patch saliency in (0, 1)
    patch_proj: torch.Tensor | None = None  # [B, h*w, E] patch tokens in the prototype space
    attention: torch.Tensor | None = None  # [B, heads, h*w] last block's CLS->patch attention logits


PROTOTYPE_INITS = ("text", "text_centred", "random")


class DPMPP(nn.Module):
    def __init__(self, encoder: ImageEncoder, cfg: ModelCfg, num_classes: int) -> None:
        super().__init__()
        if cfg.prototype_init not in PROTOTYPE_INITS:
            raise ValueError(f"model.prototype_init must be one of {PROTOTYPE_INITS}; got {cfg.prototype_init!r}")
        self.cfg = cfg
        self.encoder = encoder
        self.num_classes = num_classes
        embed_dim, width, num_maps = encoder.embed_dim, encoder.width, len(encoder.map_blocks)
        self.prototypes = nn.Parameter(torch.empty(num_classes, embed_dim)) if num_classes else None
        if self.prototypes is not None:
            nn.init.normal_(self.prototypes, std=0.02)
        self.register_buffer("text_prototypes", torch.zeros(num_classes, embed_dim) if cfg.use_text_stage else None)
        self.mask_generator = (
            MaskGenerator(width, num_maps, embed_dim, cfg.mask_hidden, cfg.mask_reduce) if cfg.use_mask else None
        )
        self.saliency_head = SaliencyHead(width, num_maps) if cfg.saliency_head else None
        self.neck = BNNeck(embed_dim) if cfg.bnneck else None

    @property
    def embed_dim(self) -> int:
        return self.encoder.embed_dim

    @torch.no_grad()
    def set_text_prototypes(self, text_features: torch.Tensor) -> None:
        """Store the stage-1 text features T [C, E]; initialise W from them when configured.

        "text": W <- normalize(T). "text_centred": W <- normalize(T - mean_c T). Prompts that differ in four tokens
        give text features in a narrow cone (mean pairwise cosine about 0.5 for the tiny preset); the shared
        direction carries no identity, and centring removes it before it becomes every prototype's largest part.
        """
        if self.text_prototypes is None:
            raise ValueError("this model was built without the text stage (model.use_text_stage=false)")
        self.text_prototypes.copy_(text_features)
        if self.prototypes is not None and self.cfg.prototype_init != "random":
            self.prototypes.copy_(F.normalize(self.prototype_targets(), dim=1))

    def prototype_targets(self) -> torch.Tensor:
        """The text features W is initialised from and aligned to: T, centred over identities for "text_centred"."""
        if self.text_prototypes is None:
            raise ValueError("this model was built without the text stage (model.use_text_stage=false)")
        if self.cfg.prototype_init == "text_centred":
            return self.text_prototypes - self.text_prototypes.mean(dim=0, keepdim=True)
        return self.text_prototypes

    def forward(
        self, images: torch.Tensor, camids: torch.Tensor | None = None, extras: bool | None = None
    ) -> DPMPPOutput:
        """images [B, 3, H, W]; `extras` (default: in training) adds saliency, patch tokens and attention."""
        extras = self.training if extras is None else extras
        tokens = self.encoder(images, camids)
        proj = self.neck(tokens.proj) if self.neck is not None else tokens.proj
        out = DPMPPOutput(feat=tokens.cls, proj=proj, proj_raw=tokens.proj)
        if self.mask_generator is not None:
            out.mask = self.mask_generator(tokens.maps)
        if self.prototypes is not None:
            out.logits = cosine_logits(proj, self.prototypes)
            if out.mask is not None:
                out.masked_logits = masked_cosine_logits(proj, out.mask, self.prototypes)
        if self.text_prototypes is not None:
            out.text_logits = proj @ self.text_prototypes.T  # post-neck; loss.i2t_feature picks the loss's p
        if extras:
            if self.saliency_head is not None:
                maps = [m.detach() for m in tokens.maps] if self.cfg.saliency_detach else tokens.maps
                out.saliency = self.saliency_head(maps)
                if self.cfg.saliency_detach:  # ln_post and proj also make the retrieval feature p: keep them out
                    with torch.no_grad():
                        out.patch_proj = self.encoder.patch_projection(tokens.last_tokens)
                else:
                    out.patch_proj = self.encoder.patch_projection(tokens.last_tokens)
            out.attention = self.encoder.cls_attention_logits(tokens.last_block_input)
        return out

    @torch.no_grad()
    def saliency(self, images: torch.Tensor, camids: torch.Tensor | None = None) -> torch.Tensor:
        """Per-patch saliency [B, h, w] without gradients (what patch transfer consumes)."""
        if self.saliency_head is None:
            raise ValueError("this model has no saliency head (model.saliency_head=false)")
        return self.saliency_head(self.encoder(images, camids).maps)


class TextBranch(nn.Module):
    """Frozen text encoder + learnable prompts; used in stage 1 only, not part of the saved model."""

    def __init__(self, clip: nn.Module, model_name: str, num_classes: int, template: str) -> None:
        super().__init__()
        self.encoder = TextEncoder(clip)
        self.prompts = PromptLearner(clip, model_name, num_classes, template)

    def forward(self, labels: torch.Tensor | None = None) -> torch.Tensor:
        embeddings, eot = self.prompts(labels)
        return self.encoder(embeddings, eot)


def build_model(
    cfg: ModelCfg,
    image_size: tuple[int, int],
    num_classes: int,
    num_cameras: int = 0,
    with_text: bool = True,
    load_pretrained: bool = True,
    device=None,
) -> tuple[DPMPP, TextBranch | None]:
    """Create the DPM++ model (and, for training, the text branch): the image encoder from open_clip or OSNet,
    the text branch always from open_clip (its `embed_dim` must be the encoder's)."""
    if cfg.backbone == "clip":
        clip = create_clip(
            cfg.clip_model, cfg.pretrained if load_pretrained else None, image_size, device, not load_pretrained
        )
        encoder = ImageEncoder(
            clip.visual, cfg.mask_blocks, num_cameras if cfg.camera_embedding else 0, cfg.sie_coef, cfg.sie_tokens
        )
    else:
        if cfg.camera_embedding:
            raise ValueError(f"model.camera_embedding (SIE) needs a token encoder; {cfg.backbone} has none")
        weights = cfg.pretrained if load_pretrained else None
        if cfg.backbone in OMZ_BACKBONES:
            encoder = create_omz_encoder(cfg.backbone, weights)
        else:
            encoder = create_osnet_encoder(cfg.backbone, weights)
        text_tower = with_text and cfg.use_text_stage
        clip = create_clip(cfg.clip_model, None, image_size, device, not load_pretrained) if text_tower else None
        text_dim = open_clip.get_model_config(cfg.clip_model)["embed_dim"] if clip is not None else encoder.embed_dim
        if text_dim != encoder.embed_dim:
            raise ValueError(
                f"the text tower of {cfg.clip_model!r} gives {text_dim}-d features; "
                f"{cfg.backbone} needs {encoder.embed_dim}-d (e.g. model.clip_model=dpmpp-text512)"
            )
    model = DPMPP(encoder, cfg, num_classes)
    text = (
        TextBranch(clip, cfg.clip_model, num_classes, cfg.prompt_template) if with_text and cfg.use_text_stage else None
    )
    if device is not None:
        model.to(device)
        if text is not None:
            text.to(device)
    return model, text
