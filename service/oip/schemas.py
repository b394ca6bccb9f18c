"""The JSON documents of OIP over HTTP (pydantic): they validate requests and describe every /v2
route in the OpenAPI description."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

Parameters = dict[str, Any]


class RequestInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(..., examples=["TEXT"])
    shape: list[int] = Field(..., examples=[[2]])
    datatype: str = Field(..., examples=["BYTES"])
    parameters: Parameters | None = Field(
        None, description="binary_data_size: bytes of this tensor after the JSON header (binary extension)"
    )
    data: list[Any] | None = Field(None, description="the elements, row-major, nested or flat; absent when binary")


class RequestOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(..., examples=["LABEL"])
    parameters: Parameters | None = Field(None, description="binary_data: true returns this output as raw bytes")


# Requests the OpenAPI description shows (the inference route's examples, the schema's example).
SENTIMENT_EXAMPLE: dict[str, Any] = {
    "id": "42",
    "inputs": [
        {
            "name": "TEXT",
            "shape": [2],
            "datatype": "BYTES",
            "data": ["A wonderful, moving film.", "Two hours I will never get back."],
        }
    ],
}
TRANSLATION_EXAMPLE: dict[str, Any] = {
    "parameters": {"beam_size": 5, "n_best": 2},
    "inputs": [{"name": "TEXT", "shape": [1], "datatype": "BYTES", "data": ["Two dogs play in the snow."]}],
    "outputs": [{"name": "TRANSLATION"}],
}


class InferenceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [SENTIMENT_EXAMPLE]})
    id: str | None = Field(None, description="echoed in the response")
    parameters: Parameters | None = Field(
        None,
        description="translation: beam_size, max_length, n_best; binary_data_output: true returns every output "
        "as raw bytes (binary extension)",
    )
    inputs: list[RequestInput] = Field(..., min_length=1)
    outputs: list[RequestOutput] | None = Field(None, description="the outputs to return (default: all)")


class ResponseOutput(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    parameters: Parameters | None = None
    data: list[Any] | None = None


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: Parameters | None = None
    outputs: list[ResponseOutput]

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model_name": "sentiment",
                    "model_version": "2026-12-02+6d708f11",
                    "id": "42",
                    "outputs": [
                        {"name": "LABEL", "datatype": "BYTES", "shape": [2], "data": ["positive", "negative"]},
                        {
                            "name": "PROBABILITIES",
                            "datatype": "FP32",
                            "shape": [2, 2],
                            "data": [0.03, 0.97, 0.96, 0.04],
                        },
                    ],
                }
            ]
        }
    )


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class OipErrorBody(BaseModel):
    error: str
