"""A shipped translator back into a training run: its fp32 ONNX files' weights as a PyTorch
checkpoint, beside its tokenizers and copy-through lexicon, so that a later stage can start from
the model that ships (`train --init RUN/best.pt`) when the run that trained it is gone (`runs/`
is never committed).

    python -m training.translation.from_artifact --artifact models/translate-en-fr --out runs/shipped-en-fr

Most weights keep their PyTorch names in the ONNX files. The rest are read by their place in the
graph: each encoder LSTM node's W, R and B (ONNX gate order i, o, f, c; PyTorch's i, f, g, o; the
forward direction's node first, as BiRNN runs it first), the attention key and score vectors (the
weights of the MatMuls that replaced their Linear layers, transposed), and the output projection
(tied to the embedding). Nothing is assumed on trust: the result must reproduce the artifact's
encoder outputs and decoder steps (export.check_step_parity) or it is not written.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from service.runtime.subword import BOS_ID, EOS_ID, PAD_ID
from service.runtime.translation import COPY_LEXICON, DECODER, ENCODER, SPM_SRC, SPM_TGT
from training.translation.model import Seq2Seq, TranslationConfig


def _initializers(path: Path) -> tuple[onnx.GraphProto, dict[str, np.ndarray]]:
    g = onnx.load(str(path)).graph  # external data (the shared embedding) loaded from beside it
    return g, {t.name: numpy_helper.to_array(t) for t in g.initializer}


def _lstm_gates(w: np.ndarray, hidden: int) -> np.ndarray:
    """ONNX gate blocks (i, o, f, c) along axis 0 -> PyTorch's (i, f, g, o)."""
    i, o, f, c = (w[k * hidden : (k + 1) * hidden] for k in range(4))
    return np.concatenate([i, f, c, o])


def _matmul_weight(g: onnx.GraphProto, init: dict[str, np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    """The one constant MatMul weight of this shape."""
    found = [init[n.input[1]] for n in g.node if n.op_type == "MatMul" and n.input[1] in init]
    found = [w for w in found if w.shape == shape]
    if len(found) != 1:
        raise ValueError(f"expected one constant MatMul weight of shape {shape}, found {len(found)}")
    return found[0]


def state_dict_from_artifact(folder: Path, cfg: TranslationConfig) -> dict[str, torch.Tensor]:
    if cfg.cell != "lstm" or not cfg.attention or not (cfg.tie_embeddings and cfg.share_embeddings):
        raise ValueError(
            f"{folder}: only the shipped design (LSTM, attention, tied and shared embeddings) is read back"
        )
    genc, enc = _initializers(folder / ENCODER)
    gdec, dec = _initializers(folder / DECODER)
    state: dict[str, np.ndarray] = {k: v for k, v in {**enc, **dec}.items() if not k.startswith(("onnx::", "top_k"))}
    he = cfg.enc_hidden
    lstms = [n for n in genc.node if n.op_type == "LSTM"]
    if len(lstms) != 2:
        raise ValueError(f"{folder / ENCODER}: expected 2 LSTM nodes, found {len(lstms)}")
    for direction, node in zip(("fwd", "bwd"), lstms, strict=True):
        w, r, b = (enc[name][0] for name in node.input[1:4])
        p = f"encoder.rnn.{direction}"
        state[f"{p}.weight_ih_l0"] = _lstm_gates(w, he)
        state[f"{p}.weight_hh_l0"] = _lstm_gates(r, he)
        state[f"{p}.bias_ih_l0"] = _lstm_gates(b[: 4 * he], he)
        state[f"{p}.bias_hh_l0"] = _lstm_gates(b[4 * he :], he)
    state["encoder.key.weight"] = _matmul_weight(genc, enc, (2 * he, cfg.attn_dim)).T
    state["decoder.v.weight"] = _matmul_weight(gdec, dec, (cfg.attn_dim, 1)).T
    state["decoder.out.weight"] = state["decoder.embed.weight"]
    expected = Seq2Seq(cfg).state_dict()
    if set(state) != set(expected):
        raise ValueError(
            f"weights missing {sorted(set(expected) - set(state))}, unknown {sorted(set(state) - set(expected))}"
        )
    for k, v in expected.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise ValueError(f"{k}: shape {state[k].shape} in the artifact, {tuple(v.shape)} in the model")
    return {k: torch.from_numpy(np.array(v)).to(expected[k].dtype) for k, v in state.items()}


def run_from_artifact(folder: Path, out: Path, seed: int = 0) -> dict:
    """Write OUT/best.pt (config, weights; the artifact's train_config) and the artifact's
    tokenizers and lexicon; return the parity figures. Raises ParityError if the weights read
    back do not reproduce the artifact's fp32 files."""
    from training.translation.export import check_step_parity
    from training.translation.translate import onnx_stepper

    meta = json.loads((folder / "metadata.json").read_text())
    cfg = TranslationConfig.from_dict(meta["config"])
    model = Seq2Seq(cfg)
    model.load_state_dict(state_dict_from_artifact(folder, cfg))
    model.eval()
    rng = np.random.default_rng(seed)  # any ids do for a weight check; the specials excluded
    first = max(PAD_ID, BOS_ID, EOS_ID) + 1
    src = [rng.integers(first, cfg.src_vocab, size=n).tolist() for n in rng.integers(3, 30, size=64)]
    tgt = [rng.integers(first, cfg.tgt_vocab, size=n).tolist() for n in rng.integers(3, 30, size=64)]
    parity = check_step_parity(model, onnx_stepper(folder, DECODER), src, tgt, batch_size=32, max_batches=2)
    out.mkdir(parents=True, exist_ok=True)
    for name in (SPM_SRC, SPM_TGT, COPY_LEXICON):
        if (folder / name).exists():
            shutil.copy(folder / name, out / name)
    ck = {
        "model": model.state_dict(),
        "config": cfg.to_dict(),
        "train_config": meta.get("train_config", {}),
        "state": {"epoch": 0, "history": [], "from_artifact": str(folder), "artifact_version": meta.get("version")},
    }
    torch.save(ck, out / "best.pt")
    return parity


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m training.translation.from_artifact", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("--artifact", type=Path, required=True, help="an exported translator folder")
    ap.add_argument("--out", type=Path, required=True, help="the run folder to write")
    args = ap.parse_args(argv)
    parity = run_from_artifact(args.artifact, args.out)
    print(f"{args.out / 'best.pt'}: {args.artifact}'s weights; parity {json.dumps(parity)}")


if __name__ == "__main__":
    main()
