"""Rule parameters: how each is declared and checked."""

import math
from dataclasses import dataclass

LAG_STATUSES = ("warning", "error", "stalled", "stopped", "rewind")
FILTERS = ("system", "channel", "group", "service")


class Invalid(ValueError):
    """Input a user got wrong; the message names the field and what is expected."""


@dataclass
class Param:
    name: str
    type: str  # number | int | text | choice | statuses
    default: object = None
    required: bool = False
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple = ()
    help: str = ""


def _check(param: Param, value):
    where = f"params.{param.name}"
    if param.type in ("number", "int"):
        if isinstance(value, str) and value.strip():
            try:
                value = float(value) if param.type == "number" else int(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise Invalid(
                f"{where} must be a {'number' if param.type == 'number' else 'whole number'}"
            )
        # JSON's 1e400 arrives as inf: judged before int(), which cannot take it.
        if isinstance(value, float) and not math.isfinite(value):
            raise Invalid(f"{where} must be a finite number")
        if param.type == "int" and value != int(value):
            raise Invalid(f"{where} must be a whole number")
        try:
            value = int(value) if param.type == "int" else float(value)
        except OverflowError:  # a whole number with hundreds of digits
            raise Invalid(f"{where} is too large") from None
        if param.minimum is not None and value < param.minimum:
            raise Invalid(f"{where} must be at least {param.minimum:g}")
        if param.maximum is not None and value > param.maximum:
            raise Invalid(f"{where} must be at most {param.maximum:g}")
        return value
    if param.type == "text":
        if not isinstance(value, str):
            raise Invalid(f"{where} must be a string")
        if len(value) > 500:
            raise Invalid(f"{where} is longer than 500 characters")
        return value.strip()
    if param.type == "choice":
        if value not in param.choices:
            raise Invalid(f"{where} must be one of {', '.join(param.choices)}")
        return value
    if param.type == "statuses":
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list) or not value:
            raise Invalid(f"{where} must be a non-empty list of {', '.join(LAG_STATUSES)}")
        for item in value:
            if item not in LAG_STATUSES:
                raise Invalid(f"{where}: {item!r} is not one of {', '.join(LAG_STATUSES)}")
        return sorted(set(value), key=LAG_STATUSES.index)
    raise AssertionError(param.type)


def _filters(*names):
    return [Param(n, "text", default="", help=f"only this {n} (empty: all)") for n in names]


WINDOW = Param(
    "window_seconds", "int", default=300, minimum=60, maximum=86400, help="counting window"
)
