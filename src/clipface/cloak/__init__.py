"""Cloaking: small image changes that move a face in a recogniser's feature space.

Two methods optimise a perturbation of the whole image at a working resolution (the image's own,
up to ``work_side`` pixels): :mod:`~clipface.cloak.fawkes` (targeted, toward another identity)
and :mod:`~clipface.cloak.lowkey` (untargeted, away from the original). Surrogates are any
differentiable encoders (:class:`~clipface.models.base.TorchEncoder`: FaceNet, CLIP), one or an
ensemble; each sees a differentiable copy of its own front end's crop of the image
(:class:`View`: the MTCNN face box for FaceNet, the centre crop for CLIP), and only the union of
those crops is perturbed, so the saved PNG is the full image with a cloaked face. Each cloak is
then held to its DSSIM budget exactly: :func:`fit_budget` scales the perturbation down
(bisection) until the DSSIM of the saved uint8 pixels is within the budget.

``mode`` sets the budget: the DSSIM thresholds of Fawkes v1.0 (``protection.py``
``mode2param``), low 0.004, mid 0.012, high 0.017, for both methods, so that they compare.
``region`` says where DSSIM is measured: ``image`` (default), the whole saved picture, or
``face``, the union of the surrogates' crops, which is where Fawkes measures it (on its aligned
112 px face). On a 250 px LFW photo the face box is about a third of the picture, so an
``image`` budget allows roughly three times Fawkes' DSSIM on the face; every record reports both
(``dssim``, ``dssim_crop``).
"""

from __future__ import annotations

from .budget import budget_measure, fit_budget, image_stats, within_budget
from .run import CloakRun, cloak_folder, cloak_images, load_surrogates
from .settings import METHODS, MODES, REGIONS, CloakSettings
from .views import View, to_tensor, view_for

__all__ = [
    "METHODS",
    "MODES",
    "REGIONS",
    "CloakRun",
    "CloakSettings",
    "View",
    "budget_measure",
    "cloak_folder",
    "cloak_images",
    "fit_budget",
    "image_stats",
    "load_surrogates",
    "to_tensor",
    "view_for",
    "within_budget",
]
