"""Reference graphs and consistency checks of radiotherapy sets (CT, RTSTRUCT, RTPLAN,
RTDOSE): :func:`node_of` reads the identity and references of a parsed object,
:class:`ReferenceGraph` indexes a set of them, :func:`check_set` and :func:`check_rt_set`
list what is inconsistent as :class:`Problem` values free of patient identifiers.

rt-relinker keeps each study's set in the index (:mod:`shared.rt.store`), updated
incrementally per arrival (:mod:`shared.rt.set_state`) to the same answer as the checks.
The batch of ``anon rt-batch`` is :mod:`shared.rt.batch` (with :mod:`shared.rt.batch_rules`,
:mod:`shared.rt.batch_work` and :mod:`shared.rt.report`), imported on its own since it
needs the engine and the index."""

from shared.rt.checks import OPTIONAL_KINDS, Problem, check_rt_set, check_set
from shared.rt.graph import ObjectNode, Reference, ReferenceGraph, node_of

__all__ = [
    "OPTIONAL_KINDS",
    "ObjectNode",
    "Problem",
    "Reference",
    "ReferenceGraph",
    "check_rt_set",
    "check_set",
    "node_of",
]
