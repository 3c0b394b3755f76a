"""Build hook: ship ``config/*.yaml`` inside the package as ``bayestwin/_config``.

``config/`` stays the one source of truth; a non-editable install (a wheel) gets copies
made at build time, which :func:`bayestwin.config.config_file` falls back to. All other
metadata lives in ``pyproject.toml``.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

CONFIG_DIR = Path(__file__).resolve().parent / "config"


class BuildPyWithConfig(build_py):
    """``build_py`` that also copies ``config/*.yaml`` into ``bayestwin/_config``."""

    def _config_targets(self) -> list[tuple[Path, Path]]:
        target = Path(self.build_lib) / "bayestwin" / "_config"
        return [(src, target / src.name) for src in sorted(CONFIG_DIR.glob("*.yaml"))]

    def run(self) -> None:
        """Build the package, then copy the YAML files next to it."""
        super().run()
        if self.editable_mode:  # an editable install reads config/ in place
            return
        for src, dst in self._config_targets():
            self.mkpath(str(dst.parent))
            self.copy_file(str(src), str(dst), preserve_mode=False)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        """List the built files, the copied YAML files included."""
        outputs = list(super().get_outputs(include_bytecode))
        if not self.editable_mode:
            outputs += [str(dst) for _, dst in self._config_targets()]
        return outputs


setup(cmdclass={"build_py": BuildPyWithConfig})
