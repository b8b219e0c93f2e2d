#!/usr/bin/env python
"""Run the whole study: execute notebooks/NN_*.ipynb in order with papermill and render HTML.

    python run_all.py --profile smoke            # minutes: CI-sized data, one epoch
    python run_all.py --profile full             # the study as reported in reports/full/
    python run_all.py --profile full --from 05   # rerun from training on: training, error analysis, new images

Outputs go to reports/<profile>/ (or --output-dir): executed notebooks, one HTML per notebook,
figures/, metrics.json, run_log.json and index.html. See `python run_all.py --help`.
"""

import sys

from marsrover.runner import main

if __name__ == "__main__":
    sys.exit(main())
