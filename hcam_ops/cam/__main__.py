"""python -m hcam_ops.cam --model arc_psa_swin_tiny --checkpoint ck.pth --image leaf.jpg --out dir/

Writes one Grad-CAM overlay per class (PNG), an animated GIF across them, and
the predicted probabilities (scores.txt)."""

from __future__ import annotations

import argparse
import os

import timm
import torch
from PIL import Image
from torchvision import transforms

from .. import models  # noqa: F401  (registers the timm names)
from .gradcam import class_cams
from .overlay import save_overlays


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m hcam_ops.cam", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="arc_psa_swin_tiny")
    ap.add_argument("--checkpoint", help="a local checkpoint (a state dict, or a dict with 'model')")
    ap.add_argument("--image", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--classes", default=None, help="comma-separated class names (default: the leaf classes)")
    ap.add_argument("--method", default="gradcam", choices=["gradcam", "gradcam++", "hirescam", "eigencam"])
    args = ap.parse_args(argv)
    names = args.classes.split(",") if args.classes else list(models.LEAF_CLASSES)
    model = timm.create_model(args.model, num_classes=len(names), img_size=args.img_size)
    if args.checkpoint:
        state = torch.load(args.checkpoint, map_location="cpu")
        model.load_state_dict(state.get("model", state) if isinstance(state, dict) else state)
    model.eval()
    tf = transforms.Compose([transforms.Resize((args.img_size, args.img_size)), transforms.ToTensor()])
    image = tf(Image.open(args.image).convert("RGB"))
    norm = transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    x = norm(image).unsqueeze(0)
    cams = class_cams(model, x, method=args.method)[0]
    paths = save_overlays(image, cams, names, args.out)
    probs = model.predict(x)[0].tolist()
    with open(os.path.join(args.out, "scores.txt"), "w") as f:
        for n, p in zip(names, probs):
            f.write(f"{n}\t{p:.4f}\n")
    for n, p in zip(names, probs):
        print(f"{n:>20} {p:.3f}")
    print(f"wrote {len(paths)} files to {args.out}")


if __name__ == "__main__":
    main()
