"""The figures: functions of results (trajectories, records) that draw and save, nothing else.

One style (:mod:`flowmoe.plotting.style`), every figure written as PNG plus SVG, each function
returning the paths it wrote. Library modules compute; jobs and commands call these to draw.
"""

from .alignment import alignment_figure
from .compare import overlay_figure, study_figure
from .finetune import finetune_figure
from .loss import MATCHINGS, draw_loss, loss_figure, loss_markers
from .portrait import observable_label, portrait_figure
from .scaling import d_figure, m_figure
from .style import COLORS, STYLE, save, subplots, teacher_style

__all__ = ["alignment_figure", "overlay_figure", "study_figure", "finetune_figure", "loss_figure", "draw_loss",
           "loss_markers", "MATCHINGS", "observable_label", "portrait_figure", "d_figure", "m_figure", "COLORS",
           "STYLE", "save", "subplots", "teacher_style"]
