"""The label hierarchies of the published H-CAST loaders (``ngocquanai/HiOT``
@b1a222bb ``deit/dataset/``), as data: CUB-200-2011 (200 species -> 38
families -> 13 orders, the tree of ``birds_get_tree_target_2.py``, from
PRIS-CV "Fine-Grained or Not") and FGVC-Aircraft 2013b (100 variants -> 70
families -> 30 manufacturers, ``aircraft_seeds.py`` with ``data/Air.csv`` for
the variant order). Entry ``i`` is the 1-based parent id of class ``i + 1``;
the published evaluation's tree tables (``engine_hier_eval.py``) are the same
tables."""

# Tables, one row per 20 classes (formatter off).
# fmt: off
# CUB: species id (the "NNN." prefix of the class folder) -> family, order.
CUB_FAMILY = (
    35, 35, 35, 9, 4, 4, 4, 4, 18, 18, 18, 18, 18, 13, 13, 13, 13, 26, 21, 19,
    24, 3, 37, 37, 37, 18, 18, 14, 15, 15, 9, 9, 9, 16, 16, 33, 30, 30, 30, 30,
    30, 30, 30, 38, 36, 1, 16, 16, 18, 34, 34, 34, 34, 13, 16, 16, 13, 4, 5, 5,
    5, 5, 5, 5, 5, 5, 2, 2, 2, 2, 6, 6, 15, 15, 15, 24, 30, 30, 7, 7,
    7, 7, 7, 8, 11, 10, 1, 18, 1, 1, 21, 3, 15, 27, 18, 18, 18, 18, 23, 32,
    32, 30, 30, 22, 3, 4, 15, 15, 23, 9, 20, 20, 24, 24, 24, 24, 24, 25, 24, 24,
    24, 24, 24, 24, 24, 24, 24, 24, 24, 24, 24, 24, 24, 28, 17, 17, 17, 17, 13, 13,
    5, 5, 5, 5, 5, 5, 5, 24, 21, 21, 31, 31, 31, 31, 31, 31, 31, 23, 23, 23,
    23, 23, 23, 23, 23, 23, 23, 23, 23, 23, 23, 23, 23, 23, 23, 23, 23, 23, 23, 23,
    23, 23, 23, 23, 12, 12, 33, 33, 33, 33, 33, 33, 29, 29, 29, 29, 29, 29, 29, 23,
)
CUB_ORDER = (
    12, 12, 12, 6, 4, 4, 4, 4, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8,
    8, 3, 13, 13, 13, 8, 8, 8, 8, 8, 6, 6, 6, 8, 8, 10, 8, 8, 8, 8,
    8, 8, 8, 13, 12, 1, 8, 8, 8, 11, 11, 11, 11, 8, 8, 8, 8, 4, 4, 4,
    4, 4, 4, 4, 4, 4, 2, 2, 2, 2, 4, 4, 8, 8, 8, 8, 8, 8, 5, 5,
    5, 5, 5, 5, 8, 7, 1, 8, 1, 1, 8, 3, 8, 8, 8, 8, 8, 8, 8, 9,
    9, 8, 8, 8, 3, 4, 8, 8, 8, 6, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8,
    8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8,
    4, 4, 4, 4, 4, 4, 4, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8,
    8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8,
    8, 8, 8, 8, 8, 8, 10, 10, 10, 10, 10, 10, 8, 8, 8, 8, 8, 8, 8, 8,
)

# Aircraft: the variant names in Air.csv order (label = position), then each
# variant's family and manufacturer.
AIRCRAFT_VARIANTS = (
    'A300B4', 'A310', 'A318', 'A319', 'A320', 'A321',
    'A330-200', 'A330-300', 'A340-200', 'A340-300', 'A340-500', 'A340-600',
    'A380', 'An-12', 'ATR-42', 'ATR-72', 'BAE 146-200', 'BAE 146-300',
    'BAE-125', 'Beechcraft 1900', '707-320', 'Boeing 717', '727-200', '737-200',
    '737-300', '737-400', '737-500', '737-600', '737-700', '737-800',
    '737-900', '747-100', '747-200', '747-300', '747-400', '757-200',
    '757-300', '767-200', '767-300', '767-400', '777-200', '777-300',
    'C-130', 'C-47', 'Cessna 172', 'Cessna 208', 'Cessna 525', 'Cessna 560',
    'Challenger 600', 'CRJ-200', 'CRJ-700', 'CRJ-900', 'DHC-8-100', 'DHC-8-300',
    'DC-10', 'DC-3', 'DC-6', 'DC-8', 'DC-9-30', 'DH-82',
    'DHC-1', 'DHC-6', 'Dornier 328', 'DR-400', 'EMB-120', 'E-170',
    'E-190', 'E-195', 'ERJ 135', 'ERJ 145', 'Embraer Legacy 600', 'Eurofighter Typhoon',
    'F/A-18', 'F-16A/B', 'Falcon 2000', 'Falcon 900', 'Fokker 100', 'Fokker 50',
    'Fokker 70', 'Global Express', 'Gulfstream IV', 'Gulfstream V', 'Hawk T1', 'Il-76',
    'Model B200', 'L-1011', 'MD-11', 'MD-80', 'MD-87', 'MD-90',
    'Metroliner', 'PA-28', 'Saab 2000', 'Saab 340', 'Spitfire', 'SR-20',
    'Tornado', 'Tu-134', 'Tu-154', 'Yak-42',
)
AIRCRAFT_FAMILY = (
    1, 2, 3, 3, 3, 3, 4, 4, 5, 5, 5, 5, 6, 7, 8, 9, 10, 10, 11, 12,
    13, 14, 15, 16, 16, 16, 16, 16, 16, 16, 16, 17, 17, 17, 17, 18, 18, 19, 19, 19,
    20, 20, 21, 22, 23, 24, 25, 25, 26, 27, 28, 28, 29, 29, 30, 31, 32, 33, 34, 35,
    36, 37, 38, 39, 40, 41, 41, 41, 42, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52,
    53, 53, 54, 55, 56, 57, 58, 59, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70,
)
AIRCRAFT_MANUFACTURER = (
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 3, 3, 7, 7, 7, 4,
    5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5,
    5, 5, 21, 14, 9, 9, 9, 9, 8, 8, 8, 8, 12, 12, 23, 14, 14, 14, 23, 12,
    12, 12, 13, 26, 15, 15, 15, 15, 15, 15, 15, 16, 23, 22, 11, 11, 18, 18, 18, 6,
    19, 19, 7, 20, 4, 21, 23, 23, 23, 23, 17, 25, 27, 27, 28, 10, 24, 29, 29, 30,
)
# fmt: on


def _check() -> None:
    # Every family has one order / manufacturer: the tables are trees.
    for fine, coarse in ((CUB_FAMILY, CUB_ORDER), (AIRCRAFT_FAMILY, AIRCRAFT_MANUFACTURER)):
        up = {}
        for f, c in zip(fine, coarse):
            if up.setdefault(f, c) != c:
                raise AssertionError(f"published tree: class {f} has two parents")


_check()
