"""The names lightning_cv adds to a Lightning checkpoint, in one place (readers and writers import them from here)."""

__all__ = ["EMA_KEY", "FREEZING_KEY", "GRADS_KEY", "RNG_KEY"]

#: ImageClassifier's freezing state: ``{"initial_frozen": ..., "num_frozen": ...}``
FREEZING_KEY = "lightning_cv"
#: Python, NumPy and torch generator states (:func:`lightning_cv.resume.rng.capture_rng_state`)
RNG_KEY = "lightning_cv_rng"
#: gradients summed so far inside a gradient-accumulation window, by parameter name
GRADS_KEY = "lightning_cv_accumulated_grads"
#: the EMA callback's averaged weights, by state-dict key
EMA_KEY = "ema_state_dict"
