"""A Flask app exercising JSON, Jinja templates, forms, uploads, streaming and send_file."""

import os
import tempfile

from flask import (
    Flask,
    Response,
    jsonify,
    render_template_string,
    request,
    send_file,
    stream_with_context,
    url_for,
)

app = Flask(__name__)

# The file /send-file serves: written once at import.
_fd, SEND_FILE_PATH = tempfile.mkstemp(prefix="qiao-flask-", suffix=".txt")
with os.fdopen(_fd, "wb") as f:
    f.write(b"flask send_file content\n" * 100)


@app.get("/json")
def json_route():
    return jsonify(hello="world", args=request.args.to_dict())


@app.get("/whoami")
def whoami():
    """What Flask makes of the request's origin (behind a proxy, the proxy's headers
    decide): its own absolute URL, whether the request is secure, the client."""
    return jsonify(
        url=url_for("whoami", _external=True),
        remote_addr=request.remote_addr,
        is_secure=request.is_secure,
        host=request.host,
    )


@app.get("/template/<name>")
def template(name):
    return render_template_string(
        "<p>Hello {{ name }}! {% for i in range(3) %}{{ i }}{% endfor %}</p>", name=name
    )


@app.post("/form")
def form():
    return jsonify(form=request.form.to_dict())


@app.post("/upload")
def upload():
    f = request.files["file"]
    data = f.read()
    return jsonify(
        filename=f.filename,
        size=len(data),
        content=data.decode("latin-1"),
        field=request.form.get("field"),
    )


@app.post("/data")
def data():
    body = request.get_data()
    return jsonify(size=len(body), body=body.decode("latin-1"))


@app.get("/stream")
def stream():
    prefix = request.args.get("prefix", "row")

    def gen():
        for i in range(5):
            yield f"{prefix}-{i}\n"

    return Response(stream_with_context(gen()), mimetype="text/plain")


@app.get("/send-file")
def send_file_route():
    return send_file(SEND_FILE_PATH, mimetype="text/plain")
