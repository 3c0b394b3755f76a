"""Build hook: ship ``config/*.yaml`` and ``migrations/*.sql`` inside the package.

``config/`` and ``migrations/`` stay the one source of truth; a non-editable install (a
wheel) gets copies made at build time, as ``bayestwin/_config`` and
``bayestwin/_migrations``, which the package falls back to outside a source checkout.
All other metadata lives in ``pyproject.toml``.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent

# source folder -> (folder inside the package, file pattern)
PACKAGED_COPIES = {
    "config": ("_config", "*.yaml"),
    "migrations": ("_migrations", "*.sql"),
}


class BuildPyWithCopies(build_py):
    """``build_py`` that also copies the files of :data:`PACKAGED_COPIES` into the package."""

    def _copy_targets(self) -> list[tuple[Path, Path]]:
        pairs = []
        for source, (inside, pattern) in PACKAGED_COPIES.items():
            target = Path(self.build_lib) / "bayestwin" / inside
            pairs += [(src, target / src.name) for src in sorted((ROOT / source).glob(pattern))]
        return pairs

    def run(self) -> None:
        """Build the package, then copy the files next to it."""
        super().run()
        if self.editable_mode:  # an editable install reads the source folders in place
            return
        for src, dst in self._copy_targets():
            self.mkpath(str(dst.parent))
            self.copy_file(str(src), str(dst), preserve_mode=False)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        """List the built files, the copies included."""
        outputs = list(super().get_outputs(include_bytecode))
        if not self.editable_mode:
            outputs += [str(dst) for _, dst in self._copy_targets()]
        return outputs


setup(cmdclass={"build_py": BuildPyWithCopies})
