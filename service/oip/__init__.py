"""The Open Inference Protocol (KServe v2), over HTTP (`/v2`, on the service's port) and gRPC
(`inference.GRPCInferenceService`, on its own port), beside the service's own `/v1` JSON API.

- `tensors`: OIP tensors, their JSON and binary forms (Triton's binary tensor data extension).
- `models`: the models as OIP sees them (names, versions, metadata, Triton model configuration),
  and the mapping between their tensors and the service's /v1 requests and responses.
- `stats`: per-model statistics (Triton's statistics extension) from the service's own accounting.
- `infer`: one inference, whatever the protocol: tensors in, the same queue as /v1, tensors out.
- `rest`: the HTTP routes; `grpc`: the gRPC servicer and server.
"""
