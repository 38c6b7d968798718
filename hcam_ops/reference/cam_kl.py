"""Plain-PyTorch CAM-consistency loss: the contract of hcam_ops.cam_kl_loss."""

from ..ops.cam_kl import two_level_signature
from .cam_gather import cam_gather
from .minmax_normalize import minmax_normalize
from .softmax_kl import reduce_rows, softmax_kl


def hierarchical_cam_kl_loss(
    features,
    weights,
    indices,
    temperature=1.0,
    eps=1e-6,
    direction="fine_to_coarse",
    reduction="batchmean",
    *,
    check_index=True,
):
    norms = [minmax_normalize(cam_gather(features, w, i), eps) for w, i in zip(weights, indices)]
    per_sample = sum(
        softmax_kl(norms[l], norms[l + 1].detach(), temperature, direction, "none") for l in range(len(norms) - 1)
    )
    return reduce_rows(per_sample, reduction)


def cam_kl_loss(features, fine_weight, coarse_weight, fine_index, coarse_index, *options, **keywords):
    return hierarchical_cam_kl_loss(
        features, [fine_weight, coarse_weight], [fine_index, coarse_index], *options, **keywords
    )


cam_kl_loss.__signature__ = two_level_signature(hierarchical_cam_kl_loss)
