"""``python -m hcam_ops.cam.detection.training``: an alias, kept because
earlier READMEs gave it, of ``python -m hcam_ops.train.synthetic_detector``."""

if __name__ == "__main__":
    from hcam_ops.train.synthetic_detector import main

    main()
