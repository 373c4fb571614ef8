"""Pictures of sagas: a saga's plan before it runs, a run's trace after, as text, Mermaid and
an HTML page.

- `plan_as_text`, `plan_as_mermaid`: what a saga will do, read off its tree without running it
  (`plan_of` gives the same as values).
- `trace_of_events`, `trace_of_journal`: what a run did, from its events or from a durable
  saga's journal; `trace_as_text`, `trace_as_mermaid` and `trace_as_html` draw it.

Every function is pure: it reads values and returns a string.

>>> from fsaga import step
>>> print(plan_as_text(step(lambda: 1, name="reserve").then(step(lambda: 2, name="charge"))))
saga
├── reserve  (no undo)
└── charge  (no undo)
"""

from fsaga.pictures.mermaid import plan_as_mermaid as plan_as_mermaid
from fsaga.pictures.mermaid import trace_as_mermaid as trace_as_mermaid
from fsaga.pictures.page import trace_as_html as trace_as_html
from fsaga.pictures.plan import Plan as Plan
from fsaga.pictures.plan import PlanBind as PlanBind
from fsaga.pictures.plan import PlanParallel as PlanParallel
from fsaga.pictures.plan import PlanSequence as PlanSequence
from fsaga.pictures.plan import PlanStep as PlanStep
from fsaga.pictures.plan import PlanSubSaga as PlanSubSaga
from fsaga.pictures.plan import PlanTimeout as PlanTimeout
from fsaga.pictures.plan import PlanValue as PlanValue
from fsaga.pictures.plan import plan_as_text as plan_as_text
from fsaga.pictures.plan import plan_of as plan_of
from fsaga.pictures.trace import Lane as Lane
from fsaga.pictures.trace import RunTrace as RunTrace
from fsaga.pictures.trace import Span as Span
from fsaga.pictures.trace import trace_as_text as trace_as_text
from fsaga.pictures.trace import trace_of_events as trace_of_events
from fsaga.pictures.trace import trace_of_journal as trace_of_journal

__all__ = [
    "Lane",
    "Plan",
    "PlanBind",
    "PlanParallel",
    "PlanSequence",
    "PlanStep",
    "PlanSubSaga",
    "PlanTimeout",
    "PlanValue",
    "RunTrace",
    "Span",
    "plan_as_mermaid",
    "plan_as_text",
    "plan_of",
    "trace_as_html",
    "trace_as_mermaid",
    "trace_as_text",
    "trace_of_events",
    "trace_of_journal",
]
