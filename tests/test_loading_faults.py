"""Bad checkpoints: every loader failure is a ModelLoadError naming the file, and the CLI exits 2 for it.

Found by a probe: a text file named .pt raised IndexError and a corrupt config.json JSONDecodeError.
"""

import json
import pickle

import pytest
import torch
from whisper.model import ModelDimensions

import fastwhisper
from conftest import error_lines, random_model, run_cli
from fastwhisper.errors import ModelLoadError
from fastwhisper.loading import read_checkpoint, save_checkpoint

SMALL = ModelDimensions(80, 1500, 64, 2, 1, 51864, 448, 64, 2, 1)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A small random model in each format: {format: path}."""
    root = tmp_path_factory.mktemp("checkpoints")
    model = random_model(SMALL)
    return {fmt: save_checkpoint(model, root / {"openai": "small.pt", "huggingface": "hf",
                                                "ctranslate2": "ct2"}[fmt], fmt)
            for fmt in ("openai", "huggingface", "ctranslate2")}


def test_the_good_checkpoints_load(saved):
    for path in saved.values():
        assert fastwhisper.load_model(path, device="cpu").dims == SMALL


def _bad_pt(tmp_path, kind):
    path = tmp_path / "model.pt"
    if kind == "text":
        path.write_text("this is not a checkpoint\n" * 20)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "pickled list":
        torch.save([1, 2, 3], path)
    elif kind == "plain pickle":
        path.write_bytes(pickle.dumps({"dims": 1}))
    elif kind == "dims of the wrong type":
        torch.save({"dims": [80, 1500], "model_state_dict": {}}, path)
    elif kind == "unknown dims field":
        torch.save({"dims": {"n_mels": 80, "colour": 3}, "model_state_dict": {}}, path)
    elif kind == "zero heads":
        dims = dict(vars(SMALL), n_audio_head=0)
        torch.save({"dims": dims, "model_state_dict": {}}, path)
    elif kind == "state dict of the wrong type":
        torch.save({"dims": vars(SMALL), "model_state_dict": [1, 2]}, path)
    return path


@pytest.mark.parametrize("kind", ["text", "empty", "pickled list", "plain pickle", "dims of the wrong type",
                                  "unknown dims field", "zero heads", "state dict of the wrong type"])
def test_bad_openai_files_are_model_load_errors(tmp_path, kind):
    path = _bad_pt(tmp_path, kind)
    with pytest.raises(ModelLoadError, match="model\\.pt"):
        fastwhisper.load_model(path, device="cpu")


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.99])
def test_truncated_openai_file(tmp_path, saved, keep):
    data = saved["openai"].read_bytes()
    path = tmp_path / "cut.pt"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ModelLoadError, match="cut\\.pt"):
        fastwhisper.load_model(path, device="cpu")


def _copy_dir(src, dst):
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


@pytest.mark.parametrize("fmt, config", [
    (fmt, config) for fmt in ("huggingface", "ctranslate2") for config in ("{not json", "[1, 2, 3]", "", '"text"')
] + [("huggingface", '{"d_model": "wide"}'), ("ctranslate2", '{"alignment_heads": "wide"}'),
     ("ctranslate2", '{"alignment_heads": [[99, 99]]}')])
def test_corrupt_config_json(tmp_path, saved, fmt, config):
    path = _copy_dir(saved[fmt], tmp_path / "model")
    (path / "config.json").write_text(config)
    with pytest.raises(ModelLoadError, match=str(path)):
        fastwhisper.load_model(path, device="cpu")
    with pytest.raises(ModelLoadError):
        read_checkpoint(path)


@pytest.mark.parametrize("fmt, weights", [("huggingface", "model.safetensors"), ("ctranslate2", "model.bin")])
@pytest.mark.parametrize("damage", ["truncated", "text"])
def test_damaged_weights_in_directories(tmp_path, saved, fmt, weights, damage):
    path = _copy_dir(saved[fmt], tmp_path / "model")
    data = (path / weights).read_bytes()
    (path / weights).write_bytes(data[: len(data) // 2] if damage == "truncated" else b"hello " * 100)
    with pytest.raises(ModelLoadError, match=str(path)):
        fastwhisper.load_model(path, device="cpu")


def test_hugging_face_config_with_impossible_sizes(tmp_path, saved):
    path = _copy_dir(saved["huggingface"], tmp_path / "model")
    config = json.loads((path / "config.json").read_text())
    config["encoder_attention_heads"] = 0
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=str(path)):
        fastwhisper.load_model(path, device="cpu")


def test_cli_exits_2_with_one_line_for_a_text_file_named_pt(tmp_path):
    model = _bad_pt(tmp_path, "text")
    audio = tmp_path / "a.wav"
    audio.write_bytes(b"")
    status, out, err = run_cli(audio, "--model", model, "--device", "cpu", "--output_dir", tmp_path / "out")
    assert status == 2
    assert len(error_lines(err)) == 1 and "model.pt" in error_lines(err)[0]
    assert "Traceback" not in err
