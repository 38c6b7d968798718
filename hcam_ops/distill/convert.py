"""``python -m hcam_ops.distill.convert``: an alias, kept because earlier
READMEs gave it, of ``python -m hcam_ops.train.distill.convert``."""

if __name__ == "__main__":
    from hcam_ops.train.distill.convert import main

    main()
