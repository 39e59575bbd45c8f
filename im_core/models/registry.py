"""The architectures by name and the encoders they take: what the config checks and the model
factory ask (the table holds no code, so reading it imports no torch: Snakemake reads the config
checks at the start of every run).

An architecture is a row of `ARCHITECTURES`: the 1x1 U-Net of the IM authors (this project's
own, from scratch) or a segmentation-models-pytorch (smp) architecture on an encoder of smp or
timm. An encoder is a name smp knows (`resnet50`, or `tu-<timm model>` for timm's); the names a
config may give are the families of `ENCODER_FAMILIES`, each with the stride its features reach
and whether it is a vision transformer (one feature scale, the patch grid) or a convolutional
network (a feature pyramid). Adding an architecture = its row here and its smp class in
models/smp_models.py (ARCHITECTURE_CLASSES); an encoder family = its row here.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT = "unet1x1"


@dataclass(frozen=True)
class ArchitectureSpec:
    smp_class: str | None              # the smp model class (None: the project's own 1x1 U-Net)
    encoders: tuple[str, ...] = ()     # the encoder kinds it takes: "cnn" (a pyramid), "vit" (one scale)
    stride: int | None = None          # the stride sizes must be multiples of; None: the encoder's
    widens: bool = False               # has a width (Noisy Student / IM+ widening)
    summary: str = ""


ARCHITECTURES: dict[str, ArchitectureSpec] = {
    "unet1x1": ArchitectureSpec(None, stride=16, widens=True,
                                summary="the IM authors' 1x1 U-Net (alpha, dropout), from scratch; 0.17-0.68 M "
                                        "parameters"),
    "unet": ArchitectureSpec("Unet", ("cnn",),
                             summary="U-Net decoder on a pretrained encoder (Ronneberger et al., MICCAI 2015)"),
    "deeplabv3plus": ArchitectureSpec("DeepLabV3Plus", ("cnn",), stride=16,
                                      summary="DeepLabV3+ (Chen et al., ECCV 2018): the encoder dilated to stride 16, "
                                              "ASPP; UniMatch's model with ResNet-50/101"),
    "fpn": ArchitectureSpec("FPN", ("cnn",), summary="Feature Pyramid Network decoder (Kirillov et al., "
                                                     "panoptic FPN, CVPR 2019)"),
    "dpt": ArchitectureSpec("DPT", ("vit",),
                            summary="DPT head on a vision transformer (Ranftl et al., ICCV 2021); UniMatch V2's "
                                    "model with DINOv2"),
}


@dataclass(frozen=True)
class EncoderFamily:
    pattern: str       # a full match of the encoder name
    kind: str          # "cnn" or "vit"
    stride: int | None  # the deepest features' stride (None: the patch size in the name)
    example: str
    checkpointing: bool = True  # model.gradient_checkpointing is implemented for it (smp_models.py)


ENCODER_FAMILIES: tuple[EncoderFamily, ...] = (
    EncoderFamily(r"resnet(18|34|50|101|152)", "cnn", 32, "resnet50"),
    EncoderFamily(r"resnext(50_32x4d|101_32x(4|8|16|32|48)d)", "cnn", 32, "resnext50_32x4d"),
    EncoderFamily(r"efficientnet-b[0-7]", "cnn", 32, "efficientnet-b0", checkpointing=False),
    EncoderFamily(r"mobilenet_v2", "cnn", 32, "mobilenet_v2", checkpointing=False),
    EncoderFamily(r"tu-(resnet|resnext|convnext|convnextv2|efficientnet|efficientnetv2|regnet[xyz]?)"
                  r"[A-Za-z0-9_]*(\.[A-Za-z0-9_]+)?", "cnn", 32, "tu-convnext_tiny"),
    EncoderFamily(r"tu-vit_[A-Za-z0-9]+_patch(?P<patch>\d+)[A-Za-z0-9_]*(\.[A-Za-z0-9_]+)?", "vit", None,
                  "tu-vit_small_patch14_dinov2"),
)


def encoder_family(encoder: str) -> tuple[EncoderFamily, re.Match] | None:
    for family in ENCODER_FAMILIES:
        match = re.fullmatch(family.pattern, encoder or "")
        if match:
            return family, match
    return None


def encoder_stride(encoder: str) -> int:
    """The stride of an encoder's deepest features (a ViT's: its patch size)."""
    family, match = encoder_family(encoder)
    return family.stride or int(match.group("patch"))


def model_stride(model: dict) -> int:
    """The side of the smallest image block every size must be a multiple of: the 1x1 U-Net 16
    (four halvings), DeepLabV3+ 16 (its encoder dilated to stride 16), U-Net and FPN the encoder's
    stride (32 for ResNets and ConvNeXt), DPT twice the patch (its head halves the patch grid
    once: an even grid, 28 for ViT/14)."""
    name = model.get("name", DEFAULT)
    spec = ARCHITECTURES[name]
    if name == "dpt":
        return 2 * encoder_stride(model["encoder"])
    return spec.stride or encoder_stride(model["encoder"])


def model_problems(model: dict, key: str) -> list[str]:
    """What is wrong with a resolved `model` section (schema defaults filled in), naming `key`."""
    name = model.get("name", DEFAULT)
    if name not in ARCHITECTURES:
        return [f"{key}.name: {name!r} is not an architecture; one of {list(ARCHITECTURES)}"]
    spec = ARCHITECTURES[name]
    encoder = model.get("encoder")
    if spec.smp_class is None:
        if model.get("gradient_checkpointing"):
            return [f"{key}.gradient_checkpointing: applies to the pretrained-encoder architectures, not to {name!r}: "
                    "its 0.17-0.68 M parameters and narrow feature maps leave little to save by recomputing them; "
                    "set it to false (or use a smaller train.batch_size)"]
        wrong = [k for k, off in (("encoder", None), ("decoder_lr_multiplier", 1.0), ("freeze_encoder_steps", 0))
                 if model.get(k, off) != off]
        if model.get("weights", "imagenet") not in ("imagenet", "none"):
            wrong.append("weights")
        others = ", ".join(n for n in ARCHITECTURES if n != DEFAULT)
        return [f"{key}.{k}: applies to the pretrained-encoder architectures ({others}), not to {name!r} (trained "
                "from scratch, no encoder of its own to load or freeze)" for k in wrong]
    if not encoder:
        return [f"{key}.encoder: architecture {name!r} needs an encoder, e.g. "
                f"{', '.join(f.example for f in ENCODER_FAMILIES if f.kind in spec.encoders)}"]
    found = encoder_family(encoder)
    if found is None:
        families = "; ".join(f"{f.example} ({f.pattern})" for f in ENCODER_FAMILIES)
        return [f"{key}.encoder: {encoder!r} is not an encoder this workflow knows; encoders (name pattern): {families}"]
    family = found[0]
    if family.kind not in spec.encoders:
        fits = [n for n, s in ARCHITECTURES.items() if family.kind in s.encoders]
        return [f"{key}.encoder: {encoder!r} is a {'vision transformer' if family.kind == 'vit' else 'convolutional'} "
                f"encoder, which architecture {name!r} does not take; use {' or '.join(map(repr, fits))}, or an "
                f"encoder such as {', '.join(f.example for f in ENCODER_FAMILIES if f.kind in spec.encoders)}"]
    if model.get("gradient_checkpointing") and not family.checkpointing:
        fits = ", ".join(f.example for f in ENCODER_FAMILIES if f.checkpointing and f.kind in spec.encoders)
        return [f"{key}.gradient_checkpointing: not implemented for encoder {encoder!r} (smp's own EfficientNet and "
                f"MobileNetV2 have no checkpointing of their own); set it to false or use an encoder such as {fits}"]
    return []


def model_params(model: dict) -> dict:
    """A resolved `model` section as a training job's params: the 1x1 U-Net's alpha and dropout
    only (its params are what they were before the other architectures), the others' all but
    those; `gradient_checkpointing` only where it is on, so the params of a model without it are
    what they were before it was a setting (it changes memory and time, not the results)."""
    if model.get("name", DEFAULT) == DEFAULT:
        return {"alpha": model["alpha"], "dropout": model["dropout"]}
    params = {k: model[k] for k in ("name", "encoder", "weights", "decoder_lr_multiplier", "freeze_encoder_steps")}
    if model.get("gradient_checkpointing"):
        params["gradient_checkpointing"] = True
    return params
