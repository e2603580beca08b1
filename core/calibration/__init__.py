"""Post-hoc calibration and correction, fitted on a validation split.

Every calibrator is an ``nn.Module`` registered in :data:`CALIBRATORS`, with
``fit(x, labels) -> self`` on a validation (or held-out retraining) split and
``__call__(x)`` the fitted transform, returning calibrated logits. Fitted values are
buffers or parameters, so ``state_dict`` round-trips through ``torch.load(weights_only=True)``.
Evaluation code calls ``calibrator.check_not_fitted_on(test_x)``: it raises ``ValueError``
when the "test" data are the data the calibrator was fitted on.

| name | class | acts on | paper |
|---|---|---|---|
| temperature | ``TemperatureScaling`` | logits | Guo et al. 2017 |
| vector_scaling | ``VectorScaling`` | logits | Guo et al. 2017 |
| logit_adjustment | ``PosthocLogitAdjustment`` | logits | Menon et al. 2021 |
| tau_normalization | ``TauNormalization`` | features | Kang et al. 2020 |
| lws | ``LearnableWeightScaling`` | features | Kang et al. 2020 |
| crt | ``ClassifierRetraining`` | features | Kang et al. 2020 |
| weight_balancing | ``WeightBalancing`` | features | Alshammari et al. 2022 |
| llr | ``LastLayerRetraining`` | features | Stromberg et al. 2025 |
| threshold | ``ThresholdMoving`` | binary logits ``(N,)`` | threshold moving |
| em_prior_correction | ``EMPriorCorrection`` | logits | Saerens et al. 2002 |
"""

from equipoise.core.calibration._common import (
    CALIBRATORS,
    Calibrator,
    check_distinct_splits,
    fingerprint,
    same_data,
)
from equipoise.core.calibration.decoupling import (
    DEFAULT_NORM_TAUS,
    ClassifierRetraining,
    LearnableWeightScaling,
    TauNormalization,
    fit_tau_normalization,
    retrain_classifier,
    tau_normalize,
)
from equipoise.core.calibration.llr import (
    DEFAULT_RHOS,
    LLR_METRICS,
    LastLayerRetraining,
    choose_rho,
    loss_weights,
    retrain_last_layer,
)
from equipoise.core.calibration.posthoc import DEFAULT_TAUS, PosthocLogitAdjustment, fit_tau, posthoc_logit_adjustment
from equipoise.core.calibration.temperature import (
    TemperatureScaling,
    VectorScaling,
    fit_temperature,
    fit_vector_scaling,
    temperature_scale,
    vector_scale,
)
from equipoise.core.calibration.threshold import (
    THRESHOLD_METRICS,
    EMPriorCorrection,
    ThresholdMoving,
    em_prior_correction,
    threshold_metrics,
    tune_threshold,
)
from equipoise.core.calibration.weight_balancing import (
    WeightBalancing,
    fit_weight_balancing,
    max_norm_,
    max_norm_radius,
)

__all__ = [
    "CALIBRATORS",
    "DEFAULT_NORM_TAUS",
    "DEFAULT_RHOS",
    "DEFAULT_TAUS",
    "LLR_METRICS",
    "THRESHOLD_METRICS",
    "Calibrator",
    "ClassifierRetraining",
    "EMPriorCorrection",
    "LastLayerRetraining",
    "LearnableWeightScaling",
    "PosthocLogitAdjustment",
    "TauNormalization",
    "TemperatureScaling",
    "ThresholdMoving",
    "VectorScaling",
    "WeightBalancing",
    "check_distinct_splits",
    "choose_rho",
    "em_prior_correction",
    "fingerprint",
    "fit_tau",
    "fit_tau_normalization",
    "fit_temperature",
    "fit_vector_scaling",
    "fit_weight_balancing",
    "loss_weights",
    "max_norm_",
    "max_norm_radius",
    "posthoc_logit_adjustment",
    "retrain_classifier",
    "retrain_last_layer",
    "same_data",
    "tau_normalize",
    "temperature_scale",
    "threshold_metrics",
    "tune_threshold",
    "vector_scale",
]
