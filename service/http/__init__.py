"""The HTTP side, in the HTTP process: app assembly and the process's life (`app`), the edge every
request passes first (`gateway`), error handlers (`errors`), the OpenAPI description and the
interactive docs (`openapi`), and /health, /info, /metrics (`operations`).
"""
