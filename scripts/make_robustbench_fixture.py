"""Write tests/fixtures/robustbench_reference.pt: RobustBench's own forward on seeded weights.

Run once where ``robustbench`` 1.1.1 is installed (its architecture files are loaded by path, because
``import robustbench`` needs the GitHub-only ``autoattack`` module and ``pkg_resources``):
    python scripts/make_robustbench_fixture.py
"""

import importlib.util
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.helpers.zoo import seeded_images, seeded_weights


def architecture(name: str):
    spec = importlib.util.find_spec("robustbench")
    folder = Path(spec.submodule_search_locations[0]) / "model_zoo" / "architectures"
    module_spec = importlib.util.spec_from_file_location(f"rb_{name}", folder / f"{name}.py")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def main() -> None:
    wrn, resnet = architecture("wide_resnet"), architecture("resnet")
    nets = {
        # WRN-10-2 with the unused sub_block1 of Carmon2019Unlabeled / Zhang2019Theoretically.
        "wrn-10-2": wrn.WideResNet(depth=10, widen_factor=2, sub_block1=True),
        # PreActResNet-18 as Wong2020Fast / Andriushchenko2020Understanding (normalisation: the caller's).
        "preact_resnet18": resnet.PreActResNet(resnet.PreActBlock, [2, 2, 2, 2]),
    }
    images = seeded_images()
    reference = {}
    for name, net in nets.items():
        shapes = {k: list(v.shape) for k, v in net.state_dict().items()}
        net.load_state_dict(seeded_weights(shapes))
        with torch.no_grad():
            logits = net.eval()(images)
        reference[name] = {"shapes": shapes, "logits": logits}
    out = REPO / "tests" / "fixtures" / "robustbench_reference.pt"
    torch.save(reference, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
