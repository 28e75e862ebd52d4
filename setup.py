"""Compiled parts of the collector's ingest path.

Every `.pyx` file under `collector/` is compiled with Cython when the
package is installed (`make install` runs `pip install -e .`, which builds
them in place). The benchmark's instruction counts (bench/README.md) say why
each one exists.
"""

from pathlib import Path

from setuptools import Extension, setup

HERE = Path(__file__).parent
SOURCES = sorted(path.relative_to(HERE) for path in HERE.glob("collector/**/*.pyx"))


def extensions() -> list[Extension]:
    if not SOURCES:
        return []
    from Cython.Build import cythonize

    modules = [
        Extension(
            ".".join(source.with_suffix("").parts),
            [str(source)],
            extra_compile_args=["-O2"],
        )
        for source in SOURCES
    ]
    built = cythonize(modules, language_level=3, compiler_directives={"binding": False})
    for extension in built:
        # Without a C compiler the install still succeeds: the collector then
        # runs the same rules in Python, at about twice the CPU per span, and
        # says so once at start. (Set here: cythonize makes new Extensions.)
        extension.optional = True
    return built


setup(ext_modules=extensions())
