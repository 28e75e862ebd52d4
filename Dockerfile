# Eventscope: one image for every process (collector, web, worker, demo, migrate).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    EVENTSCOPE_VAR_DIR=/app/var

WORKDIR /app

# Dependencies first, in a layer of their own: it is rebuilt only when
# pyproject.toml changes, not on every source edit.
COPY pyproject.toml README.md ./
RUN mkdir dashboard collector \
    && touch dashboard/__init__.py collector/__init__.py \
    && pip install . \
    && pip uninstall --yes eventscope \
    && rm -rf dashboard collector build *.egg-info

# Templates and static files are read from the source tree (whitenoise
# serves static files through the finders), so the app runs from /app.
COPY manage.py ./
COPY dashboard ./dashboard
COPY collector ./collector
COPY templates ./templates
COPY static ./static
# The collector's compiled parts (setup.py) are built in place, beside the
# sources the app runs from; the compiler goes again in the same layer.
COPY setup.py ./
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && pip install --no-deps -e . \
    && apt-get purge -y --auto-remove gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/* build

RUN useradd --system --home-dir /app --no-create-home eventscope \
    && mkdir -p var/static && chown -R eventscope var
USER eventscope

EXPOSE 8000 4317 4318
CMD ["python", "manage.py", "serve", "--host", "0.0.0.0"]
