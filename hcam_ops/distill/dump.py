"""``python -m hcam_ops.distill.dump``: an alias, kept because earlier READMEs
gave it, of ``python -m hcam_ops.train.distill.dump``."""

if __name__ == "__main__":
    from hcam_ops.train.distill.dump import main

    main()
