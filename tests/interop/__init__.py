"""Interoperability tests: real Flask, Django and Bottle apps, peers (wsgiref, gunicorn) and nginx in front.

The same routes are written once per framework (``flask_app``, ``djangosite``, ``bottle_app``) so that one
parametrised suite can check that our server hosts each of them unchanged, exactly as gunicorn would.
"""
