"""What every local broker is: a process with a state directory, a pid file and a log,
a config rendered from a template shipped in this package
(``router/tools/infra/templates/<family>/``, read with ``importlib.resources``, so an
installed wheel finds them too), and a readiness probe (``router.tools.infra.brokers``
has the three of them)."""

from __future__ import annotations

import shutil
from abc import ABC, abstractmethod
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from string import Template

from router.support.infra_settings import InfraSettings, host_in_url
from router.support.procs import InfraError, Managed

TEMPLATES: Traversable = resources.files("router.tools.infra") / "templates"
"""The brokers' config templates: ``<broker>/<file>``, with ``$name`` fields to fill in."""


class Broker(ABC):
    name: str
    start_timeout: float = 60.0
    stop_timeout: float = 20.0

    def __init__(self, settings: InfraSettings) -> None:
        self.settings = settings
        self.family = type(self).name  # its templates' directory
        self.dir = settings.state_dir / self.name
        self.proc = Managed(self.name, self.dir / f"{self.name}.pid")
        self.log_file = self.dir / "logs" / f"{self.name}.out"

    @property
    @abstractmethod
    def port(self) -> int: ...

    @property
    @abstractmethod
    def address(self) -> str:
        """Where clients reach it, as shown by `status`."""

    @abstractmethod
    def argv(self) -> list[str]:
        """The command line; called after ``prepare``."""

    @abstractmethod
    def prepare(self) -> None:
        """Install what is missing and write the config files."""

    @abstractmethod
    def ready(self) -> bool:
        """True once the broker answers a real request."""

    def after_ready(self) -> None:  # noqa: B027 - a hook, empty unless a broker needs it
        """What `up` does once the broker answers (idempotent): nothing, by default."""

    def render(self, template: str, target: Path, **fields: object) -> None:
        """Fill in the ``$name`` fields of ``TEMPLATES/<name>/<template>`` into ``target``."""
        text = Template((TEMPLATES / self.family / template).read_text()).substitute(
            host=self.settings.host, host_url=host_in_url(self.settings.host), **fields
        )
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)

    def copy(self, template: str) -> Path:
        """``TEMPLATES/<name>/<template>`` as it is, copied into the state directory (a
        file the broker's tools read by path)."""
        target = self.dir / template
        data = (TEMPLATES / self.family / template).read_bytes()
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists() or target.read_bytes() != data:
            target.write_bytes(data)
        return target

    def require(self, program: str) -> str:
        path = shutil.which(program)
        if path is None:
            raise InfraError(
                f"{self.name}: `{program}` is not installed; run deploy/bootstrap.sh "
                "(it installs the Debian packages the brokers need)"
            )
        return path
