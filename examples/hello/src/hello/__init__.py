"""hello: a tiny WSGI greeting service used as the example promotion artifact."""

from hello.app import application, greet, make_request_id

__all__ = ["application", "greet", "make_request_id"]
__version__ = "1.0.0"
