"""The student: the model a study trains (and evaluates untrained, as `base`)."""

from __future__ import annotations

from pathlib import Path

from deltalab.config import Params
from deltalab.errors import UserError


def student_path(params: Params) -> str:
    if params.student is None:
        raise UserError("params: student: not set (student: {micro_model: NAME} or {model: PATH})")
    path = params.student.model_path
    if params.student.micro_model and not Path(path).exists():
        raise UserError(f"{path}: student model not built (run the micro_models stage first)")
    return path
