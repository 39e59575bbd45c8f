"""Architectures on pretrained encoders, built by segmentation-models-pytorch (smp) on its own and
timm's encoders: a thin adapter that gives them what the rest of the project asks of a model.

- the input is a float image of grey levels 0..255, as for the 1x1 U-Net: the model divides by
  255 and normalises with its encoder's mean and std itself (buffers of the model, saved in its
  checkpoints), so training, prediction and segmentation all feed it alike. A 1-channel image
  gets the mean of the channel means and stds (smp sums the RGB filters of the first
  convolution for it, so a grey image is read as the same grey in R, G and B);
- `encode` / `decode`: the encoder's features and the logits from features (CCT's auxiliary
  decoders are decoders of the same structure; the mean teacher's features are the deepest);
- the encoder's weights: `none` (random), `imagenet` (the library's pretrained weights and
  cache: smp's Hugging Face repositories for its own encoders, timm's pretrained tag for `tu-`
  names), or a path to a weights file; a missing download is an InputError that names what was
  looked for and how to provide it (models/weights.py);
- DPT on a ViT whose patch is not 16 (DINOv2's 14): smp's DPT derives its reassembly scales
  from the stride assuming 16-pixel patches; the head is built as for 16 (the patch grid
  reassembled x4, x2, x1, x0.5, as DPT and Depth Anything / UniMatch V2 do) and its output
  resized to the input bilinearly, as those do. Its decoder widths follow UniMatch V2's small and
  base models (intermediate channels embed/8 .. embed, fusion embed/6), without the class
  token (readout `ignore`, their default), with dynamic image size (positions interpolated);
- gradient checkpointing of the encoder (`set_gradient_checkpointing`, a training-time option
  the training set-up applies; model_args do not record it): timm's own for `tu-` encoders,
  torch.utils.checkpoint on the stages of smp's ResNet/ResNeXt encoders, and BatchNorm's running
  statistics updated once a step, as without it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint, set_checkpoint_early_stop

from .registry import ARCHITECTURES, encoder_family, encoder_stride
from .weights import build_with_weights

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def mean_std(encoder: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The normalisation an encoder was pretrained with: timm's pretrained configuration for
    `tu-` names (no download), ImageNet's for smp's own encoders (their ImageNet weights)."""
    if encoder.startswith("tu-"):
        import timm
        cfg = timm.models.get_pretrained_cfg(encoder[3:])
        if cfg is not None and cfg.mean and cfg.std:
            return tuple(cfg.mean), tuple(cfg.std)
    return IMAGENET_MEAN, IMAGENET_STD


class DecoderHead(nn.Module):
    """An smp decoder and its segmentation head: logits from the encoder's features."""

    def __init__(self, decoder: nn.Module, head: nn.Module, patch: int | None = None):
        super().__init__()
        self.decoder, self.head = decoder, head
        self.patch = patch  # DPT: the output is resized to the patch grid x the patch

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        if self.patch is None:
            return self.head(self.decoder(features))
        logits = self.head(self.decoder(features, [None] * len(features)))
        size = tuple(s * self.patch for s in features[0].shape[-2:])
        return logits if tuple(logits.shape[-2:]) == size else F.interpolate(logits, size, mode="bilinear",
                                                                                align_corners=False)


class EncoderDecoder(nn.Module):
    """A pretrained-encoder model: normalisation, encoder, decoder head."""

    def __init__(self, encoder: nn.Module, decoder: DecoderHead, in_channels: int, encoder_name: str,
                 vit: bool):
        super().__init__()
        self.encoder, self.decoder, self.vit = encoder, decoder, vit
        mean, std = mean_std(encoder_name)
        if in_channels != len(mean):
            mean, std = (sum(mean) / len(mean),) * in_channels, (sum(std) / len(std),) * in_channels
        self.register_buffer("input_mean", torch.tensor(mean).view(1, -1, 1, 1) * 255.0)
        self.register_buffer("input_std", torch.tensor(std).view(1, -1, 1, 1) * 255.0)
        self.encoder_frozen = False
        self.checkpoint_stages = False  # smp's ResNet encoders: checkpoint their stages here
        self.gradient_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The logits and the deepest encoder features (what GIST/RIST's consistency loss compares)."""
        features = self.encode(x)
        return self.decode(features), features[-1]

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The encoder's features, shallowest first, as smp's decoders take them (a ViT: one
        tensor per tapped block on the patch grid; the class token is not used)."""
        x = (x - self.input_mean) / self.input_std
        if not (self.gradient_checkpointing and torch.is_grad_enabled()):
            features = self.encoder(x)
        else:
            # the whole recomputation runs (no early stop), so the BatchNorm hooks below restore
            with set_checkpoint_early_stop(False):
                features = self._resnet_stages(x) if self.checkpoint_stages else self.encoder(x)
        return list(features[0] if self.vit else features)

    def set_gradient_checkpointing(self, enable: bool = True) -> None:
        """Recompute the encoder's activations in the backward pass instead of keeping them.

        timm's encoders (`tu-` names: CNNs through timm's feature wrapper, ViTs) have their own
        switch, `set_grad_checkpointing`, which checkpoints each stage or block. smp's ResNet and
        ResNeXt encoders are torchvision's ResNet, which has none (neither does smp): their five
        stages run under torch.utils.checkpoint here (`_resnet_stages`, smp's ResNetEncoder.forward
        stage by stage); each stage's input is a feature the decoder keeps anyway, so checkpointing
        every stage costs no memory of its own. smp's other own encoders (EfficientNet,
        MobileNetV2) are refused (the config check names them).

        A recomputation runs BatchNorm in training mode a second time, which would update its
        running statistics twice a step (torch's checkpoint and timm's alike): the statistics are
        put back after every forward that runs inside the backward pass, so a step updates them
        once, as without checkpointing."""
        from segmentation_models_pytorch.encoders.resnet import ResNetEncoder
        from segmentation_models_pytorch.encoders.timm_universal import TimmUniversalEncoder
        from segmentation_models_pytorch.encoders.timm_vit import TimmViTEncoder

        if enable and not hasattr(torch._C, "_current_graph_task_id"):
            from ..errors import InputError
            raise InputError(f"model.gradient_checkpointing: this torch ({torch.__version__}) does not say when a "
                             "forward runs inside the backward pass, which keeps BatchNorm's statistics right under "
                             "checkpointing; set it to false or use a newer torch")
        if isinstance(self.encoder, (TimmUniversalEncoder, TimmViTEncoder)):
            self.encoder.model.set_grad_checkpointing(enable)
        elif isinstance(self.encoder, ResNetEncoder):
            self.checkpoint_stages = enable
        elif enable:
            raise ValueError(f"gradient checkpointing is not implemented for {type(self.encoder).__name__}")
        self.gradient_checkpointing = enable
        if enable and not getattr(self, "recompute_hooks", False):  # once; they do nothing outside a recompute
            for module in self.encoder.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.register_forward_pre_hook(_save_statistics_in_recompute)
                    module.register_forward_hook(_restore_statistics_after_recompute)
            self.recompute_hooks = True

    def _resnet_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """smp's ResNetEncoder.forward (smp 0.6) with each stage under torch.utils.checkpoint."""
        e = self.encoder
        stages = [lambda t: e.relu(e.bn1(e.conv1(t))), lambda t: e.layer1(e.maxpool(t)), e.layer2, e.layer3, e.layer4]
        features = [x]
        for stage in stages[:e._depth]:
            x = checkpoint(stage, x, use_reentrant=False)
            features.append(x)
        return features

    def decode(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.decoder(features)

    def encoder_parameters(self) -> list[nn.Parameter]:
        return list(self.encoder.parameters())

    def freeze_encoder(self, frozen: bool) -> None:
        """Freeze (or release) the encoder: no gradients for its weights, and its normalisation
        layers' statistics kept (eval mode) while frozen, as smp's freeze_encoder does."""
        if frozen == self.encoder_frozen:
            return
        self.encoder.requires_grad_(not frozen)
        self.encoder_frozen = frozen
        self.train(self.training)

    def train(self, mode: bool = True) -> "EncoderDecoder":
        super().train(mode)
        if self.encoder_frozen:
            for module in self.encoder.modules():
                if isinstance(module, nn.modules.batchnorm._NormBase):
                    module.eval()
        return self


def _in_recompute() -> bool:
    """Whether a forward runs inside the backward pass: an activation checkpoint's recomputation
    (the autograd engine's current graph task; -1 outside backward)."""
    # a private function of torch (torch.utils.checkpoint uses it too); set_gradient_checkpointing
    # refuses to turn checkpointing on where it is missing
    return torch._C._current_graph_task_id() != -1


def _save_statistics_in_recompute(module: nn.Module, inputs) -> None:
    if module.training and module.track_running_stats and _in_recompute():
        module._statistics_before_recompute = [b.clone() for b in (module.running_mean, module.running_var,
                                                                   module.num_batches_tracked) if b is not None]


def _restore_statistics_after_recompute(module: nn.Module, inputs, output) -> None:
    saved = module.__dict__.pop("_statistics_before_recompute", None)
    if saved is not None:
        with torch.no_grad():
            for buffer, value in zip([b for b in (module.running_mean, module.running_var, module.num_batches_tracked)
                                      if b is not None], saved):
                buffer.copy_(value)


def build(name: str, encoder: str, in_channels: int, out_channels: int, weights: str = "none") -> EncoderDecoder:
    """Architecture `name` (models/registry.py) on `encoder`, `out_channels` logits, the encoder's
    weights `weights`."""
    import segmentation_models_pytorch as smp

    spec = ARCHITECTURES[name]
    family, _ = encoder_family(encoder)
    vit = family.kind == "vit"
    cls = getattr(smp, spec.smp_class)
    kwargs = {}
    if name == "dpt":
        embed = _vit_width(encoder)
        kwargs = dict(decoder_readout="ignore", dynamic_img_size=True,
                      decoder_intermediate_channels=(embed // 8, embed // 4, embed // 2, embed),
                      decoder_fusion_channels=embed // 6)
    net = build_with_weights(lambda encoder_weights, channels, **extra: cls(
        encoder_name=encoder, encoder_weights=encoder_weights, in_channels=channels, classes=out_channels, **kwargs,
        **extra), encoder, in_channels, weights)
    patch = None
    if name == "dpt":
        patch = encoder_stride(encoder)
        if patch != 16:  # smp's reassembly scales assume 16-pixel patches: build the head as for 16
            from segmentation_models_pytorch.base import initialization
            from segmentation_models_pytorch.decoders.dpt.decoder import DPTDecoder
            net.decoder = DPTDecoder(encoder_out_channels=net.encoder.out_channels,
                                     encoder_output_strides=[16] * len(net.encoder.out_channels),
                                     encoder_has_prefix_tokens=net.encoder.has_prefix_tokens, readout="ignore",
                                     intermediate_channels=kwargs["decoder_intermediate_channels"],
                                     fusion_channels=kwargs["decoder_fusion_channels"])
            initialization.initialize_decoder(net.decoder)
    return EncoderDecoder(net.encoder, DecoderHead(net.decoder, net.segmentation_head, patch), in_channels,
                          encoder, vit)


def _vit_width(encoder: str) -> int:
    """A timm ViT's embedding width, from its name (tiny 192, small 384, base 768, large 1024,
    giant 1536), without building it."""
    for size, width in (("tiny", 192), ("small", 384), ("base", 768), ("large", 1024), ("giant", 1536)):
        if f"vit_{size}_" in encoder:
            return width
    import timm
    return timm.create_model(encoder[3:], pretrained=False).embed_dim
