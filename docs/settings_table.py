"""Generate the tables of docs/settings.md from the code, so they cannot drift.

``python docs/settings_table.py`` prints the page; ``--write`` rewrites docs/settings.md.
``tests/test_docs.py`` fails while the committed page differs from what this prints.
"""

from __future__ import annotations

import sys
from pathlib import Path

from offgrid_nb.config import ENVIRONMENT
from offgrid_nb.server.config import OffgridAPI

PAGE = Path(__file__).with_name("settings.md")

INTRO = """# Settings

Every setting in one place, generated from the code (`docs/settings_table.py`). Keyword
arguments of the Python functions win over the environment; the servers' traits win over both
for what they serve.

## Environment variables

Read by `offgrid_nb.config` when a call is made (not at import), so a notebook can point at a
mirror after `import offgrid_nb`. `HF_HUB_DISABLE_TELEMETRY=1` is recommended on air-gapped
networks: `huggingface_hub` otherwise contacts `huggingface.co` once a day (it times out
quietly).
"""

SERVER = """
## Server settings (`OffgridAPI`)

The REST and Ollama APIs' settings, one traitlets `Configurable`: in `jupyter_server_config.py`
as `c.OffgridAPI.<name> = ...`, on the command line as `--OffgridAPI.<name>=...`; `offgrid serve`
fills them from its flags (`offgrid serve --help`).
"""


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def render() -> str:
    """The whole page, as it should be committed."""
    rows = ["| variable | effect |", "| --- | --- |"]
    rows += [f"| `{name}` | {_cell(effect)} |" for name, effect in ENVIRONMENT.items()]
    traits = ["| trait | default | effect |", "| --- | --- | --- |"]
    for name, trait in OffgridAPI.class_traits(config=True).items():
        default = trait.default_value
        traits.append(f"| `{name}` | `{default!r}` | {_cell(trait.help)} |")
    return "\n".join([INTRO, *rows, SERVER, *traits, ""])


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        PAGE.write_text(render(), encoding="utf-8")
    else:
        print(render(), end="")
