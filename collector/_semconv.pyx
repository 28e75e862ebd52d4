# cython: annotation_typing=False
"""collector/semconv.py compiled, for the stage work of ingest (collector/normalize/_stages.pyx).

The source is semconv.py itself, included word for word: one table and one
set of rules; everything else imports semconv.py. The Makefile rebuilds this
module when semconv.py changes.
"""

include "semconv.py"
