"""Shared pytest set-up: offline Hub, fixed seeds, and the `slow` / `gpu` markers."""

import os

import pytest


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    import torch

    skip_slow = pytest.mark.skip(reason="slow: pass --runslow to run")
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "slow" in item.keywords and not config.getoption("--runslow"):
            item.add_marker(skip_slow)
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


# A Myna small enough for seconds-long tests (shared by the evaluation tests).
TINY_MYNA = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=2, head_dim=16, intermediate_size=64, projection_dim=16
)


@pytest.fixture
def single_torch_thread():
    """Probes' matmuls are small: on a busy 2-core machine one thread avoids oversubscription stalls."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_myna_folder(tmp_path_factory) -> str:
    """A saved, randomly initialised tiny Myna-Base folder."""
    import torch

    from modeling_myna import MynaConfig, MynaModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("models") / "tiny-myna"
    MynaModel(MynaConfig(**TINY_MYNA)).save_pretrained(str(path))
    return str(path)


PROGRESS_ENV = ("HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS", "TQDM_MININTERVAL")
PROGRESS_BASELINE = {name: os.environ.get(name) for name in PROGRESS_ENV}  # as the session began


@pytest.fixture(autouse=True)
def library_progress_bars_restored():
    """Commands run in-process (in a test or a module fixture) turn the libraries' bars off for a log
    (`myna_common.progress.quiet_library_bars`), which is process-wide: after each test they are as the session
    began."""
    import sys

    yield
    for name, value in PROGRESS_BASELINE.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    hub_on = PROGRESS_BASELINE["HF_HUB_DISABLE_PROGRESS_BARS"] in (None, "0")
    datasets_on = PROGRESS_BASELINE["HF_DATASETS_DISABLE_PROGRESS_BARS"] in (None, "0") and hub_on
    datasets = sys.modules.get("datasets")
    if datasets_on and datasets is not None and not datasets.is_progress_bar_enabled():
        datasets.enable_progress_bars()
    if hub_on and "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import are_progress_bars_disabled, enable_progress_bars

        if are_progress_bars_disabled():
            enable_progress_bars()
    logging = sys.modules.get("transformers.utils.logging")
    if hub_on and logging is not None and not logging.is_progress_bar_enabled():
        logging.enable_progress_bar()
