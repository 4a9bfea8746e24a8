"""A Bottle app: a route with parameters, a template and a static file."""

import os
import tempfile

import bottle

app = bottle.Bottle()

STATIC_ROOT = tempfile.mkdtemp(prefix="qiao-bottle-")
with open(os.path.join(STATIC_ROOT, "static.txt"), "wb") as f:
    f.write(b"bottle static file\n" * 50)


@app.route("/hello/<name>/<count:int>")
def hello(name, count):
    return {"name": name, "count": count, "q": bottle.request.query.get("q")}


@app.route("/template/<name>")
def template(name):
    return bottle.template("<b>Hello {{name}}</b> {{n * 2}}", name=name, n=21)


@app.route("/static/<filename>")
def static(filename):
    return bottle.static_file(filename, root=STATIC_ROOT)
