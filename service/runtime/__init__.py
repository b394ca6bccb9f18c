"""The model runtime, used by the inference workers and by training's evaluation and export:
verified artifacts (`artifacts`), ONNX Runtime sessions on the chosen device (`providers`), the
tokenizers (`text` for sentiment, `subword` for translation), the two model classes (`sentiment`,
`translation`) and the numpy search they decode with (`decoding`). Nothing here knows about HTTP.
"""
