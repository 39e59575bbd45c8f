"""An encoder's starting weights: `none` (random), `imagenet` (the library's pretrained weights,
fetched by its own mechanism into its own cache), or a path to a local weights file.

- `imagenet`: smp's own encoders (resnet50, ...) download `model.safetensors` of their Hugging
  Face repository (smp-hub/<encoder>.imagenet at a pinned revision) with huggingface_hub into
  its cache (HF_HOME, default ~/.cache/huggingface); timm's (`tu-` names) the weights of the
  name's pretrained tag (e.g. DINOv2's LVD-142M for vit_small_patch14_dinov2) from its Hugging
  Face repository, or from its URL into torch's hub cache. Where neither the cache nor the
  network has them, the job stops before training with an InputError that names the repository
  or URL and the cache, and says how to provide them.
- a path: smp's own encoders read the file (`torch.load(weights_only=True)`, or safetensors) as
  the encoder's state dict (a torchvision/smp ResNet's keys; a prefix `encoder.` or `module.`
  and a classifier `fc.*` are dropped), then adapt the first convolution to the input channels
  as smp does for its downloads; timm's load it through timm (`pretrained_cfg_overlay` file:
  timm's own key filter and first-convolution adaptation, weights_only).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..errors import InputError

WEIGHT_WORDS = ("imagenet", "none")


def build_with_weights(factory: Callable, encoder: str, in_channels: int, weights: str):
    """`factory(encoder_weights, in_channels, **encoder_kwargs)` -> an smp model, with the
    encoder's weights as `weights` says."""
    if weights in (None, "none"):
        return factory(None, in_channels)
    timm_encoder = encoder.startswith("tu-")
    if weights == "imagenet":
        try:
            return factory(True if timm_encoder else "imagenet", in_channels)
        except KeyError as e:  # smp: no such weights for this encoder
            raise InputError(f"model.weights: imagenet: {e.args[0] if e.args else e}") from e
        except Exception as e:  # noqa: BLE001 - the download's errors (network, cache, hub) differ by library
            raise InputError(missing_weights_message(encoder, e)) from e
    path = Path(weights).expanduser()
    if not path.is_file():
        raise InputError(f"model.weights: {weights!r} is neither 'imagenet', 'none' nor a weights file here "
                         f"({path.resolve()} does not exist)")
    if timm_encoder:
        try:
            return factory(True, in_channels, pretrained_cfg_overlay={"file": str(path)})
        except Exception as e:  # noqa: BLE001 - timm's load errors: unpickling, keys, shapes
            raise InputError(f"model.weights: {path}: timm could not load it as the weights of {encoder[3:]!r} "
                             f"({type(e).__name__}: {str(e)[:300]})") from e
    net = factory(None, 3)  # the file holds RGB weights; the first convolution is adapted after loading
    state = read_encoder_state(path)
    try:
        net.encoder.load_state_dict(state)
    except RuntimeError as e:
        raise InputError(f"model.weights: {path}: not the weights of encoder {encoder!r} ({str(e)[:400]})") from e
    net.encoder.set_in_channels(in_channels, pretrained=True)
    return net


def read_encoder_state(path: Path) -> dict:
    """A weights file as a state dict of tensors (never running code from it)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        state = load_file(str(path), device="cpu")
    else:
        import pickle

        import torch
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
            raise InputError(f"model.weights: {path}: not a weights file torch reads with weights_only=True "
                             f"({type(e).__name__}: {str(e)[:300]})") from e
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise InputError(f"model.weights: {path}: holds a {type(state).__name__}, not a state dict")
    out = {}
    for key, value in state.items():
        for prefix in ("module.", "encoder."):
            key = key.removeprefix(prefix)
        if not key.startswith("fc."):
            out[key] = value
    return out


def missing_weights_message(encoder: str, error: Exception) -> str:
    """What was looked for, where, and how to provide it."""
    from huggingface_hub import constants

    cache = constants.HF_HUB_CACHE
    if encoder.startswith("tu-"):
        import timm
        import torch
        cfg = timm.models.get_pretrained_cfg(encoder[3:])
        if cfg is None:
            raise InputError(f"model.encoder: {encoder!r}: timm has no pretrained weights for {encoder[3:]!r}")
        if cfg.hf_hub_id:
            what = f"the weights of timm's {encoder[3:]!r} from the Hugging Face repository {cfg.hf_hub_id} " \
                   f"(https://huggingface.co/{cfg.hf_hub_id}) in the cache {cache}"
        else:
            what = f"the weights of timm's {encoder[3:]!r} from {cfg.url} in torch's cache " \
                   f"{Path(torch.hub.get_dir()) / 'checkpoints'}"
        fill = (f"python -c \"import timm; timm.create_model('{encoder[3:]}', pretrained=True)\"")
    else:
        import segmentation_models_pytorch as smp
        settings = smp.encoders.encoders[encoder]["pretrained_settings"]["imagenet"]
        repo, revision = settings["repo_id"], settings["revision"]
        what = (f"model.safetensors and config.json of the Hugging Face repository {repo} at revision {revision} "
                f"(https://huggingface.co/{repo}) in the cache {cache}")
        fill = (f"python -c \"import segmentation_models_pytorch as smp; "
                f"smp.encoders.get_encoder('{encoder}', weights='imagenet')\"")
    return (f"model.weights: imagenet: the pretrained weights of encoder {encoder!r} are neither in the cache nor "
            f"downloadable here; looked for {what} ({type(error).__name__}: {str(error)[:200]}). Provide them before "
            f"training: on a machine with internet run {fill} and copy its cache folder to {cache} here (or set "
            "HF_HOME to a copy), or download the weights file and set model.weights to its path")
