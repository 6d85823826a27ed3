"""Write gemseg's table of the installed open_clip version's pretrained tags (where each tag's weights are
loaded from), which the command line reads to find out offline, before torch is imported, that weights
are missing (gemseg.cli.precheck). Run it once per open_clip version gemseg supports:

    PYTHONPATH=src .venv/bin/python scripts/open_clip_table.py
    PYTHONPATH=.ci-cache/open_clip_2.23:src .venv/bin/python scripts/open_clip_table.py

tests/test_cli_precheck.py checks that the table of the installed version is there and equals open_clip's own.
"""
import json
import os
import sys

from gemseg.cli.models import open_clip_table
from gemseg.cli.precheck import open_clip_version, table_path

found = open_clip_version()
if found is None:
    sys.exit("open_clip_torch is not installed")
path = table_path(found)
os.makedirs(os.path.dirname(path), exist_ok=True)
with open(path, "w", encoding="utf-8") as f:
    json.dump({"open_clip_version": found, "models": open_clip_table()}, f, indent=0, sort_keys=True)
    f.write("\n")
print(path)
