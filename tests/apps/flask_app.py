"""A real Flask application: JSON, form POST, streaming, 404."""

import os

from flask import Flask, Response, jsonify, request, stream_with_context

app = Flask(__name__)


@app.get("/json")
def json_view():
    return jsonify(
        framework="flask",
        method=request.method,
        path=request.path,
        args=request.args.to_dict(flat=False),
        scheme=request.scheme,
        header=request.headers.get("X-Test-Header"),
        pid=os.getpid(),
    )


@app.post("/form")
def form_view():
    return jsonify(form=request.form.to_dict(flat=False), content_type=request.content_type)


@app.post("/echo")
def echo_view():
    data = request.get_data()
    return Response(data, mimetype="application/octet-stream")


@app.get("/stream")
def stream_view():
    count = int(request.args.get("n", "5"))

    def generate():
        for i in range(count):
            yield f"chunk {i}\n"

    return Response(stream_with_context(generate()), mimetype="text/plain")
