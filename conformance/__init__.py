"""The conformance suite: every backend against the float64 reference of attn_core, forward and backward.

Run it with ``python -m conformance`` (``--models`` adds the registered models, :mod:`conformance.model_cases`) or
from pytest (``tests/conformance/test_conformance.py``, ``tests/models/test_model_conformance.py``); check a module
you wrote with ``conformance.check(module, spec, param_map=...)`` (:mod:`conformance.check`).
"""

from .cases import CASES, MODULES, Case, cases_for, select_cases
from .check import CheckReport, Diagnosis, check, spec_for
from .check_training import TrainingCheckReport, TrainingDiagnosis, check_training
from .model_cases import MODEL_CASES, MODEL_NAMES, ModelCase, select_model_cases
from .suite import Comparison, Report, Row, compare, reference_for, reference_state_for, run_case, run_suite
from .tolerances import TOLERANCES, Tolerance, tolerance_for

__all__ = ["CASES", "MODULES", "Case", "select_cases", "cases_for", "check", "CheckReport", "Diagnosis", "spec_for",
           "Comparison", "Report", "Row", "compare", "reference_for", "run_case", "run_suite", "TOLERANCES",
           "Tolerance", "tolerance_for", "MODEL_CASES", "MODEL_NAMES", "ModelCase", "select_model_cases",
           "reference_state_for", "check_training", "TrainingCheckReport", "TrainingDiagnosis"]
