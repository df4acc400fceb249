"""Start-up of the ``kedro`` command in this project.

Kedro imports ``<package>.cli`` whenever the ``kedro`` command starts inside the project
(after the plugins' commands are loaded) and adds the commands of its ``cli`` group.
The project defines no commands of its own; it uses this moment to install its changes
to kedro-sagemaker (:mod:`tsa_kedro.deploy.plugin`) before any ``kedro sagemaker``
command runs.
"""

import click

from tsa_kedro.deploy.plugin import install

install()


@click.group(name="tsa_kedro")
def cli() -> None:
    """Project commands (none beyond Kedro's and its plugins')."""
