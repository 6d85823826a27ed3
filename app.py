"""The web demo as a Hugging Face Space (or locally: `python app.py [gemseg serve options]`).

The same app as `gemseg serve` (see docs/cli.md). Options come from the command line, else from the
GEMSEG_SERVE_ARGS environment variable (a Space setting), e.g. "--model ViT-B-16 --pretrained openai".
On a Space, Gradio's GRADIO_SERVER_NAME/GRADIO_SERVER_PORT pick the address; the requirements are in
requirements.txt beside this file and the Space's README front matter names `sdk: gradio` and
`app_file: app.py`.
"""
import os
import shlex
import sys

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "src")
if os.path.isdir(SRC):  # run from a checkout (a Space is one) without installing the package
    sys.path.insert(0, SRC)

from gemseg.cli import main  # noqa: E402

if __name__ == "__main__":
    argv = sys.argv[1:] or shlex.split(os.environ.get("GEMSEG_SERVE_ARGS", ""))
    sys.exit(main(["serve", *argv]))
