"""The hello app wrapped in WhiteNoise, serving $BENCH_STATIC under /static/ (the static
cells' WhiteNoise server, run under gunicorn's sync worker)."""

import os

from hello import app as hello
from whitenoise import WhiteNoise

app = WhiteNoise(hello, root=os.environ["BENCH_STATIC"], prefix="static/")
