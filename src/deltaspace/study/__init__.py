"""The unified-subspace study, end to end: ``run_study(load_study_config(...))``."""

from deltaspace.study.config import StudyConfig, load_study_config
from deltaspace.study.pipeline import STAGES, run_study

__all__ = ["STAGES", "StudyConfig", "load_study_config", "run_study"]
