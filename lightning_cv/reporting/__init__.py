"""Pictures and tables of a run (confusion matrix, prediction gallery, Grad-CAM, per-class results) sent to whatever
logger the run uses, written to the run directory and printed.

A low layer: it knows loggers, PIL and rich, never models or callbacks, which import it.
"""

from lightning_cv.reporting.images import log_image
from lightning_cv.reporting.table_logging import log_table
from lightning_cv.reporting.tables import format_table, print_table, write_table

__all__ = ["format_table", "log_image", "log_table", "print_table", "write_table"]
