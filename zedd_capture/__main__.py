"""`python -m zedd_capture ...` = the `zedd` command (for an interpreter whose scripts folder is not at hand)."""

from .cli import app

app(prog_name="zedd")
