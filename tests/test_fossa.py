"""FOSSA network: fixture reproduction, strict checkpoint loading, invariances, resolving."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from zedd_capture.fossa import build_fossa, load_fossa, network_size, read_state_dict, resolve_checkpoint, torch_device
from zedd_capture.fossa.checkpoint import load_state_dict_strict
from zedd_capture.fossa.fixture_weights import read_keys, write_fixture_checkpoint
from zedd_capture.fossa.vit import interpolate_pos_embed

DATA = Path(__file__).parent / "data"
FIXTURE = DATA / "fossa_seed1234"
TOL = 1e-4  # metres, absolute


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory):
    """model.pth rebuilt from the ViT-S key list with seed 1234 (170 MB; deleted afterwards)."""
    torch.set_num_threads(2)
    path = write_fixture_checkpoint(DATA / "fossa_vits_keys.txt", tmp_path_factory.mktemp("ckpt") / "model.pth", 1234)
    yield path
    path.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def model(checkpoint: Path):
    """ViT-S with the fixture weights, loaded strictly (after stripping 'module.')."""
    return load_fossa(checkpoint, "vits")


@pytest.fixture(scope="module")
def fixture_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return tuple(torch.from_numpy(np.load(FIXTURE / f)) for f in
                 ("fixture_input_stack.npy", "fixture_fd_metric.npy", "fixture_K.npy"))


@pytest.fixture(scope="module")
def fixture_output(model, fixture_inputs) -> torch.Tensor:
    return model.predict(*fixture_inputs)


def test_reproduces_published_fixture(model, fixture_output) -> None:
    assert not model.training
    ref = np.load(FIXTURE / "fixture_output_metric.npy")
    assert fixture_output.shape == ref.shape == (1, 1, 126, 168)
    err = np.abs(fixture_output.numpy() - ref).max()
    print(f"fixture max abs error: {err:.3g} m")
    assert err <= TOL
    canonical = fixture_output.numpy() * 168 / 150  # raw output = metric * W / max(fx, fy)
    assert np.abs(canonical - np.load(FIXTURE / "fixture_output_canonical.npy")).max() <= TOL


@pytest.fixture(scope="module")
def batch_inputs(fixture_inputs):
    """(batch of 2, second item alone), each (stack, fds, K): the fixture with its slices permuted (fds with
    them), and another stack."""
    stack, fd, K = fixture_inputs
    order = [2, 0, 1]
    stack2, fd2 = torch.flip(stack, dims=[-1]), torch.tensor([[0.6, 1.1, 3.0]])
    K2 = torch.tensor([[[120.0, 0, 80], [0, 135.0, 60], [0, 0, 1]]])
    both = (torch.cat([stack[:, order], stack2]), torch.cat([fd[:, order], fd2]), torch.cat([K, K2]))
    return both, (stack2, fd2, K2)


@pytest.fixture(scope="module")
def batch_run(model, batch_inputs):
    """The batch of 2, and the second stack alone."""
    both, second = batch_inputs
    return model.predict(*both), model.predict(*second)


def test_slice_permutation_invariance(batch_run, fixture_output) -> None:
    both, _ = batch_run
    assert torch.allclose(both[:1], fixture_output, atol=1e-5)


def test_batch_of_two_equals_two_single_runs(batch_run, fixture_output) -> None:
    both, single2 = batch_run
    assert both.shape == (2, 1, 126, 168)
    assert torch.allclose(both[1:], single2, atol=1e-5)
    assert not torch.allclose(both[1:], fixture_output, atol=1e-2)  # the items really differ


def test_stack_attention_permutation_equivariance() -> None:
    from zedd_capture.fossa.stack_attention import StackModule

    torch.manual_seed(0)
    layer = StackModule(64, 8).eval()
    x, fd = torch.randn(2, 4, 6, 64), torch.rand(2, 4) * 5
    order = [3, 1, 0, 2]
    with torch.no_grad():
        assert torch.allclose(layer(x, fd)[:, order], layer(x[:, order], fd[:, order]), atol=1e-5)
        assert not torch.allclose(layer(x, fd), layer(x, fd.flip(1)), atol=1e-3)  # fds matter


def test_input_checks(model, fixture_inputs) -> None:
    stack, fd, K = fixture_inputs
    with pytest.raises(ValueError, match="N >= 2"):
        model.predict(stack[:, :1], fd[:, :1], K)
    with pytest.raises(ValueError, match="focus_distances_m"):
        model.predict(stack, fd[:, :2], K)
    with pytest.raises(ValueError, match="K must be"):
        model.predict(stack, fd, K[0])


@pytest.mark.parametrize("encoder, params", [("vits", 42_539_721), ("vitb", 168_369_481)])
def test_strict_loading_of_published_key_lists(encoder: str, params: int) -> None:
    keys = dict(read_keys(DATA / f"fossa_{encoder}_keys.txt"))
    assert len(keys) == 383
    with torch.device("meta"):
        m = build_fossa(encoder)
        state = {k: torch.empty(shape) for k, shape in keys.items()}
    assert sum(p.numel() for p in m.parameters()) == params
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == keys
    load_state_dict_strict(m, state, f"{encoder} key list")


def test_wrong_encoder_and_missing_keys_are_named() -> None:
    keys = dict(read_keys(DATA / "fossa_vits_keys.txt"))
    with torch.device("meta"):
        state = {k: torch.empty(shape) for k, shape in keys.items()}
        with pytest.raises(ValueError, match="encoder='vits'"):
            load_state_dict_strict(build_fossa("vitb"), state, "x.pth")
        state.pop("depth_head.projects.0.bias")
        with pytest.raises(ValueError, match=r"x\.pth.*depth_head\.projects\.0\.bias"):
            load_state_dict_strict(build_fossa("vits"), state, "x.pth")


def test_read_state_dict_layouts(tmp_path: Path) -> None:
    t = torch.arange(3.0)
    torch.save({"model": {"module.a.weight": t}, "optimizer": {"lr": 0.1}}, tmp_path / "wrapped.pth")
    torch.save({"a.weight": t}, tmp_path / "flat.pth")
    for name in ("wrapped.pth", "flat.pth"):
        assert torch.equal(read_state_dict(tmp_path / name)["a.weight"], t)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pth"):
        read_state_dict(tmp_path / "junk.pth")


def test_resolve_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"empty\).*hf download venkatsubra/fossa-vits model.pth"):
        resolve_checkpoint("fossa-vits", cache_dir=tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_checkpoint(tmp_path / "nope.pth")
    # a populated hub cache: models--<org>--<name>/{refs/main, snapshots/<rev>/model.pth}
    repo = tmp_path / "hub" / "models--venkatsubra--fossa-vitb"
    rev = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(rev)
    (repo / "snapshots" / rev).mkdir(parents=True)
    (repo / "snapshots" / rev / "model.pth").write_bytes(b"x")
    assert resolve_checkpoint("fossa-vitb", cache_dir=tmp_path / "hub") == repo / "snapshots" / rev / "model.pth"
    assert resolve_checkpoint(repo / "snapshots" / rev / "model.pth").name == "model.pth"


def test_resize_rule() -> None:
    assert network_size(480, 640) == (518, 700)
    assert network_size(1216, 1824) == (518, 784)
    assert network_size(126, 168) == (518, 700)
    assert network_size(640, 480) == (700, 518)
    assert network_size(518, 518) == (518, 518)


def test_pos_embed_interpolation_rule() -> None:
    table = torch.randn(1, 1 + 37 * 37, 8)
    assert interpolate_pos_embed(table, 37, 37) is table
    out = interpolate_pos_embed(table, 37, 50)
    assert out.shape == (1, 1 + 37 * 50, 8) and torch.equal(out[:, 0], table[:, 0])
    # the explicit scale factor (not a target size) sets the sampling positions
    grid = table[:, 1:].reshape(1, 37, 37, 8).permute(0, 3, 1, 2)
    by_size = torch.nn.functional.interpolate(grid, size=(37, 50), mode="bicubic", align_corners=False)
    assert not torch.allclose(out[:, 1:], by_size.permute(0, 2, 3, 1).reshape(1, -1, 8), atol=1e-4)


def _write_sample(root: Path) -> None:
    """A 42 x 56 test-split ZEDD scene 'room01': three random F/2.8 slices (runs 1, 3, 5), depth 2 m."""
    from PIL import Image

    from zedd_capture.layout import MetadataRow, ZeddSample, write_metadata

    write_metadata(root / "metadata.txt", [MetadataRow(r, 0x100 * r, 0.5 * r) for r in (1, 3, 5)])
    sample = ZeddSample(root, "test", "room01")
    sample.focus_stack_dir.mkdir(parents=True)
    sample.gt_dir.mkdir()
    rng = np.random.default_rng(0)
    for r in (1, 3, 5):
        Image.fromarray(rng.integers(0, 256, (42, 56, 3), dtype=np.uint8)).save(sample.image_path(r, 0x100 * r, 2.8))
    np.save(sample.depth_path, np.full((42, 56), 2.0, np.float32))
    np.savetxt(sample.K_path, [[50.0, 0, 28], [0, 50.0, 21], [0, 0, 1]])


def test_evaluate_with_fossa_checkpoint(checkpoint: Path, tmp_path: Path) -> None:
    """`evaluate` wiring: ImageNet normalisation, fds from metadata.txt, K from gt/K.txt, outputs."""
    from zedd_capture.evaluation.evaluate import evaluate

    _write_sample(tmp_path / "zedd")
    res = evaluate(tmp_path / "zedd", "fossa-vits", checkpoint, "test", 2.8, (1, 5), tmp_path / "out", None, progress=False)
    (row,) = res["rows"]
    pred = np.load(tmp_path / "out" / "room01" / "depth.npy")
    assert pred.shape == (42, 56) and np.isfinite(pred).all() and (pred > 0).all()
    assert np.isfinite(row["abs_rel"]) and res["runs"] == [1, 5]
    assert res["device"] == ("cuda" if torch.cuda.is_available() else "cpu")  # 'auto'
    # the same network run by hand on the sample's files: RGB / 255, ImageNet mean and std, the runs' focus
    # distances from metadata.txt (0.5 m x run), K from gt/K.txt
    from PIL import Image

    from zedd_capture.fossa import IMAGENET_MEAN, IMAGENET_STD
    from zedd_capture.layout import ZeddSample

    sample = ZeddSample(tmp_path / "zedd", "test", "room01")
    rgb = np.stack([np.asarray(Image.open(sample.image_path(r, 0x100 * r, 2.8)).convert("RGB"), np.float32) / 255
                    for r in (1, 5)])
    stack = (torch.from_numpy(rgb).permute(0, 3, 1, 2)[None] - torch.tensor(IMAGENET_MEAN).view(1, 1, 3, 1, 1)) \
        / torch.tensor(IMAGENET_STD).view(1, 1, 3, 1, 1)
    K = torch.from_numpy(np.loadtxt(sample.K_path).astype(np.float32))[None]
    model = load_fossa(checkpoint, "vits", res["device"])

    def by_hand(fd):
        return model.predict(stack, torch.tensor([fd], dtype=torch.float32), K)[0, 0].float().cpu().numpy()

    np.testing.assert_allclose(pred, by_hand([0.5, 2.5]), atol=TOL)
    # and each input matters at that tolerance: other focus distances give another map
    assert np.abs(by_hand([2.5, 0.5]) - pred).max() > 10 * TOL


def test_device_is_checked_before_loading() -> None:
    with pytest.raises(ValueError, match="'gpu' is not a torch device"):
        torch_device("gpu")
    with pytest.raises(ValueError, match="'meta': FOSSA runs on cpu or cuda"):
        torch_device("meta")
    assert torch_device("cpu") == torch.device("cpu")
    assert torch_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        with pytest.raises(ValueError, match=f"only {n} CUDA device"):
            torch_device(f"cuda:{n}")
    else:  # CI: a CPU-only torch; the message says so instead of torch's AssertionError mid-load
        with pytest.raises(ValueError, match="sees no CUDA GPU; use --device cpu"):
            load_fossa(DATA / "no_such_model.pth", "vits", "cuda")


def test_ieee_fp32_sets_and_restores_the_tf32_flags() -> None:
    from zedd_capture.fossa.model import ieee_fp32

    conv, matmul = torch.backends.cudnn.conv, torch.backends.cuda.matmul
    before = conv.fp32_precision, matmul.fp32_precision
    with ieee_fp32():
        assert (conv.fp32_precision, matmul.fp32_precision) == ("ieee", "ieee")
    assert (conv.fp32_precision, matmul.fp32_precision) == before
    with pytest.raises(KeyError), ieee_fp32():
        raise KeyError("restored on errors too")
    assert (conv.fp32_precision, matmul.fp32_precision) == before


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on the build machines)")


@needs_cuda
def test_cuda_reproduces_fixture_and_cpu(checkpoint: Path, fixture_inputs, fixture_output, batch_inputs,
                                         batch_run) -> None:
    """The same weights on CUDA (CPU tensors in, moved by predict): the published fixture, the CPU
    output and the batch-of-two result, each within TOL."""
    gpu = load_fossa(checkpoint, "vits", "cuda")
    assert next(gpu.parameters()).device.type == "cuda"
    out = gpu.predict(*fixture_inputs)
    assert out.device.type == "cuda"
    out = out.cpu()
    ref = torch.from_numpy(np.load(FIXTURE / "fixture_output_metric.npy"))
    err_ref, err_cpu = (out - ref).abs().max().item(), (out - fixture_output).abs().max().item()
    print(f"{torch.cuda.get_device_name(0)}: fixture max abs error {err_ref:.3g} m, against the CPU {err_cpu:.3g} m")
    assert err_ref <= TOL and err_cpu <= TOL
    both = gpu.predict(*batch_inputs[0]).cpu()
    assert (both - batch_run[0]).abs().max().item() <= TOL


@needs_cuda
def test_evaluate_on_cuda_matches_cpu(checkpoint: Path, tmp_path: Path) -> None:
    from zedd_capture.evaluation.evaluate import evaluate

    _write_sample(tmp_path / "zedd")
    res = {dev: evaluate(tmp_path / "zedd", "fossa-vits", checkpoint, "test", 2.8, (1, 3, 5), tmp_path / dev, None,
                         progress=False, device=dev) for dev in ("cpu", "cuda")}
    cpu, gpu = (np.load(tmp_path / dev / "room01" / "depth.npy") for dev in ("cpu", "cuda"))
    assert np.abs(cpu - gpu).max() <= TOL
    assert res["cuda"]["rows"][0]["abs_rel"] == pytest.approx(res["cpu"]["rows"][0]["abs_rel"], abs=1e-4)
    assert (res["cpu"]["device"], res["cuda"]["device"]) == ("cpu", "cuda")
