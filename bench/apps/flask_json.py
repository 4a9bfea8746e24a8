"""Fixture: a Flask route returning a JSON object of 20 fields."""

from flask import Flask, jsonify

app = Flask(__name__)


@app.route("/")
def index():
    return jsonify(
        id=12345,
        name="qiao",
        description="a WSGI server with a Rust engine",
        active=True,
        score=98.6,
        tags=["wsgi", "rust", "python", "http"],
        owner={"id": 7, "login": "bridge", "admin": False},
        created="2026-01-01T00:00:00Z",
        updated="2026-06-30T12:34:56Z",
        stars=4321,
        forks=123,
        watchers=77,
        language="Rust",
        license="MIT",
        homepage="https://example.invalid/qiao",
        size=2048,
        open_issues=5,
        default_branch="main",
        archived=False,
        topics=["server", "web", "performance"],
    )
