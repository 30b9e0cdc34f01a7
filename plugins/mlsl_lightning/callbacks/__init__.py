from mlsl_lightning.callbacks.family_validation import FamilyValidationCallback
from mlsl_lightning.callbacks.mixture_monitor import MixtureMonitorCallback
from mlsl_lightning.callbacks.run_log import RunLogCallback
from mlsl_lightning.callbacks.scaling_law_fit import ScalingLawFitCallback
from mlsl_lightning.callbacks.schedule import AdaptiveMixtureCallback, ScheduleCallback
from mlsl_lightning.callbacks.tensorboard_layout import TensorBoardLayoutCallback

__all__ = ["AdaptiveMixtureCallback", "FamilyValidationCallback", "MixtureMonitorCallback", "RunLogCallback", "ScalingLawFitCallback", "ScheduleCallback", "TensorBoardLayoutCallback"]
