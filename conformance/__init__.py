"""The conformance suite: every backend against the float64 reference of attn_core, forward and backward.

Run it with ``python -m conformance`` or from pytest (``tests/test_conformance.py``).
"""

from .cases import CASES, MODULES, Case, select_cases
from .suite import Comparison, Report, Row, compare, reference_for, run_case, run_suite
from .tolerances import TOLERANCES, Tolerance, tolerance_for

__all__ = ["CASES", "MODULES", "Case", "select_cases", "Comparison", "Report", "Row", "compare", "reference_for",
           "run_case", "run_suite", "TOLERANCES", "Tolerance", "tolerance_for"]
