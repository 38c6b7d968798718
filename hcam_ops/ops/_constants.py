"""Constants of the C++ side that the Python face needs (checks, fake
implementations), in one place; python_tests/test_constants.py checks each
against what the C++ side enforces."""

# Levels of one CAM-KL loss: 2 to MAX_LEVELS (csrc/ops/cam_math.h: kMaxLevels + 1).
MAX_LEVELS = 5

# fgd_loss (csrc/ops/fgd_math.h): its terms (fg, bg, attention, channel,
# spatial, fp; kNumTerms) and the saved statistics' sizes, col [B, FGD_NUM_COL,
# HW], row [B, FGD_NUM_ROW, C] and sample [B, FGD_NUM_SAMPLE] (kNumCol,
# kNumRow, kNumSample).
FGD_NUM_TERMS = 6
FGD_NUM_COL = 4
FGD_NUM_ROW = 4
FGD_NUM_SAMPLE = 10
