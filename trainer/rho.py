"""keras-gsam's import path for the rho schedules: `from trainer.rho import RhoScheduler`.

keras-gsam users change only the import (`from trainer.gsam import GSAM`, `from trainer.rho
import RhoScheduler, CosineAnnealingScheduler`). The schedules live in `trainer.gsam.rho`, with
the rest of the GSAM library.
"""

from trainer.gsam.rho import (
    CosineAnnealingScheduler,
    RhoScheduler,
    learning_rate_bounds,
    rho_from_learning_rate,
)

__all__ = [
    "CosineAnnealingScheduler",
    "RhoScheduler",
    "learning_rate_bounds",
    "rho_from_learning_rate",
]
