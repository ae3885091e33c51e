"""Named model presets: which model with which training settings, one definition for the study,
reproduce and the CLI."""

from __future__ import annotations

#: The Gaussian noise (pixel units) the ``-noise`` models train with: the usual level for
#: median smoothing at that sigma (``study --certify 0.25``).
STUDY_NOISE_SIGMA = 0.25
#: The models by preset name: the label reports print and the training settings that define each
#: (a TrainConfig's fields). The study trains any of them; reproduce's Table 6 trains ``ca``.
MODEL_PRESETS: dict[str, tuple[str, dict]] = {
    "resnet": ("ResNet", {"model": "resnet"}),
    "ca": ("CA alone (no PNS)", {"model": "cprl", "objective": "regression"}),
    "cprl": ("CPRL (CA + PNS)", {"model": "cprl"}),
    "sat": ("SAT", {"model": "sat"}),
    "nt": ("NT", {"model": "nt"}),
    "resnet-noise": ("ResNet, noise-trained", {"model": "resnet",
                                               "noise_sigma": STUDY_NOISE_SIGMA}),
    "ca-noise": ("CA alone, noise-trained", {"model": "cprl", "objective": "regression",
                                             "noise_sigma": STUDY_NOISE_SIGMA}),
    "cprl-noise": ("CPRL, noise-trained", {"model": "cprl", "noise_sigma": STUDY_NOISE_SIGMA}),
}  # fmt: skip
