# cython: annotation_typing=False
"""collector/normalize/stages.py compiled, for the per-span stage work of ingest.

The source is stages.py itself, included word for word: one set of rules,
which collector.normalize.spans takes from here when it is built and from
stages.py otherwise. The messaging conventions it asks are semconv.py's,
compiled the same way (collector/_semconv.pyx). The Makefile rebuilds both
modules when their source changes.
"""

include "stages.py"

# After the include: the stage rules ask the compiled semconv.py when it is current.
from collector.compiled import copy_of as _copy_of

semconv = _copy_of("collector._semconv", semconv)
