"""``python -m hcam_ops.distill.train``: an alias, kept because earlier READMEs
gave it, of ``python -m hcam_ops.train distill`` (same flags)."""

import sys

if __name__ == "__main__":
    from hcam_ops.train.cli import main

    main(["distill", *sys.argv[1:]])
