"""One rounding rule for every table rlq and its benchmarks write: the same value reads the same wherever it is shown.

Python's ``f"{x:.1f}"`` rounds the binary float: 0.0475 computed two ways (as 0.04750000000000001 and as
0.047499999999999994) reads 4.8 in one cell and 4.7 in the next, and an exact half goes to the even digit
(2.25 reads 2.2). Here the float's noise is dropped first (12 significant digits) and halves round away
from zero, so both read 4.8 and 2.25 reads 2.3. Non-finite values read as ``f"{x:.1f}"`` would ("nan",
"inf"); callers that show a dash or "n/a" for them check first.
"""

from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal, localcontext

__all__ = ["fixed", "pct"]


def fixed(x: float, decimals: int = 1, *, sign: bool = False) -> str:
    """``x`` with ``decimals`` decimals (halves away from zero, float noise ignored); ``sign``: always a + or -."""
    x = float(x)
    if not math.isfinite(x):
        return f"{x:+.{decimals}f}" if sign else f"{x:.{decimals}f}"
    with localcontext() as ctx:
        ctx.prec = 400  # room for any finite float's integer digits plus the decimals
        d = Decimal(f"{x:.12g}").quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP)
    return f"{d:+.{decimals}f}" if sign else f"{d:.{decimals}f}"


def pct(x: float, decimals: int = 1, *, sign: bool = False) -> str:
    """A fraction as percent: ``pct(0.0475)`` is ``"4.8"`` (no % sign; the table's header says it)."""
    return fixed(100 * float(x), decimals, sign=sign)
