"""A Falcon app: one resource with GET and POST JSON."""

import falcon


class Items:
    def __init__(self):
        self.items = {}

    def on_get(self, req, resp, item_id):
        if item_id not in self.items:
            raise falcon.HTTPNotFound()
        resp.media = {"id": item_id, "value": self.items[item_id]}

    def on_post(self, req, resp, item_id):
        self.items[item_id] = req.get_media()
        resp.status = falcon.HTTP_201
        resp.media = {"id": item_id, "stored": self.items[item_id]}


app = falcon.App()
app.add_route("/items/{item_id}", Items())
