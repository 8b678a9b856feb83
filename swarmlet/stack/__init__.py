"""Stack files: what ``docker stack config`` / ``docker stack deploy`` do before conversion.

``load_stack(files, environ, workdir=None) -> LoadedStack(config, warnings)`` parses, checks
forbidden keys, interpolates, validates against docker's v3.13 schema, normalises and merges
compose 3.x files; ``render_config(config, "yaml" | "json")`` prints the result as docker does.
Modules: ``yamlsource`` (YAML), ``interpolate`` + ``envfile`` (variables), ``schema``
(validation), ``normalize`` + ``ports`` + ``volumes`` + ``goformat`` (docker's typed form),
``merge`` (several ``-c`` files), ``loader`` (the pipeline), ``render`` (output).
``convert`` turns ``LoadedStack.config`` into service specs (with ``convert_context``,
``objects`` for secrets, configs, volumes and networks, ``deploy_section`` and ``extensions``).
"""

from swarmlet.stack.loader import LoadedStack, load_stack
from swarmlet.stack.render import render_config

__all__ = ["LoadedStack", "load_stack", "render_config"]
