"""Compiled copies of Python modules: the same source, built by Cython.

A `.pyx` that does nothing but `include "module.py"` compiles that module's
own source (collector/_semconv.pyx, collector/normalize/_stages.pyx): the
rules stay in one file, and ingest runs them compiled. A copy is used only
when it is built and newer than its source, so an edited rule is never
shadowed by a stale build (the Makefile rebuilds it; until then the Python
module runs, with a warning).
"""

import importlib
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def copy_of(name: str, source):
    """The built, current compiled module `name` for the Python module `source`, or `source`."""
    try:
        module = importlib.import_module(name)
    except ImportError:
        return source
    if Path(module.__file__).stat().st_mtime < Path(source.__file__).stat().st_mtime:
        log.warning(
            "%s is older than %s: using the Python module until it is rebuilt (make install)",
            name,
            source.__name__,
        )
        return source
    return module
