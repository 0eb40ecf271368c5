"""Rewards and evaluation metrics on image features for diffusion fine-tuning.

Rewards (look up by name with :func:`get_reward`; each returns a :class:`RewardResult`):

=============  =====================================================  ================
name           set-level value                                        orientation
=============  =====================================================  ================
``MMD``        unbiased MMD² to the reference (RBF, fixed bandwidth)  lower is better
``FID``        Fréchet distance of Gaussian fits to the reference     lower is better
``MI``         Ross k-NN mutual information I(prompt; feature)        higher is better
``MMD_MI``     ``w_mi·MI − w_mmd·MMD²``                               higher is better
``VENDI``      Vendi score (reference-free diversity)                 higher is better
``MMD_VENDI``  ``w_vendi·Vendi_within_prompt − w_mmd·MMD²``           higher is better
=============  =====================================================  ================

``result.per_image`` is always "higher is better": the leave-one-out marginal contribution of each
image, ``M(S∖{i}) − M(S)`` for lower-is-better metrics and ``M(S) − M(S∖{i})`` otherwise (see
:mod:`.credit`).  Inputs may be NumPy arrays or torch tensors; everything is computed in float64 NumPy
and nothing is differentiable.

Evaluation: :func:`evaluate_metrics` (MMD², FID, Vendi overall and within prompt, within-prompt
pairwise distance, MI, precision/recall/density/coverage).
"""

from .base import Reward, RewardResult
from .combined import MMDMIReward, MMDVendiReward, standardize
from .credit import credit_from_leave_one_out, leave_one_out_credit, leave_one_out_values
from .distances import knn_radii, pairwise_distances, pairwise_squared_distances
from .evaluate import evaluate_metrics, mean_pairwise_distance_within_prompt
from .fid import FIDReward, frechet_distance, frechet_distance_features, gaussian_fit, sqrtm_psd
from .kernels import cosine_kernel, median_heuristic_bandwidth, rbf_kernel
from .mi import MIReward, mutual_information_knn, mutual_information_knn_leave_one_out
from .mmd import MMDReward, mmd2_unbiased, mmd2_unbiased_from_kernels, mmd2_unbiased_leave_one_out
from .prdc import precision_recall_density_coverage
from .registry import available_rewards, get_reward, register_reward, reward_factory
from .vendi import VendiReward, vendi_score, vendi_score_from_kernel, within_prompt_vendi_score

__all__ = [
    "FIDReward",
    "MIReward",
    "MMDMIReward",
    "MMDReward",
    "MMDVendiReward",
    "Reward",
    "RewardResult",
    "VendiReward",
    "available_rewards",
    "cosine_kernel",
    "credit_from_leave_one_out",
    "evaluate_metrics",
    "frechet_distance",
    "frechet_distance_features",
    "gaussian_fit",
    "get_reward",
    "knn_radii",
    "leave_one_out_credit",
    "leave_one_out_values",
    "mean_pairwise_distance_within_prompt",
    "median_heuristic_bandwidth",
    "mmd2_unbiased",
    "mmd2_unbiased_from_kernels",
    "mmd2_unbiased_leave_one_out",
    "mutual_information_knn",
    "mutual_information_knn_leave_one_out",
    "pairwise_distances",
    "pairwise_squared_distances",
    "precision_recall_density_coverage",
    "rbf_kernel",
    "register_reward",
    "reward_factory",
    "sqrtm_psd",
    "standardize",
    "vendi_score",
    "vendi_score_from_kernel",
    "within_prompt_vendi_score",
]
