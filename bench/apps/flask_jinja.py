"""Fixture: a Flask route rendering a Jinja template (a table of 20 rows)."""

from flask import Flask, render_template

app = Flask(__name__)

ROWS = [
    {"id": i, "name": f"item {i}", "price": i * 1.25, "in_stock": i % 3 != 0}
    for i in range(20)
]


@app.route("/")
def index():
    return render_template("page.html", title="Inventory", rows=ROWS, user="guest")
