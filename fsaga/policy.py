"""Retry policies: how many attempts a step (or a compensation) gets, and how long to wait between.

A policy is a value. It computes delays but never sleeps: the interpreter that runs the saga owns
the clock, the sleep and the random source, so tests swap them and never really wait.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import final

from fsaga._numbers import check_count, check_number
from fsaga.errors import NonRetryableError

__all__ = ["Retry", "RetryOn"]

RetryOn = type[Exception] | tuple[type[Exception], ...] | Callable[[Exception], bool]
"""Which errors are worth another attempt: exception types, or a predicate over the error."""


def _is_exception_type(candidate: object) -> bool:
    return isinstance(candidate, type) and issubclass(candidate, Exception)


@final
@dataclass(frozen=True, slots=True)
class Retry:
    """Retry with exponential backoff and jitter.

    The wait before attempt ``n + 1`` (after ``n`` failed attempts) is
    ``min(max_delay, delay * backoff ** (n - 1))``, of which the fraction ``jitter`` is randomised
    away: ``jitter=0`` waits exactly that long, ``jitter=1`` waits anywhere between zero and it
    ("full jitter").

    Args:
        attempts: total attempts, the first included; ``1`` means no retry.
        delay: seconds to wait before the second attempt.
        backoff: factor by which each further wait grows (``1`` keeps it constant).
        max_delay: upper bound of any single wait.
        jitter: fraction of each wait that is randomised, from 0 to 1.
        retry_on: exception types, or a predicate over the error, that deserve another attempt.
            Other errors fail at once.

    >>> policy = Retry(4, delay=0.5, backoff=2.0, jitter=0.0)
    >>> [policy.delay_before(attempt, random_unit=0.0) for attempt in (2, 3, 4)]
    [0.5, 1.0, 2.0]
    >>> policy.should_retry(ValueError("flaky"))
    True
    """

    attempts: int = 3
    delay: float = field(default=0.1, kw_only=True)
    backoff: float = field(default=2.0, kw_only=True)
    max_delay: float = field(default=30.0, kw_only=True)
    jitter: float = field(default=0.1, kw_only=True)
    retry_on: RetryOn = field(default=Exception, kw_only=True)

    def __post_init__(self) -> None:
        check_count(self.attempts, what="Retry: attempts", minimum=1)
        for label, number in (
            ("delay", self.delay),
            ("backoff", self.backoff),
            ("max_delay", self.max_delay),
            ("jitter", self.jitter),
        ):
            if check_number(number, what=f"Retry: {label}") < 0:
                raise ValueError(f"Retry: {label} must be finite and >= 0, got {number!r}")
        if self.backoff < 1:
            raise ValueError(f"Retry: backoff must be >= 1, got {self.backoff!r}")
        if self.max_delay < self.delay:
            raise ValueError(
                f"Retry: max_delay ({self.max_delay!r}) must be >= delay ({self.delay!r})"
            )
        if self.jitter > 1:
            raise ValueError(f"Retry: jitter must be between 0 and 1, got {self.jitter!r}")
        retry_on = self.retry_on
        valid = (
            _is_exception_type(retry_on)
            or (
                isinstance(retry_on, tuple)
                and len(retry_on) > 0
                and all(_is_exception_type(kind) for kind in retry_on)
            )
            or (callable(retry_on) and not isinstance(retry_on, type))
        )
        if not valid:
            raise TypeError(
                "Retry: retry_on must be an Exception subclass, a non-empty tuple of them, "
                f"or a predicate, got {retry_on!r}"
            )

    def should_retry(self, error: BaseException) -> bool:
        """Whether `error` deserves another attempt (attempts left aside).

        Only `Exception`s are ever retried: an interrupt such as `KeyboardInterrupt` never is,
        nor a `fsaga.errors.NonRetryableError`.
        """
        if not isinstance(error, Exception) or isinstance(error, NonRetryableError):
            return False
        retry_on = self.retry_on
        if isinstance(retry_on, type | tuple):
            return isinstance(error, retry_on)
        return bool(retry_on(error))

    def delay_before(self, attempt: int, *, random_unit: float) -> float:
        """Seconds to wait before `attempt` (2 or more), given a random number in ``[0, 1)``.

        Always finite and between 0 and `max_delay`, however many attempts came before: a
        zero `delay` stays zero, and a growth that overflows a float is capped like any other.

        >>> Retry(2_000, delay=0.0, backoff=2.0).delay_before(1_999, random_unit=0.5)
        0.0
        >>> Retry(2_000, delay=1.0, max_delay=60.0, jitter=0.0).delay_before(1_999, random_unit=0.0)
        60.0
        """
        if attempt < 2:
            raise ValueError(f"Retry: no delay precedes attempt {attempt}; retries start at 2")
        delay = float(self.delay)
        backoff = float(self.backoff)
        if delay == 0.0 or backoff == 1.0:
            grown = delay
        else:
            try:
                grown = delay * backoff ** (attempt - 2)
            except OverflowError:  # the power left the floats: it is past any bound
                grown = math.inf
        return min(float(self.max_delay), grown) * (1.0 - self.jitter * random_unit)
